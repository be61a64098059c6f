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
"""

from __future__ import annotations

import enum
from typing import Callable, Dict, List, Optional, Protocol, Set

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol as _TwistedProtocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from zope.interface import implementer

__all__ = ["Branch", "Fanout", "FanoutListener", "Outcome", "Outlet"]


class Outcome(enum.Enum):
    """
    How a transfer ended.

      - C{COMPLETE}: every receiver got every byte.
      - C{RECEIVER_LOST}: at least one receiver was lost before the end.
      - C{SENDER_LOST}: the upload ended before its end (disconnect, or a
        body shorter than its C{Content-Length}).
    """

    COMPLETE = "complete"
    RECEIVER_LOST = "receiver_lost"
    SENDER_LOST = "sender_lost"


class Outlet(Protocol):
    """
    One receiver, as the fan-out sees it: an L{IConsumer} that can also be
    finished or aborted.
    """

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """See L{twisted.internet.interfaces.IConsumer.registerProducer}."""

    def unregisterProducer(self) -> None:
        """See L{twisted.internet.interfaces.IConsumer.unregisterProducer}."""

    def write(self, data: bytes) -> None:
        """See L{twisted.internet.interfaces.IConsumer.write}."""

    def finish(self) -> None:
        """The last byte was written: end the response normally."""

    def abort(self) -> None:
        """The stream is truncated: end the response so that the client
        can never take it for complete (reset the connection)."""


class FanoutListener(Protocol):
    """
    Who hears about a fan-out's progress (the sender's side).
    """

    def branch_lost(self, branch: Branch) -> None:
        """A receiver was lost before the end; the others go on."""

    def fanout_ended(self, fanout: Fanout) -> None:
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
    C{HOLDING_COMPLETE} ended, all of it held       C{ENDED} (L{Fanout.start}
                                                    delivers it and finishes)
    C{STREAMING}        relayed; paused while any   C{ENDED}
                        branch is paused
    C{ENDED}            stopped or done             -
    ==================  ==========================  ==========================
    """

    HOLDING = "holding"
    HOLDING_COMPLETE = "holding_complete"
    STREAMING = "streaming"
    ENDED = "ended"


@implementer(IPushProducer)
class Branch:
    """
    The proxy producer between the upload and one receiver's connection.

    The receiver's connection calls L{pauseProducing} when its write buffer
    is full and L{resumeProducing} when it has drained; either may happen
    synchronously inside L{Outlet.write}.  L{stopProducing} means the
    receiver is gone; after it, the branch takes no more data.

    @ivar index: the receiver's number, from 1, in arrival order.
    @ivar outlet: the receiver.
    @ivar sent: bytes written to the receiver so far.
    """

    def __init__(self, fanout: Fanout, index: int, outlet: Outlet) -> None:
        self._fanout = fanout
        self.index = index
        self.outlet = outlet
        self.sent = 0

    def pauseProducing(self) -> None:
        self._fanout._branch_paused(self)

    def resumeProducing(self) -> None:
        self._fanout._branch_resumed(self)

    def stopProducing(self) -> None:
        self._fanout.lose_branch(self)

    def __repr__(self) -> str:
        return f"<Branch {self.index} sent={self.sent}>"


class Fanout(_TwistedProtocol):
    """
    Relay one upload to N outlets, pacing it by the slowest.

    The upload's producer (C{self.transport}) is paused from the moment the
    body is delivered here until L{start}; bytes that Twisted had already
    read are held (at most one socket read).  See L{State}.

    @ivar state: see L{State}.
    @ivar received: bytes of the upload received so far.
    @ivar branches: every branch, in receiver order (lost ones included).
    @ivar outcome: how the transfer ended, once L{State.ENDED}.
    @ivar completed: the number of receivers whose response was finished
        with every byte.
    @ivar clock: returns the current time, to time the transfer.
    """

    transport: Optional[IPushProducer]  # type: ignore[assignment]

    def __init__(self, listener: FanoutListener, clock: Callable[[], float]) -> None:
        self._listener = listener
        self.clock = clock
        self.state = State.HOLDING
        self.received = 0
        self.branches: List[Branch] = []
        self.outcome: Optional[Outcome] = None
        self.started_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self.completed = 0
        self._held: List[bytes] = []
        # Insertion-ordered, with O(1) removal: a receiver lost in the middle
        # of a relay pass must not be written to by the rest of that pass.
        self._active: Dict[Branch, None] = {}
        self._paused: Set[Branch] = set()

    # IProtocol, driven by the upload.

    def connectionMade(self) -> None:
        """
        The upload is connected: hold it until L{start}.
        """
        assert self.transport is not None
        self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes of the upload.  Called by the sender's request, possibly while
        the upload is paused (Twisted delivers what it already read).
        """
        self.received += len(data)
        if self.state is State.STREAMING:
            self._relay(data)
        elif self.state is State.HOLDING:
            self._held.append(data)
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
                self._abort_all()
        # In ENDED the failure is already known; HOLDING_COMPLETE cannot be
        # lost again.

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
        self.started_at = self.clock()
        self.branches = [Branch(self, i, o) for i, o in enumerate(outlets, 1)]
        self._active = dict.fromkeys(self.branches)
        self.state = State.STREAMING
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
        elif not self._paused:
            assert self.transport is not None
            self.transport.resumeProducing()

    def _relay(self, data: bytes) -> None:
        # A write can re-enter pauseProducing or lose the branch: iterate
        # over a snapshot.
        active = self._active
        for branch in tuple(active):
            if branch in active:
                branch.sent += len(data)
                branch.outlet.write(data)

    def _branch_paused(self, branch: Branch) -> None:
        if branch not in self._active:
            return
        first = not self._paused
        self._paused.add(branch)
        if first and self.state is State.STREAMING:
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
            self.transport.resumeProducing()

    def lose_branch(self, branch: Branch) -> None:
        """
        The receiver of C{branch} is gone (its connection was lost).  The
        others go on; when none is left, the upload is stopped.  Idempotent.
        """
        if branch not in self._active:
            return
        del self._active[branch]
        self._paused.discard(branch)
        if self.state is not State.STREAMING:
            return
        self._listener.branch_lost(branch)
        if self.state is not State.STREAMING:
            return
        if not self._active:
            self._end(Outcome.RECEIVER_LOST)
            assert self.transport is not None
            self.transport.stopProducing()
            self._listener.fanout_ended(self)
        else:
            self._resume_if_clear()

    def _finish_all(self) -> None:
        active, self._active = list(self._active), {}
        self._paused.clear()
        self.completed = len(active)
        lost = self.completed < len(self.branches)
        self._end(Outcome.RECEIVER_LOST if lost else Outcome.COMPLETE)
        for branch in active:
            branch.outlet.unregisterProducer()
            branch.outlet.finish()
        self._listener.fanout_ended(self)

    def _abort_all(self) -> None:
        active, self._active = list(self._active), {}
        self._paused.clear()
        self._end(Outcome.SENDER_LOST)
        for branch in active:
            branch.outlet.unregisterProducer()
            branch.outlet.abort()
        self._listener.fanout_ended(self)

    def _end(self, outcome: Outcome) -> None:
        """
        Enter L{State.ENDED}; called before calling out to outlets or the
        listener, so that re-entrant calls see the fan-out ended.
        """
        self.state = State.ENDED
        self.outcome = outcome
        self.ended_at = self.clock()
