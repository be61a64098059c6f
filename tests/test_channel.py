"""
The direct write path of L{StreamingChannel} on a real TCP connection:
response data goes to the socket at once when nothing is buffered, what the
socket does not take is buffered by the transport in order, and the
transport's producer pausing still applies.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any, List

import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.web.http_headers import Headers

from pipe._http.channel import StreamingChannel
from pipe._http.rest import unsent as _unsent
from pipe._http.writes import pending_bytes
from pipe.server import make_site

from .helpers import wait_for


class Client(Protocol):
    def __init__(self) -> None:
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.received += data


async def connected_pair(reactor: Any) -> Any:
    """
    A L{StreamingChannel} accepted by a real listening port, and the client
    protocol connected to it.
    """
    channels: List[StreamingChannel] = []
    site = make_site(reactor)

    def build() -> StreamingChannel:
        channel = site.buildProtocol(None)
        channels.append(channel)
        return channel

    port = reactor.listenTCP(0, Factory.forProtocol(build), interface="127.0.0.1")
    client = Client()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
        Factory.forProtocol(lambda: client)
    )
    await wait_for(reactor, lambda: bool(channels), what="accept")
    return port, channels[0], client


def test_unsent() -> None:
    assert _unsent([b"ab", b"cde", b"f"], 0) == [b"ab", b"cde", b"f"]
    assert _unsent([b"ab", b"cde", b"f"], 3) == [b"de", b"f"]
    assert _unsent([b"ab", b"cde", b"f"], 5) == [b"f"]
    assert _unsent([b"ab", b"cde", b"f"], 6) == []


def test_string_transport_buffers_as_usual() -> None:
    """
    A transport that is not a plain TCP connection gets ordinary writes.
    """
    channel = make_site(Clock()).buildProtocol(None)  # type: ignore[arg-type]
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.writeSequence([b"a", b"bc"])
    channel.write(b"d")
    assert transport.value() == b"abcd"


@pytest_twisted.ensureDeferred
async def test_written_through_at_once(reactor: Any) -> None:
    """
    With nothing buffered, a write reaches the kernel before the call
    returns: the transport holds nothing and has not asked the reactor to
    watch for writability.
    """
    port, channel, client = await connected_pair(reactor)
    try:
        headers = Headers({b"x-a": [b"1", b"2"]})
        channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", headers)
        channel.writeSequence([b"4\r\n", b"data", b"\r\n"])
        channel.write(b"more")
        assert pending_bytes(channel.transport) == 0
        assert channel.transport not in reactor.getWriters()
        expected = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-A: 2\r\n\r\n4\r\ndata\r\nmore"
        await wait_for(
            reactor, lambda: len(client.received) == len(expected), what="data"
        )
        assert bytes(client.received) == expected
    finally:
        channel.transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_full_socket_buffers_rest_in_order_and_pauses(reactor: Any) -> None:
    """
    A client that does not read: the socket takes what it can, the rest is
    kept by the channel as views of the write, uncopied (the transport
    buffers nothing), the transport's producer (the channel) is paused as a
    full buffer would pause it, a later write queues behind the rest, and
    everything arrives in order once the client reads; then the producer is
    resumed.
    """
    port, channel, client = await connected_pair(reactor)
    transport = channel.transport
    client.transport.pauseProducing()
    data = os.urandom(64 * 1024 * 1024)
    piece = 256 * 1024
    written = 0
    try:
        while not transport.producerPaused and written < len(data):
            channel.writeSequence([b"<", data[written : written + piece], b">"])
            written += piece
        assert transport.producerPaused, "the channel was never paused"
        assert written > piece, "the socket took nothing directly"
        assert pending_bytes(transport) == 0
        rest = channel.unsent() or 0
        assert 0 < rest <= piece + 2
        # Further writes queue behind the rest, in the transport.
        channel.write(b"END")
        assert pending_bytes(transport) == 3
        assert channel.unsent() == rest + 3
        client.transport.resumeProducing()
        expected = b"".join(
            b"<" + data[i : i + piece] + b">" for i in range(0, written, piece)
        )
        expected += b"END"
        await wait_for(
            reactor,
            lambda: len(client.received) >= len(expected),
            what="all data",
            timeout=30,
        )
        assert bytes(client.received) == expected
        await wait_for(reactor, lambda: not transport.producerPaused, what="resume")
    finally:
        transport.loseConnection()
        await port.stopListening()


async def _with_rest(reactor: Any) -> Any:
    """
    A connected pair whose client does not read, after writes until the
    channel keeps an unsent rest: the port, channel, client and what was
    written.
    """
    port, channel, client = await connected_pair(reactor)
    client.transport.pauseProducing()
    data = os.urandom(256 * 1024)
    written = b""
    while not channel.unsent():
        channel.write(data)
        written += data
        assert len(written) < 256 * 1024 * 1024, "the socket never filled"
    return port, channel, client, written


@pytest_twisted.ensureDeferred
async def test_a_closing_connection_sends_its_rest_then_closes(reactor: Any) -> None:
    """
    A connection closed gracefully while a rest is unsent: the rest, then
    what the transport buffered after it, reach the client, then the close.
    """
    port, channel, client, written = await _with_rest(reactor)
    try:
        channel.write(b"END")
        channel.loseConnection()
        client.transport.resumeProducing()
        await wait_for(
            reactor, lambda: client.transport.disconnected, what="close", timeout=30
        )
        assert bytes(client.received) == written + b"END"
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_peer_gone_with_a_rest_unsent_loses_the_connection(
    reactor: Any,
) -> None:
    """
    The client resets while the channel holds a rest: the rest's send
    meets the reset and the connection is lost, with the rest counted as
    unsent, not left waiting.
    """
    port, channel, client, _ = await _with_rest(reactor)
    lost: defer.Deferred[None] = channel.closed
    try:
        sock = client.transport.getHandle()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.transport.abortConnection()
        await wait_for(reactor, lambda: lost.called, what="the loss", timeout=30)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_socket_error_falls_back_to_transport(reactor: Any) -> None:
    """
    A write to a connection the peer has reset is left to the transport,
    which loses the connection as it always does.  The channel's transport
    reads nothing meanwhile, so only a write can meet the reset: a direct
    write that dropped the error would leave the connection open.
    """
    port, channel, client = await connected_pair(reactor)
    lost: defer.Deferred[None] = channel.closed
    try:
        channel.transport.stopReading()
        sock = client.transport.getHandle()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.transport.abortConnection()
        await wait_for(
            reactor, lambda: client.transport.disconnected, what="the client's reset"
        )
        writes = 0
        while not lost.called and writes < 100:
            channel.write(b"x" * 65536)
            writes += 1
            await deferLater(reactor, 0.01, lambda: None)
        assert lost.called, (
            f"{writes} writes to a reset connection, and the connection is still"
            f" open: the socket's error never reached the transport"
        )
    finally:
        if channel.transport is not None:
            channel.transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_tiny_pipe_is_one_write_per_connection(
    reactor: Any, server: Any, monkeypatch: Any
) -> None:
    """
    A tiny transfer happens while the sender's request is read: its status
    line, headers, progress lines, last line and end of chunks go out as
    one write, and so do the receiver's headers and body (see
    L{pipe._http.batch}); every byte still arrives.
    """
    writes: List[Any] = []
    original = StreamingChannel._write_through

    def counting(self: StreamingChannel, iovec: Any) -> bool:
        writes.append(self)
        return original(self, iovec)

    monkeypatch.setattr(StreamingChannel, "_write_through", counting)
    port = server.port.getHost().port
    receiver = socket.create_connection(("127.0.0.1", port))
    receiver.sendall(b"GET /api/v1/pipe/tiny HTTP/1.1\r\nHost: t\r\n\r\n")
    await wait_for(reactor, lambda: server.parties("tiny") == (False, 1))
    body = os.urandom(1024)
    sender = socket.create_connection(("127.0.0.1", port))
    sender.sendall(
        b"PUT /api/v1/pipe/tiny HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n"
        + body
    )
    await wait_for(reactor, lambda: server.rendezvous.stage(b"tiny") is None)
    channels = list(dict.fromkeys(writes))
    assert len(channels) == 2, "only the receiver and the sender are written to"
    assert [writes.count(channel) for channel in channels] == [1, 1]
    for sock in (receiver, sender):
        sock.settimeout(5)
    received = b""
    while not received.endswith(body):
        received += receiver.recv(65536)
    answer = b""
    while not answer.endswith(b"0\r\n\r\n"):
        answer += sender.recv(65536)
    assert b"[INFO] done: bytes=1024 receivers=1/1" in answer
    receiver.close()
    sender.close()
