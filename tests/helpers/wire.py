"""
Raw HTTP/1.1 on loopback sockets, where the exact bytes on the wire matter:
requests written by hand, responses split and de-chunked by hand, and
receivers that read only as the test says.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from .server import RunningServer


def raw_http(
    reactor: Any, port: int, data: bytes, timeout: float = 10.0
) -> defer.Deferred[bytes]:
    """
    Send C{data} on a new loopback connection and collect everything the
    server writes until it closes the connection.
    """
    received = bytearray()
    done: defer.Deferred[bytes] = defer.Deferred()

    class Client(Protocol):
        def connectionMade(self) -> None:
            assert self.transport is not None
            self.transport.write(data)

        def dataReceived(self, chunk: bytes) -> None:
            received.extend(chunk)

        def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
            if not done.called:
                done.callback(bytes(received))

    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    connecting = endpoint.connect(Factory.forProtocol(Client))
    connecting.addErrback(done.errback)
    done.addTimeout(timeout, reactor)
    return done


class RawReceiver:
    """
    A receiver on a plain socket with a small receive buffer, read only as
    the test says: the kernel buffers between the server and it are then
    known, and it can stop reading, or die, at any byte.

    @ivar head: the response's status line and headers, once read.
    @ivar body: the response body read so far (chunked framing included).
    @ivar eof: the stream ended (closed or reset).
    @ivar was_reset: the server reset the connection.
    """

    def __init__(
        self,
        port: int,
        path: str,
        n: int = 1,
        rcvbuf: int = 32 * 1024,
        version: bytes = b"HTTP/1.1",
    ) -> None:
        import socket

        self.sock = sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            b"GET /api/v1/pipe/%s?n=%d %s\r\nHost: t\r\n\r\n"
            % (path.encode(), n, version)
        )
        sock.setblocking(False)
        self._raw = bytearray()
        self.head = b""
        self.body = bytearray()
        self.eof = False
        self.was_reset = False

    def queued(self) -> int:
        """
        Bytes waiting in this socket's receive buffer (C{FIONREAD}).
        """
        import fcntl
        import struct
        import termios

        value: int = struct.unpack(
            "i", fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0" * 4)
        )[0]
        return value

    def read(self, limit: int = 1 << 30) -> int:
        """
        Read what is available now, at most C{limit} body bytes; return how
        many body bytes were read.  Notes the end of the stream.
        """
        before = len(self.body)
        while len(self.body) - before < limit and not self.eof:
            want = max(1, limit - (len(self.body) - before))
            try:
                data = self.sock.recv(min(want, 65536))
            except BlockingIOError:
                break
            except ConnectionResetError:
                self.eof = self.was_reset = True
                break
            if not data:
                self.eof = True
                break
            if self.head:
                self.body += data
            else:
                self._raw += data
                head, sep, rest = bytes(self._raw).partition(b"\r\n\r\n")
                if sep:
                    self.head = head
                    self.body += rest
        return len(self.body) - before

    async def read_at(self, reactor: Any, total: int, rate: float) -> None:
        """
        Read until C{total} body bytes are in, at about C{rate} bytes per
        second (in steps of 50 ms).
        """
        step = 0.05
        while len(self.body) < total and not self.eof:
            self.read(max(1, int(rate * step)))
            await task.deferLater(reactor, step, lambda: None)

    async def read_all(self, reactor: Any, total: int, timeout: float = 30) -> None:
        """
        Read at full speed until C{total} body bytes are in (or the end),
        and not more.
        """
        deadline = reactor.seconds() + timeout
        while len(self.body) < total and not self.eof:
            self.read(total - len(self.body))
            if reactor.seconds() > deadline:
                raise AssertionError(f"only {len(self.body)} of {total} bytes arrived")
            await task.deferLater(reactor, 0.002, lambda: None)

    def reset(self) -> None:
        """
        Die: close with a reset (as a killed process with unread data).
        """
        import socket
        import struct

        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def split_responses(data: bytes) -> List[Any]:
    """
    Split what a server wrote on one connection into its HTTP/1.1
    responses, in order, as C{(status line, headers, body)}: bodies framed
    by C{Content-Length} or chunked (decoded); an unframed last body runs
    to the end.  A C{1xx} response counts as one (no body).

    @raise ValueError: the data is not a sequence of whole responses.
    """
    responses = []
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"no end of headers in {head[:80]!r}")
        status, *lines = head.split(b"\r\n")
        if not status.startswith(b"HTTP/1."):
            raise ValueError(f"not a status line: {status[:80]!r}")
        headers: Dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if status.split(b" ")[1].startswith(b"1"):
            body = b""
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            if len(rest) < length:
                raise ValueError(f"body cut short: {len(rest)} of {length}")
            body, rest = rest[:length], rest[length:]
        elif headers.get(b"transfer-encoding") == b"chunked":
            chunks = []
            while True:
                size_line, crlf, rest = rest.partition(b"\r\n")
                if not crlf:
                    raise ValueError("chunked body cut short")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    _, end, rest = rest.partition(b"\r\n")
                    if not end:
                        raise ValueError("no end of the chunked body")
                    break
                chunks.append(rest[:size])
                if rest[size : size + 2] != b"\r\n":
                    raise ValueError("chunk without its CRLF")
                rest = rest[size + 2 :]
            body = b"".join(chunks)
        else:
            body, rest = rest, b""
        responses.append((status, headers, body))
    return responses


def dechunk(body: bytes) -> bytes:
    """
    The data of a complete chunked body (fails on a truncated one).
    """
    out = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        assert body[size : size + 2] == b"\r\n", "malformed chunk"
        out += body[:size]
        body = body[size + 2 :]


class HeldReceiver(Protocol):
    """
    A receiver on a raw connection that stops reading right after its
    request, until L{resume}: the slowest receiver there can be.
    """

    def __init__(self, path: bytes) -> None:
        self.path = path
        self.received = bytearray()
        self.ended: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(
            b"GET " + self.path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume(self) -> None:
        assert self.transport is not None
        self.transport.resumeProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        head, _, body = bytes(self.received).partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = dechunk(body)
        self.ended.callback(body)


class RawClient(Protocol):
    """A raw connection that sends what it is told and keeps what it gets."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(bytes(self.received))


async def connect(reactor: Any, server: RunningServer) -> RawClient:
    client = RawClient()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port).connect(
        Factory.forProtocol(lambda: client)
    )
    return client
