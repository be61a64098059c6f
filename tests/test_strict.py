"""
On every supported Twisted, hostile request lines, header names and
framing get the answer the newest Twisted gives, and pipelined requests
are answered in order, never inside another response (on releases older
than 24.7.0 through L{pipe._compat.legacy}, whose parts
tests/test_legacy.py tests).

Each runs against a real listening server: the point is what a client
sees, whatever the installed Twisted.
"""

from __future__ import annotations

import socket
from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.web.resource import Resource

from pipe import __version__
from pipe.server import make_site

from .helpers import RunningServer, raw_http, split_responses

BAD_REQUEST = b"[ERROR] malformed HTTP request\n"


@pytest.mark.parametrize(
    "line",
    [
        b"GET  /x HTTP/1.1",
        b"GET /x  HTTP/1.1",
        b"GET\t/x HTTP/1.1",
        b"GET /x HTTP/1.2",
        b"GET /x HTTP/2.0",
        b"GET /x http/1.1",
        b"G(T /x HTTP/1.1",
        b"G\x01T /x HTTP/1.1",
        b"GET /\xc0 HTTP/1.1",
        b"GET /x\x00 HTTP/1.1",
        b" GET /x HTTP/1.1",
        b"GET /x HTTP/1.1 ",
    ],
)
@pytest_twisted.ensureDeferred
async def test_malformed_request_lines_get_a_plain_400(
    reactor: Any, server: RunningServer, line: bytes
) -> None:
    """
    A request line the newest Twisted refuses (not exactly three parts
    split by single spaces, a method that is not a token, a target byte
    outside printable ASCII, another version) is a plain 400 and a closed
    connection on every Twisted.
    """
    text = await raw_http(
        reactor, server.port.getHost().port, line + b"\r\nHost: t\r\n\r\n"
    )
    [(status, _, body)] = split_responses(text)
    assert status.startswith(b"HTTP/1.1 400 "), text
    assert body == BAD_REQUEST


@pytest.mark.parametrize(
    "header",
    [
        b"Bad Name: x",
        b"X-A\x01: y",
        b"X(A): y",
        b": empty",
        b"Content-Length: +0",
        b"Content-Length: -0",
        b"Content-Length: 0x0",
        b"Content-Length: 1_0",
    ],
)
@pytest_twisted.ensureDeferred
async def test_malformed_headers_get_a_plain_400(
    reactor: Any, server: RunningServer, header: bytes
) -> None:
    """
    A header name that is not a token, or a C{Content-Length} that is not
    digits, is a plain 400 on every Twisted (Twisted before 22.4.0 read
    C{+0} as a number; before 24.7.0 took any header name).
    """
    text = await raw_http(
        reactor,
        server.port.getHost().port,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + header + b"\r\n\r\n",
    )
    [(status, _, body)] = split_responses(text)
    assert status.startswith(b"HTTP/1.1 400 "), text
    assert body == BAD_REQUEST


@pytest.mark.parametrize(
    "header",
    [
        b"Transfer-Encoding: chunked\x0b",
        b"Transfer-Encoding: \x0cchunked",
        b"Transfer-Encoding: chunked\r",
        b"X-Foo: x\nTransfer-Encoding: chunked\r\nContent-Length: 5",
        b"X-Foo: a\x00b",
        b"X-Foo: a\rb",
        b"X-Foo: a\nb",
    ],
)
@pytest_twisted.ensureDeferred
async def test_header_values_the_newest_twisted_refuses_get_a_plain_400(
    reactor: Any, server: RunningServer, header: bytes
) -> None:
    """
    A header value holding NUL, CR or LF, and a C{Transfer-Encoding} that
    is C{chunked} only once VT, FF or CR is stripped, is a plain 400 on
    every Twisted (the security review's probes: Twisted before 24.7.0 took
    them, 22.1.0 read C{chunked\x0b} as chunked).
    """
    text = await raw_http(
        reactor,
        server.port.getHost().port,
        b"PUT /api/v1/pipe/p?n=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
        + header
        + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        timeout=5,
    )
    [(status, _, body)] = split_responses(text)
    assert status.startswith(b"HTTP/1.1 400 "), text
    assert body == BAD_REQUEST
    assert server.site.pipes.rendezvous.parties(b"p") == (False, 0)


@pytest.mark.parametrize(
    "header",
    [
        b"X-Foo: a\r\n b",
        b"X-Foo: a\r\n\tb",
        b"Transfer-Encoding: \t Chunked \t",
        b"X-Foo: a\x0bb\x0c",
    ],
)
@pytest_twisted.ensureDeferred
async def test_header_values_the_newest_twisted_takes_pass(
    reactor: Any, server: RunningServer, header: bytes
) -> None:
    """
    A folded header line, a C{Transfer-Encoding} padded with SP and HT, and
    other control bytes inside a value are taken on every Twisted, as the
    newest takes them.
    """
    chunked = header.lower().startswith(b"transfer-encoding")
    text = await raw_http(
        reactor,
        server.port.getHost().port,
        b"POST /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
        + header
        + (b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n" if chunked else b"\r\n\r\n"),
        timeout=5,
    )
    [(status, _, _)] = split_responses(text)
    assert not status.startswith(b"HTTP/1.1 400 "), text


class _Client:
    """
    A blocking-free socket client that reads everything until the server
    closes or the expected responses are in.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.data = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)

    def read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.data += chunk

    async def responses(
        self, reactor: Any, count: int, timeout: float = 10
    ) -> List[Any]:
        """
        Poll until C{count} whole responses are in (or fail).
        """
        deadline = reactor.seconds() + timeout
        while True:
            self.read()
            try:
                got = split_responses(bytes(self.data))
            except ValueError:
                got = []
            if len(got) >= count:
                return got
            if reactor.seconds() > deadline:
                raise AssertionError(f"no {count} responses in: {bytes(self.data)!r}")
            await task.deferLater(reactor, 0.01, lambda: None)

    def close(self) -> None:
        self.sock.close()


@pytest_twisted.ensureDeferred
async def test_request_pipelined_behind_a_streaming_receiver_waits_for_it(
    reactor: Any, server: RunningServer
) -> None:
    """
    A receiver that pipelines C{GET /healthz} behind its C{GET} of a pipe
    (one write, so one read for the server) gets the pipe's whole response
    first, then the health response: never the health response inside the
    pipe's (Twisted before 23.10.0 answered it at once).
    """
    port = server.port.getHost().port
    receiver = _Client(port)
    receiver.send(
        b"GET /api/v1/pipe/order HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    await task.deferLater(reactor, 0.05, lambda: None)
    sender = _Client(port)
    data = b"0123456789" * 10000
    sender.send(
        b"PUT /api/v1/pipe/order HTTP/1.1\r\nHost: t\r\n"
        b"Content-Length: %d\r\n\r\n" % len(data) + data
    )
    try:
        (pipe, health) = await receiver.responses(reactor, 2)
        assert pipe[0] == b"HTTP/1.1 200 OK"
        assert pipe[2] == data
        assert health[0] == b"HTTP/1.1 200 OK"
        assert health[2] == b"ok\n"
        (sent,) = await sender.responses(reactor, 1)
        assert b"done: bytes=100000 receivers=1/1" in sent[2]
    finally:
        receiver.close()
        sender.close()


@pytest_twisted.ensureDeferred
async def test_request_pipelined_behind_an_upload_waits_for_it(
    reactor: Any, server: RunningServer
) -> None:
    """
    A sender that pipelines C{GET /healthz} right after its upload's body,
    in the same write, gets its whole pipe response first, then the health
    response.
    """
    port = server.port.getHost().port
    receiver = _Client(port)
    receiver.send(b"GET /api/v1/pipe/after HTTP/1.1\r\nHost: t\r\n\r\n")
    await task.deferLater(reactor, 0.05, lambda: None)
    sender = _Client(port)
    sender.send(
        b"PUT /api/v1/pipe/after HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n"
        b"hello"
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    try:
        (sent, health) = await sender.responses(reactor, 2)
        assert b"done: bytes=5 receivers=1/1" in sent[2], sent
        assert health[2] == b"ok\n"
        (got,) = await receiver.responses(reactor, 1)
        assert got[2] == b"hello"
    finally:
        receiver.close()
        sender.close()


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_answered_at_once_stay_in_order(
    reactor: Any, server: RunningServer
) -> None:
    """
    Three requests in one write, each answered at once, are answered in
    order on one connection.
    """
    text = await raw_http(
        reactor,
        server.port.getHost().port,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    bodies = [body for _, _, body in split_responses(text)]
    assert bodies[0] == bodies[2] == b"ok\n"
    assert bodies[1] == __version__.encode() + b"\n"


class _Form(Resource):
    """
    An application's form: answers a C{POST} at once with what it read.
    """

    isLeaf = True

    def render_POST(self, request: Any) -> bytes:
        return b"got " + request.content.read() + b"\n"


@pytest_twisted.ensureDeferred
async def test_request_pipelined_behind_a_body_answered_at_once(reactor: Any) -> None:
    """
    A request pipelined right after a body, in the same write, whose own
    response is written at once (an application's form in a mixed site)
    is answered next, in order (Twisted before 24.7.0 kept the rest of the
    read only after the first was answered, so the second waited for more
    data that never came).
    """
    root = Resource()
    root.putChild(b"form", _Form())
    site = make_site(reactor, root=root, prefix=b"ci")
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        text = await raw_http(
            reactor,
            port.getHost().port,
            b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Content-Type: text/plain\r\n\r\nhello"
            b"GET /ci/healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    finally:
        await port.stopListening()
    bodies = [body for _, _, body in split_responses(text)]
    assert bodies == [b"got hello\n", b"ok\n"]
