"""
Clients of a real L{pipe.server.PipeSite} over L{StringTransport}s: one
channel per L{Peer}, driven by hand, no socket.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from pipe.server import PipeSite


class Peer:
    """
    One client connection: a real channel of the site over a StringTransport.
    """

    _ports = iter(range(20000, 30000))

    def __init__(self, site: PipeSite) -> None:
        self.channel = site.buildProtocol(None)
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", next(self._ports))
        )
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def output(self) -> bytes:
        return self.transport.value()

    def body(self) -> bytes:
        """The response body, de-chunked."""
        head, _, rest = self.output().partition(b"\r\n\r\n")
        while head.startswith(b"HTTP/1.1 100"):
            head, _, rest = rest.partition(b"\r\n\r\n")
        if b"Transfer-Encoding: chunked" not in head:
            return rest
        body = bytearray()
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2 :]
        return bytes(body)

    def lose(self) -> None:
        self.channel.connectionLost(Failure(ConnectionLost("gone")))


def get(site: PipeSite, path: bytes = b"x", n: int = 2) -> Peer:
    peer = Peer(site)
    peer.send(b"GET /api/v1/pipe/" + path + b"?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
    return peer


def put_head(
    path: bytes = b"x", n: int = 2, length: int = 0, extra: bytes = b""
) -> bytes:
    framing = (
        b"Content-Length: %d\r\n" % length
        if length
        else b"Transfer-Encoding: chunked\r\n"
    )
    return (
        b"PUT /api/v1/pipe/"
        + path
        + b"?n=%d HTTP/1.1\r\nHost: t\r\n" % n
        + framing
        + extra
        + b"\r\n"
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"
