# -*- test-case-name: tests.test_request -*-
"""
The connection side of streaming: an L{HTTPChannel} that hands a request its
headers before its body, the read gate that lets several parties pause one
transport, and helpers that act on a connection's transport (reset, unsent
bytes).

With L{pipe._request}, this is the only code that relies on
L{twisted.web.http.HTTPChannel} and transport internals (C{_networkProducer},
C{_command}, C{_path}, C{_version}, C{_send100Continue},
C{_respondToBadRequestAndDisconnect}, a file descriptor transport's write
buffer); C{setup.py} pins the Twisted range that the tests prove.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Set, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.internet.tcp import Connection
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from zope.interface import implementer

from . import _tcp

__all__ = [
    "UPLOAD_READ_SIZE",
    "DeliveryWatcher",
    "StreamingChannel",
    "pending_bytes",
    "reset_connection",
]

#: How much of an upload one read takes from the socket (Twisted reads 64 KiB
#: by default).  Every read becomes one write to each receiver, so larger
#: reads mean fewer system calls per byte relayed; the read is shared by all
#: receivers, never copied per receiver on the direct write path.
UPLOAD_READ_SIZE = 256 * 1024

_BAD_REQUEST_BODY = b"[ERROR] malformed HTTP request\n"
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


def pending_bytes(transport: Any) -> Optional[int]:
    """
    Bytes written to C{transport} that it has not yet handed to the kernel,
    or L{None} when the transport cannot tell.  Reads the write buffer of
    Twisted's file-descriptor transports (through wrappers such as TLS).
    """
    layer = transport
    while layer is not None:
        buffer = getattr(layer, "dataBuffer", None)
        if buffer is not None and hasattr(layer, "_tempDataLen"):
            return len(buffer) - layer.offset + layer._tempDataLen  # type: ignore[no-any-return]
        layer = getattr(layer, "transport", None)
    return None


def _tcp_socket(transport: Any) -> Optional[socket.socket]:
    """
    The socket under C{transport}, through wrapping transports (TLS), or
    L{None}.
    """
    layer = transport
    while layer is not None:
        sock = getattr(layer, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
        layer = getattr(layer, "transport", None)
    return None


def _plain_socket(transport: Any) -> Optional[socket.socket]:
    """
    The socket of C{transport} if it is a plain (not TLS) TCP connection of
    Twisted's own, which L{StreamingChannel} may write to directly; else
    L{None}.
    """
    if isinstance(transport, Connection) and not getattr(transport, "TLS", False):
        return transport.socket
    return None


def _unsent(iovec: Sequence[bytes], sent: int) -> List[bytes]:
    """
    The pieces of C{iovec} left after its first C{sent} bytes.
    """
    rest: List[bytes] = []
    for piece in iovec:
        if sent >= len(piece):
            sent -= len(piece)
        else:
            rest.append(piece[sent:] if sent else piece)
            sent = 0
    return rest


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


#: How soon after a response ends its acknowledgement is checked again, and
#: the longest interval between checks: the interval doubles from the first
#: to the last, so a receiver on loopback is seen at once and one draining
#: megabytes over a slow link costs a few checks a second.
DELIVERY_CHECK_FIRST = 0.001
DELIVERY_CHECK_MAX = 0.25


class DeliveryWatcher(Protocol):
    """
    Who waits for a connection's peer to acknowledge what was written to it
    (see L{StreamingChannel.watch_delivery}).  Each watcher hears
    L{delivery_progress} any number of times, then exactly one of
    L{delivered} and L{undelivered}, unless it stops watching first.
    """

    def delivery_progress(self) -> None:
        """The peer acknowledged more bytes; some are still unacknowledged."""

    def delivered(self) -> None:
        """The peer's TCP acknowledged every byte written before the watch
        began (or the platform cannot tell, and every byte was written)."""

    def undelivered(self, unacknowledged: int) -> None:
        """The connection ended with C{unacknowledged} bytes the peer never
        acknowledged."""


class _Delivery:
    """
    The wait of one connection for its peer's acknowledgement of what was
    written to it, on behalf of its L{DeliveryWatcher}s.

    Each watcher waits for the bytes written before its first check: on
    Linux, for the stream position they end at (see L{pipe._tcp.position});
    where only the send queue can be read, for the queue to be empty.  The
    first check is made by whoever wrote the last byte
    (L{StreamingChannel.check_delivery}); later ones after intervals growing
    from L{DELIVERY_CHECK_FIRST} to L{DELIVERY_CHECK_MAX}, until no watcher
    is left.  While it waits it keeps a duplicate of the socket's
    descriptor, so that when the connection ends (the peer reset or closed
    it, or it was aborted) the kernel can still be asked how far the peer
    got.

    @ivar watchers: each watcher, with the stream position its bytes end at
        (L{None} before its first check, or where positions are unknown).
    @ivar ended: set once no watcher is left to answer.
    """

    def __init__(self, channel: StreamingChannel) -> None:
        self._channel = channel
        self.watchers: Dict[DeliveryWatcher, Optional[int]] = {}
        self.ended = False
        self._progress: Optional[int] = None
        self._interval = DELIVERY_CHECK_FIRST
        self._call: Optional[IDelayedCall] = None
        self._queue: Optional[socket.socket] = None

    def check(self) -> None:
        """
        Answer every watcher whose bytes are all acknowledged (every one,
        where that cannot be known), and check again later for the rest.
        """
        self._call = None
        if self.ended:
            return
        channel = self._channel
        position = channel.delivery_position()
        if position is None:
            unacknowledged = channel.unacknowledged()
            if not unacknowledged:
                self._answer(lambda target: True)
                return
            progress = -unacknowledged
        else:
            progress, end = position
            for watcher, target in list(self.watchers.items()):
                if target is None:
                    self.watchers[watcher] = end
            self._answer(lambda target: target is not None and target <= progress)
            if self.ended:
                return
        if self._queue is None:
            self._queue = _tcp.duplicate(channel.tcp_socket)
        if self._progress is not None and progress > self._progress:
            for watcher in list(self.watchers):
                if watcher in self.watchers:
                    watcher.delivery_progress()
        self._progress = progress
        if not self.ended:
            self._call = channel.callLater(self._interval, self.check)
            self._interval = min(self._interval * 2, DELIVERY_CHECK_MAX)

    def connection_lost(self, buffered: int) -> None:
        """
        The connection ended, with C{buffered} bytes still in Twisted's
        buffer: ask the kernel, through the duplicate descriptor, how far
        the peer got, and answer every watcher.  Without a duplicate (no
        descriptor was left) nothing proves delivery.
        """
        if self.ended:
            return
        acknowledged = _tcp.acknowledged(self._queue)
        unacknowledged = _tcp.unacknowledged(self._queue)
        watchers = list(self.watchers.items())
        self.watchers.clear()
        self._end()
        for watcher, target in watchers:
            if acknowledged is not None and target is not None:
                missing = target - acknowledged
            elif unacknowledged is not None:
                missing = unacknowledged + buffered
            else:
                missing = 1
            if missing <= 0:
                watcher.delivered()
            else:
                watcher.undelivered(missing)

    def remove(self, watcher: DeliveryWatcher) -> None:
        """
        C{watcher} stops watching; with none left, the wait ends.
        """
        self.watchers.pop(watcher, None)
        if not self.watchers and not self.ended:
            self._end()

    def _answer(self, done: Callable[[Optional[int]], bool]) -> None:
        """
        Tell every watcher whose target is C{done} that it is delivered;
        end the wait when none is left.
        """
        answered = [w for w, target in self.watchers.items() if done(target)]
        for watcher in answered:
            del self.watchers[watcher]
        if not self.watchers:
            self._end()
        for watcher in answered:
            watcher.delivered()

    def _end(self) -> None:
        """
        Stop checking and close the duplicate descriptor (before calling
        out: a reset on purpose is only sent when the last descriptor of
        the socket closes).
        """
        self.ended = True
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        queue, self._queue = self._queue, None
        if queue is not None:
            queue.close()
        self._channel.delivery_ended(self)


class _KeepAlive:
    """
    The channel's own L{DeliveryWatcher} after a response on a keep-alive
    connection: the timers that wait for the next request start when the
    peer has acknowledged the whole response (L{delivered}).

    A peer that acknowledges nothing for the site's C{header_timeout} (60 s
    when that is off) while nobody else waits for the delivery is taken to
    be gone: the connection is closed (gracefully; Twisted's idle timeout
    then bounds how long an unreadable buffer may keep it).
    """

    _NO_LIMIT_GIVE_UP = 60.0

    def __init__(self, channel: StreamingChannel) -> None:
        self._channel = channel
        limit = getattr(getattr(channel, "site", None), "header_timeout", 0)
        self._limit = limit or self._NO_LIMIT_GIVE_UP
        self._call: Optional[IDelayedCall] = channel.callLater(
            self._limit, self._no_progress
        )

    def stop(self) -> None:
        """
        Stop waiting (the connection ended, or another response ended).
        """
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._channel.unwatch_delivery(self)

    def delivery_progress(self) -> None:
        if self._call is not None and self._call.active():
            self._call.reset(self._limit)

    def delivered(self) -> None:
        self.stop()
        self._channel.next_request_timers()

    def undelivered(self, unacknowledged: int) -> None:
        self.stop()

    def _no_progress(self) -> None:
        self._call = None
        delivery = self._channel._delivery
        if delivery is not None and any(w is not self for w in delivery.watchers):
            # A transfer waits for this delivery and has its own stall
            # timeout: it decides.
            self._call = self._channel.callLater(self._limit, self._no_progress)
            return
        self.stop()
        self._channel.close_stuck()


class StreamingChannel(HTTPChannel):
    """
    An L{HTTPChannel} whose requests see their headers before their body.

    Differences from the stock channel:
      - the transport is paused and resumed through a L{_ReadGate}, so an
        upload's backpressure and the channel's own flow control compose;
      - a request with a body is handed to
        L{StreamingRequest.headers_received} as soon as its headers are in,
        and the HTTP idle timeout is suspended until it is done (an upload
        held back by a slow receiver is not idle);
      - C{100 Continue} is not sent automatically: the request sends it when
        it accepts the body (see L{StreamingRequest.write});
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
        L{dataReceived});
      - the end of a response is not the end of its delivery: whoever needs
        to know when the peer's TCP has acknowledged every byte asks
        L{watch_delivery}; a close asked for meanwhile (HTTP/1.0,
        C{Connection: close}) half-closes at once (FIN after the last byte)
        and closes fully only when the watchers have their answer, and the
        header and idle timers of a keep-alive connection start only once
        its last response is acknowledged (see L{_KeepAlive}), so that no
        timer resets a connection whose response is still in flight.
    """

    _log = Logger()
    _read_gate: _ReadGate
    _header_call: Optional[IDelayedCall] = None
    _socket: Optional[socket.socket] = None
    _tcp: Optional[socket.socket] = None
    _unflushed: Any = None
    _delivery: Optional[_Delivery] = None
    _keep_alive: Optional[_KeepAlive] = None
    _closing_after_delivery = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._socket = _plain_socket(self.transport)
        self._tcp = _tcp_socket(self.transport)
        self._read_gate = _ReadGate(self._networkProducer)
        self._networkProducer = self._read_gate
        self.closed: Deferred[None] = Deferred()
        opened = getattr(getattr(self, "site", None), "channel_opened", None)
        if opened is not None:
            opened(self)
        self._await_headers()

    def _await_headers(self) -> None:
        timeout = getattr(getattr(self, "site", None), "header_timeout", 0)
        if timeout and self._header_call is None:
            self._header_call = self.callLater(timeout, self._headers_too_slow)

    def _headers_done(self) -> None:
        call, self._header_call = self._header_call, None
        if call is not None and call.active():
            call.cancel()

    def _headers_too_slow(self) -> None:
        self._header_call = None
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
        acknowledged all of it (see L{_KeepAlive}); a close (not keep-alive)
        waits for the watchers of its delivery (see L{loseConnection}).
        """
        if isinstance(self.transport, Connection):
            self.transport.bufferSize = Connection.bufferSize
        # Twisted would restart its idle timeout now; _KeepAlive does it.
        self._savedTimeOut = None
        super().requestDone(request)
        if not self.persistent or self.transport is None:
            return
        keep_alive, self._keep_alive = self._keep_alive, None
        if keep_alive is not None:
            keep_alive.stop()
        if self._delivery is None and self._all_acknowledged():
            self.next_request_timers()
            return
        self._keep_alive = keep_alive = _KeepAlive(self)
        self.watch_delivery(keep_alive)
        self.check_delivery()

    def next_request_timers(self) -> None:
        """
        Start the timers that wait for the next request (called by
        L{_KeepAlive} once the last response is acknowledged), unless one
        is already being handled.
        """
        self._keep_alive = None
        if self.transport is None or self.requests:
            return
        if self.timeOut:
            self.setTimeout(self.timeOut)
        self._await_headers()

    def close_stuck(self) -> None:
        """
        Close a keep-alive connection whose peer stopped acknowledging its
        last response (called by L{_KeepAlive}): gracefully, with Twisted's
        idle timeout running again to abort it if even that never ends.
        """
        self._keep_alive = None
        self._log.info(
            "closing {peer}: it stopped taking its last response",
            peer=str(self.getPeer()),
        )
        if self.timeOut:
            self.setTimeout(self.timeOut)
        self.loseConnection()

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
        return kernel + (pending_bytes(self.transport) or 0)

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
        return acknowledged, written + (pending_bytes(self.transport) or 0)

    def _all_acknowledged(self) -> bool:
        """
        Whether the peer has acknowledged everything written (also where
        that cannot be known).
        """
        position = self.delivery_position()
        if position is not None:
            return position[0] >= position[1]
        return not self.unacknowledged()

    def watch_delivery(self, watcher: DeliveryWatcher) -> None:
        """
        Tell C{watcher} when the peer has acknowledged every byte written
        to this connection, or when the connection ends first (see
        L{DeliveryWatcher}).  The answer comes from L{check_delivery} (the
        caller calls it once it has written everything) and the checks it
        schedules, never from this call; until then a close of the
        connection is held back (see L{loseConnection}).
        """
        delivery = self._delivery
        if delivery is None:
            self._delivery = delivery = _Delivery(self)
        delivery.watchers[watcher] = None

    def unwatch_delivery(self, watcher: DeliveryWatcher) -> None:
        """
        C{watcher} no longer wants an answer.  Idempotent.
        """
        delivery = self._delivery
        if delivery is not None:
            delivery.remove(watcher)

    def check_delivery(self) -> None:
        """
        Check now whether everything written was acknowledged; may answer
        the watchers before it returns.
        """
        delivery = self._delivery
        if delivery is not None:
            delivery.check()

    def delivery_ended(self, delivery: _Delivery) -> None:
        """
        Called by L{_Delivery} when it has its answer or lost its watchers:
        a close that waited for it happens now.
        """
        if self._delivery is delivery:
            self._delivery = None
        if self._closing_after_delivery and self._delivery is None:
            self._closing_after_delivery = False
            self.loseConnection()

    def loseConnection(self) -> None:
        """
        Close the connection once what was written is sent; while someone
        waits for its delivery (L{watch_delivery}), half-close at once on
        plain TCP (FIN after the last byte, so a client reading to the end
        of the connection sees it, while the socket stays open to count
        acknowledgements and see a reset) and close fully when the wait
        ends.
        """
        if self._delivery is None or self.transport is None:
            super().loseConnection()
            return
        if self._closing_after_delivery:
            return
        self._closing_after_delivery = True
        lose_write = getattr(self.transport, "loseWriteConnection", None)
        if lose_write is not None and self._socket is not None:
            lose_write()

    def reset(self) -> None:
        """
        Reset the connection (see L{reset_connection}), even after its last
        response ended: the transfer it belongs to is failed on purpose.
        """
        delivery = self._delivery
        if delivery is not None:
            # The duplicate descriptor must go first, or no reset is sent.
            for watcher in list(delivery.watchers):
                delivery.remove(watcher)
        if self.transport is not None:
            reset_connection(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._headers_done()
        keep_alive, self._keep_alive = self._keep_alive, None
        if keep_alive is not None:
            keep_alive.stop()
        delivery = self._delivery
        if delivery is not None:
            delivery.connection_lost(pending_bytes(self.transport) or 0)
        super().connectionLost(reason)
        closed = getattr(getattr(self, "site", None), "channel_closed", None)
        if closed is not None:
            closed(self)
        self.closed.callback(None)

    def dataReceived(self, data: bytes) -> None:
        """
        Parse C{data}, then hand the body pieces it held to the request's
        body protocol at once (see L{StreamingRequest.flush_body}).  Once
        the connection is closing (half-closed, waiting for the delivery of
        its last response), whatever the peer sends is dropped.
        """
        if self._closing_after_delivery:
            return
        super().dataReceived(data)
        self.flush_body()

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

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Any
    ) -> None:
        """
        Write a response's status line and headers as Twisted does, but
        through L{writeSequence}, so that they too go straight to the socket
        when nothing is buffered (and the body after them, in turn).
        """
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        sequence = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                sequence.extend((name, b": ", value, b"\r\n"))
        sequence.append(b"\r\n")
        self.writeSequence(sequence)

    def write(self, data: bytes) -> None:
        """
        Write response data: straight to the socket when the transport has
        nothing buffered, else through the transport (see L{writeSequence}).
        """
        if not self._write_through((data,)):
            super().write(data)

    def writeSequence(self, iovec: Sequence[bytes]) -> None:
        """
        Write response data, scatter/gather.

        Twisted's transport buffers every write until the reactor's next
        iteration: one C{epoll_ctl} to watch for writability, one to stop,
        and a join that copies the pieces (a chunk's framing and its data)
        into one string, for every write to every receiver.  When the
        transport has nothing buffered, that detour changes nothing about
        order or flow control, so the pieces go to the kernel at once with
        one C{sendmsg}; what the socket does not take is handed to the
        transport, whose buffer and producer pausing apply as always.
        """
        if not self._write_through(iovec):
            super().writeSequence(iovec)

    def _write_through(self, iovec: Sequence[bytes]) -> bool:
        """
        Send C{iovec} directly if the connection allows it, buffering any
        rest in the transport.  Returns whether C{iovec} was taken care of;
        on any socket error it was not, and the transport's own write path
        meets the error and loses the connection as it always does.
        """
        sock = self._socket
        transport = self.transport
        if (
            sock is None
            or transport is None
            or transport.dataBuffer  # type: ignore[attr-defined]
            or transport._tempDataLen  # type: ignore[attr-defined]
            or not transport.connected  # type: ignore[attr-defined]
            or transport.disconnecting  # type: ignore[attr-defined]
            or transport._writeDisconnected  # type: ignore[attr-defined]
        ):
            return False
        try:
            sent = sock.sendmsg(iovec)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        if sent < sum(len(piece) for piece in iovec):
            transport.writeSequence(_unsent(iovec, sent))
        return True

    @property
    def read_gate(self) -> _ReadGate:
        """
        The gate through which the transport's reading is paused.
        """
        return self._read_gate

    def allHeadersReceived(self) -> None:
        self._headers_done()
        super().allHeadersReceived()
        if self.length != 0:
            request = self.requests[-1]
            if self.timeOut:
                self._savedTimeOut = self.setTimeout(None)
            if isinstance(self.transport, Connection):
                self.transport.bufferSize = UPLOAD_READ_SIZE
            request.headers_received(self._command, self._path, self._version)

    def _send100Continue(self) -> None:
        """
        Do nothing: L{StreamingRequest} sends C{100 Continue} itself, only
        when it accepts the body.
        """

    def _respondToBadRequestAndDisconnect(self) -> None:
        """
        Answer a request Twisted cannot parse (request line, headers, body
        framing) with a complete plain-text 400 and close; if a response has
        already begun, just close, never mixing a second status into it.
        """
        started = bool(self.requests) and bool(
            getattr(self.requests[-1], "startedWriting", 0)
        )
        if not started and self.transport is not None:
            self.transport.write(_BAD_REQUEST)
        self.loseConnection()
