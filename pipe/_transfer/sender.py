# -*- test-case-name: tests.test_end_to_end -*-
"""
The sender of a pipe, and the two ways its response is written.

A L{Sender} wraps the sender's request while it waits: it joins the path,
takes the upload into its L{Fanout} (held, up to a bound, until the
transfer starts), keeps the wait timer, and ends a pipe that never starts.
Once matched, its L{pipe._transfer.transfer.Transfer} owns the transfer and
starts the fan-out, as the fan-out's listener.

Its response is one of two small strategies, chosen by the request header
C{Txpipe-Sender-Response} (L{SenderResponse}): L{StreamResponse} writes
progress lines from the moment the sender is registered, L{DeferredResponse}
writes nothing until the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Tuple

from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from pipe._compat.logger import pinned_logger
from pipe._http import window
from pipe._transfer import messages as messages
from pipe._transfer.fanout import Fanout, State
from pipe._transfer.guard import Grant
from pipe._transfer.outcome import Outcome
from pipe._transfer.parse import PipeRequest, SenderResponse
from pipe._transfer.parties import Phase, _Party, path_for_log
from pipe._transfer.record import record_end
from pipe._transfer.registry import Registry
from pipe._transfer.rendezvous import ISenderParty, Match

if TYPE_CHECKING:
    from pipe._http.request import StreamingRequest
    from pipe._transfer.parties import Receiver

__all__ = [
    "PROGRESS_INTERVAL",
    "DeferredResponse",
    "Sender",
    "SenderResponse",
    "StreamResponse",
]

#: While a sender waits, a progress line is written at least this often: the
#: write draws a reset from a client that died while its upload was paused
#: (its close is queued behind unsent data), so that a dead sender is noticed
#: within two intervals.
PROGRESS_INTERVAL = 2.0


class _Response:
    """
    What both ways of writing a sender's response share: it begins once
    (C{200}, after C{100 Continue} if the client asked), and ends with one
    last line.
    """

    #: Whether the sender hears how its transfer goes while it runs
    #: (L{pipe._transfer.transfer.Transfer.running_line}).
    streams = False

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._opened = False

    def _write_lines(self, lines: bytes) -> None:
        """
        Write C{lines}, after C{200} (and C{100 Continue} if asked) if the
        response has not begun: the status, headers and first lines in one
        write.
        """
        request = self._sender.request
        if not self._opened:
            self._opened = True
            request.start_stream(b"text/plain; charset=utf-8")
        request.write(lines)

    def waiting(self) -> None:
        """
        The sender waits for its receivers.
        """

    def receivers_changed(self, previous: int, connected: int) -> None:
        """
        The number of receivers waiting went from C{previous} to
        C{connected}.
        """

    def started(self, receivers: int) -> None:
        """
        The transfer starts, to C{receivers} receivers.
        """

    def line(self, line: bytes) -> None:
        """
        A line about the running transfer (a receiver lost).
        """

    def stop(self) -> None:
        """
        Write nothing more on a timer.
        """

    def end(self, line: bytes, complete: bool, linger: bool = False) -> None:
        """
        End the response with C{line}: normally if the transfer is
        C{complete}, else abnormally (see
        L{pipe._http.request.StreamingRequest.end_abnormally}).
        """
        self.stop()
        request = self._sender.request
        if not request.connected:
            return
        self._write_lines(line)
        if complete:
            request.finish()
        else:
            request.end_abnormally(linger=linger)


class StreamResponse(_Response):
    """
    C{200} as soon as the sender is registered; then a line whenever the
    number of receivers changes, at least every L{PROGRESS_INTERVAL}
    seconds while it waits, when the transfer starts, and for each receiver
    lost; then the last line.
    """

    log = pinned_logger("pipe._sender.StreamResponse")
    streams = True

    def __init__(self, sender: Sender) -> None:
        super().__init__(sender)
        self._heartbeat: Optional[LoopingCall] = None

    def waiting(self) -> None:
        sender = self._sender
        self._write_lines(messages.waiting(sender.n, sender.receivers_present))
        self._heartbeat = heartbeat = LoopingCall(self._beat)
        heartbeat.clock = sender.registry.reactor
        heartbeat.start(PROGRESS_INTERVAL, now=False).addErrback(
            lambda f: self.log.failure("progress heartbeat failed", f)
        )

    def _beat(self) -> None:
        sender = self._sender
        if sender.phase is Phase.WAITING and sender.request.connected:
            sender.request.write(messages.waiting(sender.n, sender.receivers_present))

    def receivers_changed(self, previous: int, connected: int) -> None:
        if connected > previous:
            self.line(messages.receiver_joined(connected, self._sender.n))
        else:
            self.line(messages.receiver_left(connected, self._sender.n))

    def started(self, receivers: int) -> None:
        self.stop()
        n = self._sender.n
        if receivers < n:
            self._write_lines(messages.started_quorum(receivers, n, self._sender.wait))
            return
        self._write_lines(messages.receiver_joined(receivers, n) + messages.started(n))

    def line(self, line: bytes) -> None:
        if self._opened and self._sender.request.connected:
            self._sender.request.write(line)

    def stop(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None and heartbeat.running:
            heartbeat.stop()


class DeferredResponse(_Response):
    """
    Nothing until the end: then C{200} and the last line only.  When the
    transfer starts, C{100 Continue} (if the client asked) lets the upload
    begin.
    """

    def started(self, receivers: int) -> None:
        self._sender.request.send_continue()


#: The response class of each mode.
_RESPONSES = {
    SenderResponse.STREAM: StreamResponse,
    SenderResponse.DEFERRED: DeferredResponse,
}


@implementer(ISenderParty)
class Sender(_Party):
    """
    The sender of a pipe while it waits: its request, its upload's
    L{Fanout}, its response (L{StreamResponse} or L{DeferredResponse}).

    Phases (see L{Phase}): C{WAITING} from L{join} until its transfer
    begins (L{begin}); C{TRANSFERRING} until the transfer ends; C{ENDED}.
    The upload is taken into the fan-out, held paused, when the sender is
    registered; the transfer starts it.

    @ivar receivers_present: how many receivers wait on the path.
    """

    log = pinned_logger("pipe._sender.Sender")

    def __init__(
        self,
        request: StreamingRequest,
        pipe: PipeRequest,
        registry: Registry,
        grant: Optional[Grant] = None,
        start: Optional[Callable[[Match[Sender, Receiver]], None]] = None,
    ) -> None:
        """
        @param start: what starts a transfer (the resource's, as for a
            match made by a join), for a quorum start at this sender's
            wait deadline (L{None}: no quorum start).
        """
        super().__init__(request, pipe, registry, grant)
        self._start_transfer = start
        self.fanout = Fanout(registry.reactor, registry.watchdogs)
        self.response: _Response = _RESPONSES[pipe.response](self)
        self.receivers_present = 0

    def join(self) -> Optional[Match[Sender, Receiver]]:
        """
        Register on the path; if the transfer cannot start at once, take the
        upload and begin the response (for a streamed response) and wait.

        @return: the match, if this sender completes it: the caller starts
            its transfer.
        @raise pipe._transfer.rendezvous.Rejected: the path refuses this sender.
        """
        match = self._join(self.registry.rendezvous.join_sender)
        if match is None:
            self._take_upload()
            self.response.waiting()
        return match

    def _take_upload(self) -> None:
        """
        Take the upload, held paused, into the fan-out, unless it is there
        already (the fan-out has it as its transport).
        """
        if self.fanout.transport is None:
            self.request.deliver_body(self.fanout)

    def begin(self, receivers: int) -> None:
        """
        The transfer starts, to C{receivers} receivers: stop waiting, take
        the upload, tell the sender.
        """
        self.phase = Phase.TRANSFERRING
        self._stop_waiting()
        self.receivers_present = receivers
        self._take_upload()
        connection = self.request.connection
        if connection is not None:
            # Larger reads for fewer receivers, within the window's budget.
            connection.set_read_size(window.read_size(receivers))
        self.response.started(receivers)

    def end(self) -> None:
        self.response.stop()
        super().end()

    def _lost(self, reason: Failure) -> None:
        """
        The sender's connection is gone.  While waiting, leave the path; a
        running transfer learns it from the upload (L{Fanout.connectionLost}).
        """
        if self.phase is Phase.WAITING:
            self.end()
            self.registry.rendezvous.leave(self.path, self)
            self.log.info(
                "sender of {pipe} left while waiting ({present} of {n} receivers)",
                pipe=path_for_log(self.path, self.registry),
                present=self.receivers_present,
                n=self.n,
            )

    def _give_up(self, line: bytes, outcome: Outcome) -> None:
        """
        End a waiting sender: forget the pipe, tell the sender, end its
        response abnormally (after letting the line reach it).
        """
        receivers = self.registry.rendezvous.abandon(self.path)
        self.end()
        record_end(
            self.registry,
            self.fanout,
            self.path,
            self.n,
            outcome,
            0,
            0.0,
            self.address,
            (),
            started=False,
        )
        self.response.end(line, complete=False, linger=True)
        for receiver in receivers:
            if outcome is Outcome.WAIT_TIMEOUT:
                receiver.sender_gave_up(self.wait, len(receivers))
            else:
                receiver.shut_down()

    def _wait_expired(self) -> None:
        """
        The sender's wait deadline: start with the receivers present if
        they are at least its quorum (C{min}), else give the pipe up.
        """
        self._wait_call = None
        if self.phase is not Phase.WAITING:
            return
        start = self._start_transfer
        match = (
            None if start is None else self.registry.rendezvous.start_quorum(self.path)
        )
        if match is not None:
            start(match)  # type: ignore[misc]
            return
        self.registry.statistics.wait_timed_out()
        _, present = self.registry.rendezvous.parties(self.path)
        self._give_up(
            messages.wait_timed_out(self.wait, True, present, self.n),
            Outcome.WAIT_TIMEOUT,
        )

    # IParty (for the registry)

    def shut_down(self) -> None:
        if self.phase is Phase.WAITING:
            self._give_up(messages.shutting_down(), Outcome.DRAINED)

    def abort_transfer(self, outcome: Outcome) -> None:
        if self.phase is Phase.TRANSFERRING:
            self.fanout.abort(outcome)

    def transferred(self) -> Tuple[int, int]:
        if self.phase is Phase.TRANSFERRING:
            return (self.fanout.received, self.fanout.written)
        return (0, 0)

    def awaiting_acks(self) -> bool:
        return (
            self.phase is Phase.TRANSFERRING
            and self.fanout.state is State.AWAITING_ACKS
        )

    # ISenderParty (for the rendezvous)

    def receivers_changed(self, connected: int, n: int) -> None:
        previous, self.receivers_present = self.receivers_present, connected
        self.response.receivers_changed(previous, connected)
