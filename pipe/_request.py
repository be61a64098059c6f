# -*- test-case-name: tests.test_request -*-
"""
A request that streams its body instead of spooling it.

Stock L{twisted.web} writes every request body into C{request.content} (a
temporary file on disk for large or chunked bodies) and renders only once the
whole body is in.  L{StreamingRequest} instead renders a request that has a
body as soon as its headers are in (L{pipe._channel.StreamingChannel} calls
it), and delivers the body, as it arrives, to the L{IProtocol} that the
resource passes to L{StreamingRequest.deliver_body}.  Nothing is ever written
to C{request.content}.

That is for the requests in the pipe tree.  In a site that mounts the pipe
tree into an application's own tree (see L{pipe._mount}), a request outside
it is decided, once, when its headers are in, to be twisted.web's own
(L{Body.STOCK}): its body is spooled, its form and query parsed, and it
renders when the body is complete, as in a stock L{twisted.web.server.Site}.
"""

from __future__ import annotations

import enum
import io
from typing import Callable, Dict, List, Optional, Tuple, cast

from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IProtocol, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import NO_BODY_CODES
from twisted.web.http_headers import Headers
from twisted.web.server import Request
from zope.interface import implementer

from . import _compat as compat
from ._channel import StreamingChannel, _transport_of, reset_connection
from ._chunked import Pieces
from ._mount import streams
from ._writes import header_lines

__all__ = ["DISCARD_LIMIT", "DISCARD_SECONDS", "StreamingRequest"]

#: After a response that was complete before its request body, how much of
#: the rest of the body to read and discard, and for how long, before closing:
#: closing a socket with unread data sends a reset, which can destroy the
#: response before the client has read it.
DISCARD_LIMIT = 1024 * 1024
DISCARD_SECONDS = 2.0

#: The headers every pipe response carries, beside its own.
_SAFETY_HEADERS = {
    b"cache-control": b"no-store",
    b"x-content-type-options": b"nosniff",
    # A received body is someone else's content: a browser that opens it
    # must not run its script or treat it as this origin's page.
    b"content-security-policy": b"sandbox",
    b"access-control-allow-origin": b"*",
}

#: The fixed headers of a streamed response, encoded once: a streamed
#: response (every sender's and receiver's C{200}) writes them after its
#: own, without a C{setHeader} each (see L{StreamingRequest.start_stream}).
_STREAM_HEADER_LINES = b"".join(
    header_lines(
        Headers(
            {
                name: [value]
                for name, value in [
                    (b"x-accel-buffering", b"no"),
                    *_SAFETY_HEADERS.items(),
                ]
            }
        )
    )
)


class Body(enum.Enum):
    """
    The states of a request body, as L{StreamingRequest} sees it.

    ===============  ===========================================  ============
    state            meaning                                      next
    ===============  ===========================================  ============
    C{NONE}          no body (length 0): stock processing         -
    C{STREAMING}     headers in, body arriving, resource rendered COMPLETE,
                                                                  LOST,
                                                                  DISCARDING,
                                                                  ABANDONED
    C{COMPLETE}      the whole body arrived                       -
    C{LOST}          the connection ended before the body did     -
    C{DISCARDING}    the response ended first; the rest of the    -
                     body is read and dropped for a bounded while
    C{ABANDONED}     the body's consumer stopped it: no more      LOST
                     reading, the connection is closing
    C{STOCK}         outside the pipe tree (see L{pipe._mount}):  -
                     twisted.web's own handling, the body
                     spooled to C{content}, rendered once complete
    ===============  ===========================================  ============

    A request is C{NONE} or C{STOCK} from its start (decided in
    L{StreamingRequest.gotLength}).
    """

    NONE = "none"
    STREAMING = "streaming"
    COMPLETE = "complete"
    LOST = "lost"
    DISCARDING = "discarding"
    ABANDONED = "abandoned"
    STOCK = "stock"


@implementer(IPushProducer)
class _UploadProducer:
    """
    The upload of one request, as the push producer that its body protocol
    sees as its transport.

    The body's consumer calls L{pauseProducing} and L{resumeProducing} (from
    its own consumers' flow control, possibly re-entrantly from a write);
    bytes Twisted already read still arrive after a pause.  L{stopProducing}
    means the consumer wants no more of the body: reading stops for good and
    the connection is left for the response to end.
    """

    def __init__(self, request: StreamingRequest) -> None:
        self._request = request

    def pauseProducing(self) -> None:
        self._request._gate_hold(self)

    def resumeProducing(self) -> None:
        self._request._gate_release(self)

    def stopProducing(self) -> None:
        self._request._abandon_body(self)


class StreamingRequest(Request):
    """
    A L{twisted.web.server.Request} that renders as soon as its headers are
    in and streams its body to a protocol.

    A resource rendering a request with a body (L{body} is L{Body.STREAMING}
    during render) either calls L{deliver_body} during C{render}, or
    responds without it; a response finished before the body is over is
    sent in full, then the rest of the body is read and dropped for a bounded
    while (L{DISCARD_LIMIT}, L{DISCARD_SECONDS}) before the connection is
    closed, so the client reads the status instead of a broken pipe.

    @ivar body: see L{Body}.
    """

    _log = Logger()
    defaultContentType: Optional[bytes] = b"text/plain; charset=utf-8"

    body = Body.NONE
    _body_length: Optional[int] = 0
    _body_protocol: Optional[IProtocol] = None
    _upload: Optional[_UploadProducer] = None
    _discarded = 0
    _abnormal_close = False
    _discard_call: Optional[IDelayedCall] = None
    _continued = False
    _fixed_headers = b""
    _pieces: List[bytes]
    _on_lost: Optional[Callable[[Failure], object]] = None
    #: Who the client is, C{(host, port or None)}, once
    #: L{pipe._parties} has found it (its headers no longer change).
    known_client: Optional[Tuple[str, Optional[int]]] = None

    def gotLength(self, length: Optional[int]) -> None:
        """
        Called by the channel when the headers are in, before any body
        byte: decide, once, how the request is handled (see
        L{pipe._mount.streams}).  A request in the pipe tree notes its body
        length and never gets a spool file: C{content} stays an empty buffer
        for code that expects one.  Any other is twisted.web's own from here
        on (L{Body.STOCK}): a spool file as Twisted makes it, and Twisted's
        default content type.
        """
        if streams(self.channel):
            self._body_length = length
            self.content = io.BytesIO()
            return
        self.body = Body.STOCK
        self.defaultContentType = Request.defaultContentType
        super().gotLength(length)

    @property
    def streams(self) -> bool:
        """
        Whether this request is in the pipe tree, handled as a stream (not
        L{Body.STOCK}); known once its headers are in.
        """
        return self.body is not Body.STOCK

    @property
    def connected(self) -> bool:
        """
        Whether the client is still connected (writes would reach it).
        """
        return not compat.request_disconnected(self)

    def on_lost(self, lost: Callable[[Failure], object]) -> None:
        """
        Call C{lost} with the reason if the connection is lost while the
        request is still its channel's (until the response is finished and
        any rest of the body dropped): what an errback of L{notifyFinish}
        would get, at the same moment, without a L{Deferred} and its
        callback chain per request (every party of every pipe asks; for a
        tiny pipe the two chains cost more Python than any step of txpipe's
        own).  One callable per request; if it raises, the failure is
        logged and the loss is handled as always.
        """
        self._on_lost = lost

    @property
    def body_length(self) -> Optional[int]:
        """
        The declared body length, or L{None} for a chunked body.
        """
        return self._body_length

    def headers_received(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        Called by L{StreamingChannel} when the headers of a request with a
        body are in: set up the request as C{requestReceived} would and
        render it now.
        """
        self.body = Body.STREAMING
        self._pieces = []
        self._set_request_line(command, path, version)
        self.process()

    def _set_request_line(self, command: bytes, path: bytes, version: bytes) -> None:
        self.method, self.uri = command, path
        self.clientproto = version
        self.args = {}
        self.path, _, _ = path.partition(b"?")

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        Called by the channel when the whole body is in (at once, for a
        request without one).
        """
        if self.body is Body.NONE:
            self._set_request_line(command, path, version)
            self.process()
        elif self.body is Body.STREAMING:
            self.flush_body()
            self.body = Body.COMPLETE
            self._release_all_holds()
            protocol = self._body_protocol
            if protocol is not None:
                protocol.connectionLost(Failure(ResponseDone()))
        elif self.body is Body.DISCARDING:
            self.body = Body.COMPLETE
            self._close_after_discard()
        elif self.body is Body.STOCK:
            super().requestReceived(command, path, version)

    def handleContentChunk(self, data: bytes) -> None:
        """
        A piece of the body: hold it for L{flush_body}, or drop it (or, for
        L{Body.STOCK}, spool it as Twisted does).
        """
        if self.body is Body.STREAMING:
            if self._body_protocol is not None:
                if not self._pieces:
                    cast(StreamingChannel, self.channel).body_pending(self)
                self._pieces.append(data)
        elif self.body is Body.DISCARDING:
            self._discarded += len(data)
            if self._discarded > DISCARD_LIMIT:
                self._close_after_discard()
        elif self.body is Body.STOCK:
            super().handleContentChunk(data)

    def flush_body(self) -> None:
        """
        Deliver the body pieces held since the last flush as one piece: a
        single piece as it is, several (a read of a chunked body yields a
        piece per chunk) as L{Pieces}, which L{write} writes without
        joining them.  The channel calls this after each read from the
        socket, and the request before it reports the body complete, so
        pieces are never reordered or late.
        """
        pieces, self._pieces = self._pieces, []
        protocol = self._body_protocol
        if pieces and protocol is not None and self.body is Body.STREAMING:
            data = pieces[0] if len(pieces) == 1 else Pieces(pieces)
            protocol.dataReceived(data)  # type: ignore[arg-type]

    def deliver_body(self, protocol: IProtocol) -> None:
        """
        Stream the body to C{protocol}, as L{twisted.web.iweb.IResponse}'s
        C{deliverBody} does: C{makeConnection} with the upload as an
        L{IPushProducer}, C{dataReceived} for each piece, then
        C{connectionLost} with L{ResponseDone} when the body is complete, or
        another failure if the connection was lost first.  An empty body is
        delivered (as complete) at once.  A piece is C{bytes}, a
        C{memoryview} of a read, or the L{Pieces} of one read of a chunked
        body: C{protocol} takes its C{len()} and hands it on to L{write}
        (or calls C{bytes()} on it).

        @raise RuntimeError: if the body was already delivered, or is past
            streaming.
        """
        if self._upload is not None:
            raise RuntimeError("deliver_body called twice")
        self._upload = _UploadProducer(self)
        if self.body is Body.NONE:
            # An empty body: it is complete at once.
            protocol.makeConnection(self._upload)  # type: ignore[arg-type]
            protocol.connectionLost(Failure(ResponseDone()))
            return
        if self.body is not Body.STREAMING:
            raise RuntimeError(f"deliver_body with body {self.body}")
        self._body_protocol = protocol
        protocol.makeConnection(self._upload)  # type: ignore[arg-type]

    def plain_response(
        self, code: int, body: bytes, headers: Optional[Dict[bytes, bytes]] = None
    ) -> bytes:
        """
        Set up a one-line C{text/plain} response (an error or a short
        answer) and return its body, for a resource's C{render} to return.
        """
        self.setResponseCode(code)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"content-length", b"%d" % (len(body),))
        self._set_safety_headers()
        for name, value in (headers or {}).items():
            self.setHeader(name, value)
        return body

    def start_stream(self, content_type: bytes) -> None:
        """
        Set up the C{200} of a streamed response (a sender's progress, a
        receiver's data): never cached, never buffered by a proxy.  The
        caller adds its own headers (none of L{_SAFETY_HEADERS}), then
        writes; the fixed headers follow the others, encoded once for all
        responses (L{_STREAM_HEADER_LINES}).
        """
        self.setResponseCode(200)
        self.setHeader(b"content-type", content_type)
        self._fixed_headers = _STREAM_HEADER_LINES

    def _set_safety_headers(self) -> None:
        """
        The headers every pipe response carries.
        """
        self._fixed_headers = b""
        for name, value in _SAFETY_HEADERS.items():
            self.setHeader(name, value)

    def send_plain(
        self, code: int, body: bytes, headers: Optional[Dict[bytes, bytes]] = None
    ) -> None:
        """
        Send a one-line C{text/plain} response now and finish it (for a
        request answered after C{render} returned), unless the client is
        gone.
        """
        if not self.connected:
            return
        self.write(self.plain_response(code, body, headers))
        self.finish()

    def wants_continue(self) -> bool:
        """
        Whether the client waits for C{100 Continue} before sending its body.
        """
        expect = self.requestHeaders.getRawHeaders(b"expect")
        return (
            self.body is Body.STREAMING
            and self.clientproto == b"HTTP/1.1"
            and expect is not None
            and expect[0].lower() == b"100-continue"
        )

    def send_continue(self) -> None:
        """
        Send C{100 Continue} now if the client waits for it, without
        beginning the response (for a response that begins later, after the
        body).  Idempotent; L{write} then does not send it again.
        """
        if not self._continued and not self.startedWriting and self.wants_continue():
            self._continued = True
            self.channel.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def write(self, data: bytes) -> None:
        """
        As L{Request.write}, with two rules for the first write of a response
        that begins while the body is still arriving: a C{2xx} response to a
        client that expects C{100 Continue} sends it first (a final status
        that came first would end the upload before it began); any other
        status closes the connection afterwards (C{Connection: close}), since
        the rest of the body will not be read.
        """
        if not self.startedWriting:
            if self.body is Body.STREAMING:
                if 200 <= self.code < 300:
                    self.send_continue()
                else:
                    self.setHeader(b"connection", b"close")
                    self.channel.persistent = False
            channel = self._streaming_channel()
            if self._fixed_headers and channel is not None:
                channel.fixed_headers = self._fixed_headers
        if type(data) is Pieces:
            self._write_pieces(data)
            return
        super().write(data)

    def _write_pieces(self, pieces: Pieces) -> None:
        """
        Write L{Pieces} as Twisted's C{write} would write their join: one
        chunk of a chunked response (else the bytes as they are), counted
        in C{sentLength}; the buffers go to the channel scatter/gather.
        """
        if self.finished or not self.startedWriting:
            # Twisted's checks, and the status and headers of a first write.
            super().write(b"")
        if compat.request_disconnected(self) or self.method == b"HEAD":
            return
        if not pieces.size or self.code in NO_BODY_CODES:
            return
        self.sentLength += pieces.size
        channel = self.channel
        if self.chunked:
            size = b"%x\r\n" % (pieces.size,)
            channel.writeSequence([size, *pieces.buffers, b"\r\n"])
        else:
            channel.writeSequence(pieces.buffers)

    def finish(self) -> None:
        """
        As L{Request.finish}, except when the body is still arriving: then
        the response is sent in full and the connection closes after a
        bounded discard of the rest of the body.
        """
        if self.body is not Body.STREAMING:
            super().finish()
            return
        self.channel.persistent = False
        if not self.startedWriting:
            self.setHeader(b"connection", b"close")
            self.write(b"")
        if self.chunked:
            self.channel.write(b"0\r\n\r\n")
        self.finished = 1
        self._discard_then(abnormal=False)

    def _discard_then(self, abnormal: bool) -> None:
        """
        Read and drop the rest of the body for at most L{DISCARD_LIMIT}
        bytes or L{DISCARD_SECONDS}, then close (abnormally if asked).
        """
        self.body = Body.DISCARDING
        self._abnormal_close = abnormal
        self._body_protocol = None
        self._discard_call = self.channel.callLater(
            DISCARD_SECONDS, self._close_after_discard
        )
        self._release_all_holds()

    def _close_after_discard(self) -> None:
        call, self._discard_call = self._discard_call, None
        if call is not None and call.active():
            call.cancel()
        self._close(abnormal=self._abnormal_close)

    def end_abnormally(self, linger: bool = False) -> None:
        """
        End the response so that the client sees a failure: close without
        the terminating chunk when chunked, reset the connection when the
        body is close-delimited or declared by length.  Unsent data may be
        lost in a reset.

        @param linger: if the upload is still arriving, read and drop it for
            a bounded while first (as after an early response), so that the
            last lines reach the client before the close.  Without it the
            upload is cut off at once.
        """
        channel = self._streaming_channel()
        if channel is None:
            return
        self._body_protocol = None
        self.finished = 1
        if linger and self.body is Body.STREAMING:
            self._discard_then(abnormal=True)
            return
        if self.body is Body.STREAMING:
            self.body = Body.ABANDONED
        self._close(abnormal=True)

    def _close(self, abnormal: bool) -> None:
        channel = self._streaming_channel()
        if channel is None:
            return
        transport = _transport_of(channel)
        if abnormal and not self.chunked:
            channel.drop_held()
            reset_connection(transport)
        else:
            channel.read_gate.hold(self)
            transport.loseConnection()

    def abort(self) -> None:
        """
        Reset the connection: the response is truncated.
        """
        channel = self._streaming_channel()
        if channel is not None:
            channel.drop_held()
            reset_connection(_transport_of(channel))

    def connectionLost(self, reason: Failure) -> None:
        """
        The connection is gone: mark the request disconnected first (so that
        nobody writes to it), then tell the body protocol if the body was
        cut short.
        """
        call, self._discard_call = self._discard_call, None
        if call is not None and call.active():
            call.cancel()
        protocol, self._body_protocol = self._body_protocol, None
        cut_short = self.body in (Body.STREAMING, Body.ABANDONED)
        if cut_short:
            self.body = Body.LOST
        super().connectionLost(reason)
        lost, self._on_lost = self._on_lost, None
        if lost is not None:
            try:
                lost(reason)
            except Exception:
                self._log.failure("handling a lost connection failed")
        if cut_short and protocol is not None:
            protocol.connectionLost(Failure(ConnectionLost(str(reason.value))))

    # The upload's flow control, through the channel's read gate.

    def _streaming_channel(self) -> Optional[StreamingChannel]:
        """
        The channel (always a L{StreamingChannel}), or L{None} once the
        connection is lost.
        """
        # A string type: a subscripted one would be built on every call.
        return cast("Optional[StreamingChannel]", self.channel)

    def _gate_hold(self, holder: object) -> None:
        channel = self._streaming_channel()
        if self.body is Body.STREAMING and channel is not None:
            channel.read_gate.hold(holder)

    def _gate_release(self, holder: object) -> None:
        channel = self._streaming_channel()
        if self.body is Body.STREAMING and channel is not None:
            channel.read_gate.release(holder)

    def _release_all_holds(self) -> None:
        channel = self._streaming_channel()
        if channel is not None and self._upload is not None:
            channel.read_gate.release(self._upload)

    def _abandon_body(self, holder: object) -> None:
        if self.body is not Body.STREAMING:
            return
        self.body = Body.ABANDONED
        self._body_protocol = None
        channel = self._streaming_channel()
        if channel is not None:
            channel.read_gate.hold(holder)
