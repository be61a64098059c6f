"""
Tests for L{pipe._transfer.rendezvous}: matching one sender with n receivers.
"""

from __future__ import annotations

from typing import List, Tuple

import pytest
from zope.interface import implementer

from pipe._transfer import messages as messages
from pipe._transfer.rendezvous import (
    CountMismatch,
    ISenderParty,
    Match,
    ReceiversFull,
    Rendezvous,
    SenderTaken,
    Stage,
    TransferRunning,
)
from pipe.resource import refusal_for


@implementer(ISenderParty)
class FakeSender:
    def __init__(self) -> None:
        self.counts: List[Tuple[int, int]] = []

    def receivers_changed(self, connected: int, n: int) -> None:
        self.counts.append((connected, n))


def test_sender_first_matches_when_nth_receiver_arrives() -> None:
    """
    The join that completes the path returns the match (and the path is
    running); the others return nothing, and the sender hears the count.
    """
    r: Rendezvous[FakeSender, str] = Rendezvous()
    s = FakeSender()
    assert r.join_sender(b"p", 3, s) is None
    assert r.join_receiver(b"p", 3, "a") is None
    assert r.join_receiver(b"p", 3, "b") is None
    assert s.counts == [(0, 3), (1, 3), (2, 3)]
    assert r.stage(b"p") is Stage.WAITING
    match = r.join_receiver(b"p", 3, "c")
    assert match == Match(b"p", 3, s, ("a", "b", "c"))
    assert r.stage(b"p") is Stage.RUNNING
    assert s.counts == [(0, 3), (1, 3), (2, 3)]


def test_receivers_first_start_when_sender_arrives() -> None:
    r: Rendezvous[FakeSender, str] = Rendezvous()
    r.join_receiver(b"p", 2, "a")
    r.join_receiver(b"p", 2, "b")
    s = FakeSender()
    assert r.join_sender(b"p", 2, s) == Match(b"p", 2, s, ("a", "b"))
    assert s.counts == []


def test_count_mismatch_names_both_values() -> None:
    r: Rendezvous[FakeSender, str] = Rendezvous()
    r.join_receiver(b"p", 2, "a")
    with pytest.raises(CountMismatch) as info:
        r.join_sender(b"p", 3, FakeSender())
    assert (info.value.waiting, info.value.given) == (2, 3)
    assert (refusal_for(info.value).code, info.value.reason) == (400, "count_mismatch")
    assert info.value.body == messages.count_mismatch(3, 2)
    with pytest.raises(CountMismatch):
        r.join_receiver(b"p", 1, "b")


def test_second_sender_is_rejected() -> None:
    r: Rendezvous[FakeSender, str] = Rendezvous()
    r.join_sender(b"p", 2, FakeSender())
    with pytest.raises(SenderTaken) as info:
        r.join_sender(b"p", 2, FakeSender())
    assert (refusal_for(info.value).code, info.value.reason) == (409, "sender_taken")
    assert info.value.body == messages.sender_taken()


def test_extra_receiver_is_rejected() -> None:
    r: Rendezvous[FakeSender, str] = Rendezvous()
    r.join_receiver(b"p", 1, "a")
    with pytest.raises(ReceiversFull) as info:
        r.join_receiver(b"p", 1, "b")
    assert info.value.n == 1
    assert (refusal_for(info.value).code, info.value.body) == (
        409,
        messages.receivers_full(1),
    )
    assert info.value.reason == "receivers_full"


def test_everybody_is_rejected_while_running_until_release() -> None:
    r: Rendezvous[FakeSender, str] = Rendezvous()
    r.join_receiver(b"p", 1, "a")
    r.join_sender(b"p", 1, FakeSender())
    with pytest.raises(TransferRunning) as info:
        r.join_receiver(b"p", 1, "b")
    assert (refusal_for(info.value).code, info.value.reason) == (
        409,
        "transfer_running",
    )
    with pytest.raises(TransferRunning):
        r.join_sender(b"p", 1, FakeSender())
    r.release(b"p")
    assert len(r) == 0
    r.join_receiver(b"p", 5, "b")
    assert r.parties(b"p") == (False, 1)


def test_release_of_a_waiting_path_is_a_programming_error() -> None:
    r: Rendezvous[FakeSender, str] = Rendezvous()
    r.join_receiver(b"p", 2, "a")
    with pytest.raises(RuntimeError):
        r.release(b"p")
    with pytest.raises(RuntimeError):
        r.release(b"q")


def test_waiting_receiver_that_leaves_is_not_counted() -> None:
    r: Rendezvous[FakeSender, str] = Rendezvous()
    s = FakeSender()
    r.join_sender(b"p", 2, s)
    r.join_receiver(b"p", 2, "a")
    assert r.leave(b"p", "a") is True
    assert s.counts[-1] == (0, 2)
    assert r.join_receiver(b"p", 2, "b") is None
    assert r.join_receiver(b"p", 2, "c") == Match(b"p", 2, s, ("b", "c"))


def test_waiting_sender_that_leaves_frees_the_path() -> None:
    r: Rendezvous[FakeSender, str] = Rendezvous()
    s = FakeSender()
    r.join_sender(b"p", 2, s)
    assert r.leave(b"p", s) is True
    assert len(r) == 0
    r.join_sender(b"p", 3, FakeSender())
    assert r.parties(b"p") == (True, 0)


def test_last_party_leaving_removes_the_path_and_its_n() -> None:
    r: Rendezvous[FakeSender, str] = Rendezvous()
    r.join_receiver(b"p", 2, "a")
    r.leave(b"p", "a")
    assert len(r) == 0
    r.join_receiver(b"p", 7, "b")
    assert r.parties(b"p") == (False, 1)


def test_leave_is_refused_once_running_or_unknown() -> None:
    r: Rendezvous[FakeSender, str] = Rendezvous()
    s = FakeSender()
    r.join_receiver(b"p", 1, "a")
    r.join_sender(b"p", 1, s)
    assert r.leave(b"p", "a") is False
    assert r.leave(b"p", s) is False
    assert r.leave(b"nope", "a") is False
    assert r.stage(b"p") is Stage.RUNNING


def test_paths_are_independent_bytes() -> None:
    r: Rendezvous[FakeSender, str] = Rendezvous()
    r.join_receiver(b"a", 1, "x")
    r.join_receiver(b"a/", 2, "y")
    r.join_receiver(b"%41", 3, "z")
    r.join_receiver(b"A", 4, "w")
    assert len(r) == 4
    assert r.count(Stage.WAITING) == 4
    assert r.count(Stage.RUNNING) == 0
