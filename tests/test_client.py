"""
L{pipe.client} against real listening servers: streaming both ways,
progress, results, and every error type.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import Factory
from twisted.web.client import FileBodyProducer
from zope.interface import implementer

from pipe.client import (
    PipeRejected,
    Progress,
    TransferFailed,
    WaitTimeout,
    receive,
    send,
)

from .conftest import RunningServer
from .helpers import payload, sha256_of, wait_for
from .test_end_to_end import HeldReceiver
from .test_hardening_end_to_end import RawClient


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
    with pytest.raises(TransferFailed):
        await receiving


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
            and server.site.relay.live_bytes()[0] > 0
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
