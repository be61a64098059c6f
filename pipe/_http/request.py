# -*- test-case-name: tests.test_request -*-
"""
A request that streams its body instead of spooling it.

Stock L{twisted.web} writes every request body into C{request.content} (a
temporary file on disk for large or chunked bodies) and renders only once the
whole body is in.  L{StreamingRequest} instead renders a request that has a
body as soon as its headers are in (L{pipe._http.channel.StreamingChannel} calls
it), and delivers the body, as it arrives, to the L{IProtocol} that the
resource passes to L{StreamingRequest.deliver_body}.  Nothing is ever written
to C{request.content}.

That is for the requests in the pipe tree.  In a site that mounts the pipe
tree into an application's own tree (see L{pipe._http.mount}), a request outside
it is decided, once, when its headers are in, to be twisted.web's own
(L{Body.STOCK}): its body is spooled, its form and query parsed, and it
renders when the body is complete, as in a stock L{twisted.web.server.Site}.
"""

from __future__ import annotations

import io
from typing import Callable, List, Optional

from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocol, IPushProducer
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.server import Request
from zope.interface import implementer

from pipe._compat.logger import pinned_logger
from pipe._http.body import Body
from pipe._http.chunked import Pieces
from pipe._http.interfaces import IConnection
from pipe._http.mount import streams
from pipe._http.response import DISCARD_LIMIT, DISCARD_SECONDS, RespondingRequest

__all__ = ["DISCARD_LIMIT", "DISCARD_SECONDS", "Body", "StreamingRequest"]


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

    It owns no bytes: a pause or resume asks the connection, which owns the
    reading (L{IConnection.pause_reading}, keyed by this producer, so that
    it composes with the channel's own pauses), and only while the body
    streams; after the body is complete or lost they do nothing.
    """

    def __init__(self, request: StreamingRequest) -> None:
        self._request = request

    def pauseProducing(self) -> None:
        request = self._request
        connection = request.connection
        if request.body is Body.STREAMING and connection is not None:
            connection.pause_reading(self)

    def resumeProducing(self) -> None:
        request = self._request
        connection = request.connection
        if request.body is Body.STREAMING and connection is not None:
            connection.resume_reading(self)

    def stopProducing(self) -> None:
        self._request._abandon_body(self)


class StreamingRequest(RespondingRequest):
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

    _log = pinned_logger("pipe._request.StreamingRequest")

    _body_length: Optional[int] = 0
    _pieces: List[bytes]
    _on_lost: Optional[Callable[[Failure], object]] = None

    def gotLength(self, length: Optional[int]) -> None:
        """
        Called by the channel when the headers are in, before any body
        byte: decide, once, how the request is handled (see
        L{pipe._http.mount.streams}).  A request in the pipe tree notes its body
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
                    # (Per body piece: the channel as is, no property.)
                    connection: IConnection = self.channel  # type: ignore[assignment]
                    connection.flush_after_read(self)
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

    def _abandon_body(self, holder: object) -> None:
        if self.body is not Body.STREAMING:
            return
        self.body = Body.ABANDONED
        self._body_protocol = None
        connection = self.connection
        if connection is not None:
            connection.pause_reading(holder)
