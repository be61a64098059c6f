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
from typing import TYPE_CHECKING, List, Optional, cast

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import _messages as messages
from ._fanout import Branch, Fanout, Outcome
from ._rendezvous import Rejected, Rendezvous

if TYPE_CHECKING:
    from ._request import StreamingRequest

__all__ = ["PROGRESS_INTERVAL", "Receiver", "Sender"]

#: While a sender waits, a progress line is written at least this often: the
#: write draws a reset from a client that died while its upload was paused
#: (its close is queued behind unsent data), so that a dead sender is noticed
#: within two intervals.
PROGRESS_INTERVAL = 2.0

#: Media types a browser would run script from; receivers get C{text/plain}.
_ACTIVE_TYPES = (b"text/html", b"application/xhtml+xml", b"image/svg+xml")


def path_digest(path: bytes) -> str:
    """
    A short digest naming a path in logs (the path itself is a credential).
    """
    return hashlib.sha256(path).hexdigest()[:12]


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
    except that types a browser would run script from become C{text/plain}
    (parameters kept), so a pipe cannot serve pages into a browser's origin.
    """
    if not value:
        return b"application/octet-stream"
    media, sep, params = value.partition(b";")
    if media.strip().lower() in _ACTIVE_TYPES:
        return b"text/plain" + sep + params
    return value


class Phase(enum.Enum):
    """
    The phases of a party.

      - C{WAITING}: registered on its path, the transfer has not started.
      - C{TRANSFERRING}: the transfer runs.
      - C{ENDED}: the transfer ended, or the party left while waiting.
    """

    WAITING = "waiting"
    TRANSFERRING = "transferring"
    ENDED = "ended"


class Receiver:
    """
    One receiver: the L{pipe._fanout.Outlet} over its request.

    @ivar address: the client address, for messages.
    @ivar branch: the fan-out branch feeding this receiver, once started.
    """

    def __init__(
        self, request: StreamingRequest, path: bytes, rendezvous: Rendezvous
    ) -> None:
        self.request = request
        self.path = path
        self.address = client_address(request)
        self.phase = Phase.WAITING
        self.branch: Optional[Branch] = None
        self._rendezvous = rendezvous

    def join(self, n: int) -> None:
        """
        Register on the path and wait for the transfer.

        @raise pipe._rendezvous.Rejected: the path refuses this receiver.
        """
        self.request.notifyFinish().addErrback(self._lost)
        try:
            self._rendezvous.join_receiver(self.path, n, self)
        except Rejected:
            self.phase = Phase.ENDED
            raise

    def _lost(self, reason: Failure) -> None:
        phase, self.phase = self.phase, Phase.ENDED
        if phase is Phase.WAITING:
            self._rendezvous.leave(self.path, self)
        elif phase is Phase.TRANSFERRING and self.branch is not None:
            self.branch.stopProducing()

    def open(self, sender: StreamingRequest) -> None:
        """
        The transfer starts: send C{200} and the headers taken from the
        sender's request.
        """
        self.phase = Phase.TRANSFERRING
        request = self.request
        headers = sender.requestHeaders
        request.setResponseCode(200)
        request.setHeader(
            b"content-type",
            safe_content_type(headers.getRawHeaders(b"content-type", [None])[0]),
        )
        length = sender.body_length
        if length is not None:
            request.setHeader(b"content-length", b"%d" % (length,))
        disposition = headers.getRawHeaders(b"content-disposition")
        if disposition:
            request.setHeader(b"content-disposition", disposition[0])
        piping = headers.getRawHeaders(b"x-piping")
        if piping:
            request.responseHeaders.setRawHeaders(b"x-piping", piping)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"access-control-allow-origin", b"*")
        request.write(b"")

    # Outlet

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        assert isinstance(producer, Branch)
        self.branch = producer
        if self.request.connected:
            self.request.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if self.request.connected:
            self.request.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.request.write(data)

    def finish(self) -> None:
        self.phase = Phase.ENDED
        if self.request.connected:
            self.request.finish()

    def abort(self) -> None:
        self.phase = Phase.ENDED
        self.request.abort()


class Sender:
    """
    The sender of a pipe: its request, its upload's L{Fanout}, and its
    response of progress lines.

    Phases (see L{Phase}): C{WAITING} from L{join} until the rendezvous calls
    L{start}; C{TRANSFERRING} until the fan-out ends; C{ENDED}.  The
    response begins (C{200}) when the sender is registered, the upload is
    held paused while waiting, and a progress line is written whenever the
    receiver count changes and every L{PROGRESS_INTERVAL} seconds.
    """

    log = Logger()

    def __init__(
        self,
        request: StreamingRequest,
        path: bytes,
        n: int,
        rendezvous: Rendezvous,
        reactor: IReactorTime,
    ) -> None:
        self.request = request
        self.path = path
        self.n = n
        self.address = client_address(request)
        self.phase = Phase.WAITING
        self.fanout = Fanout(self, reactor.seconds)
        self._rendezvous = rendezvous
        self._reactor = reactor
        self._opened = False
        self._present = 0
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor

    def join(self) -> None:
        """
        Register on the path (the caller turns a L{Rejected} into a
        response); if the transfer did not start at once, begin the response
        and wait.

        @raise pipe._rendezvous.Rejected: the path refuses this sender.
        """
        self.request.notifyFinish().addErrback(self._lost)
        try:
            self._rendezvous.join_sender(self.path, self.n, self)
        except Rejected:
            self.phase = Phase.ENDED
            raise
        if self.phase is Phase.WAITING:
            self._open()
            self.request.write(messages.waiting(self.n, self._present))
            self._heartbeat.start(PROGRESS_INTERVAL, now=False).addErrback(
                lambda f: self.log.failure("progress heartbeat failed", f)
            )

    def _open(self) -> None:
        """
        Send C{200} (after C{100 Continue} if asked) and take the upload,
        held paused, into the fan-out.  Idempotent.
        """
        if self._opened:
            return
        self._opened = True
        request = self.request
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"access-control-allow-origin", b"*")
        request.write(b"")
        request.deliver_body(self.fanout)

    def _beat(self) -> None:
        if self.phase is Phase.WAITING and self.request.connected:
            self.request.write(messages.waiting(self.n, self._present))

    def _stop_heartbeat(self) -> None:
        if self._heartbeat.running:
            self._heartbeat.stop()

    def _lost(self, reason: Failure) -> None:
        """
        The sender's connection is gone.  While waiting, leave the path; a
        running transfer learns it from the upload (L{Fanout.connectionLost}).
        """
        self._stop_heartbeat()
        if self.phase is Phase.WAITING:
            self.phase = Phase.ENDED
            self._rendezvous.leave(self.path, self)
            self.log.info(
                "sender of {pipe} left while waiting ({connected} of {n} receivers)",
                pipe=path_digest(self.path),
                connected=self._present,
                n=self.n,
            )

    # SenderParty

    def receivers_changed(self, connected: int, n: int) -> None:
        previous, self._present = self._present, connected
        if not self._opened or not self.request.connected:
            return
        if connected > previous:
            self.request.write(messages.receiver_joined(connected, n))
        else:
            self.request.write(messages.receiver_left(connected, n))

    def start(self, receivers: List[Receiver]) -> None:
        self.phase = Phase.TRANSFERRING
        self._stop_heartbeat()
        self._open()
        self._present = len(receivers)
        self.request.write(messages.receiver_joined(len(receivers), self.n))
        self.request.write(messages.started(self.n))
        for receiver in receivers:
            receiver.open(self.request)
        self.fanout.start(list(receivers))

    # FanoutListener

    def branch_lost(self, branch: Branch) -> None:
        receiver = branch.outlet
        assert isinstance(receiver, Receiver)
        if self.request.connected:
            self.request.write(
                messages.receiver_lost(branch.index, receiver.address, branch.sent)
            )

    def fanout_ended(self, fanout: Fanout) -> None:
        self.phase = Phase.ENDED
        self._rendezvous.release(self.path)
        outcome = fanout.outcome
        assert outcome is not None and fanout.started_at is not None
        seconds = (fanout.ended_at or fanout.started_at) - fanout.started_at
        self.log.info(
            "transfer {pipe} {outcome}: {bytes} bytes to {completed} of {n} receivers"
            " in {seconds:.3f} s (sender {sender}, receivers {receivers})",
            pipe=path_digest(self.path),
            outcome=outcome.value,
            bytes=fanout.received,
            completed=fanout.completed,
            n=self.n,
            seconds=seconds,
            sender=self.address,
            receivers=", ".join(
                cast(Receiver, b.outlet).address for b in fanout.branches
            ),
        )
        request = self.request
        if not request.connected:
            return
        if outcome is Outcome.COMPLETE:
            request.write(
                messages.done(fanout.received, fanout.completed, self.n, seconds)
            )
            request.finish()
            return
        if outcome is Outcome.SENDER_LOST:
            why = f"the upload ended early after {fanout.received} bytes"
        elif fanout.completed == 0:
            why = "every receiver disconnected"
        else:
            lost = len(fanout.branches) - fanout.completed
            why = f"{lost} of {self.n} receivers disconnected before the end"
        request.write(messages.failed(fanout.received, fanout.completed, self.n, why))
        request.end_abnormally()
