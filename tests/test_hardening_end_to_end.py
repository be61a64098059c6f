"""
Timeouts, limits, drain and logs end to end: real listening servers, real
curl processes and raw sockets, and C{twistd -n pipe} stopped by SIGTERM.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory

from pipe._transfer.outcome import Outcome

from .helpers import (
    HeldReceiver,
    RunningServer,
    connect,
    curl,
    payload,
    sha256_of,
    start_twistd,
    wait_for,
)


@pytest_twisted.ensureDeferred
async def test_wait_timeout_with_curl(reactor: Any, serve: Any, tmp_path: Path) -> None:
    server = serve()
    receiver = await curl(
        reactor, "-i", server.url("lonely", "n=2&wait=1"), keep_text=True
    ).ended
    assert receiver.code == 0
    assert b"HTTP/1.1 504" in receiver.text
    assert receiver.text.endswith(
        b"[ERROR] timed out after 1 s waiting: sender not connected,"
        b" 1 of 2 receivers connected\n"
    )
    data = payload(tmp_path, 4 * 1024 * 1024)
    sender = await curl(
        reactor, "-T", str(data), server.url("lonely", "wait=1"), keep_text=True
    ).ended
    assert sender.code != 0
    assert sender.text.rstrip().splitlines()[-1] == (
        b"[ERROR] timed out after 1 s waiting: sender connected,"
        b" 0 of 1 receivers connected"
    )
    assert len(server.rendezvous) == 0


@pytest_twisted.ensureDeferred
async def test_stalled_receiver_is_dropped(
    reactor: Any, serve: Any, tmp_path: Path
) -> None:
    server = serve(stall_timeout=1)
    data = payload(tmp_path, 48 * 1024 * 1024)
    url = server.url("stall", "n=2")
    held = HeldReceiver(b"/api/v1/pipe/stall?n=2")
    await TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port).connect(
        Factory.forProtocol(lambda: held)
    )
    fast = curl(reactor, url)
    await wait_for(reactor, lambda: server.rendezvous.parties(b"stall") == (False, 2))
    sender = curl(reactor, "-T", str(data), url, keep_text=True)
    result = await fast.ended
    sent = await sender.ended
    assert result.code == 0 and result.digest == sha256_of(data)
    assert sent.code != 0
    assert b"stalled" in sent.text
    assert b"[ERROR] failed: " in sent.text
    held.resume()  # reading again, it sees the reset
    assert len(await held.ended) < data.stat().st_size
    assert server.site.registry.statistics.transfers()[Outcome.RECEIVER_STALLED] == 1


@pytest_twisted.ensureDeferred
async def test_receiver_below_min_rate_is_dropped(
    reactor: Any, serve: Any, tmp_path: Path
) -> None:
    server = serve(stall_timeout=1, min_rate=2_000_000)
    data = payload(tmp_path, 48 * 1024 * 1024)
    url = server.url("slow", "n=2")
    slow = curl(reactor, "--limit-rate", "100K", url)
    fast = curl(reactor, url)
    await wait_for(reactor, lambda: server.rendezvous.parties(b"slow") == (False, 2))
    sent = await curl(reactor, "-T", str(data), url, keep_text=True).ended
    result = await fast.ended
    # The slow curl would take minutes to read what its kernel buffered
    # before it sees the reset; the server's side is what is checked.
    slow.kill()
    await slow.ended
    assert server.site.registry.statistics.transfers()[Outcome.RECEIVER_STALLED] == 1
    assert result.code == 0 and result.digest == sha256_of(data)
    assert sent.code != 0 and b"stalled" in sent.text


@pytest_twisted.ensureDeferred
async def test_idle_sender_is_aborted(reactor: Any, serve: Any) -> None:
    server = serve(idle_timeout=1)
    url = server.url("idle", "n=2")
    receivers = [curl(reactor, url), curl(reactor, "-0", url)]
    await wait_for(reactor, lambda: server.rendezvous.parties(b"idle") == (False, 2))
    sender = await connect(reactor, server)
    sender.transport.write(  # type: ignore[union-attr]
        b"PUT /api/v1/pipe/idle?n=2 HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    text = await sender.closed
    results = [await r.ended for r in receivers]
    assert all(r.code != 0 for r in results), results
    assert (
        b"[ERROR] failed: bytes=5 receivers=0/2: the sender sent nothing for 1 s"
        in (text)
    )
    assert not text.endswith(b"0\r\n\r\n")


@pytest_twisted.ensureDeferred
async def test_slow_headers_are_disconnected(reactor: Any, serve: Any) -> None:
    server = serve(header_timeout=1)
    client = await connect(reactor, server)
    client.transport.write(b"GET /api/v1/pipe/x HTTP/1.1\r\nHo")  # type: ignore[union-attr]
    assert await client.closed == b""
    assert len(server.rendezvous) == 0


@pytest_twisted.ensureDeferred
async def test_limits_are_503_with_retry_after(reactor: Any, serve: Any) -> None:
    server = serve(max_pipes=1, max_connections_per_ip=2)
    first = curl(reactor, server.url("a", "n=3"))
    await wait_for(reactor, lambda: server.rendezvous.parties(b"a") == (False, 1))
    other = await curl(reactor, "-i", server.url("b"), keep_text=True).ended
    assert b"HTTP/1.1 503" in other.text
    assert b"Retry-After: 5" in other.text
    assert other.text.endswith(
        b"[ERROR] too many pipes: 1 are waiting or running; try again later\n"
    )
    second = curl(reactor, server.url("a", "n=3"))
    await wait_for(reactor, lambda: server.rendezvous.parties(b"a") == (False, 2))
    third = await curl(reactor, "-i", server.url("a", "n=3"), keep_text=True).ended
    assert b"HTTP/1.1 503" in third.text
    assert b"too many parties from 127.0.0.1: 2" in third.text
    first.kill()
    second.kill()
    await first.ended
    await second.ended


@pytest_twisted.ensureDeferred
async def test_healthz_and_status_with_curl(reactor: Any, serve: Any) -> None:
    server = serve()
    health = await curl(reactor, server.root + "/healthz", keep_text=True).ended
    assert health.text == b"ok\n"
    receiving = curl(reactor, server.url("s"))
    await wait_for(reactor, lambda: len(server.rendezvous) == 1)
    assert (
        await curl(reactor, "--data-binary", "12345", server.url("s")).ended
    ).code == 0
    await receiving.ended
    status = await curl(reactor, server.root + "/api/v1/status", keep_text=True).ended
    doc = json.loads(status.text)
    assert doc["transfers"]["complete"] == 1
    assert doc["bytes_written"] == 5
    assert doc["pipes_waiting"] == doc["pipes_running"] == 0
    assert doc["pipes_awaiting_acks"] == 0


async def _twistd_transfer(
    reactor: Any, tmp_path: Path, drain_timeout: str, limit: str, mib: int
) -> Any:
    server = start_twistd(
        reactor, tmp_path, "--drain-timeout", drain_timeout, "--stall-timeout", "0"
    )
    port = await server.listening
    url = f"http://127.0.0.1:{port}/api/v1/pipe/drain"
    data = payload(tmp_path, mib * 1024 * 1024)
    receiver = curl(reactor, "--limit-rate", limit, url)
    waiting = curl(
        reactor, f"http://127.0.0.1:{port}/api/v1/pipe/other?n=2", keep_text=True
    )
    sender = curl(reactor, "-T", str(data), url, keep_text=True)
    # The transfer runs once the sender's progress shows it.
    status_url = f"http://127.0.0.1:{port}/api/v1/status"

    async def running() -> bool:
        result = await curl(reactor, status_url, keep_text=True).ended
        if result.code != 0:
            return False
        doc = json.loads(result.text)
        return bool(doc["pipes_running"] == 1 and doc["pipes_waiting"] == 1)

    deadline = reactor.seconds() + 20
    while not await running():
        assert reactor.seconds() < deadline, bytes(server.output)
        await defer.ensureDeferred(_tick(reactor))
    server.transport.signalProcess("TERM")  # type: ignore[union-attr]
    return server, receiver, waiting, sender, data


async def _tick(reactor: Any) -> None:
    from twisted.internet import task

    await task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_sigterm_lets_a_running_transfer_finish(
    reactor: Any, tmp_path: Path
) -> None:
    server, receiver, waiting, sender, data = await _twistd_transfer(
        reactor, tmp_path, "60", "8M", 32
    )
    result = await receiver.ended
    sent = await sender.ended
    sent_away = await waiting.ended
    assert result.code == 0 and result.digest == sha256_of(data)
    assert sent.code == 0 and b"[INFO] done:" in sent.text
    assert sent_away.text == b"[ERROR] server shutting down\n"
    assert await server.ended == 0
    assert b"drained" in server.output


@pytest_twisted.ensureDeferred
async def test_sigterm_aborts_what_outlives_the_drain_timeout(
    reactor: Any, tmp_path: Path
) -> None:
    server, receiver, _, sender, data = await _twistd_transfer(
        reactor, tmp_path, "1", "4M", 48
    )
    result = await receiver.ended
    sent = await sender.ended
    assert result.code != 0, "never a clean end of a truncated stream"
    assert result.size < data.stat().st_size
    assert sent.code != 0
    assert await server.ended == 0


async def _log_of_one_transfer(
    reactor: Any, tmp_path: Path, path: str, logger: Optional[str] = None
) -> bytes:
    """
    What twistd logs for one transfer of 5 bytes on C{path} and one refused
    request.
    """
    server = start_twistd(reactor, tmp_path, logger=logger)
    try:
        port = await server.listening
        url = f"http://127.0.0.1:{port}/api/v1/pipe/{path}"
        receiving = curl(reactor, url)
        sent = await curl(reactor, "--data-binary", "hello", url).ended
        assert sent.code == 0
        await receiving.ended
        await curl(reactor, f"http://127.0.0.1:{port}/api/v1/pipe/x?n=0").ended
        await wait_for(reactor, lambda: b"complete" in server.output)
    finally:
        await server.stop()
    return bytes(server.output)


@pytest_twisted.ensureDeferred
async def test_json_logs_through_twistd_logger(reactor: Any, tmp_path: Path) -> None:
    output = await _log_of_one_transfer(
        reactor, tmp_path, "json-secret", logger="pipe.logs.json_stdout"
    )
    events = [json.loads(line) for line in output.splitlines() if line.strip()]
    ends = [e for e in events if e.get("outcome") == "complete"]
    assert [e["log_namespace"] for e in ends] == ["pipe.transfer"]
    for end in ends:
        assert end["bytes"] == 5 and len(end["pipe"]) == 12
    assert b"json-secret" not in output
    assert any(e.get("code") == 400 for e in events)


@pytest_twisted.ensureDeferred
async def test_text_log_shows_each_transfer_once(reactor: Any, tmp_path: Path) -> None:
    """
    twistd's text log shows a transfer's event once, under C{pipe.transfer}.
    """
    output = await _log_of_one_transfer(reactor, tmp_path, "text")
    lines = [line for line in output.splitlines() if b"complete: 5 bytes" in line]
    assert len(lines) == 1, output
    assert b"[pipe.transfer#info] transfer " in lines[0]


@pytest_twisted.ensureDeferred
async def test_drain_ends_keep_alive(reactor: Any, server: RunningServer) -> None:
    """
    At the start of a drain, an idle keep-alive connection (a proxy's pooled
    one, say) is closed at once; one with a request in progress is closed
    only after its response, which arrives complete.
    """
    idle, busy = await connect(reactor, server), await connect(reactor, server)
    assert idle.transport is not None and busy.transport is not None
    idle.transport.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    await wait_for(reactor, lambda: idle.received.endswith(b"ok\n"), what="healthz")
    busy.transport.write(b"GET /api/v1/pipe/keep HTTP/1.1\r\nHost: t\r\n\r\n")
    await wait_for(reactor, lambda: server.rendezvous.parties(b"keep") == (False, 1))

    server.site.end_keep_alive()
    # Promptly: not at some idle or header timeout of the server's.
    idle.closed.addTimeout(5, reactor)
    busy.closed.addTimeout(5, reactor)
    assert (await idle.closed).count(b"HTTP/1.1 200") == 1
    assert not busy.closed.called
    sent = await curl(reactor, "--data-binary", "hello", server.url("keep")).ended
    assert sent.code == 0
    response = await busy.closed
    assert b"content-length: 5\r\n" in response.lower()
    assert response.endswith(b"\r\n\r\nhello")
