# -*- test-case-name: tests.test_fanout -*-
"""
The sender's body as one push producer, relayed to N receivers.

L{Fanout} is the L{IProtocol} that a sender's request body is delivered to
(the same shape as L{twisted.web.iweb.IResponse.deliverBody}): its transport
is the sender's upload, an L{IPushProducer}.  Each receiver is an L{Outlet}
(in practice a receiver's request) that gets its own small L{Branch} proxy
producer, so that Twisted's flow control of every receiver connection reaches
the one upload: the upload is paused while any branch is paused and resumed
when none is.

When the upload is complete, every receiver's response is finished, but the
transfer is complete only when each receiver's connection has acknowledged
every byte (L{State.SETTLING}): until then the last megabytes may sit in
the kernels' buffers, and a receiver that dies now has not got them.

Two watchdogs run during a transfer: a receiver that takes no bytes for the
stall timeout while data waits for it (or, with a minimum rate, takes them
too slowly), or that acknowledges nothing for the stall timeout while it
settles, is dropped; and an upload that delivers nothing for the idle
timeout while the fan-out wants data aborts the transfer.
"""

from __future__ import annotations

import enum
from typing import Dict, List, Optional, Protocol, Set

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol as _TwistedProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from zope.interface import implementer

from ._outcome import Outcome

__all__ = [
    "Branch",
    "BranchState",
    "Fanout",
    "FanoutListener",
    "Outlet",
    "Watchdogs",
]


class Outlet(Protocol):
    """
    One receiver, as the fan-out sees it: an L{IConsumer} that can also be
    finished or aborted, and that knows how much it has not sent yet.

    After L{finish}, the outlet reports the delivery of its response to its
    branch: L{Branch.acknowledged} once the receiver's connection has
    acknowledged every byte (at once where that cannot be known),
    L{Branch.acknowledging} when it acknowledged more, and
    L{Branch.stopProducing} if the connection ends first.
    """

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """See L{twisted.internet.interfaces.IConsumer.registerProducer}."""

    def unregisterProducer(self) -> None:
        """See L{twisted.internet.interfaces.IConsumer.unregisterProducer}."""

    def write(self, data: bytes) -> None:
        """See L{twisted.internet.interfaces.IConsumer.write}."""

    def finish(self) -> None:
        """The last byte was written: end the response normally, and report
        its delivery (see above); may report it before returning."""

    def abort(self) -> None:
        """The stream is truncated: end the response so that the client
        can never take it for complete (reset the connection).  Also after
        L{finish}, to drop a receiver that stopped acknowledging."""

    def settle(self) -> None:
        """The fan-out is done with this receiver (its branch reached its
        final state): stop reporting, release what watches the connection.
        Called once per branch."""

    def pending(self) -> Optional[int]:
        """Bytes written but not yet taken by the connection, or L{None}
        when the connection cannot tell."""


class FanoutListener(Protocol):
    """
    Who hears about a fan-out's progress (the sender's side).
    """

    def branch_lost(self, branch: Branch) -> None:
        """A receiver was lost or dropped before the end (see
        L{Branch.state}); the others go on."""

    def fanout_ended(self, fanout: Fanout) -> None:
        """The transfer is over; L{Fanout.outcome} says how."""


class _Unheard:
    """
    The listener of a fan-out whose transfer has not started: it hears
    nothing then (the listener is called only once streaming), and is
    replaced by the transfer's (see L{pipe._transfer.Transfer}).
    """

    def branch_lost(self, branch: Branch) -> None:
        raise RuntimeError("a fan-out without a listener lost a branch")

    def fanout_ended(self, fanout: Fanout) -> None:
        raise RuntimeError("a fan-out without a listener ended")


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
    C{HOLDING_COMPLETE} ended, all of it held       C{ENDED} (L{Fanout.start}
                                                    delivers it and finishes)
    C{STREAMING}        relayed; paused while any   C{SETTLING} (body ended),
                        branch is paused            C{ENDED}
    C{SETTLING}         complete; every response    C{ENDED} (no branch is
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
    SETTLING = "settling"
    ENDED = "ended"


#: How much of a waiting sender's upload is read and held before it is
#: paused (one more socket read may come on top).
HOLD_LIMIT = 256 * 1024


class BranchState(enum.Enum):
    """
    The states of a L{Branch}: C{ACTIVE} while data is relayed to it;
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


class Watchdogs:
    """
    The timeouts of running transfers (0 disables one), shared by every
    fan-out of a site, and the one periodic timer that checks all of their
    receivers for stalls: a timer per transfer would be created and
    cancelled for every small pipe, where a stall check never fires.

    The check runs every C{min(1, stall_timeout / 4)} seconds while any
    fan-out is watched, on the clock of the fan-out that started it (all
    fan-outs of a site share the site's clock); a stall is seen within that
    period of its timeout, whatever the phase of the fan-out's start.

    @ivar stall_timeout: seconds a receiver may take no bytes while data
        waits for it.
    @ivar min_rate: bytes per second below which a receiver with data
        waiting counts as stalled over a stall window.
    @ivar idle_timeout: seconds the upload may deliver nothing while the
        fan-out wants data.
    """

    log = Logger()

    def __init__(
        self, stall_timeout: float = 0, min_rate: int = 0, idle_timeout: float = 0
    ) -> None:
        self.stall_timeout = stall_timeout
        self.min_rate = min_rate
        self.idle_timeout = idle_timeout
        self._watched: Dict[Fanout, None] = {}
        self._sweep: Optional[LoopingCall] = None

    def watch(self, fanout: Fanout) -> None:
        """
        Check C{fanout}'s receivers for stalls until L{unwatch}, if stalls
        are checked at all.
        """
        if not self.stall_timeout:
            return
        self._watched[fanout] = None
        if self._sweep is None:
            self._sweep = sweep = LoopingCall(self._check_all)
            sweep.clock = fanout.clock
            sweep.start(min(1.0, self.stall_timeout / 4), now=False)

    def unwatch(self, fanout: Fanout) -> None:
        """
        Stop checking C{fanout}.  Idempotent.  The timer stops at its next
        tick if nothing is left to check.
        """
        self._watched.pop(fanout, None)

    def _check_all(self) -> None:
        for fanout in tuple(self._watched):
            if fanout not in self._watched:
                continue
            try:
                fanout.check_stalls()
            except Exception:
                self.log.failure("stall check failed")
        if not self._watched:
            sweep, self._sweep = self._sweep, None
            if sweep is not None:
                sweep.stop()


@implementer(IPushProducer)
class Branch:
    """
    The proxy producer between the upload and one receiver's connection.

    The receiver's connection calls L{pauseProducing} when its write buffer
    is full and L{resumeProducing} when it has drained; either may happen
    synchronously inside L{Outlet.write}.  L{stopProducing} means the
    receiver is gone; after it, the branch takes no more data.  After
    L{Outlet.finish}, the outlet calls L{acknowledging} and
    L{acknowledged} (or L{stopProducing}) as its connection takes the rest.

    @ivar index: the receiver's number, from 1, in arrival order.
    @ivar outlet: the receiver.
    @ivar state: see L{BranchState}.
    @ivar sent: bytes written to the receiver so far.
    @ivar started_at: when the transfer started.
    @ivar taken: bytes the receiver's connection had taken when last seen.
    @ivar progress_at: when C{taken} last grew, or nothing was waiting; once
        C{WRITTEN}, when the connection last acknowledged more.
    @ivar left: once C{WRITTEN}, what the connection had not acknowledged
        at the last stall check.
    """

    def __init__(self, fanout: Fanout, index: int, outlet: Outlet, now: float) -> None:
        self._fanout = fanout
        self.index = index
        self.outlet = outlet
        self.state = BranchState.ACTIVE
        self.sent = 0
        self.taken = 0
        self.started_at = self.progress_at = now
        self.window_at = now
        self.window_taken = 0
        self.left: Optional[int] = None

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
            self.progress_at = self._fanout.clock.seconds()

    def acknowledged(self) -> None:
        """
        The receiver's connection acknowledged every byte of the response.
        """
        self._fanout._branch_delivered(self)

    def __repr__(self) -> str:
        return f"<Branch {self.index} {self.state.value} sent={self.sent}>"


class Fanout(_TwistedProtocol):
    """
    Relay one upload to N outlets, pacing it by the slowest.

    Until L{start}, the upload is read and held up to L{HOLD_LIMIT} bytes,
    then paused.  See L{State}.

    @ivar state: see L{State}.
    @ivar listener: who hears about branches lost and the end (the
        transfer), set before L{start}.
    @ivar received: bytes of the upload received so far.
    @ivar branches: every branch, in receiver order (lost ones included).
    @ivar outcome: how the transfer ended, once L{State.ENDED}.
    """

    log = Logger()
    transport: Optional[IPushProducer]  # type: ignore[assignment]

    def __init__(
        self,
        listener: Optional[FanoutListener],
        clock: IReactorTime,
        watchdogs: Optional[Watchdogs] = None,
    ) -> None:
        self.listener: FanoutListener = listener or _Unheard()
        self.clock = clock
        self.watchdogs = watchdogs or Watchdogs()
        self.state = State.HOLDING
        self.received = 0
        self.branches: List[Branch] = []
        self.outcome: Optional[Outcome] = None
        self.started_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self._held: List[bytes] = []
        # Insertion-ordered, with O(1) removal: a receiver lost in the middle
        # of a relay pass must not be written to by the rest of that pass.
        # The ACTIVE branches while streaming, the WRITTEN ones while
        # settling.
        self._active: Dict[Branch, None] = {}
        self._paused: Set[Branch] = set()
        self._last_data = 0.0
        self._idle_call: Optional[IDelayedCall] = None

    # IProtocol, driven by the upload.

    def connectionMade(self) -> None:
        """
        The upload is connected: it is read and held until L{start} (see
        L{HOLD_LIMIT}).
        """

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes of the upload.  Called by the sender's request, possibly while
        the upload is paused (Twisted delivers what it already read).
        C{data} may be a C{memoryview} of a read or L{pipe._chunked.Pieces}
        (see L{pipe._request.StreamingRequest.deliver_body}): only its
        C{len()} is taken, and it is handed to the outlets as it is.
        """
        self.received += len(data)
        if self.state is State.STREAMING:
            self._last_data = self.clock.seconds()
            self._relay(data)
        elif self.state is State.HOLDING:
            self._held.append(data)
            if self.received >= HOLD_LIMIT:
                assert self.transport is not None
                self.transport.pauseProducing()
        elif self.state is State.ENDED:
            # The transfer failed; the sender is being cut off.
            pass
        else:
            raise RuntimeError(f"upload data in state {self.state}")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """
        The upload ended: completely if C{reason} is L{ResponseDone},
        otherwise it was cut short.
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
        # In SETTLING the body was complete, and in ENDED the end is known;
        # HOLDING_COMPLETE cannot be lost again.

    # The transfer.

    def start(self, outlets: List[Outlet]) -> None:
        """
        Begin relaying to C{outlets}: register a L{Branch} with each, relay
        what was held, and let the upload flow unless a branch is paused.

        @raise RuntimeError: if the fan-out is not holding.
        """
        if self.state not in (State.HOLDING, State.HOLDING_COMPLETE):
            raise RuntimeError(f"start in state {self.state}")
        complete = self.state is State.HOLDING_COMPLETE
        now = self.started_at = self._last_data = self.clock.seconds()
        self.branches = [Branch(self, i, o, now) for i, o in enumerate(outlets, 1)]
        self._active = dict.fromkeys(self.branches)
        self.state = State.STREAMING
        self.watchdogs.watch(self)
        for branch in self.branches:
            branch.outlet.registerProducer(branch, True)
        held, self._held = self._held, []
        for data in held:
            if self.state is not State.STREAMING:
                return
            self._relay(data)
        if self.state is not State.STREAMING:
            return
        if complete:
            self._finish_all()
            return
        if not self._paused:
            assert self.transport is not None
            self.transport.resumeProducing()
            self._arm_idle()

    def _relay(self, data: bytes) -> None:
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
            self._disarm_idle()
            assert self.transport is not None
            self.transport.pauseProducing()

    def _branch_resumed(self, branch: Branch) -> None:
        if branch not in self._paused:
            return
        self._paused.discard(branch)
        self._resume_if_clear()

    def _resume_if_clear(self) -> None:
        if not self._paused and self.state is State.STREAMING:
            assert self.transport is not None
            self._last_data = self.clock.seconds()
            self.transport.resumeProducing()
            self._arm_idle()

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
        branch.outlet.settle()
        if self.state is State.SETTLING:
            self.listener.branch_lost(branch)
            self._settle_if_done()
            return
        if self.state is not State.STREAMING:
            return
        self.listener.branch_lost(branch)
        if self.state is not State.STREAMING:
            return
        if not self._active:
            self._end(self._failure_outcome())
            assert self.transport is not None
            self.transport.stopProducing()
            self.listener.fanout_ended(self)
        else:
            self._resume_if_clear()

    def abort(self, outcome: Outcome) -> None:
        """
        End a running transfer as a failure: every receiver still active or
        settling is aborted (reset) and the upload is stopped.  Does nothing
        unless streaming or settling.
        """
        if self.state not in (State.STREAMING, State.SETTLING):
            return
        active, self._active = list(self._active), {}
        self._paused.clear()
        self._end(outcome)
        for branch in active:
            branch.state = BranchState.ABORTED
            branch.outlet.unregisterProducer()
            branch.outlet.abort()
            branch.outlet.settle()
        if outcome is not Outcome.SENDER_LOST:
            assert self.transport is not None
            self.transport.stopProducing()
        self.listener.fanout_ended(self)

    def _failure_outcome(self) -> Outcome:
        if any(b.state is BranchState.STALLED for b in self.branches):
            return Outcome.RECEIVER_STALLED
        return Outcome.RECEIVER_LOST

    def _finish_all(self) -> None:
        """
        The upload is complete: finish every active receiver's response and
        settle, waiting for each one's acknowledgement (which may come
        while this runs).
        """
        written = list(self._active)
        self._paused.clear()
        self._disarm_idle()
        self.state = State.SETTLING
        now = self.clock.seconds()
        for branch in written:
            branch.state = BranchState.WRITTEN
            branch.progress_at = now
        for branch in written:
            if branch.state is BranchState.WRITTEN:
                branch.outlet.unregisterProducer()
                branch.outlet.finish()
        self._settle_if_done()

    def _branch_delivered(self, branch: Branch) -> None:
        if branch.state is not BranchState.WRITTEN or branch not in self._active:
            return
        del self._active[branch]
        branch.state = BranchState.DELIVERED
        branch.outlet.settle()
        self._settle_if_done()

    def _settle_if_done(self) -> None:
        """
        End the transfer once no branch waits for its acknowledgement.
        """
        if self.state is not State.SETTLING or self._active:
            return
        failed = any(b.state is not BranchState.DELIVERED for b in self.branches)
        self._end(self._failure_outcome() if failed else Outcome.COMPLETE)
        self.listener.fanout_ended(self)

    def _end(self, outcome: Outcome) -> None:
        """
        Enter L{State.ENDED}; called before calling out to outlets or the
        listener, so that re-entrant calls see the fan-out ended.
        """
        self.state = State.ENDED
        self.outcome = outcome
        self.ended_at = self.clock.seconds()
        self._disarm_idle()
        self.watchdogs.unwatch(self)

    @property
    def completed(self) -> int:
        """
        The number of receivers whose connection acknowledged every byte.
        """
        return sum(1 for b in self.branches if b.state is BranchState.DELIVERED)

    @property
    def delivered(self) -> int:
        """
        Bytes written to receivers, summed over receivers.
        """
        return sum(b.sent for b in self.branches)

    # Watchdogs.

    def _arm_idle(self) -> None:
        idle = self.watchdogs.idle_timeout
        if idle and self._idle_call is None and self.state is State.STREAMING:
            self._idle_call = self.clock.callLater(idle, self._idle_expired)  # type: ignore[attr-defined]

    def _disarm_idle(self) -> None:
        call, self._idle_call = self._idle_call, None
        if call is not None and call.active():
            call.cancel()

    def _idle_expired(self) -> None:
        self._idle_call = None
        if self.state is not State.STREAMING or self._paused:
            return
        quiet = self.clock.seconds() - self._last_data
        remaining = self.watchdogs.idle_timeout - quiet
        if remaining > 0:
            self._idle_call = self.clock.callLater(remaining, self._idle_expired)  # type: ignore[attr-defined]
            return
        self.abort(Outcome.IDLE_TIMEOUT)

    def check_stalls(self) -> None:
        """
        Drop every receiver that has taken no bytes for the stall timeout
        while data waits for it, or (with a minimum rate) took fewer than
        C{min_rate} bytes per second over the last stall window while data
        waited; while settling, every receiver whose connection acknowledged
        nothing for the stall timeout.  Runs while the upload is paused,
        too: that is when a stalled receiver holds everybody back.
        """
        now = self.clock.seconds()
        stall = self.watchdogs.stall_timeout
        for branch in tuple(self._active):
            if branch not in self._active:
                continue
            if branch.state is BranchState.WRITTEN:
                if now - branch.progress_at >= stall / 2:
                    # No progress reported lately: ask the connection.
                    left = branch.outlet.pending()
                    if left is not None and (branch.left is None or left < branch.left):
                        branch.progress_at = now
                    branch.left = left
                stalled = now - branch.progress_at >= stall
            else:
                stalled = self._taking_too_little(branch, now)
            if stalled:
                branch.outlet.unregisterProducer()
                branch.outlet.abort()
                self.lose_branch(branch, BranchState.STALLED)
                if self.state not in (State.STREAMING, State.SETTLING):
                    return

    def _taking_too_little(self, branch: Branch, now: float) -> bool:
        """
        Whether an active branch has taken no bytes for the stall timeout
        while data waited for it (or too few, with a minimum rate).
        """
        stall = self.watchdogs.stall_timeout
        min_rate = self.watchdogs.min_rate
        pending = branch.outlet.pending()
        if pending is None:
            # The connection cannot say: a paused branch has data
            # waiting, and only a resume shows progress.
            pending = 1 if branch in self._paused else 0
            taken = branch.taken if pending else branch.sent
        else:
            taken = branch.sent - pending
        if taken > branch.taken or not pending:
            branch.taken = taken
            branch.progress_at = now
        stalled = now - branch.progress_at >= stall
        if not stalled and min_rate and now - branch.window_at >= stall:
            rate = (taken - branch.window_taken) / (now - branch.window_at)
            stalled = bool(pending) and rate < min_rate
            branch.window_at, branch.window_taken = now, taken
        return stalled
