# -*- test-case-name: tests.test_request -*-
"""
The connection side of streaming: an L{HTTPChannel} that hands a request its
headers before its body, the read gate that lets several parties pause one
transport, and helpers that act on a connection's transport (reset, unsent
bytes).

With L{pipe._request} and L{pipe._chunked}, this is the only code that
relies on L{twisted.web.http.HTTPChannel} and transport internals
(the network producer, the parsed request line, the idle timeout, the body
decoder, two overridden hooks, a file descriptor transport's write buffer),
all through L{pipe._compat}, which checks them against the installed
Twisted when this module is imported; C{setup.py} pins the Twisted range
that the tests prove.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Optional, Set, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.internet.tcp import Connection
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from zope.interface import implementer

from . import _compat as compat
from . import _messages as messages
from . import _tcp
from ._chunked import ChunkedDecoder
from ._delivery import Delivery, DeliveryWatcher, Linger
from ._writes import WritingChannel, pending_bytes

__all__ = [
    "UPLOAD_READ_SIZE",
    "StreamingChannel",
    "pending_bytes",
    "reset_connection",
]

#: How much of an upload one read takes from the socket (Twisted reads 64 KiB
#: by default).  Every read becomes one write to each receiver, so larger
#: reads mean fewer system calls per byte relayed; the read is shared by all
#: receivers, never copied per receiver on the direct write path.
UPLOAD_READ_SIZE = 256 * 1024

_BAD_REQUEST_BODY = messages.malformed_request()
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n"
    b"\r\n" % (len(_BAD_REQUEST_BODY),)
) + _BAD_REQUEST_BODY


def reset_connection(transport: Any) -> None:
    """
    Abort C{transport} with a TCP reset (C{SO_LINGER} 0), dropping anything
    unsent, so that no client can mistake the end for a clean close (an
    HTTP/1.0 close-delimited body would otherwise look complete).

    Works through wrapping transports (TLS); where there is no TCP socket the
    connection is aborted without the reset option.
    """
    layer = transport
    while layer is not None:
        sock = getattr(layer, "socket", None)
        if isinstance(sock, socket.socket):
            try:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            except OSError:
                pass
            break
        layer = getattr(layer, "transport", None)
    transport.abortConnection()


def _transport_of(channel: HTTPChannel) -> Any:
    """
    The transport of a connected channel.
    """
    transport = channel.transport
    assert transport is not None, "channel is not connected"
    return transport


def _tcp_socket(transport: Any) -> Optional[socket.socket]:
    """
    The TCP socket under C{transport}, through wrapping transports (TLS),
    or L{None} (no socket, or not TCP: a Unix socket).
    """
    layer = transport
    while layer is not None:
        sock = getattr(layer, "socket", None)
        if isinstance(sock, socket.socket):
            return sock if _tcp.is_tcp(sock) else None
        layer = getattr(layer, "transport", None)
    return None


@implementer(IPushProducer)
class _ReadGate:
    """
    The channel's view of its transport as a producer, shared by several
    holders: the transport is paused while any holder holds it.

    L{HTTPChannel} pauses and resumes its transport for its own reasons (a
    full write buffer, pipelined requests); the upload's consumer pauses it
    for backpressure.  Without the gate, the channel resuming for its reason
    would resume reading an upload that a slow receiver needs paused.

    @ivar _holds: the holders; the transport is paused iff it is non-empty.
    """

    _CHANNEL = "channel"

    def __init__(self, producer: IPushProducer) -> None:
        self._producer = producer
        self._holds: Set[object] = set()

    def hold(self, holder: object) -> None:
        """
        Pause the transport on behalf of C{holder}.  Idempotent per holder.
        """
        if not self._holds:
            self._producer.pauseProducing()
        self._holds.add(holder)

    def release(self, holder: object) -> None:
        """
        Drop C{holder}'s hold; resume the transport if no hold is left.
        """
        if holder not in self._holds:
            return
        self._holds.discard(holder)
        if not self._holds:
            self._producer.resumeProducing()

    @property
    def paused(self) -> bool:
        return bool(self._holds)

    # The IPushProducer that HTTPChannel itself uses.
    def pauseProducing(self) -> None:
        self.hold(self._CHANNEL)

    def resumeProducing(self) -> None:
        self.release(self._CHANNEL)

    def stopProducing(self) -> None:
        self._producer.stopProducing()

    # HTTPChannel also registers and unregisters itself through this object.
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._producer.registerProducer(producer, streaming)  # type: ignore[attr-defined]

    def unregisterProducer(self) -> None:
        self._producer.unregisterProducer()  # type: ignore[attr-defined]


#: How long a peer may acknowledge nothing of a finished response, with
#: nobody else waiting for it, when the site has no header timeout.
STUCK_PEER_TIMEOUT = 60.0


@compat.channel_hooks
class StreamingChannel(WritingChannel):
    """
    An L{HTTPChannel} whose requests see their headers before their body.

    Differences from the stock channel:
      - the transport is paused and resumed through a L{_ReadGate}, so an
        upload's backpressure and the channel's own flow control compose;
      - a request with a body is handed to
        L{StreamingRequest.headers_received} as soon as its headers are in,
        and the HTTP idle timeout is suspended until it is done (an upload
        held back by a slow receiver is not idle);
      - C{100 Continue} is not sent automatically to a request that
        streams: it sends it when it accepts the body (L{StreamingRequest.write});
      - a request that does not stream (L{pipe._mount}) is left to Twisted
        but for the read gate, the header timeout and the write path;
      - a malformed body after a response has begun ends the connection
        without writing a second status line into that response;
      - a client must send its request line and headers within the site's
        C{header_timeout} (slowloris), counted from the connection or from
        the end of its previous response;
      - on a plain TCP connection, response data is written straight to the
        socket when the transport has nothing buffered (see L{write});
      - an upload is read in pieces of up to L{UPLOAD_READ_SIZE}, and the
        body pieces that one read yields (several chunks of a chunked body)
        reach the request's body protocol as one piece (see
        L{dataReceived}); a chunked body is decoded with fewer copies (see
        L{pipe._chunked});
      - the end of a response is not the end of its delivery: whoever needs
        to know when the peer's TCP has acknowledged every byte asks
        L{watch_delivery} (also across the connection's own close: a close
        stays Twisted's graceful one, FIN after the last byte, and the wait
        goes on through a duplicate descriptor); the header and idle timers
        of a keep-alive connection start only once its last response is
        acknowledged, so that no timer resets a response still in flight.
    """

    _log = Logger()
    _read_gate: _ReadGate
    # When the request headers now awaited are due (None: none awaited), and
    # the timer that checks it; the timer is not cancelled when headers
    # arrive in time, only re-armed for the rest when it finds a later
    # deadline (a connection's requests would otherwise create and cancel
    # a timer each, twice).
    _headers_due: Optional[float] = None
    _header_check: Optional[IDelayedCall] = None
    # The abort of a stuck connection's graceful close.
    _stuck_abort: Optional[IDelayedCall] = None
    _tcp: Optional[socket.socket] = None
    _unflushed: Any = None
    _delivery: Optional[Delivery] = None
    _keep_alive: Optional[Linger] = None
    _closed: Optional[Deferred[None]] = None
    _lost = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._tcp = _tcp_socket(self.transport)
        self._read_gate = _ReadGate(compat.network_producer(self))
        compat.set_network_producer(self, self._read_gate)
        opened = getattr(getattr(self, "site", None), "channel_opened", None)
        if opened is not None:
            opened(self)
        self._await_headers()

    def _await_headers(self) -> None:
        timeout = getattr(getattr(self, "site", None), "header_timeout", 0)
        if timeout and self._headers_due is None:
            self._headers_due = self.seconds() + timeout
            if self._header_check is None:
                self._header_check = self.callLater(timeout, self._check_headers)

    def _headers_done(self) -> None:
        self._headers_due = None

    def _check_headers(self) -> None:
        """
        The header timer fired: drop the connection if the headers it waits
        for are late, else wait for the rest of their time, if any.
        """
        self._header_check = None
        due = self._headers_due
        if due is None:
            return
        left = due - self.seconds()
        if left > 0:
            self._header_check = self.callLater(left, self._check_headers)
            return
        self._headers_due = None
        self._log.info(
            "closing {peer}: no complete request headers in time",
            peer=str(self.getPeer()),
        )
        # Armed only once everything written was acknowledged: a reset
        # loses nothing.
        _transport_of(self).abortConnection()

    def requestDone(self, request: Any) -> None:
        """
        A response is complete.  On a keep-alive connection, the header and
        idle timers for the next request start only when the peer has
        acknowledged all of it (see L{Linger}).
        """
        connection = self.tcp_transport
        if connection is not None:
            connection.bufferSize = Connection.bufferSize
        # Twisted would restart its idle timeout now; next_request_timers does.
        compat.forget_idle_timeout(self)
        super().requestDone(request)
        if not self.persistent or self.transport is None:
            return
        if not self.after_held(self._await_next_request):
            self._await_next_request()

    def _await_next_request(self) -> None:
        """
        The last response is written: start the timers for the next request
        once it is acknowledged.
        """
        if self.transport is None or self.requests:
            return
        keep_alive, self._keep_alive = self._keep_alive, None
        if keep_alive is not None:
            keep_alive.stop()
        if self._delivery is None and self.all_acknowledged():
            self.next_request_timers()
            return
        self._keep_alive = keep_alive = Linger(
            self, self._give_up_after(), self.next_request_timers, self._close_stuck
        )
        self.watch_delivery(keep_alive)
        self.check_delivery()
        if self._keep_alive is keep_alive:
            keep_alive.start()

    def _give_up_after(self) -> float:
        """
        How long a peer may acknowledge nothing of a finished response,
        with nobody else waiting for it, before it is taken to be stuck.
        """
        limit = getattr(getattr(self, "site", None), "header_timeout", 0)
        return float(limit or STUCK_PEER_TIMEOUT)

    def next_request_timers(self) -> None:
        """
        Start the timers that wait for the next request (once the last
        response is acknowledged), unless one is already being handled.
        """
        self._keep_alive = None
        if self.transport is None or self.requests:
            return
        if self.timeOut:
            self.setTimeout(self.timeOut)
        self._await_headers()

    def _close_stuck(self) -> None:
        """
        Close a keep-alive connection whose peer stopped acknowledging its
        last response: gracefully, then, if even that never ends (Twisted
        cannot hand the rest to a peer that reads nothing), abort it after
        the same time again.
        """
        self._keep_alive = None
        self._log.info(
            "closing {peer}: it stopped taking its last response",
            peer=str(self.getPeer()),
        )
        self.loseConnection()
        if self._stuck_abort is None:
            self._stuck_abort = self.callLater(
                self._give_up_after(), _transport_of(self).abortConnection
            )

    # Delivery: has the peer's TCP acknowledged what was written?

    @property
    def tcp_socket(self) -> Optional[socket.socket]:
        """
        The TCP socket under this connection (also under TLS), or L{None}.
        """
        return self._tcp

    def unacknowledged(self) -> Optional[int]:
        """
        Bytes written to this connection that the peer's TCP has not
        acknowledged: what Twisted still buffers plus the kernel's send
        queue; L{None} when that cannot be known (see L{pipe._tcp}).
        """
        kernel = _tcp.unacknowledged(self._tcp)
        if kernel is None:
            return None
        return kernel + self.unsent()

    def seconds(self) -> float:
        """
        The time now, on the site's clock.
        """
        reactor = getattr(getattr(self, "site", None), "reactor", None)
        return float(reactor.seconds()) if reactor is not None else 0.0

    def all_acknowledged(self) -> bool:
        """
        Whether the peer has acknowledged everything written (also where
        that cannot be known).  One system call.
        """
        return not self.unacknowledged()

    def acknowledged(self) -> Optional[int]:
        """
        Bytes the peer has acknowledged since the connection began (L{None}
        where the platform cannot tell).
        """
        return _tcp.acknowledged(self._tcp)

    def delivery_position(self) -> Optional[Tuple[int, int]]:
        """
        Where this connection's byte stream stands: C{(acknowledged, end)},
        the bytes its peer has acknowledged and the position of the last
        byte written so far (handed to the kernel, or still in Twisted's
        buffer); L{None} where the platform cannot tell (see
        L{pipe._tcp.position}).
        """
        position = _tcp.position(self._tcp)
        if position is None:
            return None
        acknowledged, written = position
        buffered = self.unsent()
        return acknowledged, written + buffered

    def watch_delivery(
        self, watcher: DeliveryWatcher, pace: Optional[float] = None
    ) -> None:
        """
        Tell C{watcher} when the peer has acknowledged every byte written
        to this connection (by the next L{check_delivery}), or when the
        connection ends first (see L{DeliveryWatcher}).  The answer comes
        from L{check_delivery}, which the caller calls once everything is
        written, from the checks it schedules, and from the peer's close.

        @param pace: how fast the peer has been taking data (bytes per
            second), if known (see L{Delivery.watch}).
        """
        delivery = self._delivery
        if delivery is None:
            self._delivery = delivery = Delivery(self)
        delivery.watch(watcher, pace)

    def unwatch_delivery(self, watcher: DeliveryWatcher) -> None:
        """
        C{watcher} no longer wants an answer.  Idempotent.
        """
        delivery = self._delivery
        if delivery is not None:
            delivery.remove(watcher)

    def other_watchers(self, watcher: DeliveryWatcher) -> bool:
        """
        Whether anybody but C{watcher} waits for this connection's delivery.
        """
        delivery = self._delivery
        return delivery is not None and any(w is not watcher for w in delivery.watchers)

    def check_delivery(self) -> None:
        """
        Check now whether everything written was acknowledged (once held
        writes are sent, if any); may answer the watchers before it returns.
        """
        if self.after_held(self.check_delivery):
            return
        delivery = self._delivery
        if delivery is not None:
            delivery.check()

    def delivery_ended(self, delivery: Delivery) -> None:
        """
        Called by L{Delivery} when it has answered every watcher or lost
        them all.
        """
        if self._delivery is delivery:
            self._delivery = None

    def reset(self) -> None:
        """
        Reset the connection (see L{reset_connection}), even after its last
        response ended, or after it was closed while its delivery was still
        watched: the transfer it belongs to is failed on purpose.
        """
        self._stop_keep_alive()
        self.drop_held()
        delivery = self._delivery
        if delivery is not None:
            # The duplicate descriptor goes with a reset of its own, or the
            # one below would not be sent.
            delivery.reset()
        if self.transport is not None:
            reset_connection(self.transport)

    def _stop_keep_alive(self) -> None:
        keep_alive, self._keep_alive = self._keep_alive, None
        if keep_alive is not None:
            keep_alive.stop()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._headers_due = None
        for call in (self._header_check, self._stuck_abort):
            if call is not None and call.active():
                call.cancel()
        self._header_check = self._stuck_abort = None
        self._stop_keep_alive()
        delivery = self._delivery
        if delivery is not None:
            # Closed by this side, gracefully (a close after the response):
            # the kernel goes on delivering, and the wait with it.
            ours = reason.check(ConnectionDone) is not None and bool(
                getattr(self.transport, "disconnecting", False)
            )
            delivery.connection_lost(pending_bytes(self.transport) or 0, ours)
        super().connectionLost(reason)
        closed = getattr(getattr(self, "site", None), "channel_closed", None)
        if closed is not None:
            closed(self)
        self._lost = True
        if self._closed is not None:
            self._closed.callback(None)

    @property
    def closed(self) -> Deferred[None]:
        """
        Fires when the connection is lost (at once if it is).  Made when
        first asked for: most connections are never waited for.
        """
        if self._closed is None:
            self._closed = Deferred()
            if self._lost:
                self._closed.callback(None)
        return self._closed

    def dataReceived(self, data: bytes) -> None:
        """
        Parse C{data}, then hand the body pieces it held to the request's
        body protocol at once (see L{StreamingRequest.flush_body}); what the
        handling of this read writes, to any connection of the site, is
        sent when it is done (see L{pipe._batch}).
        """
        batch = self._batch
        if batch is None:
            super().dataReceived(data)
            self.flush_body()
            return
        batch.open()
        try:
            super().dataReceived(data)
            self.flush_body()
        finally:
            batch.close()

    def body_pending(self, request: Any) -> None:
        """
        C{request} holds body pieces to flush after the current read.
        """
        self._unflushed = request

    def flush_body(self) -> None:
        """
        Deliver the body pieces held by the request being read, if any.
        """
        request, self._unflushed = self._unflushed, None
        if request is not None:
            request.flush_body()

    @property
    def read_gate(self) -> _ReadGate:
        """
        The gate through which the transport's reading is paused.
        """
        return self._read_gate

    def allHeadersReceived(self) -> None:
        """
        A request's headers are in: Twisted's handling (the request decides
        in C{gotLength} whether it streams); one that streams with a body
        renders now.  One that does not is left to Twisted.
        """
        self._headers_done()
        super().allHeadersReceived()
        if not self.requests[-1].streams:
            return
        decoder = compat.transfer_decoder(self)
        if type(decoder) is compat.ChunkedTransferDecoder:
            # The same rules, fewer copies (see pipe._chunked).
            compat.set_transfer_decoder(
                self, ChunkedDecoder(decoder.dataCallback, decoder.finishCallback)
            )
        if self.length != 0:
            request = self.requests[-1]
            if self.timeOut:
                compat.suspend_idle_timeout(self)
            connection = self.tcp_transport
            if connection is not None:
                connection.bufferSize = UPLOAD_READ_SIZE
            request.headers_received(*compat.request_line(self))

    def automatic_continue(self) -> None:
        """
        Called by Twisted (as its C{_send100Continue}) when the request
        whose headers are in expects C{100 Continue}.  Twisted's own answer
        for a request that does not stream (outside the pipe tree, see
        L{pipe._mount}); nothing for one that does: L{StreamingRequest}
        sends it itself, only when it accepts the body.
        """
        if self.requests and not self.requests[-1].streams:
            # Twisted writes it to the transport itself: the responses this
            # read has held for the connection (pipelined) go first.
            self.send_held()
            compat.send_continue(self)

    def answer_unparsable(self) -> None:
        """
        Answer a request Twisted cannot parse (request line, headers, body
        framing) with a complete plain-text 400 and close; if a response has
        already begun, just close, never mixing a second status into it.
        """
        started = bool(self.requests) and bool(
            getattr(self.requests[-1], "startedWriting", 0)
        )
        if not started and self.transport is not None:
            self.write(_BAD_REQUEST)
        self.loseConnection()
