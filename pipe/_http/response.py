# -*- test-case-name: tests.test_request -*-
"""
The response side of a pipe request: the one-line answers and the head of a
streamed response, C{100 Continue}, writes of a body's L{Pieces}, and the
end of a response: one finished before its request body is over (the rest
of the body read and dropped for a bounded while, then a close), and an
abnormal end (a reset, or a chunked response without its last chunk).

L{RespondingRequest} is the L{twisted.web.server.Request} that
L{pipe._http.request.StreamingRequest} builds on: everything here is about what
the request writes to its connection (through Twisted's contract with the
channel: C{writeHeaders}, C{write}, C{writeSequence}; and
L{IConnection.add_to_head} for the fixed head lines).  The state of the
request body (L{Body}) decides two rules of its first write, and how
the response ends.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from twisted.internet.interfaces import IDelayedCall, IProtocol, IPushProducer
from twisted.web.http import NO_BODY_CODES
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from pipe._compat import internals as compat
from pipe._http.body import Body
from pipe._http.chunked import Pieces
from pipe._http.interfaces import IConnection
from pipe._http.writes import header_lines

__all__ = ["DISCARD_LIMIT", "DISCARD_SECONDS", "RespondingRequest"]

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


#: After a response that was complete before its request body, how much of
#: the rest of the body to read and discard, and for how long, before closing:
#: closing a socket with unread data sends a reset, which can destroy the
#: response before the client has read it.
DISCARD_LIMIT = 1024 * 1024
DISCARD_SECONDS = 2.0


class RespondingRequest(Request):
    """
    A request's responses as txpipe writes them (see the module docstring).

    @ivar body: the state of the request body (see L{Body}), kept by
        L{pipe._http.request.StreamingRequest}.
    """

    defaultContentType: Optional[bytes] = b"text/plain; charset=utf-8"

    body = Body.NONE
    _continued = False
    _fixed_headers = b""
    # The body's consumer (fed by the request while the body streams), and
    # the upload's producer, which an end of the response stops.
    _body_protocol: Optional[IProtocol] = None
    _upload: Optional[IPushProducer] = None
    _discarded = 0
    _abnormal_close = False
    _discard_call: Optional[IDelayedCall] = None
    #: Who the client is, C{(host, port or None)}, once
    #: L{pipe._transfer.parties} has found it (its headers no longer change).
    known_client: Optional[Tuple[str, Optional[int]]] = None

    @property
    def connection(self) -> Optional[IConnection]:
        """
        The request's connection as this layer knows it, L{IConnection}
        (L{None} once lost): Twisted's C{channel}, through which the
        request writes by Twisted's own contract, is a txpipe channel that
        provides it (the site builds no other).
        """
        return self.channel  # type: ignore[return-value]

    @property
    def connected(self) -> bool:
        """
        Whether the client is still connected (writes would reach it).
        """
        return not compat.request_disconnected(self)

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
            if self._fixed_headers and self.channel is not None:
                connection = self.connection
                assert connection is not None
                connection.add_to_head(self._fixed_headers)
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
        if self.channel is None:
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
        """
        Close the connection: abnormally (unless the response is chunked,
        whose missing last chunk tells) by asking the channel to reset it,
        else gracefully.
        """
        connection = self.connection
        if connection is None:
            return
        if abnormal and not self.chunked:
            connection.reset()
        else:
            connection.close()

    def _release_all_holds(self) -> None:
        connection = self.connection
        if connection is not None and self._upload is not None:
            connection.resume_reading(self._upload)
