"""
Protocol v1 errors and headers, seen by real clients (curl and raw sockets)
against a real listening server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Tuple, cast

import pytest
import pytest_twisted

from pipe._transfer import messages as messages
from pipe._transfer.parse import parse_n

from .helpers import RunningServer, curl, payload, raw_http, wait_for


def split_response(text: bytes) -> Tuple[int, Dict[bytes, List[bytes]], bytes]:
    """Status, headers (lower-cased names) and body of the last response."""
    head, _, body = text.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers: Dict[bytes, List[bytes]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers, body


def assert_error(text: bytes, status: int, fragment: bytes) -> Dict[bytes, List[bytes]]:
    """The response is a one-line text/plain [ERROR] with a correct length."""
    code, headers, body = split_response(text)
    assert code == status, text
    assert headers[b"content-type"] == [b"text/plain; charset=utf-8"], headers
    assert headers[b"content-length"] == [b"%d" % len(body)]
    assert body.startswith(b"[ERROR] ") and body.endswith(b"\n"), body
    assert body.count(b"\n") == 1, body
    assert fragment in body, body
    return headers


@pytest.mark.parametrize(
    "query, shown",
    [
        ("n=0", b"'0'"),
        ("n=-1", b"'-1'"),
        ("n=%2B3", b"'+3'"),
        ("n=03", b"'03'"),
        ("n=abc", b"'abc'"),
        ("n=1e3", b"'1e3'"),
        ("n=", b"''"),
        ("n", b"''"),
        ("n=1001", b"'1001'"),
        ("n=99999999999999999999999999", b"'99999999999999999999999999'"),
        ("n=1&n=1", b"'1', '1'"),
        ("n=" + "9" * 100, b"'" + b"9" * 64 + b"...'"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_n_is_400_naming_value_and_range(
    reactor: Any, server: RunningServer, query: str, shown: bytes
) -> None:
    result = await curl(reactor, "-i", server.url("p", query), keep_text=True).ended
    assert result.code == 0
    assert_error(result.text, 400, b"from 1 to 1000, got " + shown)
    assert len(server.rendezvous) == 0


def test_parse_n_accepts_what_it_should() -> None:
    assert parse_n(b"", 1000) == 1
    assert parse_n(b"x=1&y", 1000) == 1
    assert parse_n(b"n=30&wait=5", 1000) == 30
    assert parse_n(b"n=1000", 1000) == 1000
    assert parse_n(b"%6E=7", 1000) == 7


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "FOO", "TRACE"])
@pytest_twisted.ensureDeferred
async def test_other_methods_are_405_with_allow(
    reactor: Any, server: RunningServer, method: str
) -> None:
    result = await curl(
        reactor, "-i", "-X", method, server.url("p"), keep_text=True
    ).ended
    headers = assert_error(
        result.text, 405, f"method '{method}' is not allowed".encode()
    )
    assert headers[b"allow"] == [b"GET, PUT, POST, OPTIONS"]


@pytest_twisted.ensureDeferred
async def test_head_is_405_without_body(reactor: Any, server: RunningServer) -> None:
    result = await curl(reactor, "-I", server.url("p"), keep_text=True).ended
    status, headers, body = split_response(result.text)
    assert status == 405
    assert headers[b"allow"] == [b"GET, PUT, POST, OPTIONS"]
    assert body == b""


@pytest_twisted.ensureDeferred
async def test_options_is_a_cors_preflight(reactor: Any, server: RunningServer) -> None:
    result = await curl(
        reactor, "-i", "-X", "OPTIONS", server.url("p"), keep_text=True
    ).ended
    status, headers, _ = split_response(result.text)
    assert status == 204
    assert headers[b"access-control-allow-origin"] == [b"*"]
    assert headers[b"access-control-allow-methods"] == [b"GET, PUT, POST, OPTIONS"]
    assert headers[b"access-control-allow-headers"] == [
        b"Content-Type, Content-Disposition, X-Piping, Txpipe-Sender-Response,"
        b" Authorization, Txpipe-Receiver"
    ]
    assert headers[b"access-control-max-age"] == [b"86400"]
    assert len(server.rendezvous) == 0


@pytest_twisted.ensureDeferred
async def test_path_too_long_is_414(reactor: Any, server: RunningServer) -> None:
    ok = "a" * 1024
    too_long = "a" * 1025
    result = await curl(reactor, "-i", server.url(too_long), keep_text=True).ended
    assert_error(result.text, 414, b"1025 bytes long, at most 1024")
    receiving = curl(reactor, server.url(ok))
    await wait_for(
        reactor, lambda: server.rendezvous.parties(ok.encode()) == (False, 1)
    )
    sent = await curl(reactor, "--data-binary", "x", server.url(ok)).ended
    assert sent.code == 0
    assert (await receiving.ended).size == 1


@pytest.mark.parametrize("url_path", ["/api/v1/pipe/", "/api/v1/pipe"])
@pytest_twisted.ensureDeferred
async def test_empty_path_is_400(
    reactor: Any, server: RunningServer, url_path: str
) -> None:
    result = await curl(reactor, "-i", server.root + url_path, keep_text=True).ended
    assert_error(result.text, 400, b"the pipe path is empty")


@pytest.mark.parametrize(
    "url_path", ["/nope", "/api", "/api/v2/pipe/x", "/api/v1/pip%65/x"]
)
@pytest_twisted.ensureDeferred
async def test_outside_the_api_is_404(
    reactor: Any, server: RunningServer, url_path: str
) -> None:
    result = await curl(reactor, "-i", server.root + url_path, keep_text=True).ended
    assert_error(result.text, 404, b"not found")


@pytest_twisted.ensureDeferred
async def test_a_404_never_echoes_or_logs_the_path(
    reactor: Any, server: RunningServer
) -> None:
    """
    A mistyped pipe URL (here under /api/v2/) is still a credential: neither
    the error body nor the log holds any of its path or query.
    """
    from twisted.logger import ILogObserver, globalLogPublisher

    seen: List[Any] = []
    observer = cast(ILogObserver, seen.append)
    globalLogPublisher.addObserver(observer)
    try:
        secret = "s3cr3t-build-token"
        url = f"{server.root}/api/v2/pipe/{secret}?n=2&sig=also-{secret}"
        result = await curl(reactor, "-i", url, keep_text=True).ended
    finally:
        globalLogPublisher.removeObserver(observer)
    assert_error(result.text, 404, b"not found")
    assert secret.encode() not in result.text
    logged = [e for e in seen if "rejected" in str(e.get("log_format", ""))]
    assert logged, "the rejection is logged"
    from twisted.logger import formatEvent

    assert not any(secret in repr(e) or secret in formatEvent(e) for e in seen)


@pytest_twisted.ensureDeferred
async def test_control_byte_in_path_is_400(reactor: Any, server: RunningServer) -> None:
    """
    Raw control bytes cannot be sent by curl; a raw socket sends them.  The
    answer is a complete one-line 400, whether Twisted's request-line parser
    or the pipe's own check refuses it.
    """
    for raw in (b"a\x00b", b"a\x01b", b"a\x7f"):
        text = await raw_http(
            reactor,
            server.port.getHost().port,
            b"GET /api/v1/pipe/"
            + raw
            + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        assert_error(text, 400, b"")
    assert len(server.rendezvous) == 0


def test_path_check_names_the_control_byte() -> None:
    from pipe._transfer.parse import parse_path
    from pipe._transfer.refusal import Refusal

    with pytest.raises(Refusal) as info:
        parse_path(b"/api/v1/pipe/a\x01")
    assert info.value.code == 400
    assert info.value.body == messages.path_control(1)


@pytest_twisted.ensureDeferred
async def test_malformed_request_gets_a_plain_400(
    reactor: Any, server: RunningServer
) -> None:
    for request in (
        b"GARBAGE\r\n\r\n",
        b"GET /x HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"PUT /api/v1/pipe/x HTTP/1.1\r\n"
        b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"PUT /api/v1/pipe/x HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    ):
        text = await raw_http(reactor, server.port.getHost().port, request)
        assert_error(text, 400, b"malformed HTTP request")
    assert len(server.rendezvous) == 0


@pytest_twisted.ensureDeferred
async def test_rendezvous_rejections_seen_by_curl(
    reactor: Any, server: RunningServer, tmp_path: Path
) -> None:
    """
    400 for a mismatched n, 409 for a second sender (mid-upload, without
    Expect: curl still prints the status), 409 for an extra receiver and for
    anybody while a transfer runs; the first parties are undisturbed.
    """
    data = payload(tmp_path, 16 * 1024 * 1024)
    url = server.url("busy", "n=2")
    sender = curl(reactor, "-T", str(data), url, keep_text=True)
    await wait_for(reactor, lambda: server.rendezvous.parties(b"busy") == (True, 0))

    second = await curl(
        reactor, "-i", "-H", "Expect:", "-T", str(data), url, keep_text=True
    ).ended
    assert second.code == 0, second
    assert_error(second.text, 409, b"already has a sender")

    mismatch = await curl(
        reactor, "-i", server.url("busy", "n=3"), keep_text=True
    ).ended
    assert_error(mismatch.text, 400, b"n=3 does not match n=2")

    receiver = curl(reactor, url)
    await wait_for(reactor, lambda: server.rendezvous.parties(b"busy") == (True, 1))
    # A throttled second receiver keeps the transfer running while we knock.
    slow = curl(reactor, "--limit-rate", "4M", url)
    await wait_for(reactor, lambda: server.rendezvous.parties(b"busy") == (True, 2))
    late = await curl(reactor, "-i", url, keep_text=True).ended
    assert_error(late.text, 409, b"a transfer is already running")
    late_sender = await curl(
        reactor, "-i", "--data-binary", "x", url, keep_text=True
    ).ended
    assert_error(late_sender.text, 409, b"a transfer is already running")

    results = [await receiver.ended, await slow.ended]
    assert [r.size for r in results] == [data.stat().st_size] * 2
    assert (await sender.ended).code == 0


@pytest_twisted.ensureDeferred
async def test_extra_receiver_is_409(reactor: Any, server: RunningServer) -> None:
    url = server.url("full", "n=1")
    first = curl(reactor, url)
    await wait_for(reactor, lambda: server.rendezvous.parties(b"full") == (False, 1))
    extra = await curl(reactor, "-i", url, keep_text=True).ended
    assert_error(extra.text, 409, b"already has its 1 receivers")
    assert (await curl(reactor, "--data-binary", "ok", url).ended).code == 0
    assert (await first.ended).size == 2


@pytest_twisted.ensureDeferred
async def test_raw_paths_are_distinct_pipes(
    reactor: Any, server: RunningServer
) -> None:
    """
    No percent-decoding and no normalisation: C{%41} and C{A}, C{a} and
    C{a/}, and dot segments are different pipes.
    """
    names = ["%41", "A", "a", "a/", "x/../a", "./a"]
    receivers = {}
    for name in names:
        receivers[name] = curl(reactor, "--path-as-is", server.url(name))
        key = name.encode()
        await wait_for(
            reactor, lambda key=key: server.rendezvous.parties(key) == (False, 1)
        )
    assert len(server.rendezvous) == len(names)
    for name in names:
        sent = await curl(
            reactor, "--path-as-is", "--data-binary", name, server.url(name)
        ).ended
        assert sent.code == 0
        assert (await receivers[name].ended).size == len(name)


@pytest_twisted.ensureDeferred
async def test_http10_sender_and_receiver(
    reactor: Any, server: RunningServer, tmp_path: Path
) -> None:
    data = payload(tmp_path, 3 * 1024 * 1024)
    url = server.url("old")
    receiving = curl(reactor, "-0", url)
    await wait_for(reactor, lambda: server.rendezvous.parties(b"old") == (False, 1))
    sent = await curl(reactor, "-0", "-T", str(data), url, keep_text=True).ended
    assert sent.code == 0
    assert re.search(rb"\[INFO\] done: bytes=\d+ receivers=1/1", sent.text)
    assert (await receiving.ended).size == data.stat().st_size


@pytest_twisted.ensureDeferred
async def test_root_says_what_the_server_is(
    reactor: Any, server: RunningServer
) -> None:
    result = await curl(reactor, "-i", server.root + "/", keep_text=True).ended
    status, headers, body = split_response(result.text)
    assert status == 200
    assert body.startswith(b"txpipe ")
    assert headers[b"content-type"] == [b"text/plain; charset=utf-8"]
