"""
A quorum and named receivers over real sockets, with real curl: a 30-way
pipe that 27 receivers join starts at its sender's wait deadline and
refuses the latecomers with 410 while it runs and after it ended; 26 of a
quorum of 27 time out as before; a named receiver cut mid-stream is named
in the sender's lines and the log; the slowest of three rate-limited
receivers is the one the summary names; hostile names, a receiver's other
C{min} and a signed URL with C{min} edited are refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, List

import pytest_twisted
from twisted.logger import formatEvent

from pipe._transfer.rendezvous import Stage
from pipe.signing import sign_url

from .helpers import (
    KEY,
    curl,
    payload,
    raw_http,
    run,
    sha256_of,
    wait_for,
)

#: The late receiver's line (the seconds vary).
LATE = re.compile(
    rb"^410 \[ERROR\] this pipe's transfer started \d+ s ago with 27 of 30"
    rb" receivers; nothing is kept\n$"
)


async def status_line(reactor: Any, url: str, *args: str) -> bytes:
    """The status code and body curl gets for C{url}, as C{b"CODE BODY"}."""
    result = await curl(reactor, "-w", "%{http_code}", *args, url, keep_text=True).ended
    body, code = result.text[:-3], result.text[-3:]
    return code + b" " + body


def sender(reactor: Any, url: str, *args: str) -> Any:
    """
    A curl sender whose upload the test writes (C{feed}) and ends
    (C{closeStdin}), so the test decides when its transfer is running.
    """
    return run(reactor, ["curl", "-sSN", *args, "-T", "-", url], feed=True)


@pytest_twisted.ensureDeferred
async def test_27_of_30_start_at_the_deadline_and_latecomers_get_410(
    reactor: Any, serve: Any, tmp_path: Path, events: List[Any]
) -> None:
    server = serve()
    data = payload(tmp_path, 1024 * 1024)
    body = data.read_bytes()
    path = "matrix"
    receivers = [
        curl(reactor, "-fsS", server.url(path, "n=30" + ("&min=27" if i < 3 else "")))
        for i in range(27)
    ]
    await wait_for(reactor, lambda: server.parties(path) == (False, 27))
    upload = sender(reactor, server.url(path, "n=30&min=27&wait=2"))
    upload.feed(body[:1000])
    await wait_for(
        reactor,
        lambda: server.rendezvous.stage(path.encode()) is Stage.RUNNING,
        what="the deadline to start the transfer",
    )
    # While it runs (the upload is not over): at once, 410, not a byte.
    line = await status_line(reactor, server.url(path, "n=30"))
    assert LATE.match(line), line
    upload.feed(body[1000:])
    assert upload.transport is not None
    upload.transport.closeStdin()
    code = await upload.ended
    out = bytes(upload.out)
    assert code == 0, out
    assert b"[INFO] wait deadline after 2 s: transfer started to 27 of 30" in out
    assert b"[INFO] done: bytes=1048576 receivers=27/30 (3 never joined) in " in out, (
        out
    )
    for receiver in receivers:
        result = await receiver.ended
        assert result.code == 0 and result.digest == sha256_of(data)
    # After it ended: still 410 at once, and the path holds no party.
    assert server.rendezvous.stage(path.encode()) is Stage.CLOSED
    assert server.parties(path) == (False, 0)
    line = await status_line(reactor, server.url(path, "n=30"))
    assert LATE.match(line), line
    text = "\n".join(formatEvent(e) for e in events)
    assert re.search(r"complete: 1048576 bytes to 27 of 30 receivers \(3 never", text)
    stats = server.site.pipes.registry.statistics.collectors
    assert stats.get_sample_value("txpipe_quorum_receivers_never_joined_total") == 3
    assert stats.get_sample_value("txpipe_quorum_receivers_joined_total") == 27
    # The sender's wait after the start: the path is a new pipe's again.
    await wait_for(
        reactor, lambda: server.rendezvous.stage(path.encode()) is None, timeout=5
    )


@pytest_twisted.ensureDeferred
async def test_fewer_than_min_at_the_deadline_times_out_as_before(
    reactor: Any, serve: Any, tmp_path: Path
) -> None:
    server = serve()
    data = payload(tmp_path, 1024)
    path = "short"
    receivers = [
        curl(reactor, "-sS", server.url(path, "n=30"), keep_text=True)
        for _ in range(26)
    ]
    await wait_for(reactor, lambda: server.parties(path) == (False, 26))
    sent = await curl(
        reactor, "-T", str(data), server.url(path, "n=30&min=27&wait=1"), keep_text=True
    ).ended
    assert sent.code != 0
    assert sent.text.endswith(
        b"[ERROR] timed out after 1 s waiting: sender connected, 26 of 30"
        b" receivers connected\n"
    ), sent
    for receiver in receivers:
        result = await receiver.ended
        assert result.text == (
            b"[ERROR] the sender gave up after 1 s waiting: 26 of 30 receivers"
            b" connected\n"
        )
    assert server.rendezvous.stage(path.encode()) is None


@pytest_twisted.ensureDeferred
async def test_named_receiver_cut_mid_stream_is_named(
    reactor: Any, serve: Any, events: List[Any]
) -> None:
    server = serve()
    path = "named"
    url = server.url(path, "n=2")
    keeper = curl(reactor, "-sS", "-H", "Txpipe-Receiver: runner-1", url)
    victim = curl(reactor, "-sS", "-H", "Txpipe-Receiver: runner-7", url)
    await wait_for(reactor, lambda: server.parties(path) == (False, 2))
    upload = sender(reactor, url)
    upload.feed(b"x" * 100_000)
    await wait_for(reactor, lambda: b"transfer started" in upload.out, what="the start")
    await wait_for(
        reactor,
        lambda: all(b.sent for b in _fanout(server, path).branches),
        what="bytes to both",
    )
    victim.kill()
    await victim.ended
    # Its connection's end is seen at the next writes to it.
    upload.feed(b"y" * 300_000)
    await wait_for(reactor, lambda: b"disconnected" in upload.out, what="the loss")
    upload.feed(b"y" * 1000)
    assert upload.transport is not None
    upload.transport.closeStdin()
    code = await upload.ended
    out = bytes(upload.out)
    assert code != 0
    assert re.search(
        rb"\[INFO\] receiver runner-7 \(127\.0\.0\.1:\d+\) disconnected after ", out
    ), out
    assert re.search(
        rb"\[ERROR\] failed: bytes=\d+ receivers=1/2: 1 of 2 receivers"
        rb" disconnected or stalled before the end \(runner-7\)",
        out,
    ), out
    assert (await keeper.ended).code == 0
    text = "\n".join(formatEvent(e) for e in events)
    assert re.search(r"receiver_lost: .*; lost runner-7 \(127\.0\.0\.1:\d+\)", text)
    (event,) = [e for e in events if e.get("outcome") == "receiver_lost"]
    (lost,) = event["lost"]
    assert lost.startswith("runner-7 (127.0.0.1:")
    assert "runner-1 (127.0.0.1:" in event["receivers"]


def _fanout(server: Any, path: str) -> Any:
    """The running fan-out of C{path} (its sender's)."""
    (sender,) = [
        p
        for p in server.site.pipes.registry._parties
        if p.path == path.encode() and hasattr(p, "fanout")
    ]
    return sender.fanout


@pytest_twisted.ensureDeferred
async def test_the_slowest_of_three_rate_limited_receivers_is_named(
    reactor: Any, serve: Any, tmp_path: Path
) -> None:
    # Stall checks (and with them the samples of who holds the transfer
    # back) every half second.
    server = serve(stall_timeout=2)
    # Beyond what the kernels on loopback buffer for a receiver (tens of
    # MiB): its acknowledgements then follow its reading.
    data = payload(tmp_path, 48 * 1024 * 1024)
    path = "rates"
    url = server.url(path, "n=3")
    receivers = [
        curl(
            reactor, "-sS", "--limit-rate", rate, "-H", f"Txpipe-Receiver: {name}", url
        )
        for name, rate in (("fast-1", "80M"), ("slow-2", "16M"), ("mid-3", "40M"))
    ]
    await wait_for(reactor, lambda: server.parties(path) == (False, 3))
    sent = await curl(reactor, "-T", str(data), url, keep_text=True).ended
    assert sent.code == 0, sent
    found = re.search(rb"; slowest: ([\w-]+) at ([\d.]+) MB/s\n", sent.text)
    assert found is not None, sent.text
    assert found.group(1) == b"slow-2"
    for receiver in receivers:
        result = await receiver.ended
        assert result.code == 0 and result.digest == sha256_of(data)


@pytest_twisted.ensureDeferred
async def test_hostile_names_are_refused(reactor: Any, serve: Any) -> None:
    server = serve()
    port = server.port.getHost().port
    for value in (b"runner\x01", b"r" * 65, b"runner-\xff\xfe", b"", b"\t"):
        answer = await raw_http(
            reactor,
            port,
            b"GET /api/v1/pipe/hostile HTTP/1.1\r\nHost: x\r\n"
            b"Txpipe-Receiver: " + value + b"\r\nConnection: close\r\n\r\n",
        )
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), (value, answer)
        assert body.startswith(b"[ERROR] "), (value, answer)
    two = await raw_http(
        reactor,
        port,
        b"GET /api/v1/pipe/hostile HTTP/1.1\r\nHost: x\r\nTxpipe-Receiver: a\r\n"
        b"Txpipe-Receiver: b\r\nConnection: close\r\n\r\n",
    )
    assert b"400" in two.partition(b"\r\n")[0]
    line = await status_line(
        reactor, server.url("hostile"), "-H", "Txpipe-Receiver: " + "r" * 65
    )
    assert line == (
        b"400 [ERROR] Txpipe-Receiver must be one name of 1 to 64 printable ASCII"
        b" characters, got '" + b"r" * 64 + b"...'\n"
    )
    assert server.rendezvous.stage(b"hostile") is None


@pytest_twisted.ensureDeferred
async def test_min_refusals(reactor: Any, serve: Any, tmp_path: Path) -> None:
    server = serve()
    data = payload(tmp_path, 10)
    for query, message in (
        ("n=3&min=4", b"min must be one integer from 1 to n=3, got '4'"),
        ("n=3&min=0", b"min must be one integer from 1 to n=3, got '0'"),
        ("n=3&min=2&min=2", b"min must be one integer from 1 to n=3, got '2', '2'"),
    ):
        line = await status_line(reactor, server.url("m", query))
        assert line == b"400 [ERROR] " + message + b"\n", line
    waiting = curl(reactor, "-T", str(data), server.url("m", "n=3&min=2&wait=30"))
    await wait_for(reactor, lambda: server.parties("m") == (True, 0))
    line = await status_line(reactor, server.url("m", "n=3&min=3"))
    assert line == (
        b"400 [ERROR] min=3 does not match this path's sender, which gave min=2:"
        b" only the sender sets the quorum\n"
    )
    assert server.parties("m") == (True, 0)
    waiting.kill()
    await waiting.ended


@pytest_twisted.ensureDeferred
async def test_a_signed_url_with_min_edited_is_refused(
    reactor: Any, serve: Any, tmp_path: Path
) -> None:
    server = serve(keys=(KEY,))
    data = payload(tmp_path, 10)
    signed = sign_url(server.url("s", "n=3&min=2"), KEY, "send", 300)
    for edited in (
        signed.replace("min=2", "min=1"),
        signed.replace("&min=2", ""),
    ):
        line = await status_line(reactor, edited, "-T", str(data))
        assert line.startswith(b"403 [ERROR] signature invalid"), line
    unsigned_min = sign_url(server.url("s", "n=3"), KEY, "send", 300) + "&min=2"
    line = await status_line(reactor, unsigned_min, "-T", str(data))
    assert line.startswith(b"403 [ERROR] signature invalid"), line
    # As signed: taken (and it waits, until its wait of 1 s).
    line = await status_line(reactor, signed + "&wait=1", "-T", str(data))
    assert line.startswith(b"200 [INFO] waiting for 3 receivers"), line


@pytest_twisted.ensureDeferred
async def test_the_client_names_its_receiver(reactor: Any, serve: Any) -> None:
    import io

    from pipe.client import receive

    server = serve()
    sink = io.BytesIO()
    received = receive(server.url("c", "n=2"), sink, reactor=reactor, name="runner-3")
    other = curl(reactor, "-sS", server.url("c", "n=2"))
    await wait_for(reactor, lambda: server.parties("c") == (False, 2))
    (party,) = [p for p in server.site.pipes.registry._parties if p.name is not None]
    assert party.name == "runner-3"
    assert party.label.startswith("runner-3 (127.0.0.1:")
    sent = await curl(
        reactor, "--data-binary", "hello", server.url("c", "n=2"), keep_text=True
    ).ended
    assert b"receivers=2/2" in sent.text
    assert (await received).bytes == 5 and sink.getvalue() == b"hello"
    assert (await other.ended).code == 0
