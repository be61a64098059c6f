"""
The quorum (C{min}) and receiver names, on a real site over
C{StringTransport}s and a C{task.Clock}, and the rendezvous' stages of a
quorum start (running, closed to late receivers, reopened) on plain
objects.
"""

from __future__ import annotations

from typing import Any, List

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer

from pipe._settings import Settings
from pipe._transfer.closed import ClosedPaths
from pipe._transfer.parse import parse_name
from pipe._transfer.refusal import Refusal
from pipe._transfer.registry import Registry
from pipe._transfer.rendezvous import (
    ISenderParty,
    Match,
    MinMismatch,
    PathClosed,
    QuorumStarted,
    Rendezvous,
    Stage,
    TransferRunning,
)
from pipe._transfer.watchdog import Progress, holding_back
from pipe.server import PipeSite, make_site

from .helpers import Peer, chunk


@implementer(ISenderParty)
class FakeSender:
    def __init__(self) -> None:
        self.changes: List[Any] = []

    def receivers_changed(self, connected: int, n: int) -> None:
        self.changes.append((connected, n))


# The rendezvous' stages.


def test_start_quorum_needs_the_senders_min_and_enough_receivers() -> None:
    clock = Clock()
    r: Rendezvous[Any, Any] = Rendezvous(clock)
    s = FakeSender()
    r.join_sender(b"none", 3, s)
    r.join_receiver(b"none", 3, "a")
    assert r.start_quorum(b"none") is None, "no min: never a quorum"
    r.join_sender(b"few", 3, FakeSender(), 2)
    r.join_receiver(b"few", 3, "a")
    assert r.start_quorum(b"few") is None, "1 of a quorum of 2"
    assert r.stage(b"few") is Stage.WAITING
    r.join_sender(b"p", 3, s, 2)
    r.join_receiver(b"p", 3, "a")
    r.join_receiver(b"p", 3, "b")
    clock.advance(7)
    assert r.start_quorum(b"p") == Match(b"p", 3, s, ("a", "b"))
    assert r.stage(b"p") is Stage.RUNNING
    assert r.start_quorum(b"p") is None, "once"


def test_a_quorum_path_refuses_late_parties_while_running_and_closed() -> None:
    clock = Clock()
    r: Rendezvous[Any, Any] = Rendezvous(clock)
    r.join_sender(b"p", 3, FakeSender(), 2)
    r.join_receiver(b"p", 3, "a")
    r.join_receiver(b"p", 3, "b")
    r.start_quorum(b"p")
    clock.advance(3)
    with pytest.raises(QuorumStarted) as late:
        r.join_receiver(b"p", 3, "c")
    assert late.value.body == (
        b"[ERROR] this pipe's transfer started 3 s ago with 2 of 3 receivers;"
        b" nothing is kept\n"
    )
    with pytest.raises(QuorumStarted):
        r.join_receiver(b"p", 5, "c")  # whatever its n
    with pytest.raises(TransferRunning):
        r.join_sender(b"p", 3, FakeSender())
    r.close(b"p", until=10)
    assert r.stage(b"p") is Stage.CLOSED
    assert r.parties(b"p") == (False, 0) and r.totals() == (0, 0)
    assert len(r) == 1
    with pytest.raises(QuorumStarted):
        r.join_receiver(b"p", 3, "c")
    with pytest.raises(PathClosed) as closed:
        r.join_sender(b"p", 3, FakeSender(), 2)
    assert b"refused on this path for 7 s more" in closed.value.body
    assert r.leave(b"p", "c") is False
    r.reopen(b"p")
    assert r.stage(b"p") is None
    assert r.join_receiver(b"p", 3, "c") is None


def test_only_a_quorum_start_can_close() -> None:
    r: Rendezvous[Any, Any] = Rendezvous()
    r.join_receiver(b"p", 1, "a")
    r.join_sender(b"p", 1, FakeSender(), 1)
    assert r.stage(b"p") is Stage.RUNNING, "all n there: at once, as before"
    with pytest.raises(RuntimeError):
        r.close(b"p", 10)
    with pytest.raises(TransferRunning):
        r.join_receiver(b"p", 1, "b")
    r.reopen(b"p")  # not closed: nothing happens
    r.release(b"p")
    assert r.stage(b"p") is None


def test_min_must_agree_and_only_the_sender_sets_it() -> None:
    r: Rendezvous[Any, Any] = Rendezvous()
    r.join_receiver(b"p", 3, "a", 2)
    with pytest.raises(MinMismatch) as other:
        r.join_receiver(b"p", 3, "b", 3)
    assert other.value.body == (
        b"[ERROR] min=3 does not match min=2 of the receivers already waiting"
        b" on this path\n"
    )
    r.join_receiver(b"p", 3, "b")  # a receiver need not give min
    with pytest.raises(MinMismatch) as sender:
        r.join_sender(b"p", 3, FakeSender())
    assert sender.value.body.startswith(b"[ERROR] no min does not match min=2")
    r.join_sender(b"p", 3, FakeSender(), 2)
    with pytest.raises(MinMismatch) as receiver:
        r.join_receiver(b"p", 3, "c", 1)
    assert receiver.value.body == (
        b"[ERROR] min=1 does not match this path's sender, which gave min=2:"
        b" only the sender sets the quorum\n"
    )
    assert r.parties(b"p") == (True, 2)


def test_a_receiver_that_stated_min_and_left_binds_nobody() -> None:
    r: Rendezvous[Any, Any] = Rendezvous()
    r.join_receiver(b"p", 2, "a", 2)
    assert r.leave(b"p", "a")
    r.join_receiver(b"p", 2, "b")
    assert r.join_sender(b"p", 2, FakeSender(), 1) is None


# Names.


@pytest.mark.parametrize(
    "value, name",
    [(b"runner-7", "runner-7"), (b" job 42 ", "job 42"), (b"x" * 64, "x" * 64)],
)
def test_a_name_is_printable_ascii_up_to_64(value: bytes, name: str) -> None:
    assert parse_name([value]) == name


@pytest.mark.parametrize(
    "values",
    [[b"a\x01"], [b"x" * 65], [b"caf\xc3\xa9"], [b"\xff"], [b""], [b"a", b"b"]],
)
def test_other_names_are_400(values: List[bytes]) -> None:
    with pytest.raises(Refusal) as refused:
        parse_name(values)
    assert refused.value.code == 400 and refused.value.reason == "bad_name"
    assert refused.value.body.startswith(b"[ERROR] Txpipe-Receiver must be one name")


# Closed paths' timers, the limit and the drain.


def test_a_closed_path_reopens_on_its_timer_and_counts_as_a_pipe() -> None:
    clock = Clock()
    registry = Registry(clock, Settings(max_pipes=1))
    r = registry.rendezvous
    r.join_sender(b"p", 2, FakeSender(), 1)
    r.join_receiver(b"p", 2, "a")
    r.start_quorum(b"p")
    registry.close_to_late_receivers(b"p", until=30)
    clock.advance(29)
    assert r.stage(b"p") is Stage.CLOSED
    with pytest.raises(Refusal) as full:
        registry.admit(b"other", "127.0.0.1")
    assert full.value.reason == "too_many_pipes"
    registry.admit(b"p", "127.0.0.1")  # its latecomers still get their 410
    assert registry.status()["pipes_closed"] == 1
    clock.advance(1)
    assert r.stage(b"p") is None
    registry.admit(b"other", "127.0.0.1")


def test_a_closed_path_whose_time_passed_is_freed_and_drain_reopens_all() -> None:
    clock = Clock()
    r: Rendezvous[Any, Any] = Rendezvous(clock)
    closed = ClosedPaths(clock, r)
    for path in (b"a", b"b"):
        r.join_sender(path, 2, FakeSender(), 1)
        r.join_receiver(path, 2, "x")
        r.start_quorum(path)
    clock.advance(5)
    closed.close(b"a", until=5)
    assert r.stage(b"a") is None, "its wait has passed: free at once"
    closed.close(b"b", until=100)
    assert len(closed) == 1 and clock.getDelayedCalls()
    closed.reopen_all()
    assert r.stage(b"b") is None and not clock.getDelayedCalls()


# A whole quorum transfer on a real site, on a clock.


def site_with(clock: Clock, **settings: Any) -> PipeSite:
    return make_site(clock, Settings(**settings))  # type: ignore[arg-type]


def receive(site: PipeSite, query: bytes, name: bytes = b"") -> Peer:
    peer = Peer(site)
    header = b"Txpipe-Receiver: " + name + b"\r\n" if name else b""
    peer.send(
        b"GET /api/v1/pipe/q?" + query + b" HTTP/1.1\r\nHost: t\r\n" + header + b"\r\n"
    )
    return peer


def test_quorum_transfer_on_a_clock(clock: Clock, events: List[Any]) -> None:
    site = site_with(clock, wait_timeout=600, stall_timeout=4)
    a = receive(site, b"n=3", b"runner-1")
    b = receive(site, b"n=3&min=2")
    sender = Peer(site)
    sender.send(
        b"PUT /api/v1/pipe/q?n=3&min=2&wait=10 HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk(b"abc")
    )
    clock.advance(9.9)
    assert a.output() == b"" and b"transfer started" not in sender.body()
    clock.advance(0.1)
    assert sender.body().endswith(
        b"[INFO] wait deadline after 10 s: transfer started to 2 of 3 receivers"
        b" (1 never joined)\n"
    )
    late = receive(site, b"n=3")
    assert late.output().startswith(b"HTTP/1.1 410 Gone\r\n")
    assert late.body() == (
        b"[ERROR] this pipe's transfer started 0 s ago with 2 of 3 receivers;"
        b" nothing is kept\n"
    )
    sender.send(chunk(b"def") + chunk(b""))
    assert a.body() == b.body() == b"abcdef"
    done = sender.body().splitlines()[-1]
    assert done.startswith(b"[INFO] done: bytes=6 receivers=2/3 (1 never joined) in ")
    assert b"; slowest: " not in done, "too short to see who holds it back"
    assert site.registry.rendezvous.stage(b"q") is Stage.CLOSED
    clock.advance(5)
    assert receive(site, b"n=3").output().startswith(b"HTTP/1.1 410 ")
    clock.advance(5)
    assert site.registry.rendezvous.stage(b"q") is None
    (event,) = [e for e in events if e.get("outcome") == "complete"]
    assert (event["never_joined"], event["n"]) == (1, 3)
    assert "runner-1 (127.0.0.1:" in event["receivers"]
    statistics = site.registry.statistics.collectors
    assert statistics.get_sample_value("txpipe_quorum_starts_total") == 1
    assert (
        statistics.get_sample_value(
            "txpipe_rejections_total", {"reason": "quorum_started"}
        )
        == 2
    )


def test_a_deferred_sender_starts_with_its_quorum_too(clock: Clock) -> None:
    site = site_with(clock, wait_timeout=600)
    a = receive(site, b"n=2")
    sender = Peer(site)
    sender.send(
        b"PUT /api/v1/pipe/q?n=2&min=1&wait=3 HTTP/1.1\r\nHost: t\r\n"
        b"Txpipe-Sender-Response: deferred\r\nContent-Length: 2\r\n\r\nhi"
    )
    clock.advance(3)
    assert a.body() == b"hi"
    assert sender.body().startswith(b"[INFO] done: bytes=2 receivers=1/2 (1 never")


@pytest.fixture
def clock() -> Clock:
    return Clock()


# Who holds the transfer back.


class Watched:
    def __init__(self, taken: int, paused: bool) -> None:
        self.progress = Progress(0.0)
        self.progress.taken = taken
        self._paused = paused

    def is_paused(self) -> bool:
        return self._paused


def test_holding_back_is_the_paused_receiver_that_took_least() -> None:
    fast, slow, slower_unpaused, paused = (
        Watched(900, False),
        Watched(300, True),
        Watched(100, False),
        Watched(500, True),
    )
    assert holding_back([fast, slow, slower_unpaused, paused]) is slow  # type: ignore[list-item]
    assert holding_back([fast, slower_unpaused]) is None  # type: ignore[list-item]


def test_a_long_transfer_names_who_holds_it_back_every_few_seconds(
    clock: Clock,
) -> None:
    site = site_with(clock, stall_timeout=20, idle_timeout=0)
    fast = receive(site, b"n=2", b"fast")
    slow = receive(site, b"n=2", b"slow-7")
    sender = Peer(site)
    sender.send(
        b"PUT /api/v1/pipe/q?n=2 HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    # The slow receiver's connection pauses the upload; the fast one's not.
    slow.transport.producer.pauseProducing()  # type: ignore[union-attr]
    for _ in range(6):
        sender.send(chunk(b"x" * 1000))
        clock.advance(1)
    lines = [
        line
        for line in sender.body().splitlines()
        if line.startswith(b"[INFO] running")
    ]
    assert lines, sender.body()
    assert lines[0].startswith(b"[INFO] running: 4.9 KiB to 2 receivers; held back")
    assert b"held back by receiver slow-7 (127.0.0.1:" in lines[0]
    assert fast.output()


# Signed URLs that carry min.


def test_a_signature_covers_min_when_the_url_has_one() -> None:
    from pipe._transfer.guard import Guard, Requirement
    from pipe.signing import Scope, canonical, sign_url, signature

    key = b"k" * 32
    clock = Clock()
    clock.advance(1000)
    url = sign_url(
        "http://h/api/v1/pipe/p?n=3&min=2", key, "send", 60, now=clock.seconds()
    )
    expires = int(url.split("expires=")[1].split("&")[0])
    sig = url.rpartition("sig=")[2]
    assert sig == signature(key, canonical(Scope.SEND, b"p", 3, expires, 2))
    assert canonical(Scope.SEND, b"p", 3, expires) + b"\nmin=2" == canonical(
        Scope.SEND, b"p", 3, expires, 2
    )
    guard = Guard([key], Requirement.ALL, clock)
    args = ([str(expires).encode()], [b"send"], [sig.encode()])
    assert guard.check(Scope.SEND, b"p", 3, *args, 2) is not None
    for other in (None, 1, 3):
        with pytest.raises(Refusal) as refused:
            guard.check(Scope.SEND, b"p", 3, *args, other)
        assert refused.value.reason == "signature_mismatch"
    unsigned = sign_url("http://h/api/v1/pipe/p?n=3", key, "send", 60, now=1000)
    plain_sig = unsigned.rpartition("sig=")[2].encode()
    assert guard.check(Scope.SEND, b"p", 3, args[0], args[1], [plain_sig]) is not None
    with pytest.raises(Refusal):
        guard.check(Scope.SEND, b"p", 3, args[0], args[1], [plain_sig], 2)


@pytest.mark.parametrize(
    "query", ["n=3&min=4", "n=3&min=0", "n=3&min=1&min=1", "min=x"]
)
def test_sign_url_refuses_a_malformed_min(query: str) -> None:
    from pipe.signing import sign_url

    with pytest.raises(ValueError, match="min must be"):
        sign_url("http://h/api/v1/pipe/p?" + query, b"k" * 32, "send", 60)
