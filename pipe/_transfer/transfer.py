# -*- test-case-name: tests.test_hardening -*-
"""
One transfer, from the match of its parties to its end.

What happens to a transfer, start to end, is in this module:

  1. The rendezvous matches one sender with exactly C{n} receivers and
     returns the L{pipe._transfer.rendezvous.Match} (the path is then running); the
     resource that handled the last join creates a L{Transfer} and calls
     L{Transfer.start}.
  2. L{Transfer.start} spends the parties' signed URLs, counts their waits,
     begins the sender's response (L{pipe._transfer.sender}), opens every
     receiver's response, and starts the sender's L{Fanout}, which copies
     the upload to them and calls this transfer back (its
     L{pipe._transfer.fanout.IFanoutListener}, given at the start).  Whatever
     raises on the way fails this transfer alone (L{Transfer._start_failed}).
  3. While it runs, L{Transfer.branch_lost} tells the sender about each
     receiver lost or dropped, and a streamed sender hears every few
     seconds which receiver holds the others back
     (L{Transfer.running_line}, L{pipe._transfer.pace}).
  4. When the fan-out ends (every receiver's TCP acknowledged every byte,
     or it failed), L{Transfer.fanout_ended} counts the outcome, writes
     the one log event (L{pipe._transfer.record.record_end}), releases the path
     and the parties' counts (in C{try/finally}), and ends the sender's
     response with C{done} or C{[ERROR]}.

A transfer started at its sender's wait deadline with a quorum (fewer
than C{n} receivers, at least the sender's C{min}; see
L{pipe._transfer.sender.Sender}) is the same, with C{joined} less than
C{n}: its lines say how many never joined, and its end closes the path to
late receivers until the sender's wait has passed since the start
(L{pipe._transfer.registry.Registry.close_to_late_receivers}) instead of
freeing it.

A transfer that never starts (its sender's wait timed out, the server
drained) is ended by its sender, with the same record
(L{pipe._transfer.record.record_end}).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

from twisted.python.failure import Failure
from zope.interface import implementer

from pipe._transfer import messages as messages
from pipe._transfer.fanout import Branch, BranchState, Fanout, IFanoutListener, State
from pipe._transfer.outcome import Outcome
from pipe._transfer.parties import path_for_log
from pipe._transfer.record import log as _log
from pipe._transfer.record import record_end

if TYPE_CHECKING:
    from pipe._transfer.parties import Receiver
    from pipe._transfer.registry import Registry
    from pipe._transfer.rendezvous import Match
    from pipe._transfer.sender import Sender

__all__ = ["Transfer", "TransferState"]

#: The reason a sender's last line gives for an unexpected server error.
INTERNAL_ERROR = "an internal error in the server (see its log)"


class TransferState(enum.Enum):
    """
    The states of a L{Transfer}.

      - C{MATCHED}: created, not started.
      - C{RUNNING}: started; the fan-out copies the upload.
      - C{ENDED}: the outcome is counted and logged, the path and the
        parties released, the sender answered.
    """

    MATCHED = "matched"
    RUNNING = "running"
    ENDED = "ended"


@implementer(IFanoutListener)
class Transfer:
    """
    One transfer: the owner of a match from its start to its end, and what
    hears the sender's fan-out (its L{IFanoutListener}).

    @ivar state: see L{TransferState}.
    @ivar sender: the sender.
    @ivar receivers: the receivers, in arrival order.
    @ivar joined: how many receivers it started with: C{n}, or fewer
        after a quorum start.
    @ivar fanout: the sender's fan-out, which copies the upload.
    """

    def __init__(self, registry: Registry, match: Match[Sender, Receiver]) -> None:
        self.registry = registry
        self.path = match.path
        self.n = match.n
        self.sender = match.sender
        self.receivers = match.receivers
        self.joined = len(match.receivers)
        self.fanout: Fanout = match.sender.fanout
        self.state = TransferState.MATCHED

    def start(self) -> None:
        """
        Start the transfer.  Whatever goes wrong on the way fails this
        transfer alone (see L{_start_failed}); it never leaves the path
        taken or a party counted.
        """
        self.state = TransferState.RUNNING
        try:
            self._begin()
        except Exception:
            self._start_failed(Failure())

    def _begin(self) -> None:
        registry, sender, receivers = self.registry, self.sender, self.receivers
        registry.spend([sender.grant, *(r.grant for r in receivers)])
        now = registry.reactor.seconds()
        for party in (sender, *receivers):
            registry.statistics.party_waited(now - party.joined_at)
        if self.joined < self.n:
            registry.statistics.quorum_started(self.joined, self.n)
        sender.begin(self.joined)
        for receiver in receivers:
            receiver.open(sender.request)
        self.fanout.start(list(receivers), self)

    def _start_failed(self, failure: Failure) -> None:
        """
        An unexpected error while starting: log it, then fail the transfer
        as a whole (every party gets an C{[ERROR]} line or a reset), free
        the path and the party counts.  Each step is attempted on its own,
        so one more error cannot leave the rest undone.
        """
        pipe = path_for_log(self.path, self.registry)
        _log.failure("starting the transfer of {pipe} failed", failure, pipe=pipe)
        fanout = self.fanout
        if fanout.state in (State.STREAMING, State.AWAITING_ACKS):
            # The fan-out ends it the usual way, through fanout_ended.
            self._attempt(fanout.abort, Outcome.SERVER_ERROR)
        if self.state is TransferState.ENDED:
            return
        self.state = TransferState.ENDED
        try:
            self._attempt(
                self.registry.statistics.transfer_ended,
                Outcome.SERVER_ERROR,
                fanout.received,
                0,
            )
            for receiver in self.receivers:
                self._attempt(receiver.abort)
        finally:
            self._release()
        request = self.sender.request
        if request.connected and not request.finished:
            line = messages.failed(
                fanout.received, 0, self.n, INTERNAL_ERROR, self.joined
            )
            self._attempt(self.sender.response.end, line, False)
        elif request.connected:
            connection = request.connection
            if connection is not None:
                self._attempt(connection.reset)

    def _release(self) -> None:
        """
        Free the path (after a quorum start: close it to late receivers)
        and every party's count, each step on its own.
        """
        registry = self.registry
        try:
            if self.joined < self.n:
                started = self.fanout.started_at or registry.reactor.seconds()
                registry.close_to_late_receivers(self.path, started + self.sender.wait)
            else:
                registry.rendezvous.release(self.path)
        finally:
            for party in (self.sender, *self.receivers):
                self._attempt(party.end)

    def _attempt(self, step: Callable[..., object], *args: Any) -> None:
        """
        Run one step of failing or ending this transfer; log an error it
        raises and go on.
        """
        try:
            step(*args)
        except Exception:
            _log.failure(
                "ending the transfer of {pipe}: a step failed",
                pipe=path_for_log(self.path, self.registry),
            )

    # IFanoutListener

    def running_line(self, now: float, slowest: Optional[Branch]) -> None:
        """
        Tell a streamed sender how the transfer goes, and which receiver
        holds the others back (L{pipe._transfer.watchdog.holding_back}),
        at what rate it has taken the data so far.
        """
        fanout = self.fanout
        if not self.sender.response.streams:
            return
        active = sum(1 for b in fanout.branches if b.state is BranchState.ACTIVE)
        if slowest is None:
            line = messages.running(fanout.received, active, None, 0.0)
        else:
            line = messages.running(
                fanout.received, active, _who(slowest), slowest.held_rate
            )
        self.sender.response.line(line)

    def branch_lost(self, branch: Branch) -> None:
        receiver: Receiver = branch.outlet  # type: ignore[assignment]
        who = _who(branch)
        if branch.state is BranchState.STALLED:
            self.registry.statistics.receiver_stalled()
            line = messages.receiver_stalled(
                who, branch.sent, self.registry.settings.stall_timeout
            )
        elif receiver.undelivered_bytes is not None:
            line = messages.receiver_lost_unacknowledged(
                who, receiver.undelivered_bytes
            )
        else:
            line = messages.receiver_lost(who, branch.sent)
        self.sender.response.line(line)

    def fanout_ended(self, fanout: Fanout) -> None:
        outcome = fanout.outcome
        assert outcome is not None and fanout.started_at is not None
        self.state = TransferState.ENDED
        seconds = (fanout.ended_at or fanout.started_at) - fanout.started_at
        complete = outcome is Outcome.COMPLETE
        try:
            record_end(
                self.registry,
                fanout,
                self.path,
                self.n,
                outcome,
                fanout.written,
                seconds,
                self.sender.address,
                [receiver.label for receiver in self.receivers],
                tokens=[self.sender.grant, *(r.grant for r in self.receivers)],
                never_joined=self.n - self.joined,
                lost=() if complete else _lost(fanout),
            )
        except Exception:
            _log.failure(
                "recording the end of the transfer of {pipe}",
                pipe=path_for_log(self.path, self.registry),
            )
        finally:
            self._release()
        if complete:
            slowest = _slowest(fanout.branches) if self.joined > 1 else None
            line = messages.done(
                fanout.received, fanout.completed, self.n, seconds, self.joined, slowest
            )
        else:
            why = _why(fanout, self.joined, self.registry)
            line = messages.failed(
                fanout.received, fanout.completed, self.n, why, self.joined
            )
        self.sender.response.end(line, complete)


def _who(branch: Branch) -> str:
    """
    How the sender's lines name the receiver of C{branch}.
    """
    receiver: Receiver = branch.outlet  # type: ignore[assignment]
    return messages.receiver(branch.index, receiver.name, receiver.address)


def _lost(fanout: Fanout) -> List[str]:
    """
    The log labels of the receivers that did not get every byte.
    """
    return [
        b.outlet.label  # type: ignore[attr-defined]
        for b in fanout.branches
        if b.state is not BranchState.DELIVERED
    ]


def _slowest(branches: List[Branch]) -> Optional[Tuple[str, float]]:
    """
    The slowest receiver of a complete transfer (by name, or as the lines
    name an unnamed receiver), and the rate it took the data at (MB/s) when
    last seen holding the others back: the one seen holding them back
    most often (L{Branch.held_back}, sampled at the stall watchdog's
    checks).  L{None} for a transfer too short to be seen.
    """
    branch = max(branches, key=lambda b: b.held_back)
    if not branch.held_back:
        return None
    name: Optional[str] = branch.outlet.name  # type: ignore[attr-defined]
    return (_who(branch) if name is None else name), branch.held_rate


def _why(fanout: Fanout, n: int, registry: Registry) -> str:
    """
    The reason a transfer failed, for the sender's last line.
    """
    outcome = fanout.outcome
    if outcome is Outcome.SERVER_ERROR:
        return INTERNAL_ERROR
    if outcome is Outcome.SENDER_LOST:
        return f"the upload ended early after {fanout.received} bytes"
    if outcome is Outcome.IDLE_TIMEOUT:
        return f"the sender sent nothing for {registry.settings.idle_timeout:g} s"
    if outcome is Outcome.DRAINED:
        return "server shutting down"
    named = _named_lost(fanout)
    if fanout.completed == 0 and not any(
        b.state is BranchState.ABORTED for b in fanout.branches
    ):
        return "every receiver disconnected or stalled" + named
    lost = len(fanout.branches) - fanout.completed
    return f"{lost} of {n} receivers disconnected or stalled before the end" + named


def _named_lost(fanout: Fanout) -> str:
    """
    C{" (runner-7, receiver 3)"}: the receivers lost or stalled, when one of
    them has a name (else nothing: unnamed receivers are shown as they
    always were, in their own lines).
    """
    lost = [
        b for b in fanout.branches if b.state in (BranchState.LOST, BranchState.STALLED)
    ]
    names = [b.outlet.name for b in lost]  # type: ignore[attr-defined]
    if not any(name is not None for name in names):
        return ""
    shown = (
        f"receiver {b.index}" if name is None else name for b, name in zip(lost, names)
    )
    return " (" + ", ".join(shown) + ")"
