# -*- test-case-name: tests.test_fanout -*-
"""
The sender's body as one push producer, copied to N receivers.

L{Fanout} is the L{IProtocol} that a sender's request body is handed to
(the same shape as L{twisted.web.iweb.IResponse.deliverBody}): its transport
is the sender's upload, an L{IPushProducer}.  Each receiver is an
L{IOutlet} (in practice a L{pipe._transfer.parties.Receiver}, over the receiver's
request) that gets its own small
L{Branch} proxy producer, so that Twisted's flow control of every receiver
connection reaches the one upload: the upload is paused while any branch is
paused and resumed when none is.

When the upload is complete, every receiver's response is finished, but the
transfer is complete only when each receiver's connection has acknowledged
every byte (L{State.AWAITING_ACKS}): until then the last megabytes may sit
in the kernels' buffers, and a receiver that dies now has not got them.

What counts as a stalled receiver or an idle upload is decided in
L{pipe._transfer.watchdog}; the fan-out drops and aborts what it is told to.
"""

from __future__ import annotations

import enum
from typing import Dict, List, Optional, Set

from twisted.internet import protocol
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from zope.interface import Interface, implementer

from pipe._transfer.outcome import Outcome
from pipe._transfer.watchdog import (
    REPORT_INTERVAL,
    IdleTimer,
    IWatched,
    IWatchedReceiver,
    Progress,
    Watchdogs,
    holding_back,
)

__all__ = [
    "Branch",
    "BranchState",
    "Fanout",
    "IFanoutListener",
    "IOutlet",
]


class IOutlet(Interface):
    """
    One receiver, as the fan-out sees it: an L{IConsumer} that can also be
    finished or aborted, and that knows how much it has not sent yet.

    After L{finish}, the outlet reports the delivery of its response to its
    branch: L{Branch.acknowledged} once the receiver's connection has
    acknowledged every byte (at once where that cannot be known),
    L{Branch.acknowledging} when it acknowledged more, and
    L{Branch.stopProducing} if the connection ends first.
    """

    def registerProducer(producer: IPushProducer, streaming: bool) -> None:
        """See L{twisted.internet.interfaces.IConsumer.registerProducer}."""

    def unregisterProducer() -> None:
        """See L{twisted.internet.interfaces.IConsumer.unregisterProducer}."""

    def write(data: bytes) -> None:
        """See L{twisted.internet.interfaces.IConsumer.write}."""

    def finish() -> None:
        """The last byte was written: end the response normally, and report
        its delivery (see above); may report it before returning."""

    def abort() -> None:
        """The stream is truncated: end the response so that the client
        can never take it for complete (reset the connection).  Also after
        L{finish}, to drop a receiver that stopped acknowledging."""

    def release() -> None:
        """The fan-out is done with this receiver (its branch reached its
        final state): stop reporting, let go of the request and of what
        watches the connection.  Called once per branch."""

    def pending() -> Optional[int]:
        """Bytes written but not yet taken by the connection, or L{None}
        when the connection cannot tell."""


class IFanoutListener(Interface):
    """
    Who hears about a fan-out's progress (the sender's side).  Called only
    once the fan-out has started.
    """

    def branch_lost(branch: Branch) -> None:
        """A receiver was lost or dropped before the end (see
        L{Branch.state}); the others go on."""

    def running_line(now: float, slowest: Optional[Branch]) -> None:
        """The transfer has streamed for another L{REPORT_INTERVAL} seconds
        (asked at the stall watchdog's check: L{_Watched.report});
        C{slowest} holds the others back now, if one does."""

    def fanout_ended(fanout: Fanout) -> None:
        """The transfer is over; L{Fanout.outcome} says how."""


class State(enum.Enum):
    """
    The states of a L{Fanout}.

    ==================  ==========================  ==========================
    state               upload                      next
    ==================  ==========================  ==========================
    C{HOLDING}          paused; bytes already read  C{HOLDING_COMPLETE} (body
                        are held (at most one read) ended), C{STREAMING}
                                                    (L{Fanout.start}),
                                                    C{ENDED} (upload lost)
    C{HOLDING_COMPLETE} ended, all of it held       C{AWAITING_ACKS}
                                                    (L{Fanout.start} copies it
                                                    and finishes)
    C{STREAMING}        copied; paused while any    C{AWAITING_ACKS} (body
                        branch is paused            ended), C{ENDED}
    C{AWAITING_ACKS}    complete; every response    C{ENDED} (no branch is
                        finished, waiting for their C{WRITTEN} any more)
                        acknowledgement
    C{ENDED}            stopped or done             -
    ==================  ==========================  ==========================

    While holding, the upload is read (and held) up to L{HOLD_LIMIT} bytes
    and paused past that: a sender that disconnects while it waits is seen
    at once, not at the next write to it.
    """

    HOLDING = "holding"
    HOLDING_COMPLETE = "holding_complete"
    STREAMING = "streaming"
    AWAITING_ACKS = "awaiting_acks"
    ENDED = "ended"


#: How much of a waiting sender's upload is read and held before it is
#: paused (one more socket read may come on top).
HOLD_LIMIT = 256 * 1024


class BranchState(enum.Enum):
    """
    The states of a L{Branch}: C{ACTIVE} while data is copied to it;
    C{WRITTEN} when its response is finished and the receiver's connection
    has not acknowledged all of it yet; then C{DELIVERED} (every byte
    acknowledged), C{LOST} (the receiver went away before that), C{STALLED}
    (dropped by the stall watchdog) or C{ABORTED} (the transfer failed as
    a whole).  C{ACTIVE} may also go straight to any of the last four.
    """

    ACTIVE = "active"
    WRITTEN = "written"
    DELIVERED = "delivered"
    LOST = "lost"
    STALLED = "stalled"
    ABORTED = "aborted"


@implementer(IPushProducer, IWatchedReceiver)
class Branch:
    """
    The proxy producer between the upload and one receiver's connection.

    The receiver's connection calls L{pauseProducing} when its write buffer
    is full and L{resumeProducing} when it has drained; either may happen
    synchronously inside L{IOutlet.write}.  L{stopProducing} means the
    receiver is gone; after it, the branch takes no more data.  After
    L{IOutlet.finish}, the outlet calls L{acknowledging} and
    L{acknowledged} (or L{stopProducing}) as its connection takes the rest.

    @ivar index: the receiver's number, from 1, in arrival order.
    @ivar outlet: the receiver.
    @ivar state: see L{BranchState}.
    @ivar sent: bytes written to the receiver so far.
    @ivar started_at: when the transfer started.
    @ivar progress: what the stall watchdog knows of this receiver.
    @ivar held_back: at how many of the stall watchdog's checks this
        receiver was the one holding the transfer back
        (L{pipe._transfer.watchdog.holding_back}).
    @ivar held_rate: the rate (MB/s) it had taken the data at, when last
        seen holding the transfer back.
    """

    held_back = 0
    held_rate = 0.0

    def __init__(self, fanout: Fanout, index: int, outlet: IOutlet, now: float) -> None:
        self._fanout = fanout
        self.index = index
        self.outlet = outlet
        self.state = BranchState.ACTIVE
        self.sent = 0
        self.started_at = now
        self.progress = Progress(now)

    def pauseProducing(self) -> None:
        self._fanout._branch_paused(self)

    def resumeProducing(self) -> None:
        self._fanout._branch_resumed(self)

    def stopProducing(self) -> None:
        self._fanout.lose_branch(self)

    def acknowledging(self) -> None:
        """
        The receiver's connection acknowledged more of the finished
        response.
        """
        if self.state is BranchState.WRITTEN:
            self.progress.progress_at = self._fanout.clock.seconds()

    def acknowledged(self) -> None:
        """
        The receiver's connection acknowledged every byte of the response.
        """
        self._fanout._branch_delivered(self)

    def finish(self) -> None:
        """
        The upload is complete: finish the receiver's response, unless it
        was lost or dropped meanwhile.
        """
        if self.state is BranchState.WRITTEN:
            self.outlet.unregisterProducer()
            self.outlet.finish()

    def drop(self) -> None:
        """
        Reset the receiver's connection (the transfer failed, or the
        receiver stalled).
        """
        self.outlet.unregisterProducer()
        self.outlet.abort()

    # IWatchedReceiver

    def is_written(self) -> bool:
        return self.state is BranchState.WRITTEN

    def is_paused(self) -> bool:
        return self in self._fanout._paused

    def pending(self) -> Optional[int]:
        return self.outlet.pending()

    def __repr__(self) -> str:
        return f"<Branch {self.index} {self.state.value} sent={self.sent}>"


class Fanout(protocol.Protocol):
    """
    Copy one upload to N outlets, pacing it by the slowest.

    Until L{start}, the upload is read and held up to L{HOLD_LIMIT} bytes,
    then paused.  See L{State}.

    @ivar state: see L{State}.
    @ivar listener: who hears about branches lost and the end (the
        transfer, L{IFanoutListener}), given to L{start}: only a started
        fan-out calls it.
    @ivar received: bytes of the upload received so far.
    @ivar branches: every branch, in receiver order (lost ones included).
    @ivar outcome: how the transfer ended, once L{State.ENDED}.
    @ivar watched: this fan-out as its watchdogs see it.
    """

    transport: Optional[IPushProducer]  # type: ignore[assignment]
    listener: IFanoutListener

    def __init__(
        self,
        clock: IReactorTime,
        watchdogs: Optional[Watchdogs] = None,
    ) -> None:
        self.clock = clock
        self.watchdogs = watchdogs = watchdogs or Watchdogs()
        self.state = State.HOLDING
        self.received = 0
        self.branches: List[Branch] = []
        self.outcome: Optional[Outcome] = None
        self.started_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self._held: List[bytes] = []
        # The ACTIVE branches while streaming, the WRITTEN ones while awaiting
        # acknowledgements; ordered, with O(1) removal (a receiver lost
        # during a copy pass is not written to by the rest of the pass).
        self._active: Dict[Branch, None] = {}
        self._paused: Set[Branch] = set()
        self._last_data = 0.0
        self.watched = watched = _Watched(self)
        self._idle = IdleTimer(clock, watchdogs, watched.wanting_since, watched.idle)

    # IProtocol, driven by the upload.

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes of the upload.  Called by the sender's request, possibly while
        the upload is paused (Twisted hands on what it already read).
        C{data} may be a C{memoryview} of a read or L{pipe._http.chunked.Pieces}
        (see L{pipe._http.request.StreamingRequest.deliver_body}): only its
        C{len()} is taken, and it is handed to the outlets as it is.
        """
        self.received += len(data)
        if self.state is State.STREAMING:
            self._last_data = self.clock.seconds()
            self._copy_to_branches(data)
        elif self.state is State.HOLDING:
            self._held.append(data)
            if self.received >= HOLD_LIMIT:
                assert self.transport is not None
                self.transport.pauseProducing()
        elif self.state is not State.ENDED:
            # (In ENDED the transfer failed; the sender is being cut off.)
            raise RuntimeError(f"upload data in state {self.state}")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """
        The upload ended: completely if C{reason} is L{ResponseDone}, else
        cut short.  Nothing to do in the other states (the end is known).
        """
        complete = reason is not None and reason.check(ResponseDone) is not None
        if self.state is State.HOLDING:
            if complete:
                self.state = State.HOLDING_COMPLETE
            else:
                # Nobody was started: the sender's side forgets the waiting
                # sender itself, so the listener is not called.
                self._held = []
                self._end(Outcome.SENDER_LOST)
        elif self.state is State.STREAMING:
            if complete:
                self._finish_all()
            else:
                self.abort(Outcome.SENDER_LOST)

    # The transfer.

    def start(self, outlets: List[IOutlet], listener: IFanoutListener) -> None:
        """
        Begin copying to C{outlets}: register a L{Branch} with each, copy
        what was held, and let the upload flow unless a branch is paused;
        tell C{listener} of every branch lost and of the end.

        @raise RuntimeError: if the fan-out is not holding.
        """
        if self.state not in (State.HOLDING, State.HOLDING_COMPLETE):
            raise RuntimeError(f"start in state {self.state}")
        self.listener = listener
        complete = self.state is State.HOLDING_COMPLETE
        now = self.started_at = self._last_data = self.clock.seconds()
        self.branches = [Branch(self, i, o, now) for i, o in enumerate(outlets, 1)]
        self._active = dict.fromkeys(self.branches)
        self.state = State.STREAMING
        self.watchdogs.watch(self.watched)
        for branch in self.branches:
            branch.outlet.registerProducer(branch, True)
        held, self._held = _one_piece(self._held), []
        for data in held:
            if self.state is State.STREAMING:
                self._copy_to_branches(data)
        if self.state is not State.STREAMING:
            return
        if complete:
            self._finish_all()
        elif not self._paused:
            assert self.transport is not None
            self.transport.resumeProducing()
            self._idle.arm()

    def _copy_to_branches(self, data: bytes) -> None:
        # A write can re-enter pauseProducing or lose the branch: iterate
        # over a snapshot, skipping branches lost during this pass.
        active = self._active
        for branch in tuple(active):
            if branch in active:
                branch.sent += len(data)
                branch.outlet.write(data)

    def _branch_paused(self, branch: Branch) -> None:
        if branch not in self._active or self.state is not State.STREAMING:
            return
        first = not self._paused
        self._paused.add(branch)
        if first:
            self._idle.disarm()
            assert self.transport is not None
            self.transport.pauseProducing()

    def _branch_resumed(self, branch: Branch) -> None:
        if branch in self._paused:
            self._paused.discard(branch)
            self._resume_if_clear()

    def _resume_if_clear(self) -> None:
        if not self._paused and self.state is State.STREAMING:
            assert self.transport is not None
            self._last_data = self.clock.seconds()
            self.transport.resumeProducing()
            self._idle.arm()

    def lose_branch(
        self, branch: Branch, state: BranchState = BranchState.LOST
    ) -> None:
        """
        The receiver of C{branch} is gone (C{state} C{LOST}) or dropped
        (C{STALLED}), while streaming or before its connection acknowledged
        everything.  The others go on; when none is left, the upload is
        stopped.  Idempotent.
        """
        if branch not in self._active:
            return
        del self._active[branch]
        self._paused.discard(branch)
        branch.state = state
        branch.outlet.release()
        was = self.state
        if was in (State.STREAMING, State.AWAITING_ACKS):
            self.listener.branch_lost(branch)
        if was is State.AWAITING_ACKS:
            self._end_if_all_acknowledged()
        elif self.state is not State.STREAMING:
            return
        elif self._active:
            self._resume_if_clear()
        else:
            self._end(_failure_outcome(self.branches))
            assert self.transport is not None
            self.transport.stopProducing()
            self.listener.fanout_ended(self)

    def abort(self, outcome: Outcome) -> None:
        """
        End a running transfer as a failure: every receiver still active or
        awaiting acknowledgement is aborted (reset) and the upload is
        stopped.  Does nothing unless streaming or awaiting acknowledgements.
        """
        if self.state not in (State.STREAMING, State.AWAITING_ACKS):
            return
        active, self._active = list(self._active), {}
        self._paused.clear()
        self._end(outcome)
        for branch in active:
            branch.state = BranchState.ABORTED
            branch.drop()
            branch.outlet.release()
        if outcome is not Outcome.SENDER_LOST:
            assert self.transport is not None
            self.transport.stopProducing()
        self.listener.fanout_ended(self)

    def _finish_all(self) -> None:
        """
        The upload is complete: finish every active receiver's response and
        await their acknowledgements (which may come while this runs).
        """
        written = list(self._active)
        self._paused.clear()
        self._idle.disarm()
        self.state = State.AWAITING_ACKS
        now = self.clock.seconds()
        for branch in written:
            branch.state = BranchState.WRITTEN
            branch.progress.progress_at = now
        for branch in written:
            branch.finish()
        self._end_if_all_acknowledged()

    def _branch_delivered(self, branch: Branch) -> None:
        if branch.state is not BranchState.WRITTEN or branch not in self._active:
            return
        del self._active[branch]
        branch.state = BranchState.DELIVERED
        branch.outlet.release()
        self._end_if_all_acknowledged()

    def _end_if_all_acknowledged(self) -> None:
        if self.state is not State.AWAITING_ACKS or self._active:
            return
        failed = any(b.state is not BranchState.DELIVERED for b in self.branches)
        self._end(_failure_outcome(self.branches) if failed else Outcome.COMPLETE)
        self.listener.fanout_ended(self)

    def _end(self, outcome: Outcome) -> None:
        """Enter L{State.ENDED} before calling out, for re-entrant calls to see."""
        self.state = State.ENDED
        self.outcome = outcome
        self.ended_at = self.clock.seconds()
        self._idle.disarm()
        self.watchdogs.unwatch(self.watched)

    @property
    def completed(self) -> int:
        """The number of receivers whose connection acknowledged every byte."""
        return sum(1 for b in self.branches if b.state is BranchState.DELIVERED)

    @property
    def written(self) -> int:
        """Bytes written to receivers, summed over receivers."""
        return sum(b.sent for b in self.branches)


def _one_piece(held: List[bytes]) -> List[bytes]:
    """
    What a waiting sender's upload held, as one piece: one write to each
    receiver, so that a receiver whose socket is full keeps the unsent rest
    of one shared piece (see L{pipe._http.rest}), not copies of later ones.
    """
    return [b"".join(map(bytes, held))] if len(held) > 1 else held


def _failure_outcome(branches: List[Branch]) -> Outcome:
    """
    How a transfer that lost receivers ended: stalled if one was dropped
    for stalling, else lost.
    """
    if any(b.state is BranchState.STALLED for b in branches):
        return Outcome.RECEIVER_STALLED
    return Outcome.RECEIVER_LOST


@implementer(IWatched)
class _Watched:
    """
    A L{Fanout} as its watchdogs see it (L{pipe._transfer.watchdog}): the receivers
    the stall check visits, and whether the upload is wanted, for the idle
    timer.
    """

    # When the sender last heard how it goes (None: not yet).
    _reported_at: Optional[float] = None

    def __init__(self, fanout: Fanout) -> None:
        self._fanout = fanout
        self.clock = fanout.clock

    def watched_receivers(self) -> List[Branch]:
        return list(self._fanout._active)

    def is_watched(self, receiver: IWatchedReceiver) -> bool:
        return receiver in self._fanout._active

    def drop_stalled(self, receiver: IWatchedReceiver) -> bool:
        assert isinstance(receiver, Branch)
        fanout = self._fanout
        receiver.drop()
        fanout.lose_branch(receiver, BranchState.STALLED)
        return fanout.state in (State.STREAMING, State.AWAITING_ACKS)

    def report(self) -> None:
        """
        Note who holds the transfer back now; every L{REPORT_INTERVAL}
        seconds of streaming, have the listener tell the sender.
        """
        fanout = self._fanout
        if fanout.state is not State.STREAMING or fanout.started_at is None:
            return
        slowest: Optional[Branch] = holding_back(fanout._active)  # type: ignore[assignment]
        now = self.clock.seconds()
        if slowest is not None:
            slowest.held_back += 1
            slowest.held_rate = _rate(slowest.progress.taken, now - slowest.started_at)
        if now - (self._reported_at or fanout.started_at) >= REPORT_INTERVAL:
            self._reported_at = now
            fanout.listener.running_line(now, slowest)

    def wanting_since(self) -> Optional[float]:
        """
        When the upload last gave data, if the fan-out wants more now
        (streaming, and no branch paused); else L{None}.
        """
        fanout = self._fanout
        if fanout.state is not State.STREAMING or fanout._paused:
            return None
        return fanout._last_data

    def idle(self) -> None:
        """
        The upload gave nothing for the idle timeout: abort.
        """
        self._fanout.abort(Outcome.IDLE_TIMEOUT)


def _rate(count: int, seconds: float) -> float:
    """
    MB/s of C{count} bytes in C{seconds} (0 for none).
    """
    return count / seconds / 1e6 if seconds > 0 else 0.0
