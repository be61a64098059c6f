"""
The read size of an upload and the window it gives a pipe (see
L{pipe._http.window}): the formula, and on real TCP connections, that a
transfer reads its upload in pieces of the size the formula gives for its
receivers (the default again once the sender's request is done), that
what the server holds stays within the window while receivers do not read,
and that the upload stays paused then (backpressure) and everything arrives
once they read.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.tcp import Connection
from twisted.python.failure import Failure

from pipe._http.channel import UPLOAD_READ_SIZE, StreamingChannel
from pipe._http.window import (
    MAX_READ_SIZE,
    MIN_READ_SIZE,
    PAUSE_THRESHOLD,
    WINDOW_BUDGET,
    read_size,
    window,
)
from pipe._http.writes import pending_bytes
from pipe.server import make_site

from .helpers import wait_for

KiB = 1024
MiB = 1024 * KiB


def test_window_is_the_read_and_each_receivers_buffer() -> None:
    assert window(1, MiB) == MiB + MiB + PAUSE_THRESHOLD
    assert window(30, MiB) == MiB + 30 * (MiB + 64 * KiB)


@pytest.mark.parametrize(
    "receivers, size",
    [
        (1, 2 * MiB),
        (30, 2 * MiB),
        (31, MiB),
        (59, MiB),
        (60, 512 * KiB),
        (112, 512 * KiB),
        (113, 256 * KiB),
        (1000, 256 * KiB),
    ],
)
def test_read_size_follows_the_receivers(receivers: int, size: int) -> None:
    assert read_size(receivers) == size


def test_read_size_keeps_the_window_within_its_budget() -> None:
    """
    Every read size is a power of two from the minimum (the read of a
    waiting sender) to the maximum, never grows with more receivers, and
    keeps the window within the budget wherever the minimum does.
    """
    assert UPLOAD_READ_SIZE == MIN_READ_SIZE
    sizes = [read_size(n) for n in range(1, 2001)]
    assert sizes == sorted(sizes, reverse=True)
    for n, size in enumerate(sizes, 1):
        assert MIN_READ_SIZE <= size <= MAX_READ_SIZE
        assert size & (size - 1) == 0
        if window(n, MIN_READ_SIZE) <= WINDOW_BUDGET:
            assert window(n, size) <= WINDOW_BUDGET
        if size < MAX_READ_SIZE:
            assert window(n, size * 2) > WINDOW_BUDGET


class Client(Protocol):
    """A raw HTTP client: what it wrote, what it got."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True


class Server:
    """
    A real pipe site on a loopback port, its accepted channels in order,
    and how much of the upload each read of a given channel carried.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.channels: List[StreamingChannel] = []
        site = make_site(reactor)
        build = site.buildProtocol

        def built(address: Any) -> StreamingChannel:
            channel = build(address)
            self.channels.append(channel)
            return channel

        site.buildProtocol = built  # type: ignore[method-assign]
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")

    async def connect(self) -> Client:
        client = Client()
        count = len(self.channels)
        await TCP4ClientEndpoint(
            self.reactor, "127.0.0.1", self.port.getHost().port
        ).connect(Factory.forProtocol(lambda: client))
        await wait_for(self.reactor, lambda: len(self.channels) > count, what="accept")
        return client


def _get(path: bytes, n: int) -> bytes:
    return b"GET /api/v1/pipe/%s?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (path, n)


def _put(path: bytes, n: int, length: int) -> bytes:
    return (
        b"PUT /api/v1/pipe/%s?n=%d HTTP/1.1\r\nHost: t\r\n"
        b"Content-Length: %d\r\n\r\n" % (path, n, length)
    )


@pytest_twisted.ensureDeferred
async def test_a_transfer_reads_its_upload_in_pieces_of_its_read_size(
    reactor: Any,
) -> None:
    """
    A waiting sender's upload is read 256 KiB at a time; once its transfer
    to 3 receivers starts, L{read_size}C{(3)} at a time; once its request
    is done, Twisted's default again.
    """
    server = Server(reactor)
    try:
        sender = await server.connect()
        sender_channel = server.channels[0]
        connection = sender_channel.transport
        assert isinstance(connection, Connection)
        data = os.urandom(8 * MiB)
        sender.transport.write(_put(b"r", 3, len(data)))  # type: ignore[union-attr]
        await wait_for(reactor, lambda: bool(sender_channel.requests), what="PUT")
        await wait_for(
            reactor, lambda: connection.bufferSize == UPLOAD_READ_SIZE, what="waiting"
        )
        receivers = [await server.connect() for _ in range(3)]
        for receiver in receivers:
            receiver.transport.write(_get(b"r", 3))  # type: ignore[union-attr]
        await wait_for(
            reactor, lambda: connection.bufferSize == read_size(3), what="started"
        )
        assert read_size(3) == MAX_READ_SIZE
        sender.transport.write(data)  # type: ignore[union-attr]
        await wait_for(
            reactor,
            lambda: all(r.received.endswith(data[-1000:]) for r in receivers),
            what="every byte",
            timeout=60,
        )
        await wait_for(
            reactor,
            lambda: connection.bufferSize == Connection.bufferSize,
            what="the default read size",
        )
        for receiver in receivers:
            assert bytes(receiver.received).endswith(data)
    finally:
        await server.port.stopListening()
        for channel in server.channels:
            if channel.transport is not None:
                channel.transport.abortConnection()  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_receivers_that_do_not_read_hold_the_pipe_within_its_window(
    reactor: Any,
) -> None:
    """
    Three receivers that do not read: the upload is paused, and what the
    server holds in user space (each read, and every receiver connection's
    unsent bytes) stays within L{window}, with no copy of a read in the
    transports' buffers; once they read, everything arrives in order and
    the sender is told it is done.
    """
    n = 3
    server = Server(reactor)
    receivers = [await server.connect() for _ in range(n)]
    receiver_channels = list(server.channels)
    try:
        for receiver in receivers:
            receiver.transport.pauseProducing()  # type: ignore[union-attr]
            receiver.transport.write(_get(b"w", n))  # type: ignore[union-attr]
        await wait_for(
            reactor,
            lambda: all(c.requests for c in receiver_channels),
            what="GETs",
        )
        sender = await server.connect()
        sender_channel = server.channels[-1]
        held: List[int] = []
        copied: List[int] = []
        reads: List[int] = []
        receive = sender_channel.dataReceived

        def counted(data: bytes) -> None:
            reads.append(len(data))
            receive(data)
            # Copies in the transports' buffers; and what is unsent in all.
            copied.append(
                sum(pending_bytes(c.transport) or 0 for c in receiver_channels)
            )
            held.append(sum(c.unsent() or 0 for c in receiver_channels))

        sender_channel.dataReceived = counted  # type: ignore[method-assign]
        data = os.urandom(96 * MiB)
        sender.transport.write(_put(b"w", n, len(data)) + data)  # type: ignore[union-attr]
        connection = sender_channel.transport
        await wait_for(
            reactor,
            lambda: connection not in reactor.getReaders() and sum(reads) > MiB,
            what="the upload paused",
            timeout=60,
        )
        read = read_size(n)
        assert max(reads) <= read
        assert max(held) <= window(n, read) - read
        # On plain TCP the unsent rests are views of the shared read: the
        # transports hold no copy of it, only what they buffer before they
        # pause (the response heads).
        assert max(copied) < n * PAUSE_THRESHOLD
        assert sum(reads) < len(data), "nothing held the upload back"
        for receiver in receivers:
            receiver.transport.resumeProducing()  # type: ignore[union-attr]
        await wait_for(
            reactor,
            lambda: all(r.received.endswith(data[-1000:]) for r in receivers),
            what="every byte",
            timeout=120,
        )
        digest = hashlib.sha256(data).digest()
        for receiver in receivers:
            head, _, body = bytes(receiver.received).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert hashlib.sha256(body).digest() == digest
        await wait_for(
            reactor,
            lambda: b"[INFO] done" in sender.received,
            what="done",
            timeout=30,
        )
    finally:
        await server.port.stopListening()
        for channel in server.channels:
            if channel.transport is not None:
                channel.transport.abortConnection()  # type: ignore[attr-defined]


def test_large_reads_are_kept_off_the_heap() -> None:
    """
    glibc takes the fixed mmap threshold (where it has mallopt): a 2 MiB
    read is a mapping of its own, not heap that stays after its pipe
    (C{tox -e soak} measures the growth this prevents).
    """
    import ctypes

    from pipe._http.window import keep_large_reads_off_the_heap

    if not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("this C library has no mallopt")
    assert keep_large_reads_off_the_heap()
