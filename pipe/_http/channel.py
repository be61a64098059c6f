# -*- test-case-name: tests.test_request -*-
"""
The owner of a connection's bytes: L{StreamingChannel}, an L{HTTPChannel}
that reads (and pauses reading), writes, watches the acknowledgement of,
resets and closes its connection, for its requests and their parties, who
ask it through L{pipe._http.interfaces.IConnection}.

It is one class, as Twisted's own C{HTTPChannel} is, with mixins for the
concerns that really separate, each in its own module:

  - L{pipe._http.timers.Timers}: the header timeout and keep-alive timers;
  - L{pipe._http.acknowledging.Acknowledgements}: what the peer has
    acknowledged, and who waits for it;
  - L{pipe._http.writes.WritePath}: the write path (straight to the
    socket, held in a write batch);
  - L{StreamingChannel} (here): reading, with the read gate that lets
    several holders pause one transport; a request's head before its body;
    the one reset and the graceful close.

On a Twisted older than 24.7.0, L{pipe._compat.patches} puts request
parsing as the newest Twisted does it in front of the class (and nothing
on a newer one).

With L{pipe._http.response} (a request's end), L{pipe._http.mount} (the raw
request path) and L{pipe._http.chunked}, these are the only code that
relies on L{twisted.web.http.HTTPChannel} and transport internals (the
network producer, the parsed request line, the idle timeout, the body
decoder, two overridden hooks, a file descriptor transport's write buffer),
all through L{pipe._compat.internals}, which checks them against the
installed Twisted when this module is imported; C{setup.py} sets the
oldest Twisted the tests prove, and no newest one (the check refuses a
release that lacks what txpipe relies on).
"""

from __future__ import annotations

from typing import Any, Optional, Set

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from zope.interface import implementer

from pipe._compat import internals as compat
from pipe._compat.patches import channel_for_installed_twisted
from pipe._http import tcp as _tcp
from pipe._http.acknowledging import Acknowledgements
from pipe._http.chunked import ChunkedDecoder
from pipe._http.interfaces import IConnection
from pipe._http.timers import Timers
from pipe._http.window import MIN_READ_SIZE
from pipe._http.writes import WritePath

__all__ = [
    "UPLOAD_READ_SIZE",
    "StreamingChannel",
    "reset_connection",
]

#: How much of an upload one read takes from the socket (Twisted reads 64 KiB
#: by default) until its transfer starts; then the transfer sets its own
#: (L{StreamingChannel.set_read_size}, L{pipe._http.window.read_size}).
#: Every read becomes one write to each receiver, so larger reads mean fewer
#: system calls per byte copied; the read is shared by all receivers, never
#: copied per receiver on the direct write path.
UPLOAD_READ_SIZE = MIN_READ_SIZE

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
    connection is aborted without the reset option.  Only
    L{StreamingChannel.reset} calls it.
    """
    _tcp.reset_on_close(_tcp.socket_under(transport))
    transport.abortConnection()


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


#: Who holds the read gate of a connection that is closing: nobody lets go.
_CLOSING = "closing"


@implementer(IConnection)
@compat.channel_hooks
@channel_for_installed_twisted
class StreamingChannel(Timers, Acknowledgements, WritePath, HTTPChannel):
    """
    An L{HTTPChannel} that owns its connection's bytes, and whose requests
    see their headers before their body.

    Differences from the stock channel (beside those of its layers, see
    the module docstring):
      - the transport is paused and resumed through a L{_ReadGate}, so an
        upload's backpressure (L{pause_reading}) and the channel's own flow
        control compose;
      - a request with a body is handed to
        L{StreamingRequest.headers_received} as soon as its headers are in,
        and the HTTP idle timeout is suspended until it is done (an upload
        held back by a slow receiver is not idle);
      - C{100 Continue} is not sent automatically to a request that
        streams: it sends it when it accepts the body (L{StreamingRequest.write});
      - a request that does not stream (L{pipe._http.mount}) is left to Twisted
        but for the read gate, the header timeout and the write path;
      - a malformed body after a response has begun ends the connection
        without writing a second status line into that response;
      - an upload is read in pieces of up to L{UPLOAD_READ_SIZE}, and the
        body pieces that one read yields (several chunks of a chunked body)
        reach the request's body protocol as one piece (see
        L{dataReceived}); a chunked body is decoded with fewer copies (see
        L{pipe._http.chunked});
      - a connection is reset in one way only, L{reset}, by whoever resets
        it (a request ending abnormally, a party its transfer failed); it
        is closed gracefully by L{close} or Twisted's C{loseConnection},
        and dropped without a reset by L{abort} (the end of a timeout, or of
        the site's shutdown grace).
    """

    _read_gate: _ReadGate
    _unflushed: Any = None
    _closed: Optional[Deferred[None]] = None
    _lost = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._read_gate = _ReadGate(compat.network_producer(self))
        compat.set_network_producer(self, self._read_gate)
        self._site.channel_opened(self)

    # Reading.

    def dataReceived(self, data: bytes) -> None:
        """
        Parse C{data}, then hand the body pieces it held to the request's
        body protocol at once (see L{flush_after_read}); what the handling
        of this read writes, to any connection of the site, is sent when it
        is done (see L{pipe._http.batch}).
        """
        batch = self._batch
        if batch is None:
            super().dataReceived(data)
            self._flush_read()
            return
        batch.open()
        try:
            super().dataReceived(data)
            self._flush_read()
        finally:
            batch.close()

    def flush_after_read(self, request: Any) -> None:
        """
        C{request} holds body pieces of the current read: call its
        C{flush_body()} once the read is parsed.
        """
        self._unflushed = request

    def _flush_read(self) -> None:
        request, self._unflushed = self._unflushed, None
        if request is not None:
            request.flush_body()

    def pause_reading(self, holder: object) -> None:
        """
        Pause reading on behalf of C{holder} (see L{_ReadGate.hold}).
        """
        self._read_gate.hold(holder)

    def resume_reading(self, holder: object) -> None:
        """
        Drop C{holder}'s pause (see L{_ReadGate.release}).
        """
        self._read_gate.release(holder)

    def set_read_size(self, size: int) -> None:
        """
        Read the upload of the current request C{size} bytes at a time from
        now on (until the request is done: L{Timers.requestDone} restores
        Twisted's default).  Only on a TCP connection of Twisted's own; a
        TLS transport reads as it does.
        """
        connection = self._connection
        if connection is not None and self.requests:
            connection.bufferSize = size

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
            # The same rules, fewer copies (see pipe._http.chunked).
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
        L{pipe._http.mount}); nothing for one that does: L{StreamingRequest}
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

    # Ending the connection.

    def close(self) -> None:
        """
        Stop reading for good and close the transport gracefully: what was
        written is sent, then a FIN.  As Twisted's own C{loseConnection},
        the channel stops being its transport's producer first: a transport
        whose producer is paused when its buffer drains resumes it instead
        of closing (see L{pipe._http.rest}, which pauses it too).
        """
        self._read_gate.hold(_CLOSING)
        self._read_gate.unregisterProducer()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def reset(self) -> None:
        """
        Reset the connection (see L{reset_connection}), even after its last
        response ended, or after it was closed while its delivery was still
        watched: what is held or unsent is dropped, the keep-alive wait and
        the delivery wait fail without an answer.  The only reset of a
        connection that its requests and parties ask for.
        """
        self._stop_keep_alive()
        self.drop_held()
        self._reset_delivery()
        if self.transport is not None:
            reset_connection(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._site.channel_closed(self)
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
