"""
L{pipe.client} against real listening servers: streaming both ways,
progress, results, every error type in plain words, a slow source sent as
it comes, and a consumer sink's backpressure reaching the sender.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional

import pytest
import pytest_twisted
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IConsumer, IProtocol, IPushProducer
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer
from zope.interface.verify import verifyObject

import pipe.client
from pipe._client.body import BodyFlow, BodyProtocol
from pipe._client.source import CountingProducer, FileProducer
from pipe.client import (
    CHUNK_SIZE,
    PipeRejected,
    Progress,
    TransferFailed,
    WaitTimeout,
    receive,
    send,
)

from .helpers import (
    HeldReceiver,
    RawClient,
    RunningServer,
    curl,
    payload,
    server_status,
    sha256_of,
    wait_for,
)


@implementer(IConsumer)
class Collecting:
    """An IConsumer sink."""

    def __init__(self) -> None:
        self.data = bytearray()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.data += data


@pytest_twisted.ensureDeferred
async def test_send_a_path_to_a_file_and_a_consumer(
    reactor: Any, server: RunningServer, tmp_path: Path
) -> None:
    data = payload(tmp_path, 3 * 1024 * 1024 + 17)
    url = server.url("client/one", "n=2")
    into_file = io.BytesIO()
    into_consumer = Collecting()
    seen: List[Progress] = []
    receiving = [
        receive(url, into_file, reactor=reactor),
        receive(url, into_consumer, reactor=reactor, progress=seen.append),
    ]
    await wait_for(
        reactor, lambda: server.rendezvous.parties(b"client/one") == (False, 2)
    )
    sender_seen: List[Progress] = []
    result = await send(
        url,
        str(data),
        reactor=reactor,
        progress=sender_seen.append,
        content_type="application/x-tar",
    )
    first, second = [await d for d in receiving]
    digest = sha256_of(data)
    assert result.sha256 == first.sha256 == second.sha256 == digest
    assert result.bytes == first.bytes == data.stat().st_size
    assert result.receivers == 2
    assert result.summary.startswith("[INFO] done: bytes=3145745 receivers=2/2")
    assert hashlib.sha256(into_file.getvalue()).hexdigest() == digest
    assert hashlib.sha256(bytes(into_consumer.data)).hexdigest() == digest
    assert first.content_type == "application/x-tar"
    assert seen[-1].bytes == seen[-1].total == data.stat().st_size
    assert sender_seen[-1].bytes == sender_seen[-1].total == data.stat().st_size
    assert sender_seen[-1].started and sender_seen[-1].n == 2


@pytest_twisted.ensureDeferred
async def test_sender_first_from_a_file_object_and_a_producer(
    reactor: Any, server: RunningServer
) -> None:
    url = server.url("client/two")
    waiting: List[Progress] = []
    sending = send(
        url, io.BytesIO(b"x" * 100_000), reactor=reactor, progress=waiting.append
    )
    await wait_for(
        reactor, lambda: server.rendezvous.parties(b"client/two") == (True, 0)
    )
    got = io.BytesIO()
    await receive(url, got, reactor=reactor)
    result = await sending
    assert got.getvalue() == b"x" * 100_000 and result.bytes == 100_000
    assert any(p.n == 1 and p.receivers == 0 and not p.started for p in waiting)

    url = server.url("client/three")
    producer = FileBodyProducer(io.BytesIO(b"y" * 5000))
    receiving = receive(url, io.BytesIO(), reactor=reactor)
    result = await send(url, producer, reactor=reactor)
    assert result.bytes == 5000 and (await receiving).bytes == 5000


@pytest_twisted.ensureDeferred
async def test_rejections_and_wait_timeouts(
    reactor: Any, server: RunningServer
) -> None:
    with pytest.raises(PipeRejected) as rejected:
        await receive(server.url("bad", "n=0"), io.BytesIO(), reactor=reactor)
    assert rejected.value.status == 400
    assert rejected.value.reason.startswith("[ERROR] n must be")
    with pytest.raises(PipeRejected) as rejected:
        await send(server.root + "/elsewhere", io.BytesIO(b"x"), reactor=reactor)
    assert rejected.value.status == 404
    with pytest.raises(WaitTimeout) as timed_out:
        await receive(server.url("lonely", "wait=1"), io.BytesIO(), reactor=reactor)
    assert "timed out after 1 s" in timed_out.value.reason
    with pytest.raises(WaitTimeout):
        await send(server.url("lonely2", "wait=1"), io.BytesIO(b"x"), reactor=reactor)
    await wait_for(reactor, lambda: len(server.rendezvous) == 0)


@pytest_twisted.ensureDeferred
async def test_receiver_of_a_cut_stream_fails(
    reactor: Any, server: RunningServer
) -> None:
    url = server.url("cut")
    got = io.BytesIO()
    receiving = receive(url, got, reactor=reactor)
    await wait_for(reactor, lambda: server.rendezvous.parties(b"cut") == (False, 1))
    sender = RawClient()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port).connect(
        Factory.forProtocol(lambda: sender)
    )
    assert sender.transport is not None
    sender.transport.write(
        b"PUT /api/v1/pipe/cut HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
        + b"z" * 400
    )
    await wait_for(reactor, lambda: len(got.getvalue()) == 400)
    sender.transport.abortConnection()  # type: ignore[attr-defined]
    with pytest.raises(TransferFailed) as failed:
        await receiving
    assert failed.value.reason == (
        "the stream was cut: the connection closed before the end of the data"
    )
    assert "ConnectionLost" in failed.value.details, "Twisted's words, for -v"


@pytest_twisted.ensureDeferred
async def test_sender_fails_when_a_receiver_is_lost(
    reactor: Any, server: RunningServer, tmp_path: Path
) -> None:
    held = HeldReceiver(b"/api/v1/pipe/lost?n=2")
    await TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port).connect(
        Factory.forProtocol(lambda: held)
    )
    other = receive(server.url("lost", "n=2"), io.BytesIO(), reactor=reactor)
    await wait_for(reactor, lambda: server.rendezvous.parties(b"lost") == (False, 2))
    data = payload(tmp_path, 16 * 1024 * 1024)
    sending = send(server.url("lost", "n=2"), str(data), reactor=reactor)
    await wait_for(
        reactor,
        lambda: (
            server.rendezvous.stage(b"lost") is not None
            and server.site.registry.live_bytes()[0] > 0
        ),
    )
    assert held.transport is not None
    held.transport.abortConnection()  # type: ignore[attr-defined]
    with pytest.raises(TransferFailed) as failed:
        await sending
    assert failed.value.reason.startswith("[ERROR] failed:")
    assert (await other).bytes == data.stat().st_size


@pytest_twisted.ensureDeferred
async def test_deferred_send_gets_only_the_summary(
    reactor: Any, server: RunningServer
) -> None:
    """
    C{deferred=True}: the server answers after the upload, with the final
    line alone (no progress lines, so no receiver counts).
    """
    url = server.url("client/deferred", "n=2")
    sending = send(url, io.BytesIO(b"d" * 300_000), reactor=reactor, deferred=True)
    await wait_for(
        reactor, lambda: server.rendezvous.parties(b"client/deferred") == (True, 0)
    )
    sinks = [io.BytesIO(), io.BytesIO()]
    results = await defer.gatherResults(
        [receive(url, sink, reactor=reactor) for sink in sinks]
    )
    result = await sending
    assert [r.bytes for r in results] == [300_000, 300_000]
    assert result.lines == [result.summary]
    assert result.summary.startswith("[INFO] done: bytes=300000 receivers=2/2")


@pytest_twisted.ensureDeferred
async def test_unreachable_servers_fail_in_plain_words(reactor: Any) -> None:
    """
    An unknown host and a refused connection fail both calls with
    L{TransferFailed} (a L{pipe.client.PipeError}, as documented), with a
    plain reason; Twisted's own error is in C{details}.
    """
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    try:
        for url, reason, underneath in [
            (
                "http://nonexistent.invalid/api/v1/pipe/p",
                "could not connect to nonexistent.invalid:80: the host name is unknown",
                "DNSLookupError",
            ),
            (
                f"http://127.0.0.1:{port}/api/v1/pipe/p",
                f"could not connect to 127.0.0.1:{port}: the connection was refused",
                "ConnectionRefusedError",
            ),
        ]:
            for attempt in (
                receive(url, io.BytesIO(), reactor=reactor),
                send(url, io.BytesIO(b"x"), reactor=reactor),
            ):
                with pytest.raises(TransferFailed) as failed:
                    await attempt
                assert failed.value.reason == reason
                assert underneath in failed.value.details
    finally:
        held.close()


@pytest_twisted.ensureDeferred
async def test_send_from_a_pipe_sends_what_it_has_as_it_comes(
    reactor: Any, server: RunningServer
) -> None:
    """
    A pipe (a buffered file object) with a few bytes in it and its writer
    still open: they reach the receiver now, not once C{CHUNK_SIZE} bytes
    or the end have gathered; the rest follows; the digests match.
    """
    url = server.url("client/pipe")
    got = io.BytesIO()
    receiving = receive(url, got, reactor=reactor)
    await wait_for(
        reactor, lambda: server.rendezvous.parties(b"client/pipe") == (False, 1)
    )
    read_end, write_end = os.pipe()
    source = os.fdopen(read_end, "rb")
    sending = send(url, source, reactor=reactor)
    first = os.urandom(1000)
    os.write(write_end, first)
    await wait_for(reactor, lambda: len(got.getvalue()) >= len(first), what="first")
    assert got.getvalue() == first and not sending.called
    rest = os.urandom(CHUNK_SIZE // 8)
    os.write(write_end, rest)
    os.close(write_end)
    result = await sending
    digest = hashlib.sha256(first + rest).hexdigest()
    assert result.sha256 == (await receiving).sha256 == digest
    assert result.bytes == len(first + rest)
    source.close()


def test_producers_provide_their_interfaces() -> None:
    producer = FileProducer(None, io.BytesIO(b"x"), lambda chunk: None)
    assert verifyObject(IBodyProducer, producer)
    assert verifyObject(IPushProducer, producer)
    counting = CountingProducer(FileBodyProducer(io.BytesIO(b"x")), lambda chunk: None)
    assert verifyObject(IBodyProducer, counting)
    assert verifyObject(IPushProducer, BodyFlow(StringTransport()))


def test_the_body_reader_is_a_twisted_protocol() -> None:
    """
    What reads a response body is a Twisted protocol (the only sense of
    "protocol" in txpipe), given to C{IResponse.deliverBody}.
    """
    reader = BodyProtocol(lambda data: None)
    assert isinstance(reader, protocol.Protocol)
    assert verifyObject(IProtocol, reader)


def test_the_public_surface() -> None:
    """
    C{pipe.client} exports its documented names, and still offers the
    ones it always offered outside C{__all__}.
    """
    documented = "PipeError PipeRejected Progress ReceiveResult SendResult"
    documented += " TransferFailed WaitTimeout receive send"
    assert sorted(pipe.client.__all__) == sorted(documented.split())
    for name in ("CHUNK_SIZE", "ProgressCallback", "Sink", "Source"):
        assert hasattr(pipe.client, name), name
    assert CHUNK_SIZE == 256 * 1024


def test_importing_the_client_installs_no_reactor() -> None:
    """
    The client library and the command's modules import the global reactor
    only when a call without a C{reactor} (or the command) runs.
    """
    modules = (
        "pipe.client",
        "pipe._client.body",
        "pipe._client.errors",
        "pipe._client.receive",
        "pipe._client.send",
        "pipe._client.source",
        "pipe._client.types",
        "pipe._cli.main",
        "pipe._cli.output",
        "pipe._cli.progress",
        "pipe._cli.send_recv",
    )
    code = (
        f"import sys, {', '.join(modules)};"
        "print('twisted.internet.reactor' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


@implementer(IConsumer)
class Pausing:
    """
    An IConsumer sink that pauses its producer at its first write, or stops
    it there, and resumes it when the test says.

    @ivar writes: how many writes it got.
    """

    def __init__(self, stop: bool = False) -> None:
        self.data = bytearray()
        self.writes = 0
        self.producer: Optional[IPushProducer] = None
        self.unregistered = False
        self._stop = stop

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming, "a push producer"
        assert verifyObject(IPushProducer, producer)
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.unregistered = True

    def write(self, data: bytes) -> None:
        self.data += data
        self.writes += 1
        if self.writes == 1:
            assert self.producer is not None, "no producer was registered"
            if self._stop:
                self.producer.stopProducing()
            else:
                self.producer.pauseProducing()

    def resume(self) -> None:
        assert self.producer is not None
        self.producer.resumeProducing()


#: What may reach a paused consumer: the write that paused it, and the rest
#: of the socket read it came in (Twisted reads 64 KiB at a time).
HELD = 256 * 1024


@pytest_twisted.ensureDeferred
async def test_a_pausing_consumer_holds_the_sender_back(
    reactor: Any, server: RunningServer, tmp_path: Path
) -> None:
    """
    C{receive} into an C{IConsumer} registers a push producer: when the
    consumer pauses, its connection is not read, so the bytes in the
    client stay bounded while the server pauses the upload (its branch to
    this receiver is paused, the sender is not done); when it resumes,
    every byte arrives.
    """
    data = payload(tmp_path, 64 * 1024 * 1024)
    path = b"client/paced"
    url = server.url(path.decode())
    consumer = Pausing()
    receiving = receive(url, consumer, reactor=reactor)
    await wait_for(reactor, lambda: server.rendezvous.parties(path) == (False, 1))
    sender = curl(reactor, "-T", str(data), url)

    def fanout() -> Any:
        meeting = server.rendezvous._meetings.get(path)
        return meeting.sender.fanout if meeting and meeting.sender else None

    def held_back() -> bool:
        return fanout() is not None and bool(fanout()._paused)

    await wait_for(
        reactor,
        lambda: len(consumer.data) > HELD or held_back(),
        what="the sender held back",
    )
    assert len(consumer.data) <= HELD, "the paused consumer got more"
    held, received = len(consumer.data), fanout().received
    assert received < data.stat().st_size
    # A whole request to the server, and still nothing moves.
    await server_status(reactor, server.port.getHost().port)
    assert len(consumer.data) == held and fanout().received == received
    assert held_back() and not sender.ended.called and not receiving.called
    consumer.resume()
    result = await receiving
    assert result.sha256 == sha256_of(data)
    assert hashlib.sha256(consumer.data).hexdigest() == sha256_of(data)
    assert consumer.unregistered
    assert (await sender.ended).code == 0


@pytest_twisted.ensureDeferred
async def test_a_consumer_that_stops_fails_the_receive(
    reactor: Any, server: RunningServer, tmp_path: Path
) -> None:
    """
    A consumer that stops its producer gets no more writes, is
    unregistered, and the receive fails with L{TransferFailed}.
    """
    data = payload(tmp_path, 8 * 1024 * 1024)
    url = server.url("client/stopped")
    consumer = Pausing(stop=True)
    receiving = receive(url, consumer, reactor=reactor)
    await wait_for(
        reactor, lambda: server.rendezvous.parties(b"client/stopped") == (False, 1)
    )
    sender = curl(reactor, "-T", str(data), url)
    with pytest.raises(TransferFailed) as failed:
        await receiving
    assert failed.value.reason == "the stream was cut: the consumer stopped it"
    assert consumer.writes == 1 and consumer.unregistered
    await sender.ended
