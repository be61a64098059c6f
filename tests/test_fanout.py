"""
Tests for L{pipe._transfer.fanout} and L{pipe._transfer.watchdog}: one upload
copied to N
outlets, paced by the slowest, with plain fake producers and outlets.
"""

from __future__ import annotations

from typing import Any, List, Optional, cast

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pipe._transfer.fanout import (
    HOLD_LIMIT,
    Branch,
    BranchState,
    Fanout,
    IFanoutListener,
    IOutlet,
    State,
)
from pipe._transfer.outcome import Outcome
from pipe._transfer.watchdog import IWatched, Watchdogs


class Upload:
    """A fake upload producer that records its state."""

    def __init__(self) -> None:
        self.state = "producing"
        self.history: List[str] = []

    def pauseProducing(self) -> None:
        self.state = "paused"
        self.history.append("pause")

    def resumeProducing(self) -> None:
        self.state = "producing"
        self.history.append("resume")

    def stopProducing(self) -> None:
        self.state = "stopped"
        self.history.append("stop")


@implementer(IOutlet)
class Outlet:
    """
    A fake receiver.  Its connection acknowledges a finished response at
    once unless C{acknowledge} is false; then the test drives the branch.
    """

    def __init__(self, acknowledge: bool = True) -> None:
        self.data = bytearray()
        self.producer: Optional[Branch] = None
        self.branch: Optional[Branch] = None
        self.end: Optional[str] = None
        self.acknowledge = acknowledge
        self.released = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = self.branch = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        assert self.end is None
        self.data += data

    def finish(self) -> None:
        assert self.producer is None, "unregister before finish"
        self.end = "finished"
        if self.acknowledge:
            assert self.branch is not None
            self.branch.acknowledged()

    def abort(self) -> None:
        self.end = "aborted"

    def release(self) -> None:
        self.released += 1

    def pending(self) -> Optional[int]:
        return self.buffered

    buffered: Optional[int] = 0


@implementer(IFanoutListener)
class Listener:
    def __init__(self) -> None:
        self.lost: List[int] = []
        self.ended: List[Fanout] = []
        self.lines: List[Any] = []

    def branch_lost(self, branch: Branch) -> None:
        self.lost.append(branch.index)

    def fanout_ended(self, fanout: Fanout) -> None:
        self.ended.append(fanout)

    def running_line(self, now: float, slowest: Optional[Branch]) -> None:
        self.lines.append((now, slowest))


def make(n: int = 3) -> Any:
    listener = Listener()
    clock = Clock()
    fanout = Fanout(clock)
    upload = Upload()
    fanout.makeConnection(upload)  # type: ignore[arg-type]
    outlets = [Outlet() for _ in range(n)]
    return fanout, upload, outlets, listener


DONE = Failure(ResponseDone())
LOST = Failure(ConnectionLost())


def test_branch_provides_push_producer() -> None:
    fanout, _, outlets, listener = make(1)
    fanout.start(outlets, listener)
    assert verifyObject(IPushProducer, outlets[0].producer)


def test_fanout_provides_what_the_watchdogs_visit_and_fakes_are_true() -> None:
    """
    The fan-out is an L{IWatched}; the fakes below provide the interfaces
    they stand in for, so that these tests cannot drift from them.
    """
    fanout, _, outlets, listener = make(1)
    assert verifyObject(IWatched, fanout.watched)
    assert verifyObject(IOutlet, outlets[0])
    assert verifyObject(IFanoutListener, listener)


def test_upload_is_held_until_start_and_held_bytes_are_copied() -> None:
    fanout, upload, outlets, listener = make(2)
    fanout.dataReceived(b"early")
    assert fanout.state is State.HOLDING
    fanout.start(outlets, listener)
    assert upload.state == "producing"
    fanout.dataReceived(b" late")
    fanout.connectionLost(DONE)
    assert [bytes(o.data) for o in outlets] == [b"early late"] * 2
    assert [o.end for o in outlets] == ["finished"] * 2
    assert listener.ended == [fanout]
    assert fanout.outcome is Outcome.COMPLETE
    assert fanout.completed == 2
    assert all(o.producer is None for o in outlets)
    assert [o.released for o in outlets] == [1, 1]


def test_waiting_upload_is_read_up_to_the_hold_limit_then_paused() -> None:
    """
    While it waits, a sender's upload is read (so that its disconnect is
    seen at once) and held, up to HOLD_LIMIT bytes; then it is paused.
    """
    fanout, upload, outlets, listener = make(1)
    assert upload.state == "producing"
    fanout.dataReceived(b"x" * (HOLD_LIMIT - 1))
    assert upload.state == "producing"
    fanout.dataReceived(b"x")
    assert upload.state == "paused"
    fanout.start(outlets, listener)
    assert upload.state == "producing"
    assert len(outlets[0].data) == HOLD_LIMIT


def test_body_complete_before_start_is_delivered_on_start() -> None:
    fanout, _, outlets, listener = make(2)
    fanout.dataReceived(b"all of it")
    fanout.connectionLost(DONE)
    assert fanout.state is State.HOLDING_COMPLETE
    assert listener.ended == []
    fanout.start(outlets, listener)
    assert [bytes(o.data) for o in outlets] == [b"all of it"] * 2
    assert fanout.outcome is Outcome.COMPLETE


def test_upload_paused_while_any_branch_paused() -> None:
    fanout, upload, outlets, listener = make(3)
    fanout.start(outlets, listener)
    a, b, c = (o.producer for o in outlets)
    a.pauseProducing()
    assert upload.state == "paused"
    b.pauseProducing()
    a.resumeProducing()
    assert upload.state == "paused", "b is still paused"
    b.resumeProducing()
    assert upload.state == "producing"
    # Repeated pauses of one branch count once.
    c.pauseProducing()
    c.pauseProducing()
    c.resumeProducing()
    assert upload.state == "producing"


def test_paused_branch_that_is_lost_stops_holding_back_the_others() -> None:
    fanout, upload, outlets, listener = make(2)
    fanout.start(outlets, listener)
    slow = outlets[0].producer
    slow.pauseProducing()
    assert upload.state == "paused"
    slow.stopProducing()
    assert upload.state == "producing"
    assert listener.lost == [1]
    fanout.dataReceived(b"more")
    assert bytes(outlets[1].data) == b"more"
    assert bytes(outlets[0].data) == b""
    fanout.connectionLost(DONE)
    assert fanout.outcome is Outcome.RECEIVER_LOST
    assert fanout.completed == 1
    assert outlets[0].end is None, "a lost receiver is never finished"
    assert outlets[1].end == "finished"


def test_losing_a_branch_twice_reports_once() -> None:
    fanout, _, outlets, listener = make(2)
    fanout.start(outlets, listener)
    outlets[0].producer.stopProducing()
    fanout.lose_branch(fanout.branches[0])
    assert listener.lost == [1]


def test_all_branches_lost_stops_the_upload() -> None:
    fanout, upload, outlets, listener = make(2)
    fanout.start(outlets, listener)
    for o in list(outlets):
        o.producer.stopProducing()
    assert upload.state == "stopped"
    assert fanout.outcome is Outcome.RECEIVER_LOST
    assert listener.ended == [fanout]
    # Bytes Twisted had already read still arrive; they are dropped.
    fanout.dataReceived(b"late")
    fanout.connectionLost(LOST)
    assert listener.ended == [fanout]


def test_sender_lost_aborts_every_receiver() -> None:
    fanout, _, outlets, listener = make(3)
    fanout.start(outlets, listener)
    fanout.dataReceived(b"part")
    outlets[2].producer.stopProducing()
    fanout.connectionLost(LOST)
    assert [o.end for o in outlets] == ["aborted", "aborted", None]
    assert fanout.outcome is Outcome.SENDER_LOST
    assert listener.ended == [fanout]


def test_sender_lost_while_holding_ends_without_listener() -> None:
    fanout, _, outlets, listener = make(1)
    fanout.dataReceived(b"x")
    fanout.connectionLost(LOST)
    assert fanout.state is State.ENDED
    assert listener.ended == []
    with pytest.raises(RuntimeError):
        fanout.start(outlets, listener)


def test_write_that_reenters_pause_and_loss_is_safe() -> None:
    """
    A write may synchronously pause its branch or lose another one; the
    copy iterates over a snapshot and keeps the state consistent.
    """
    fanout, upload, outlets, listener = make(3)

    class Reentrant(Outlet):
        def write(self, data: bytes) -> None:
            super().write(data)
            self.producer.pauseProducing()
            outlets[2].producer.stopProducing()

    outlets[0] = Reentrant()
    fanout.start(outlets, listener)
    fanout.dataReceived(b"abc")
    assert upload.state == "paused"
    assert bytes(outlets[1].data) == b"abc"
    assert bytes(outlets[2].data) == b"", "lost before its turn"
    outlets[0].producer.resumeProducing()
    assert upload.state == "producing"


def test_one_byte_chunks_arrive_in_order() -> None:
    fanout, _, outlets, listener = make(2)
    fanout.start(outlets, listener)
    data = bytes(range(256)) * 4
    for i in range(len(data)):
        fanout.dataReceived(data[i : i + 1])
    fanout.connectionLost(DONE)
    assert [bytes(o.data) for o in outlets] == [data, data]
    assert fanout.received == len(data)
    assert [b.sent for b in fanout.branches] == [len(data)] * 2


def make_watched(n: int = 2, **watchdogs: Any) -> Any:
    listener = Listener()
    clock = Clock()
    fanout = Fanout(clock, Watchdogs(**watchdogs))
    upload = Upload()
    fanout.makeConnection(upload)  # type: ignore[arg-type]
    outlets = [Outlet() for _ in range(n)]
    return fanout, upload, outlets, listener, clock


def test_receiver_taking_no_bytes_while_data_waits_is_stalled() -> None:
    fanout, _, outlets, listener, clock = make_watched(2, stall_timeout=10)
    fanout.start(outlets, listener)
    fanout.dataReceived(b"x" * 100)
    outlets[0].buffered = 100  # nothing taken
    outlets[1].buffered = 0
    clock.pump([1] * 9)
    assert fanout.branches[0].state is BranchState.ACTIVE
    clock.pump([1] * 2)
    assert fanout.branches[0].state is BranchState.STALLED
    assert outlets[0].end == "aborted"
    assert listener.lost == [1]
    assert fanout.branches[1].state is BranchState.ACTIVE


def test_receiver_taking_bytes_slowly_is_not_stalled_without_min_rate() -> None:
    fanout, _, outlets, listener, clock = make_watched(1, stall_timeout=10)
    fanout.start(outlets, listener)
    fanout.dataReceived(b"x" * 1000)
    for left in range(1000, 0, -10):
        outlets[0].buffered = left
        clock.advance(1)
    assert fanout.branches[0].state is BranchState.ACTIVE


def test_receiver_below_min_rate_with_data_waiting_is_stalled() -> None:
    fanout, _, outlets, listener, clock = make_watched(
        1, stall_timeout=10, min_rate=100
    )
    fanout.start(outlets, listener)
    fanout.dataReceived(b"x" * 10_000)
    left = 10_000
    for _ in range(12):
        left -= 50  # 50 B/s, below 100 B/s
        outlets[0].buffered = left
        clock.advance(1)
    assert fanout.branches[0].state is BranchState.STALLED
    assert fanout.outcome is Outcome.RECEIVER_STALLED


def test_receiver_with_nothing_waiting_is_never_stalled() -> None:
    """A slow sender is not the receivers' fault."""
    fanout, _, outlets, listener, clock = make_watched(
        1, stall_timeout=10, min_rate=100
    )
    fanout.start(outlets, listener)
    outlets[0].buffered = 0
    clock.pump([1] * 100)
    assert fanout.branches[0].state is BranchState.ACTIVE


def test_one_timer_checks_every_running_fanout_for_stalls() -> None:
    """
    The fan-outs of a site share their watchdogs' one stall timer, which
    exists only while one of them runs: a small pipe creates no timer.
    """
    clock = Clock()
    watchdogs = Watchdogs(stall_timeout=10)
    fanouts: List[Fanout] = []
    outlets: List[Any] = []
    for started in (0.0, 0.5):
        clock.advance(started)
        fanout = Fanout(clock, watchdogs)
        fanout.makeConnection(Upload())  # type: ignore[arg-type]
        mine: List[Any] = [Outlet()]
        listener = Listener()
        fanout.start(mine, listener)
        fanout.dataReceived(b"x" * 100)
        mine[0].buffered = 100  # nothing taken
        fanouts.append(fanout)
        outlets.append(mine[0])
    assert len(clock.getDelayedCalls()) == 1, "one timer for both"
    clock.pump([1] * 10)
    assert [f.branches[0].state for f in fanouts] == [BranchState.STALLED] * 2
    assert [f.state for f in fanouts] == [State.ENDED] * 2
    assert [o.end for o in outlets] == ["aborted", "aborted"]
    clock.advance(1)
    assert clock.getDelayedCalls() == [], "no timer once none runs"
    # A new fan-out starts the timer again.
    fanout = Fanout(clock, watchdogs)
    fanout.makeConnection(Upload())  # type: ignore[arg-type]
    fanout.start([Outlet()], listener)
    assert len(clock.getDelayedCalls()) == 1
    fanout.connectionLost(DONE)
    clock.advance(1)
    assert clock.getDelayedCalls() == []


def test_a_failing_stall_check_does_not_stop_the_others() -> None:
    clock = Clock()
    watchdogs = Watchdogs(stall_timeout=10)
    broken = Fanout(clock, watchdogs)
    broken.makeConnection(Upload())  # type: ignore[arg-type]
    listener = Listener()
    broken.start([Outlet()], listener)

    def fail() -> List[Branch]:
        raise RuntimeError("broken check")

    broken.watched.watched_receivers = fail  # type: ignore[method-assign]
    fanout = Fanout(clock, watchdogs)
    fanout.makeConnection(Upload())  # type: ignore[arg-type]
    outlet = Outlet()
    fanout.start([outlet], listener)
    fanout.dataReceived(b"x" * 100)
    outlet.buffered = 100
    failures: List[Any] = []
    observer = cast(
        ILogObserver, lambda event: failures.append(event.get("log_failure"))
    )
    globalLogPublisher.addObserver(observer)
    try:
        clock.pump([1] * 11)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert fanout.branches[0].state is BranchState.STALLED
    assert any(f is not None and f.check(RuntimeError) for f in failures)


def test_stall_check_without_buffer_info_uses_pause_state() -> None:
    fanout, upload, outlets, listener, clock = make_watched(1, stall_timeout=10)
    outlets[0].buffered = None
    fanout.start(outlets, listener)
    branch = fanout.branches[0]
    branch.pauseProducing()
    clock.pump([1] * 11)
    assert branch.state is BranchState.STALLED
    assert upload.state == "stopped", "no receiver left"


def test_idle_upload_aborts_but_paused_time_does_not_count() -> None:
    fanout, upload, outlets, listener, clock = make_watched(1, idle_timeout=30)
    fanout.start(outlets, listener)
    clock.advance(20)
    fanout.dataReceived(b"a")
    clock.advance(20)
    assert fanout.state is State.STREAMING
    outlets[0].producer.pauseProducing()
    clock.advance(1000)
    assert fanout.state is State.STREAMING
    outlets[0].producer.resumeProducing()
    clock.advance(29)
    assert fanout.state is State.STREAMING
    clock.advance(1)
    assert fanout.outcome is Outcome.IDLE_TIMEOUT
    assert outlets[0].end == "aborted"
    assert upload.state == "stopped"
    assert listener.ended == [fanout]


def test_abort_ends_a_running_transfer_once() -> None:
    fanout, upload, outlets, listener, _ = make_watched(2)
    fanout.start(outlets, listener)
    fanout.abort(Outcome.DRAINED)
    fanout.abort(Outcome.DRAINED)
    assert [o.end for o in outlets] == ["aborted", "aborted"]
    assert listener.ended == [fanout]
    assert fanout.outcome is Outcome.DRAINED
    assert all(b.state is BranchState.ABORTED for b in fanout.branches)
    assert upload.state == "stopped"


# Settling: a finished response counts only once acknowledged.


def make_awaiting_acks(n: int = 2, **watchdogs: Any) -> Any:
    """
    A fan-out whose upload is complete and whose receivers have not yet
    acknowledged their finished responses.
    """
    fanout, upload, _, listener, clock = make_watched(n, **watchdogs)
    outlets = [Outlet(acknowledge=False) for _ in range(n)]
    fanout.start(outlets, listener)
    fanout.dataReceived(b"payload")
    fanout.connectionLost(DONE)
    return fanout, upload, outlets, listener, clock


def test_transfer_is_complete_only_when_every_receiver_acknowledged() -> None:
    fanout, _, outlets, listener, _ = make_awaiting_acks(2)
    assert fanout.state is State.AWAITING_ACKS
    assert [o.end for o in outlets] == ["finished"] * 2
    assert [b.state for b in fanout.branches] == [BranchState.WRITTEN] * 2
    assert listener.ended == []
    fanout.branches[1].acknowledged()
    assert listener.ended == []
    assert fanout.completed == 1
    fanout.branches[0].acknowledged()
    assert listener.ended == [fanout]
    assert fanout.outcome is Outcome.COMPLETE
    assert fanout.completed == 2
    assert [o.released for o in outlets] == [1, 1]


def test_receiver_lost_before_acknowledging_fails_the_transfer() -> None:
    fanout, _, outlets, listener, _ = make_awaiting_acks(3)
    fanout.branches[0].acknowledged()
    fanout.branches[1].stopProducing()
    assert listener.lost == [2]
    assert listener.ended == []
    fanout.branches[2].acknowledged()
    assert fanout.outcome is Outcome.RECEIVER_LOST
    assert fanout.completed == 2
    assert fanout.branches[1].state is BranchState.LOST
    assert [o.released for o in outlets] == [1, 1, 1]
    # A late report changes nothing.
    fanout.branches[1].acknowledged()
    assert fanout.completed == 2
    assert listener.ended == [fanout]


def test_acknowledgement_during_finish_is_handled() -> None:
    """
    An outlet may report its delivery before finish() returns, for some
    receivers and not others; the transfer ends once, when the last one
    acknowledges.
    """
    fanout, _, _, listener, _ = make_watched(3)
    outlets = [Outlet(), Outlet(acknowledge=False), Outlet()]
    fanout.start(outlets, listener)
    fanout.connectionLost(DONE)
    assert fanout.state is State.AWAITING_ACKS
    assert fanout.completed == 2
    fanout.branches[1].acknowledged()
    assert listener.ended == [fanout]
    assert fanout.outcome is Outcome.COMPLETE


def test_every_receiver_acknowledging_at_once_completes_at_once() -> None:
    fanout, _, outlets, listener = make(2)
    fanout.start(outlets, listener)
    fanout.connectionLost(DONE)
    assert listener.ended == [fanout]
    assert fanout.outcome is Outcome.COMPLETE


def test_receiver_acknowledging_nothing_for_the_stall_timeout_is_dropped() -> None:
    fanout, _, outlets, listener, clock = make_awaiting_acks(2, stall_timeout=10)
    fanout.branches[1].acknowledged()
    clock.pump([1] * 5)
    fanout.branches[0].acknowledging()
    clock.pump([1] * 9)
    assert fanout.branches[0].state is BranchState.WRITTEN, "progress 9 s ago"
    clock.pump([1] * 2)
    assert fanout.branches[0].state is BranchState.STALLED
    assert outlets[0].end == "aborted", "reset on purpose"
    assert listener.lost == [1]
    assert fanout.outcome is Outcome.RECEIVER_STALLED
    assert listener.ended == [fanout]


def test_abort_while_awaiting_acks_resets_who_has_not_acknowledged() -> None:
    fanout, upload, outlets, listener, _ = make_awaiting_acks(2)
    fanout.branches[0].acknowledged()
    fanout.abort(Outcome.DRAINED)
    assert fanout.outcome is Outcome.DRAINED
    assert [o.end for o in outlets] == ["finished", "aborted"]
    assert [b.state for b in fanout.branches] == [
        BranchState.DELIVERED,
        BranchState.ABORTED,
    ]
    assert listener.ended == [fanout]
    assert [o.released for o in outlets] == [1, 1]
    assert upload.state == "stopped"


def test_branch_lost_mid_transfer_is_released_once() -> None:
    fanout, _, outlets, listener = make(2)
    fanout.start(outlets, listener)
    outlets[0].producer.stopProducing()
    outlets[0].branch.stopProducing()
    fanout.connectionLost(DONE)
    assert [o.released for o in outlets] == [1, 1]
