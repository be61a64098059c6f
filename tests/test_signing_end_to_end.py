"""
Signed URLs over real sockets: curl transfers with URLs from C{txpipe
sign}, every refusal as a client sees it, single use, the open endpoints,
and C{twistd -n pipe --secret-file}.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest
import pytest_twisted
from twisted.logger import formatEvent

from pipe.signing import sign_url

from .helpers import (
    KEY,
    RunningServer,
    curl,
    payload,
    raw_http,
    sha256_of,
    start_twistd,
    twistd_pipe,
    wait_for,
)


@pytest.fixture
def signed_server(serve: Any) -> Any:
    """Start servers with signing on (C{KEY}) and given settings."""
    return lambda **settings: serve(keys=(KEY,), **settings)


async def status_line(reactor: Any, url: str, *args: str) -> bytes:
    """The status code and body curl gets for C{url}, as C{b"CODE BODY"}."""
    result = await curl(
        reactor, "-w", "%{http_code} ", *args, url, keep_text=True
    ).ended
    body, _, code = result.text.rpartition(b"\n")
    return code.strip() + b" " + body + b"\n" if body else code.strip()


@pytest_twisted.ensureDeferred
async def test_signed_transfer_then_both_urls_are_used(
    reactor: Any, signed_server: Any, tmp_path: Path, events: List[Any]
) -> None:
    server = signed_server()
    data = payload(tmp_path, 3 * 1024 * 1024)
    send = sign_url(server.url("build-7", "n=2"), KEY, "send", 300)
    receive = sign_url(server.url("build-7", "n=2"), KEY, "receive", 300)
    receivers = [curl(reactor, receive) for _ in range(2)]
    await wait_for(reactor, lambda: server.rendezvous.parties(b"build-7") == (False, 2))
    sent = await curl(reactor, "-T", str(data), send, keep_text=True).ended
    assert b"[INFO] done: bytes=3145728 receivers=2/2" in sent.text
    for receiver in receivers:
        result = await receiver.ended
        assert result.code == 0 and result.digest == sha256_of(data)

    for url in (send, receive):
        method = ["-T", str(data)] if url is send else []
        line = await status_line(reactor, url, *method)
        assert line.startswith(b"403 [ERROR] signed URL already used"), line
    assert server.rendezvous.stage(b"build-7") is None

    text = "\n".join(formatEvent(e) + repr(e) for e in events)
    sig = send.rpartition("sig=")[2]
    assert sig not in text and receive.rpartition("sig=")[2] not in text
    assert "build-7" not in text


@pytest_twisted.ensureDeferred
async def test_each_refusal_as_curl_sees_it(reactor: Any, signed_server: Any) -> None:
    server = signed_server()
    url = server.url("p", "n=2")
    send = sign_url(url, KEY, "send", 300)
    cases = [
        (url, [], b"401 [ERROR] signature required"),
        (url, ["-d", "x"], b"401 [ERROR] signature required"),
        (send, [], b"403 [ERROR] signature scope: this URL is signed to send"),
        (send.replace("n=2", "n=3"), ["-d", "x"], b"403 [ERROR] signature invalid"),
        (send.replace("/p?", "/q?"), ["-d", "x"], b"403 [ERROR] signature invalid"),
        (
            sign_url(url, b"another-key-of-32-bytes-xxxxxxxxx", "send", 300),
            ["-d", "x"],
            b"403 [ERROR] signature invalid",
        ),
        (
            sign_url(url, KEY, "send", 10, now=reactor.seconds() - 100),
            ["-d", "x"],
            b"403 [ERROR] signature expired ",
        ),
        (send + "&sig=x", ["-d", "x"], b"403 [ERROR] signature malformed"),
    ]
    for target, args, expected in cases:
        line = await status_line(reactor, target, *args)
        assert line.startswith(expected), (target, line)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert len(server.rendezvous) == 0
    headers = await curl(
        reactor, "-D", "-", "-o", "/dev/null", url, keep_text=True
    ).ended
    assert (
        b'\r\nwww-authenticate: signed-url realm="txpipe"\r\n' in headers.text.lower()
    )


@pytest_twisted.ensureDeferred
async def test_syntax_errors_come_before_authentication_and_open_paths_stay_open(
    reactor: Any, signed_server: Any
) -> None:
    server = signed_server()
    assert (await status_line(reactor, server.url("p", "n=0"))).startswith(b"400 ")
    assert (await status_line(reactor, server.url("x" * 1100))).startswith(b"414 ")
    preflight = await status_line(reactor, server.url("p"), "-X", "OPTIONS")
    assert preflight.startswith(b"204")
    assert (await status_line(reactor, server.root + "/healthz")) == b"200 ok\n"
    assert (await status_line(reactor, server.root + "/")).startswith(b"200 txpipe")
    status = await status_line(reactor, server.root + "/api/v1/status")
    assert status.startswith(b"200 {")


@pytest_twisted.ensureDeferred
async def test_a_url_whose_pipe_never_started_stays_usable(
    reactor: Any, signed_server: Any
) -> None:
    server = signed_server()
    send = sign_url(server.url("later", "wait=1"), KEY, "send", 300)
    receive = sign_url(server.url("later"), KEY, "receive", 300)
    gave_up = await curl(reactor, "-d", "x", send, keep_text=True).ended
    assert b"[ERROR] the sender gave up" in gave_up.text or b"timed out" in gave_up.text
    receiving = curl(reactor, receive, keep_text=True)
    await wait_for(reactor, lambda: server.rendezvous.parties(b"later") == (False, 1))
    sent = await curl(reactor, "-d", "hello", send, keep_text=True).ended
    assert b"[INFO] done: bytes=5 receivers=1/1" in sent.text
    assert (await receiving.ended).text == b"hello"


@pytest_twisted.ensureDeferred
async def test_require_send_lets_receivers_join_unsigned(
    reactor: Any, signed_server: Any
) -> None:
    server = signed_server(require_signature="send")
    url = server.url("open-receivers", "n=2")
    receivers = [curl(reactor, url, keep_text=True) for _ in range(2)]
    await wait_for(
        reactor, lambda: server.rendezvous.parties(b"open-receivers") == (False, 2)
    )
    assert (await status_line(reactor, url, "-d", "evil")).startswith(b"401 ")
    sent = await curl(
        reactor, "-d", "good", sign_url(url, KEY, "send", 60), keep_text=True
    ).ended
    assert b"done: bytes=4 receivers=2/2" in sent.text
    assert [(await r.ended).text for r in receivers] == [b"good", b"good"]


@pytest_twisted.ensureDeferred
async def test_receiver_responses_forbid_script(
    reactor: Any, server: RunningServer
) -> None:
    port = server.port.getHost().port
    receiving = raw_http(
        reactor,
        port,
        b"GET /api/v1/pipe/csp HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    await wait_for(reactor, lambda: server.rendezvous.parties(b"csp") == (False, 1))
    await curl(reactor, "-d", "<script>alert(1)</script>", server.url("csp")).ended
    response = await receiving
    head = response.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\ncontent-security-policy: sandbox\r\n" in head + b"\r\n"
    assert b"\r\nx-content-type-options: nosniff" in head


@pytest_twisted.ensureDeferred
async def test_twistd_with_secret_file_and_txpipe_sign(
    reactor: Any, tmp_path: Path
) -> None:
    """
    The production path: C{twistd -n pipe --secret-file} with two keys (a
    rotation in progress) below a comment, URLs minted by the C{txpipe sign}
    command with the file's first key, and an old URL signed by the second
    still valid; a URL signed with the comment's text is refused.
    """
    secret = tmp_path / "secret"
    secret.write_bytes(COMMENT + b"\n" + NEW_KEY + b"\n" + OLD_KEY + b"\n")
    secret.chmod(0o600)
    server = start_twistd(reactor, tmp_path, "--secret-file", str(secret))
    try:
        port = await server.listening
        url = f"http://127.0.0.1:{port}/api/v1/pipe/release?n=1"

        def sign(scope: str) -> str:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pipe",
                    "sign",
                    "--secret-file",
                    str(secret),
                    "--scope",
                    scope,
                    "--ttl",
                    "120",
                    url,
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=tmp_path,
            ).stdout.strip()

        forged = sign_url(url, COMMENT, "send", 120)
        assert (await status_line(reactor, forged)).startswith(b"403 ")
        receive = sign_url(url, OLD_KEY, "receive", 120)
        receiving = curl(reactor, receive, keep_text=True)
        sent = await curl(reactor, "-d", "artifact", sign("send"), keep_text=True).ended
        assert b"done: bytes=8 receivers=1/1" in sent.text, sent
        assert (await receiving.ended).text == b"artifact"
        assert (await status_line(reactor, url)).startswith(b"401 ")
    finally:
        await server.stop()
    assert b"signed URLs required (all); 2 keys verify" in server.output
    assert b"release" not in server.output and b"sig=" not in server.output
    assert NEW_KEY not in server.output


COMMENT = b"# txpipe signing keys - rotate monthly"
NEW_KEY = b"6e6577" * 11
OLD_KEY = b"b2xkLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZg"


def refusals(secret: Path, tmp_path: Path) -> List[str]:
    """What twistd pipe and txpipe sign print when refusing C{secret}."""
    server = subprocess.run(
        twistd_pipe("tcp:0:interface=127.0.0.1", "--secret-file", str(secret)),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert server.returncode == 1
    assert "listening" not in server.stdout + server.stderr
    sign = subprocess.run(
        [
            *(sys.executable, "-m", "pipe", "sign", "--secret-file", str(secret)),
            *("--scope", "send", "--ttl", "60", "http://h/api/v1/pipe/p"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert (sign.returncode, sign.stdout) == (2, "")
    return [server.stderr + server.stdout, sign.stderr]


def test_twistd_and_txpipe_sign_refuse_an_open_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(NEW_KEY)
    secret.chmod(0o644)
    for output in refusals(secret, tmp_path):
        assert "chmod 600" in output


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root to give a file another owner",
)
def test_twistd_and_txpipe_sign_refuse_a_key_file_another_user_owns(
    tmp_path: Path,
) -> None:
    """
    Run as root, neither accepts a private key file owned by C{nobody}:
    that user could rewrite the key and mint URLs.
    """
    secret = tmp_path / "secret"
    secret.write_bytes(NEW_KEY + b"\n")
    secret.chmod(0o600)
    os.chown(secret, 65534, 65534)
    for output in refusals(secret, tmp_path):
        assert "owned by uid 65534, neither root nor this process's user" in output


@pytest.mark.parametrize("kind", ["fifo", "comment"])
def test_twistd_and_txpipe_sign_refuse_a_fifo_or_a_bad_line_at_once(
    tmp_path: Path, kind: str
) -> None:
    """
    A FIFO is refused at once, not waited on; a key file whose comment is
    not marked as one is refused with the line's number.
    """
    secret = tmp_path / "secret"
    if kind == "fifo":
        os.mkfifo(secret, 0o600)
        expected = "is not a regular file"
    else:
        secret.write_bytes(NEW_KEY + b"\ntxpipe signing keys - rotate monthly\n")
        secret.chmod(0o600)
        expected = "line 2 of secret file"
    for output in refusals(secret, tmp_path):
        assert expected in output
        assert "Traceback" not in output
