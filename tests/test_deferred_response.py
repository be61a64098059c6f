"""
C{Txpipe-Sender-Response: deferred}: a sender whose response must not begin
before its upload is over (behind nginx, which stops forwarding a request
body once the response has begun).  A real listening server, raw
connections where the exact bytes on the wire matter, curl elsewhere.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, List

import pytest_twisted
from twisted.internet import defer

from pipe._http import tcp as _tcp
from pipe._http.writes import pending_bytes

from .helpers import (
    DONE,
    RawClient,
    RunningServer,
    connect,
    curl,
    payload,
    sha256_of,
    split_responses,
    wait_for,
)

DEFERRED = "Txpipe-Sender-Response: deferred"


async def deferred_sender(
    reactor: Any, server: RunningServer, target: bytes, length: int
) -> RawClient:
    """
    A deferred sender on a raw connection: its request head (asking for
    C{100 Continue}) is sent, its body only when the test writes it.
    """
    sender = await connect(reactor, server)
    assert sender.transport is not None
    sender.transport.write(
        b"PUT " + target + b" HTTP/1.1\r\nHost: t\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n"
        b"Txpipe-Sender-Response: deferred\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )
    return sender


def written(channel: Any) -> int:
    """
    The bytes the server has written to C{channel}'s connection so far:
    handed to the kernel (C{TCP_INFO}), or still in Twisted's buffer.  The
    server runs in the test's reactor, so this is exact whenever the test
    looks, however slow the server is.
    """
    position = _tcp.position(channel.transport.getHandle())
    assert position is not None, "needs Linux's TCP_INFO"
    return position[1] + (pending_bytes(channel.transport) or 0)


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_nothing_is_written_before_the_upload(
    reactor: Any, server: RunningServer, monkeypatch: Any
) -> None:
    """
    While the deferred sender waits, and as receivers come, the server
    writes nothing to it; when the transfer starts it sends only C{100
    Continue}; after the body, C{200} and the final line alone.
    """
    channels: List[Any] = []
    build = server.site.buildProtocol

    def recording(address: Any) -> Any:
        channel = build(address)
        channels.append(channel)
        return channel

    monkeypatch.setattr(server.site, "buildProtocol", recording)
    data = bytes(range(256)) * 4096  # 1 MiB
    path = "/api/v1/pipe/deferred?n=2"
    sender = await deferred_sender(reactor, server, path.encode(), len(data))
    await wait_for(reactor, lambda: server.parties("deferred") == (True, 0))
    [channel] = channels  # the sender's connection, on the server's side
    assert written(channel) == 0, "written to the sender while it waits alone"
    first = curl(reactor, server.url("deferred", "n=2"))
    await wait_for(reactor, lambda: server.parties("deferred") == (True, 1))
    # A streamed response would have written its 200 and two lines by now:
    # the receiver's arrival was handled in this process.
    assert written(channel) == 0, "written to the sender as a receiver came"

    second = curl(reactor, server.url("deferred", "n=2"))
    await wait_for(reactor, lambda: written(channel) > 0, what="100 Continue")
    assert written(channel) == len(CONTINUE), "more than 100 Continue before the body"
    await wait_for(reactor, lambda: len(sender.received) >= len(CONTINUE))
    assert bytes(sender.received) == CONTINUE
    assert written(channel) == len(CONTINUE), "more than 100 Continue before the body"
    assert sender.transport is not None
    sender.transport.write(data)
    response = await sender.closed

    results = [await first.ended, await second.ended]
    assert [r.code for r in results] == [0, 0]
    assert {r.digest for r in results} == {hashlib.sha256(data).hexdigest()}
    # Everything ever written to the sender: 100 Continue, then the 200 with
    # the last line alone.
    (informational, _, nothing), (status, _, body) = split_responses(response)
    assert (informational, nothing) == (b"HTTP/1.1 100 Continue", b""), response
    assert status == b"HTTP/1.1 200 OK", response
    assert body.count(b"\n") == 1 and DONE.match(body), body
    assert len(server.rendezvous) == 0


@pytest_twisted.ensureDeferred
async def test_deferred_sender_with_curl_both_orders(
    reactor: Any, server: RunningServer, tmp_path: Path
) -> None:
    data = payload(tmp_path, 8 * 1024 * 1024)
    for order in ("sender_first", "receivers_first"):
        url = server.url(f"curl-{order}", "n=3")
        receivers: List[Any] = []
        if order == "receivers_first":
            receivers = [curl(reactor, url) for _ in range(3)]
            await wait_for(
                reactor, lambda u=order: server.parties(f"curl-{u}") == (False, 3)
            )
        sender = curl(reactor, "-H", DEFERRED, "-T", str(data), url, keep_text=True)
        if order == "sender_first":
            await wait_for(
                reactor, lambda u=order: server.parties(f"curl-{u}") == (True, 0)
            )
            receivers = [curl(reactor, url) for _ in range(3)]
        results = await defer.gatherResults([r.ended for r in receivers])
        sent = await sender.ended
        assert [r.code for r in results] == [0] * 3
        assert {r.digest for r in results} == {sha256_of(data)}
        assert sent.code == 0, sent
        assert sent.text.count(b"\n") == 1 and DONE.search(sent.text), sent.text


@pytest_twisted.ensureDeferred
async def test_deferred_sender_learns_of_a_failure(
    reactor: Any, server: RunningServer, tmp_path: Path
) -> None:
    """
    A receiver lost mid-transfer: the deferred sender's response begins
    with the failure, its last line is the C{[ERROR]}, and curl fails.
    """
    data = payload(tmp_path, 48 * 1024 * 1024)
    url = server.url("fail", "n=2")
    good = curl(reactor, url)
    doomed = curl(reactor, "--limit-rate", "1M", url)
    await wait_for(reactor, lambda: server.parties("fail") == (False, 2))
    sender = curl(reactor, "-H", DEFERRED, "-T", str(data), url, keep_text=True)
    await wait_for(reactor, lambda: server.parties("fail") == (True, 2))
    doomed.kill()
    sent = await sender.ended
    assert (await good.ended).code == 0
    assert sent.code != 0
    lines = sent.text.strip().splitlines()
    assert lines[-1].startswith(b"[ERROR] failed: "), sent.text
    assert not any(b"transfer started" in line for line in lines)
    assert len(server.rendezvous) == 0


@pytest_twisted.ensureDeferred
async def test_deferred_sender_that_times_out_waiting(
    reactor: Any, server: RunningServer
) -> None:
    data = b"x" * 100_000
    sender = await deferred_sender(
        reactor, server, b"/api/v1/pipe/lonely?n=2&wait=1", len(data)
    )
    response = await sender.closed
    assert response.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert b"[ERROR] timed out after 1 s waiting" in response
    assert not response.endswith(b"0\r\n\r\n"), "a failure must not end cleanly"
    assert len(server.rendezvous) == 0


@pytest_twisted.ensureDeferred
async def test_bad_sender_response_is_400(reactor: Any, server: RunningServer) -> None:
    for value in ("later", "stream, deferred"):
        result = await curl(
            reactor,
            "-i",
            "-H",
            f"Txpipe-Sender-Response: {value}",
            "-T",
            "-",
            server.url("bad"),
            keep_text=True,
        ).ended
        assert result.text.startswith(b"HTTP/1.1 400"), result.text
        last = result.text.rstrip().splitlines()[-1]
        assert last.startswith(
            b"[ERROR] Txpipe-Sender-Response must be one of stream, deferred; got "
        ), last
        assert value.encode() in last
    assert len(server.rendezvous) == 0
