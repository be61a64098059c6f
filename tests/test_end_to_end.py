"""
End-to-end tests: a real listening server on 127.0.0.1, real curl processes
and treq clients, payloads compared by SHA-256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, List

import pytest
import pytest_twisted
import treq
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.web.http_headers import Headers

from .helpers import (
    DONE,
    HeldReceiver,
    RunningServer,
    curl,
    payload,
    sha256_of,
    wait_for,
)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 8 MiB payload."""
    return payload(tmp_path_factory.mktemp("payload"), 8 * 1024 * 1024)


@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    A random 48 MiB payload: far more than loopback's kernel buffers hold,
    so a transfer to a throttled receiver is still running when a test
    kills a party.
    """
    return payload(tmp_path_factory.mktemp("payload"), 48 * 1024 * 1024)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2 MiB payload (for many receivers)."""
    return payload(tmp_path_factory.mktemp("payload"), 2 * 1024 * 1024)


def receivers_waiting(server: RunningServer, path: str, count: int) -> Any:
    return lambda: server.rendezvous.parties(path.encode()) == (False, count)


def sender_waiting(server: RunningServer, path: str, count: int = 0) -> Any:
    return lambda: server.rendezvous.parties(path.encode()) == (True, count)


@pytest.mark.parametrize("n", [1, 3, 30])
@pytest.mark.parametrize("order", ["sender_first", "receivers_first"])
@pytest.mark.parametrize("upload", ["file", "stdin"])
@pytest_twisted.ensureDeferred
async def test_fan_out_with_curl(
    reactor: Any,
    server: RunningServer,
    big: Path,
    small: Path,
    n: int,
    order: str,
    upload: str,
) -> None:
    """
    One curl sender, n curl receivers, both arrival orders, C{-T file}
    (Content-Length) and C{-T -} (chunked): every receiver gets exactly the
    sender's bytes and every curl exits 0.
    """
    data = small if n == 30 else big
    path = f"{order}-{upload}-{n}"
    url = server.url(path, f"n={n}")
    sender_args = ["-T", "-", url] if upload == "stdin" else ["-T", str(data), url]
    sender_stdin = data if upload == "stdin" else None

    def start_receivers() -> List[Any]:
        return [curl(reactor, url) for _ in range(n)]

    if order == "sender_first":
        sender = curl(reactor, *sender_args, stdin=sender_stdin, keep_text=True)
        await wait_for(reactor, sender_waiting(server, path), what="sender")
        receivers = start_receivers()
    else:
        receivers = start_receivers()
        await wait_for(reactor, receivers_waiting(server, path, n), what="receivers")
        sender = curl(reactor, *sender_args, stdin=sender_stdin, keep_text=True)

    results = await defer.gatherResults([r.ended for r in receivers])
    sent = await sender.ended
    expected = sha256_of(data)
    assert [r.code for r in results] == [0] * n, results
    assert {r.digest for r in results} == {expected}
    assert sent.code == 0, sent
    match = DONE.search(sent.text)
    assert match, sent
    assert match.groups() == (str(data.stat().st_size).encode(), b"%d" % n, b"%d" % n)
    assert len(server.rendezvous) == 0
    assert server.site.registry.party_count == 0


@pytest_twisted.ensureDeferred
async def test_treq_sender_first_without_expect(
    reactor: Any, server: RunningServer, big: Path
) -> None:
    """
    treq sends its body at once, without C{Expect: 100-continue}, while the
    server holds the upload paused; no byte may be lost.
    """
    url = server.url("treq", "n=2")
    with open(big, "rb") as body:
        sending = treq.put(url, data=body, reactor=reactor)
        await wait_for(reactor, sender_waiting(server, "treq"), what="sender")

        async def receive() -> str:
            response = await treq.get(url, unbuffered=True, reactor=reactor)
            assert response.code == 200
            assert response.length == big.stat().st_size
            digest = hashlib.sha256()
            await treq.collect(response, digest.update)
            return digest.hexdigest()

        digests = await defer.gatherResults(
            [defer.ensureDeferred(receive()), defer.ensureDeferred(receive())]
        )
        response = await sending
        text = await response.content()
    assert digests == [sha256_of(big)] * 2
    assert response.code == 200
    assert b"[INFO] waiting for 2 receivers (0 connected)" in text
    assert b"[INFO] done: bytes=%d receivers=2/2" % big.stat().st_size in text


@pytest_twisted.ensureDeferred
async def test_receiver_headers(reactor: Any, server: RunningServer) -> None:
    """
    Receivers get the sender's type (script-capable types as text/plain),
    disposition and X-Piping headers, plus the fixed safety headers.
    """
    url = server.url("headers")
    receiving = treq.get(url, reactor=reactor)
    await wait_for(reactor, receivers_waiting(server, "headers", 1))
    sent = await treq.post(
        url,
        data=b"<script>alert(1)</script>",
        headers={  # type: ignore[arg-type]
            b"content-type": [b"Text/HTML; charset=utf-8"],
            b"content-disposition": [b'attachment; filename="a.html"'],
            b"x-piping": [b"one", b"two"],
        },
        reactor=reactor,
    )
    await sent.content()
    response = await receiving
    body = await response.content()
    h = response.headers
    assert body == b"<script>alert(1)</script>"
    assert h.getRawHeaders(b"content-type") == [b"text/plain; charset=utf-8"]
    assert h.getRawHeaders(b"content-disposition") == [b'attachment; filename="a.html"']
    assert h.getRawHeaders(b"x-piping") == [b"one", b"two"]
    assert h.getRawHeaders(b"cache-control") == [b"no-store"]
    assert h.getRawHeaders(b"x-accel-buffering") == [b"no"]
    assert h.getRawHeaders(b"x-content-type-options") == [b"nosniff"]
    assert h.getRawHeaders(b"access-control-allow-origin") == [b"*"]


@pytest.mark.parametrize(
    ("sent", "received"),
    [
        (b"text/xml", b"text/plain"),
        (b"Application/XML; charset=utf-8", b"text/plain; charset=utf-8"),
        (b"application/xhtml+xml", b"text/plain"),
        (b"image/svg+xml", b"text/plain"),
        (b"application/rss+xml", b"text/plain"),
        (b"application/vnd.foo+XML ;x=1", b"text/plain;x=1"),
        (b"application/json", b"application/json"),
        (b"application/x-tar", b"application/x-tar"),
        (b'text/plain; charset="a,b"; q=1', b'text/plain; charset="a,b"; q=1'),
        # Anything but one well-formed media type: octet-stream.
        (b"text/plain, text/html", b"application/octet-stream"),
        (b"text/html;x=1, text/plain", b"application/octet-stream"),
        (b"text", b"application/octet-stream"),
        (b"text/plain; charset", b"application/octet-stream"),
        (b"text/plain x", b"application/octet-stream"),
        (b'text/plain; a="b', b"application/octet-stream"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_script_capable_types_reach_receivers_as_text(
    reactor: Any, server: RunningServer, sent: bytes, received: bytes
) -> None:
    """
    HTML, XML and every C{+xml} type (SVG, XHTML) can run script in a
    browser: receivers get C{text/plain} with the parameters kept; other
    types pass unchanged; a list of types (fetch takes the last), or
    anything else that is not one well-formed type, is
    C{application/octet-stream}.
    """
    path = "type-" + hashlib.sha256(sent).hexdigest()[:8]
    url = server.url(path)
    receiving = treq.get(url, reactor=reactor)
    await wait_for(reactor, receivers_waiting(server, path, 1))
    response = await treq.put(
        url, data=b"<x/>", headers=Headers({b"content-type": [sent]}), reactor=reactor
    )
    await response.content()
    got = await receiving
    assert await got.content() == b"<x/>"
    assert got.headers.getRawHeaders(b"content-type") == [received]


@pytest_twisted.ensureDeferred
async def test_two_content_type_lines_reach_receivers_as_octet_stream(
    reactor: Any, server: RunningServer
) -> None:
    url = server.url("two-types")
    receiving = curl(reactor, "-D", "-", "-o", "/dev/null", url, keep_text=True)
    await wait_for(reactor, receivers_waiting(server, "two-types", 1))
    sender = curl(
        reactor,
        "--data-binary",
        "x",
        "-H",
        "Content-Type: text/plain",
        "-H",
        "Content-Type: text/html",
        url,
    )
    assert (await sender.ended).code == 0
    head = (await receiving.ended).text
    assert b"Content-Type: application/octet-stream\r\n" in head


@pytest_twisted.ensureDeferred
async def test_default_content_type(reactor: Any, server: RunningServer) -> None:
    url = server.url("default-type")
    receiving = curl(reactor, "-D", "-", "-o", "/dev/null", url, keep_text=True)
    await wait_for(reactor, receivers_waiting(server, "default-type", 1))
    sender = curl(reactor, "--data-binary", "x", "-H", "Content-Type:", url)
    assert (await sender.ended).code == 0
    head = (await receiving.ended).text
    assert b"Content-Type: application/octet-stream\r\n" in head


@pytest_twisted.ensureDeferred
async def test_waiting_receiver_that_disconnects_is_not_counted(
    reactor: Any, server: RunningServer, small: Path
) -> None:
    url = server.url("quitter", "n=2")
    quitter = curl(reactor, url)
    await wait_for(reactor, receivers_waiting(server, "quitter", 1))
    quitter.kill()
    await quitter.ended
    await wait_for(reactor, lambda: len(server.rendezvous) == 0, what="forgotten")
    first = curl(reactor, url)
    sender = curl(reactor, "-T", str(small), url, keep_text=True)
    await wait_for(reactor, sender_waiting(server, "quitter", 1))
    second = curl(reactor, url)
    results = [await first.ended, await second.ended]
    assert [r.digest for r in results] == [sha256_of(small)] * 2
    assert (await sender.ended).code == 0


@pytest.mark.parametrize("upload", ["file", "stdin"])
@pytest_twisted.ensureDeferred
async def test_sender_killed_mid_transfer_fails_every_receiver(
    reactor: Any, server: RunningServer, huge: Path, upload: str
) -> None:
    """
    A sender that dies mid-transfer: every receiver curl, HTTP/1.1 and
    HTTP/1.0, exits non-zero (never a clean end of a truncated stream).
    """
    url = server.url(f"killed-{upload}", "n=2")
    r11 = curl(reactor, "--limit-rate", "2M", url)
    r10 = curl(reactor, "-0", "--limit-rate", "2M", url)
    await wait_for(reactor, receivers_waiting(server, f"killed-{upload}", 2))
    if upload == "file":
        sender = curl(reactor, "-T", str(huge), url)
    else:
        sender = curl(reactor, "-T", "-", url, stdin=huge)
    await wait_for(
        reactor,
        lambda: server.rendezvous.parties(f"killed-{upload}".encode()) == (True, 2),
        what="transfer running",
    )
    sender.kill()
    results = [await r11.ended, await r10.ended]
    assert all(r.code != 0 for r in results), results
    assert all(r.size < huge.stat().st_size for r in results)
    await wait_for(reactor, lambda: len(server.rendezvous) == 0)


@pytest_twisted.ensureDeferred
async def test_receiver_killed_mid_transfer_others_complete_sender_fails(
    reactor: Any, server: RunningServer, huge: Path
) -> None:
    url = server.url("rkill", "n=3")
    good = [curl(reactor, url), curl(reactor, url)]
    doomed = curl(reactor, "--limit-rate", "1M", url)
    await wait_for(reactor, receivers_waiting(server, "rkill", 3))
    sender = curl(reactor, "-T", str(huge), url, keep_text=True)
    await wait_for(reactor, lambda: server.rendezvous.parties(b"rkill") == (True, 3))
    doomed.kill()
    results = [await g.ended for g in good]
    sent = await sender.ended
    assert [r.digest for r in results] == [sha256_of(huge)] * 2
    assert [r.code for r in results] == [0, 0]
    assert sent.code != 0
    assert b"disconnected after" in sent.text
    assert sent.text.rstrip().splitlines()[-1].startswith(b"[ERROR] failed: ")
    assert len(server.rendezvous) == 0


@pytest.mark.parametrize("body", ["length", "chunked"])
@pytest_twisted.ensureDeferred
async def test_paused_receiver_paces_the_others(
    reactor: Any, server: RunningServer, tmp_path: Path, body: str
) -> None:
    """
    A receiver that stops reading holds back the upload: once its
    connection is full the sender is paused and the fast receivers cannot
    finish; when it reads again, everybody gets every byte (with a declared
    length, and with a chunked upload relayed as chunked responses: the
    held receiver's socket fills, so writes are partly sent and partly
    buffered).
    """
    data = payload(tmp_path, 48 * 1024 * 1024)
    framing = ["-H", "Transfer-Encoding: chunked"] if body == "chunked" else []
    url = server.url("paced", "n=3")
    held = HeldReceiver(b"/api/v1/pipe/paced?n=3")
    await TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port).connect(
        Factory.forProtocol(lambda: held)
    )
    fast = [curl(reactor, url), curl(reactor, url)]
    await wait_for(reactor, receivers_waiting(server, "paced", 3))
    sender = curl(reactor, *framing, "-T", str(data), url)
    await wait_for(reactor, sender_waiting(server, "paced", 3), what="transfer")
    fanout = server.rendezvous._meetings[b"paced"].sender.fanout
    held_branch = next(
        b
        for b in fanout.branches
        if b.outlet.request.transport.getPeer().port == held.transport.getHost().port
    )
    await wait_for(reactor, lambda: held_branch in fanout._paused, what="held paused")
    upload = fanout.transport
    sending = upload._request.channel.transport
    assert sending not in reactor.getReaders(), "the upload is not read"
    assert fanout.received < data.stat().st_size
    assert not any(f.ended.called for f in fast), "the fast ones are held back"
    held.resume()
    results = [await f.ended for f in fast]
    held_body = await held.ended
    assert (await sender.ended).code == 0
    assert {r.digest for r in results} == {sha256_of(data)}
    assert hashlib.sha256(held_body).hexdigest() == sha256_of(data)


@pytest_twisted.ensureDeferred
async def test_dead_waiting_sender_is_forgotten(
    reactor: Any, server: RunningServer, big: Path
) -> None:
    """
    A sender killed while paused (its close queued behind unsent data) is
    noticed through the progress lines and forgotten within 5 s.
    """
    url = server.url("dead-sender", "n=2")
    sender = curl(reactor, "-T", str(big), url)
    await wait_for(reactor, sender_waiting(server, "dead-sender"))
    sender.kill()
    await sender.ended
    await wait_for(
        reactor, lambda: len(server.rendezvous) == 0, timeout=5.0, what="forgotten"
    )


@pytest_twisted.ensureDeferred
async def test_unix_socket_listener(
    reactor: Any, tmp_path: Path, small: Path, huge: Path
) -> None:
    """
    A C{unix:} listener (behind a local proxy) serves a transfer, and a
    sender lost mid-transfer still fails its receiver.
    """
    from twisted.internet.endpoints import serverFromString

    from pipe.server import make_site

    socket_path = tmp_path / "pipe.sock"
    site = make_site(reactor)
    port = await serverFromString(reactor, f"unix:{socket_path}").listen(site)
    try:
        url = "http://localhost/api/v1/pipe/unix?n=2"
        via = ["--unix-socket", str(socket_path)]
        receivers = [curl(reactor, *via, url), curl(reactor, *via, url)]
        await wait_for(
            reactor, lambda: site.pipes.rendezvous.parties(b"unix") == (False, 2)
        )
        sent = await curl(reactor, *via, "-T", str(small), url, keep_text=True).ended
        results = [await r.ended for r in receivers]
        assert sent.code == 0, sent
        assert b"receivers=2/2" in sent.text
        assert {r.digest for r in results} == {sha256_of(small)}

        receiver = curl(reactor, *via, "--limit-rate", "1M", url.replace("n=2", "n=1"))
        await wait_for(
            reactor, lambda: site.pipes.rendezvous.parties(b"unix") == (False, 1)
        )
        sender = curl(reactor, *via, "-T", str(huge), url.replace("n=2", "n=1"))
        await wait_for(
            reactor, lambda: site.pipes.rendezvous.parties(b"unix") == (True, 1)
        )
        sender.kill()
        assert (await receiver.ended).code != 0
    finally:
        await port.stopListening()
