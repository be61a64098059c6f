# -*- test-case-name: tests.test_end_to_end -*-
"""
The parties of a pipe, as HTTP requests: what a sender and a receiver share
(L{_Party}: the request, the path, presence in the registry, the wait timer),
and the L{Receiver}, which wraps a receiver's request and is the
L{pipe._transfer.fanout.IOutlet} the fan-out writes to.  The sender is in
L{pipe._transfer.sender}; a started transfer is owned by L{pipe._transfer.transfer}.
"""

from __future__ import annotations

import enum
import hashlib
import re
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from pipe._http.forwarded import forwarded_client
from pipe._http.interfaces import IConnection, IDeliveryWatcher
from pipe._transfer import messages as messages
from pipe._transfer.fanout import Branch, IOutlet
from pipe._transfer.guard import Grant
from pipe._transfer.outcome import Outcome
from pipe._transfer.refusal import Refusal
from pipe._transfer.registry import IParty, Registry
from pipe._transfer.rendezvous import Match, Rejected

if TYPE_CHECKING:
    from pipe._http.request import StreamingRequest
    from pipe._transfer.parse import PipeRequest

__all__ = ["Phase", "Receiver", "client_address", "client_host", "path_for_log"]

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


def path_for_log(path: bytes, registry: Registry) -> str:
    """
    How logs name a path: its digest, or the escaped path itself when the
    operator asked for C{--log-paths}.
    """
    return (
        messages.show(path, 1024) if registry.settings.log_paths else path_digest(path)
    )


def _client(request: StreamingRequest) -> Tuple[str, Optional[int]]:
    """
    The client's host and port: the connection's peer (behind a C{haproxy:}
    listener, the client the PROXY protocol names), unless the peer is one
    of the site's C{trusted_proxies} and the request says in
    C{X-Forwarded-For} whom it forwards for (L{forwarded_client}); then that
    host, with no port.  The one place that decides who a client is; found
    once per request (the limit, the logs and the transfer event all ask).
    """
    client = request.known_client
    if client is None:
        client = request.known_client = _find_client(request)
    return client


def _find_client(request: StreamingRequest) -> Tuple[str, Optional[int]]:
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    if host is None:
        return str(address), None
    port = getattr(address, "port", None)
    connection = request.connection
    trusted = connection.site.trusted_proxies if connection is not None else ()
    if trusted:
        forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for", [])
        client = forwarded_client(host, forwarded, trusted)
        if client is not None:
            return client, None
    return str(host), port


def client_host(request: StreamingRequest) -> str:
    """
    The client's host (the key of the per-address limit).
    """
    return _client(request)[0]


def client_address(request: StreamingRequest) -> str:
    """
    The client's address as C{host:port} (C{[host]:port} for IPv6), or its
    host alone when a trusted proxy named it (or the address's string form).
    """
    if getattr(request.getClientAddress(), "host", None) is None:
        return str(request.getClientAddress())
    host, port = _client(request)
    if port is None:
        return f"[{host}]" if ":" in host else host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
#: One media type as RFC 9110 (section 8.3.1) writes it: C{type/subtype},
#: then parameters C{name=token} or C{name="quoted"}, each after a C{;}.
_MEDIA_TYPE = re.compile(
    rb"%s/%s(?:[ \t]*;[ \t]*(?:%s=(?:%s|%s))?)*[ \t]*"
    % (_TOKEN, _TOKEN, _TOKEN, _TOKEN, _QUOTED)
)


def well_formed_media_type(value: bytes) -> bool:
    """
    Whether C{value} is one well-formed media type (RFC 9110's
    C{media-type}): not a list (C{text/plain, text/html}, of which a
    browser's fetch takes the last), not a bare word, not garbage.
    """
    return _MEDIA_TYPE.fullmatch(value) is not None


def safe_content_type(value: Optional[bytes]) -> bytes:
    """
    The C{Content-Type} receivers get for a sender's C{value}: the same,
    except that types a browser would run script from (HTML, XML, and any
    C{+xml} type such as SVG or XHTML) become C{text/plain} (parameters
    kept), so a pipe cannot serve pages into a browser's origin; and
    anything but one well-formed media type (L{well_formed_media_type}),
    or none, is C{application/octet-stream}.
    """
    if not value or not well_formed_media_type(value):
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


@implementer(IParty)
class _Party:
    """
    What senders and receivers share: the request, the path, presence in
    the registry, and the wait timer.

    @ivar phase: see L{Phase}.
    @ivar wait: the seconds this party may wait (0: no limit).
    @ivar grant: the party's verified signed URL, spent when its transfer
        starts (L{None} when unsigned).
    @ivar name: a receiver's name, as its request decided it
        (L{pipe._transfer.parse.PipeRequest.name}; L{None}: unnamed, and
        always for a sender).
    @ivar label: how the transfer's log event shows the party: its
        address, after its name if it has one (C{runner-7 (10.1.4.22:5123)}).
    """

    name: Optional[str] = None

    def __init__(
        self,
        request: StreamingRequest,
        pipe: PipeRequest,
        registry: Registry,
        grant: Optional[Grant] = None,
    ) -> None:
        self.request = request
        self.path = pipe.path
        self.n = pipe.n
        self.registry = registry
        self.wait = pipe.wait
        self.grant = grant
        self.minimum = pipe.minimum
        self.joined_at = registry.reactor.seconds()
        self.label = self.address = client_address(request)
        if pipe.name is not None:
            self.name = pipe.name
            self.label = f"{pipe.name} ({self.address})"
        self.host = client_host(request)
        self.phase = Phase.WAITING
        self._wait_call: Optional[IDelayedCall] = None

    def _join(
        self,
        join: Callable[[bytes, int, Any, Optional[int]], Optional[Match[Any, Any]]],
    ) -> Optional[Match[Any, Any]]:
        """
        Count the party present, then join its path with C{join}; if that
        completes the path, return the match (the caller starts the
        transfer), else start the party's wait timer.

        @raise pipe._transfer.rendezvous.Rejected: the path refuses this party.
        """
        self.request.on_lost(self._lost)
        self.registry.enter(self, self.host)  # type: ignore[arg-type]
        try:
            match = join(self.path, self.n, self, self.minimum)
        except Rejected:
            self.end()
            raise
        if match is None and self.wait:
            self._wait_call = self.registry.reactor.callLater(  # type: ignore[attr-defined]
                self.wait, self._wait_expired
            )
        return match

    def _stop_waiting(self) -> None:
        call, self._wait_call = self._wait_call, None
        if call is not None and call.active():
            call.cancel()

    def end(self) -> None:
        """
        Enter L{Phase.ENDED} and leave the registry.  Idempotent.
        """
        if self.phase is Phase.ENDED:
            return
        self.phase = Phase.ENDED
        self._stop_waiting()
        self.registry.leave(self)  # type: ignore[arg-type]

    def _wait_expired(self) -> None:
        raise NotImplementedError()

    def shut_down(self) -> None:
        raise NotImplementedError()

    def _lost(self, reason: Failure) -> None:
        raise NotImplementedError()

    # IParty (for the registry)

    def is_waiting(self) -> bool:
        return self.phase is Phase.WAITING

    def abort_transfer(self, outcome: Outcome) -> None:
        """
        Receivers leave aborting to their sender's fan-out.
        """

    def transferred(self) -> Tuple[int, int]:
        return (0, 0)

    def awaiting_acks(self) -> bool:
        return False


@implementer(IOutlet, IDeliveryWatcher)
class Receiver(_Party):
    """
    One receiver: the L{pipe._transfer.fanout.IOutlet} over its request, and the
    L{pipe._http.interfaces.IDeliveryWatcher} of its response once finished.

    @ivar branch: the fan-out branch feeding this receiver, once started.
    @ivar undelivered_bytes: when its connection ended after the response
        was finished but before the peer acknowledged all of it, how many
        bytes were never acknowledged.
    """

    branch: Optional[Branch] = None
    undelivered_bytes: Optional[int] = None
    # The connection, kept from the moment the response is finished (the
    # request forgets it then) until the fan-out releases it.
    _channel: Optional[IConnection] = None

    def join(self) -> Optional[Match[Any, Receiver]]:
        """
        Register on the path and wait for the transfer.

        @return: the match, if this receiver completes it: the caller
            starts its transfer.
        @raise pipe._transfer.rendezvous.Rejected: the path refuses this receiver.
        """
        return self._join(self.registry.rendezvous.join_receiver)

    def _lost(self, reason: Failure) -> None:
        phase = self.phase
        self.end()
        if phase is Phase.WAITING:
            self.registry.rendezvous.leave(self.path, self)
        elif phase is Phase.TRANSFERRING and self.branch is not None:
            self.branch.stopProducing()

    def _wait_expired(self) -> None:
        """
        The pipe did not start in time: answer 504, saying who was missing.
        """
        self._wait_call = None
        if self.phase is not Phase.WAITING:
            return
        self.registry.statistics.wait_timed_out()
        has_sender, receivers = self.registry.rendezvous.parties(self.path)
        self.registry.rendezvous.leave(self.path, self)
        self.end()
        self.request.send_plain(
            504, messages.wait_timed_out(self.wait, has_sender, receivers, self.n)
        )

    def sender_gave_up(self, seconds: float, receivers: int) -> None:
        """
        The sender's own wait timed out, and the pipe with it: answer 504.
        """
        self.end()
        self.request.send_plain(
            504, messages.sender_wait_timed_out(seconds, receivers, self.n)
        )

    def shut_down(self) -> None:
        if self.phase is not Phase.WAITING:
            return
        self.registry.rendezvous.leave(self.path, self)
        self.end()
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
        # Several Content-Type lines are a list too: none of them passes.
        types = headers.getRawHeaders(b"content-type", [])
        content_type = types[0] if len(types) == 1 else None
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

    # IOutlet

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
        channel = self._channel = IConnection(request.channel)
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
        elapsed = self.registry.reactor.seconds() - branch.started_at
        return branch.sent / elapsed if elapsed > 0 and branch.sent else None

    def abort(self) -> None:
        """
        Reset this receiver's connection (the one kept since its response
        was finished, else its request's, unless that is gone): the
        connection's one reset (L{pipe._http.interfaces.IConnection.reset}).
        """
        self.end()
        connection = self._channel
        if connection is None:
            connection = self.request.connection
        if connection is not None:
            connection.reset()

    def release(self) -> None:
        self.end()
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
        channel = self.request.connection
        if channel is None:
            return 0
        return channel.unsent()

    # IDeliveryWatcher

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
