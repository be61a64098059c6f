# -*- test-case-name: tests.test_end_to_end -*-
"""
The sender and the receivers of a pipe, as HTTP requests.

A L{Sender} wraps the sender's request: it owns the L{Fanout} its upload is
delivered to, writes the progress lines of its response, and frees the path
when the transfer ends.  A L{Receiver} wraps a receiver's request and is the
L{pipe._fanout.Outlet} the fan-out writes to.
"""

from __future__ import annotations

import enum
import hashlib
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple, cast

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import _messages as messages
from ._channel import pending_bytes
from ._fanout import Branch, BranchState, Fanout, Outcome, State, Watchdogs
from ._guard import Grant
from ._refusal import Refusal
from ._relay import Relay
from ._rendezvous import Rejected, Stage

if TYPE_CHECKING:
    from ._channel import StreamingChannel
    from ._request import StreamingRequest

__all__ = ["PROGRESS_INTERVAL", "Receiver", "Sender"]

#: While a sender waits, a progress line is written at least this often: the
#: write draws a reset from a client that died while its upload was paused
#: (its close is queued behind unsent data), so that a dead sender is noticed
#: within two intervals.
PROGRESS_INTERVAL = 2.0

#: Media types a browser would run script from (also every C{+xml} type);
#: receivers get C{text/plain}.
_ACTIVE_TYPES = (
    b"text/html",
    b"text/xml",
    b"application/xml",
    b"application/xhtml+xml",
    b"image/svg+xml",
)


def path_digest(path: bytes) -> str:
    """
    A short digest naming a path in logs (the path itself is a credential).
    """
    return hashlib.sha256(path).hexdigest()[:12]


def path_for_log(path: bytes, relay: Relay) -> str:
    """
    How logs name a path: its digest, or the escaped path itself when the
    operator asked for C{--log-paths}.
    """
    return messages.show(path, 1024) if relay.settings.log_paths else path_digest(path)


def client_host(request: StreamingRequest) -> str:
    """
    The client's host (the key of the per-address limit).
    """
    address = request.getClientAddress()
    return str(getattr(address, "host", None) or address)


def client_address(request: StreamingRequest) -> str:
    """
    The client's address as C{host:port} (or the address's string form).
    """
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def safe_content_type(value: Optional[bytes]) -> bytes:
    """
    The C{Content-Type} receivers get for a sender's C{value}: the same,
    except that types a browser would run script from (HTML, XML, and any
    C{+xml} type such as SVG or XHTML) become C{text/plain} (parameters
    kept), so a pipe cannot serve pages into a browser's origin.
    """
    if not value:
        return b"application/octet-stream"
    media, sep, params = value.partition(b";")
    media = media.strip().lower()
    if media in _ACTIVE_TYPES or media.endswith(b"+xml"):
        return b"text/plain" + sep + params
    return value


class Phase(enum.Enum):
    """
    The phases of a party.

      - C{WAITING}: registered on its path, the transfer has not started.
      - C{TRANSFERRING}: the transfer runs.
      - C{ENDED}: the transfer ended, or the party left or was sent away
        while waiting.
    """

    WAITING = "waiting"
    TRANSFERRING = "transferring"
    ENDED = "ended"


class SenderResponse(enum.Enum):
    """
    How a sender's response is written (request header
    C{Txpipe-Sender-Response}).

      - C{STREAM}: C{200} as soon as the sender is registered, then progress
        lines while it waits and transfers, then the final line.
      - C{DEFERRED}: nothing until the transfer ends (or the sender is sent
        away while waiting), then C{200} and the final line only.  For
        proxies that stop forwarding a request body once the response has
        begun (nginx's C{proxy_pass}).
    """

    STREAM = "stream"
    DEFERRED = "deferred"


class _Party:
    """
    What senders and receivers share: the request, the path, presence in
    the relay, and the wait timer.

    @ivar phase: see L{Phase}.
    @ivar wait: the seconds this party may wait (0: no limit).
    @ivar grant: the party's verified signed URL, spent when its transfer
        starts (L{None} when unsigned).
    """

    def __init__(
        self,
        request: StreamingRequest,
        path: bytes,
        n: int,
        relay: Relay,
        wait: float,
        grant: Optional[Grant] = None,
    ) -> None:
        self.request = request
        self.path = path
        self.n = n
        self.relay = relay
        self.wait = wait
        self.grant = grant
        self.joined_at = relay.reactor.seconds()
        self.address = client_address(request)
        self.host = client_host(request)
        self.phase = Phase.WAITING
        self._wait_call: Optional[IDelayedCall] = None

    def _join(self, join: Callable[[bytes, int, Any], None]) -> None:
        """
        Count the party present, then join its path with C{join} (which may
        start, and even finish, the transfer before it returns); if it is
        still waiting afterwards, start its wait timer.

        @raise pipe._rendezvous.Rejected: the path refuses this party.
        """
        self.request.notifyFinish().addErrback(self._lost)
        self.relay.enter(self, self.host)  # type: ignore[arg-type]
        try:
            join(self.path, self.n, self)
        except Rejected:
            self._end()
            raise
        if self.wait and self.phase is Phase.WAITING:
            self._wait_call = self.relay.reactor.callLater(  # type: ignore[attr-defined]
                self.wait, self._wait_expired
            )

    def _stop_waiting(self) -> None:
        call, self._wait_call = self._wait_call, None
        if call is not None and call.active():
            call.cancel()

    def _end(self) -> None:
        """
        Enter L{Phase.ENDED} and leave the relay.  Idempotent.
        """
        self.phase = Phase.ENDED
        self._stop_waiting()
        self.relay.leave(self)  # type: ignore[arg-type]

    def _wait_expired(self) -> None:
        raise NotImplementedError()

    def _lost(self, reason: Failure) -> None:
        raise NotImplementedError()

    # Party (for the relay)

    def is_waiting(self) -> bool:
        return self.phase is Phase.WAITING

    def abort_transfer(self, outcome: Outcome) -> None:
        """
        Receivers leave aborting to their sender's fan-out.
        """

    def transferred(self) -> Tuple[int, int]:
        return (0, 0)

    def settling(self) -> bool:
        return False


class Receiver(_Party):
    """
    One receiver: the L{pipe._fanout.Outlet} over its request, and the
    L{pipe._channel.DeliveryWatcher} of its response once finished.

    @ivar branch: the fan-out branch feeding this receiver, once started.
    @ivar undelivered_bytes: when its connection ended after the response
        was finished but before the peer acknowledged all of it, how many
        bytes were never acknowledged.
    """

    branch: Optional[Branch] = None
    undelivered_bytes: Optional[int] = None
    # The connection, kept from the moment the response is finished (the
    # request forgets it then) until the delivery is settled.
    _channel: Optional[StreamingChannel] = None

    def join(self) -> None:
        """
        Register on the path and wait for the transfer.

        @raise pipe._rendezvous.Rejected: the path refuses this receiver.
        """
        self._join(self.relay.rendezvous.join_receiver)

    def _lost(self, reason: Failure) -> None:
        phase = self.phase
        self._end()
        if phase is Phase.WAITING:
            self.relay.rendezvous.leave(self.path, self)
        elif phase is Phase.TRANSFERRING and self.branch is not None:
            self.branch.stopProducing()

    def _wait_expired(self) -> None:
        """
        The pipe did not start in time: answer 504, saying who was missing.
        """
        self._wait_call = None
        if self.phase is not Phase.WAITING:
            return
        self.relay.statistics.wait_timed_out()
        has_sender, receivers = self.relay.rendezvous.parties(self.path)
        self.relay.rendezvous.leave(self.path, self)
        self._end()
        self.request.send_plain(
            504, messages.wait_timed_out(self.wait, has_sender, receivers, self.n)
        )

    def sender_gave_up(self, seconds: float, receivers: int) -> None:
        """
        The sender's own wait timed out, and the pipe with it: answer 504.
        """
        self._end()
        self.request.send_plain(
            504, messages.sender_wait_timed_out(seconds, receivers, self.n)
        )

    def shut_down(self) -> None:
        if self.phase is not Phase.WAITING:
            return
        self.relay.rendezvous.leave(self.path, self)
        self._end()
        refusal = Refusal.unavailable(messages.shutting_down(), "shutting_down")
        self.request.send_plain(refusal.code, refusal.body, refusal.headers)

    def open(self, sender: StreamingRequest) -> None:
        """
        The transfer starts: send C{200} and the headers taken from the
        sender's request.
        """
        self.phase = Phase.TRANSFERRING
        self._stop_waiting()
        request = self.request
        headers = sender.requestHeaders
        content_type = headers.getRawHeaders(b"content-type", [None])[0]
        request.start_stream(safe_content_type(content_type))
        length = sender.body_length
        if length is not None:
            request.setHeader(b"content-length", b"%d" % (length,))
        disposition = headers.getRawHeaders(b"content-disposition")
        if disposition:
            request.setHeader(b"content-disposition", disposition[0])
        piping = headers.getRawHeaders(b"x-piping")
        if piping:
            request.responseHeaders.setRawHeaders(b"x-piping", piping)
        request.write(b"")

    # Outlet

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        assert isinstance(producer, Branch)
        self.branch = producer
        if self.request.connected:
            self.request.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if self.request.connected and self.request.producer is not None:
            self.request.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.request.write(data)

    def finish(self) -> None:
        """
        End the response and watch its delivery: the branch hears
        L{Branch.acknowledged} once the client's TCP has every byte (maybe
        before this returns).  The watch begins before the response ends,
        so that what the end starts (a close, the keep-alive timers) shares
        its checks.
        """
        request = self.request
        if not request.connected:
            # Lost already (normally reported by the request's errback).
            if self.branch is not None:
                self.branch.stopProducing()
            return
        channel = self._channel = cast("StreamingChannel", request.channel)
        channel.watch_delivery(self, self._pace())
        request.finish()
        channel.check_delivery()

    def _pace(self) -> Optional[float]:
        """
        How fast this receiver took the transfer's data so far (bytes per
        second), if known.
        """
        branch = self.branch
        if branch is None:
            return None
        elapsed = self.relay.reactor.seconds() - branch.started_at
        return branch.sent / elapsed if elapsed > 0 and branch.sent else None

    def abort(self) -> None:
        self._end()
        channel = self._channel
        if channel is not None:
            channel.reset()
        else:
            self.request.abort()

    def settle(self) -> None:
        self._end()
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.unwatch_delivery(self)

    def pending(self) -> Optional[int]:
        """
        Bytes written that the connection has not taken yet: what Twisted
        buffers while streaming; once the response is finished, also what
        the kernel holds unacknowledged (L{None}: cannot be known).
        """
        finished = self._channel
        if finished is not None:
            return finished.unacknowledged()
        channel = self.request.channel
        if channel is None:
            return 0
        return pending_bytes(channel.transport)

    # DeliveryWatcher

    def delivery_progress(self) -> None:
        if self.branch is not None:
            self.branch.acknowledging()

    def delivered(self) -> None:
        if self.branch is not None:
            self.branch.acknowledged()

    def undelivered(self, unacknowledged: int) -> None:
        self.undelivered_bytes = unacknowledged
        if self.branch is not None:
            self.branch.stopProducing()


class Sender(_Party):
    """
    The sender of a pipe: its request, its upload's L{Fanout}, and its
    response of progress lines.

    Phases (see L{Phase}): C{WAITING} from L{join} until the rendezvous calls
    L{start}; C{TRANSFERRING} until the fan-out ends; C{ENDED}.  The upload
    is taken into the fan-out, held paused, when the sender is registered.
    With L{SenderResponse.STREAM} the response begins (C{200}) then too, and
    a progress line is written whenever the receiver count changes and every
    L{PROGRESS_INTERVAL} seconds; with L{SenderResponse.DEFERRED} it begins
    only when the sender's pipe ends (C{100 Continue}, if asked for, is sent
    when the transfer starts).
    """

    log = Logger()

    def __init__(
        self,
        request: StreamingRequest,
        path: bytes,
        n: int,
        relay: Relay,
        wait: float,
        grant: Optional[Grant] = None,
        response: SenderResponse = SenderResponse.STREAM,
    ) -> None:
        super().__init__(request, path, n, relay, wait, grant)
        self.response = response
        settings = relay.settings
        self.fanout = Fanout(
            self,
            relay.reactor,
            Watchdogs(settings.stall_timeout, settings.min_rate, settings.idle_timeout),
        )
        self._opened = False
        self._receivers_present = 0
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = relay.reactor

    def join(self) -> None:
        """
        Register on the path (the caller turns a L{Rejected} into a
        response); if the transfer did not start at once, begin the response
        and wait.

        @raise pipe._rendezvous.Rejected: the path refuses this sender.
        """
        self._join(self.relay.rendezvous.join_sender)
        if self.phase is not Phase.WAITING:
            return
        self._take_upload()
        if self.response is SenderResponse.STREAM:
            self._open()
            self.request.write(messages.waiting(self.n, self._receivers_present))
            self._heartbeat.start(PROGRESS_INTERVAL, now=False).addErrback(
                lambda f: self.log.failure("progress heartbeat failed", f)
            )

    def _take_upload(self) -> None:
        """
        Take the upload, held paused, into the fan-out, unless it is there
        already (the fan-out has it as its transport).
        """
        if self.fanout.transport is None:
            self.request.deliver_body(self.fanout)

    def _open(self) -> None:
        """
        Send C{200} (after C{100 Continue} if asked).  Idempotent.
        """
        if self._opened:
            return
        self._opened = True
        request = self.request
        request.start_stream(b"text/plain; charset=utf-8")
        request.write(b"")

    def _beat(self) -> None:
        if self.phase is Phase.WAITING and self.request.connected:
            self.request.write(messages.waiting(self.n, self._receivers_present))

    def _end(self) -> None:
        if self._heartbeat.running:
            self._heartbeat.stop()
        super()._end()

    def _lost(self, reason: Failure) -> None:
        """
        The sender's connection is gone.  While waiting, leave the path; a
        running transfer learns it from the upload (L{Fanout.connectionLost}).
        """
        if self.phase is Phase.WAITING:
            self._end()
            self.relay.rendezvous.leave(self.path, self)
            self.log.info(
                "sender of {pipe} left while waiting ({present} of {n} receivers)",
                pipe=path_for_log(self.path, self.relay),
                present=self._receivers_present,
                n=self.n,
            )

    def _give_up(self, line: bytes, outcome: Outcome) -> None:
        """
        End a waiting sender: forget the pipe, tell the sender, end its
        response abnormally (after letting the line reach it).
        """
        receivers = self.relay.rendezvous.abandon(self.path)
        self._end()
        self.relay.statistics.transfer_ended(outcome, self.fanout.received, 0)
        self._log_end(outcome, 0.0)
        if self.request.connected:
            self._open()
            self.request.write(line)
            self.request.end_abnormally(linger=True)
        for receiver in receivers:
            if outcome is Outcome.WAIT_TIMEOUT:
                receiver.sender_gave_up(self.wait, len(receivers))
            else:
                receiver.shut_down()

    def _wait_expired(self) -> None:
        self._wait_call = None
        if self.phase is not Phase.WAITING:
            return
        self.relay.statistics.wait_timed_out()
        _, present = self.relay.rendezvous.parties(self.path)
        self._give_up(
            messages.wait_timed_out(self.wait, True, present, self.n),
            Outcome.WAIT_TIMEOUT,
        )

    def shut_down(self) -> None:
        if self.phase is Phase.WAITING:
            self._give_up(messages.shutting_down(), Outcome.DRAINED)

    def abort_transfer(self, outcome: Outcome) -> None:
        if self.phase is Phase.TRANSFERRING:
            self.fanout.abort(outcome)

    # SenderParty

    def transferred(self) -> Tuple[int, int]:
        if self.phase is Phase.TRANSFERRING:
            return (self.fanout.received, self.fanout.delivered)
        return (0, 0)

    def settling(self) -> bool:
        return self.phase is Phase.TRANSFERRING and self.fanout.state is State.SETTLING

    def receivers_changed(self, connected: int, n: int) -> None:
        previous, self._receivers_present = self._receivers_present, connected
        if not self._opened or not self.request.connected:
            return
        if connected > previous:
            self.request.write(messages.receiver_joined(connected, n))
        else:
            self.request.write(messages.receiver_left(connected, n))

    def start(self, receivers: List[Receiver]) -> None:
        """
        Exactly C{n} receivers are here: start the transfer.  Whatever goes
        wrong on the way fails this transfer alone (see L{_start_failed});
        it never leaves the path taken or a party counted.
        """
        try:
            self._start(receivers)
        except Exception:
            self._start_failed(receivers, Failure())

    def _start(self, receivers: List[Receiver]) -> None:
        self.phase = Phase.TRANSFERRING
        self._stop_waiting()
        if self._heartbeat.running:
            self._heartbeat.stop()
        relay = self.relay
        relay.spend([self.grant, *(r.grant for r in receivers)])
        now = relay.reactor.seconds()
        for party in (self, *receivers):
            relay.statistics.party_waited(now - party.joined_at)
        self._receivers_present = len(receivers)
        self._take_upload()
        if self.response is SenderResponse.STREAM:
            self._open()
            self.request.write(messages.receiver_joined(len(receivers), self.n))
            self.request.write(messages.started(self.n))
        else:
            self.request.send_continue()
        for receiver in receivers:
            receiver.open(self.request)
        self.fanout.start(list(receivers))

    def _start_failed(self, receivers: List[Receiver], failure: Failure) -> None:
        """
        An unexpected error while starting the transfer: log it, then fail
        the transfer as a whole (every party gets an C{[ERROR]} line or a
        reset), free the path and the party counts.  Each step is attempted
        on its own, so one more error cannot leave the rest undone.
        """
        pipe = path_for_log(self.path, self.relay)
        self.log.failure("starting the transfer of {pipe} failed", failure, pipe=pipe)
        fanout = self.fanout
        if fanout.state in (State.STREAMING, State.SETTLING):
            # The fan-out ends it the usual way, through fanout_ended.
            _attempt(self.log, pipe, fanout.abort, Outcome.SERVER_ERROR)
        rendezvous = self.relay.rendezvous
        if rendezvous.stage(self.path) is not Stage.RUNNING:
            return
        _attempt(self.log, pipe, rendezvous.release, self.path)
        self._end()
        self.relay.statistics.transfer_ended(Outcome.SERVER_ERROR, fanout.received, 0)
        for receiver in receivers:
            _attempt(self.log, pipe, receiver.abort)
        request = self.request
        if request.connected and not request.finished:
            _attempt(self.log, pipe, self._open)
            _attempt(
                self.log,
                pipe,
                request.write,
                messages.failed(fanout.received, 0, self.n, _INTERNAL_ERROR),
            )
            _attempt(self.log, pipe, request.end_abnormally)
        elif request.connected:
            _attempt(self.log, pipe, request.abort)

    # FanoutListener

    def branch_lost(self, branch: Branch) -> None:
        receiver = cast(Receiver, branch.outlet)
        if branch.state is BranchState.STALLED:
            self.relay.statistics.receiver_stalled()
        if not self._opened or not self.request.connected:
            return
        if branch.state is BranchState.STALLED:
            line = messages.receiver_stalled(
                branch.index,
                receiver.address,
                branch.sent,
                self.relay.settings.stall_timeout,
            )
        elif receiver.undelivered_bytes is not None:
            line = messages.receiver_lost_unacknowledged(
                branch.index, receiver.address, receiver.undelivered_bytes
            )
        else:
            line = messages.receiver_lost(branch.index, receiver.address, branch.sent)
        self.request.write(line)

    def fanout_ended(self, fanout: Fanout) -> None:
        outcome = fanout.outcome
        assert outcome is not None and fanout.started_at is not None
        self.relay.rendezvous.release(self.path)
        self._end()
        seconds = (fanout.ended_at or fanout.started_at) - fanout.started_at
        self.relay.statistics.transfer_ended(
            outcome, fanout.received, fanout.delivered, seconds
        )
        self._log_end(outcome, seconds)
        request = self.request
        if not request.connected:
            return
        self._open()
        if outcome is Outcome.COMPLETE:
            request.write(
                messages.done(fanout.received, fanout.completed, self.n, seconds)
            )
            request.finish()
            return
        request.write(
            messages.failed(
                fanout.received, fanout.completed, self.n, _why(fanout, self)
            )
        )
        request.end_abnormally()

    def _log_end(self, outcome: Outcome, seconds: float) -> None:
        """
        The one event of an ended transfer.  Its text is formatted here,
        once, with an f-string: a log observer formats the event's
        C{log_format}, C{"{line}"}, at the cost of one field instead of ten
        (twisted.logger's formatter is pure Python).  Every value is also a
        field of its own, for JSON logs.
        """
        fanout = self.fanout
        pipe = path_for_log(self.path, self.relay)
        received = fanout.received
        completed = fanout.completed
        rate = received / seconds / 1e6 if seconds > 0 else 0.0
        receivers = ", ".join(cast(Receiver, b.outlet).address for b in fanout.branches)
        self.log.info(
            "{line}",
            line=(
                f"transfer {pipe} {outcome.value}: {received} bytes to {completed}"
                f" of {self.n} receivers in {seconds:.3f} s ({rate:.1f} MB/s);"
                f" sender {self.address}, receivers {receivers}"
            ),
            pipe=pipe,
            outcome=outcome.value,
            bytes=received,
            completed=completed,
            n=self.n,
            seconds=seconds,
            rate=rate,
            sender=self.address,
            receivers=receivers,
        )


#: The reason a sender's last line gives for an unexpected server error.
_INTERNAL_ERROR = "an internal error in the server (see its log)"


def _attempt(log: Logger, pipe: str, step: Callable[..., object], *args: Any) -> None:
    """
    Run one step of failing a transfer; log an error it raises and go on.
    """
    try:
        step(*args)
    except Exception:
        log.failure("failing the transfer of {pipe}: a step failed", pipe=pipe)


def _why(fanout: Fanout, sender: Sender) -> str:
    """
    The reason a transfer failed, for the sender's last line.
    """
    outcome = fanout.outcome
    settings = sender.relay.settings
    if outcome is Outcome.SERVER_ERROR:
        return _INTERNAL_ERROR
    if outcome is Outcome.SENDER_LOST:
        return f"the upload ended early after {fanout.received} bytes"
    if outcome is Outcome.IDLE_TIMEOUT:
        return f"the sender sent nothing for {settings.idle_timeout:g} s"
    if outcome is Outcome.DRAINED:
        return "server shutting down"
    if fanout.completed == 0 and not any(
        b.state is BranchState.ABORTED for b in fanout.branches
    ):
        return "every receiver disconnected or stalled"
    lost = len(fanout.branches) - fanout.completed
    return f"{lost} of {sender.n} receivers disconnected or stalled before the end"
