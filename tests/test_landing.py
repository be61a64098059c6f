"""
C{/} and C{/version} with curl: the page as HTML for browsers and as plain
text for everyone else, with this server's base URL, never trusted as
markup.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

import pytest_twisted

from pipe import __version__
from pipe._landing import PAGE_POLICY, render_html, render_text

from .helpers import KEY, RunningServer, curl

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def fetch(
    reactor: Any, url: str, *args: str
) -> Tuple[int, Dict[bytes, List[bytes]], bytes]:
    result = await curl(reactor, "-i", *args, url, keep_text=True).ended
    head, _, body = result.text.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers: Dict[bytes, List[bytes]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers, body


@pytest_twisted.ensureDeferred
async def test_curl_gets_plain_text_with_this_servers_commands(
    reactor: Any, server: RunningServer
) -> None:
    code, headers, body = await fetch(reactor, server.root + "/")
    assert code == 200
    assert headers[b"content-type"] == [b"text/plain; charset=utf-8"]
    assert body.startswith(f"txpipe {__version__}: ".encode())
    pipe_url = f"{server.root}/api/v1/pipe/my-build/artifact.tar?n=3".encode()
    assert b'curl -fsS -T artifact.tar "' + pipe_url + b'"' in body
    assert b'curl -fsS "' + pipe_url + b'" | tar x' in body
    assert b"Signed URLs" not in body
    assert b"<" not in body
    for page in (b"/healthz", b"/api/v1/status", b"/version"):
        assert server.root.encode() + page in body, page


def test_every_copied_curl_command_fails_on_error_and_quotes_its_url() -> None:
    """
    What a user copies from the page works in any shell (zsh globs an
    unquoted C{?}) and fails on an HTTP error instead of saving the
    C{[ERROR]} line as the artifact.
    """
    for signed in (False, True):
        for page in (
            render_text("http://h:1", signed).decode(),
            render_html("http://h:1", signed).decode(),
        ):
            commands = [
                line
                for line in page.splitlines()
                if "curl " in line and "/api/v1/pipe/" in line
            ]
            assert len(commands) >= 4
            for line in commands:
                assert "curl -fsS " in line, line
                assert re.search(
                    r'(&quot;|")http://h:1/api/v1/pipe/[^ ]*\?n=3(&quot;|")', line
                ), line


@pytest_twisted.ensureDeferred
async def test_browsers_get_a_self_contained_page(
    reactor: Any, server: RunningServer
) -> None:
    code, headers, body = await fetch(
        reactor, server.root + "/", "-H", f"Accept: {BROWSER_ACCEPT}"
    )
    assert code == 200
    assert headers[b"content-type"] == [b"text/html; charset=utf-8"]
    assert headers[b"content-security-policy"] == [PAGE_POLICY]
    assert headers[b"vary"] == [b"Accept, Host"]
    assert body.startswith(b"<!doctype html>")
    assert f"<h1>txpipe<small>{__version__}</small></h1>".encode() in body
    assert f"{server.root}/api/v1/pipe/my-build/artifact.tar?n=3".encode() in body
    for absent in (b"<script", b"src=", b"@import", b"url("):
        assert absent not in body.lower()
    # The only links: the server's own pages, in the footer.
    links = re.findall(rb'href="([^"]*)"', body)
    assert links == [
        f"{server.root}{page}".encode()
        for page in ("/healthz", "/api/v1/status", "/version")
    ]
    assert int(headers[b"content-length"][0]) == len(body)


@pytest_twisted.ensureDeferred
async def test_host_header_is_escaped_or_replaced_never_markup(
    reactor: Any, server: RunningServer
) -> None:
    for host, shown in [
        (b"pipe.example:8443", b"http://pipe.example:8443/api/v1/pipe/"),
        (b"[::1]:8080", b"http://[::1]:8080/api/v1/pipe/"),
        (b"<script>alert(1)</script>", b"http://HOST/api/v1/pipe/"),
        (b'a"onmouseover="x', b"http://HOST/api/v1/pipe/"),
        (b"a b", b"http://HOST/api/v1/pipe/"),
    ]:
        for accept in ("*/*", BROWSER_ACCEPT):
            _, _, body = await fetch(
                reactor,
                server.root + "/",
                "-H",
                "Host: " + host.decode(),
                "-H",
                f"Accept: {accept}",
            )
            assert shown in body, (host, accept, body[:400])
            assert b"<script>alert" not in body and b'"onmouseover' not in body


@pytest_twisted.ensureDeferred
async def test_signed_server_shows_how_to_sign(reactor: Any, serve: Any) -> None:
    server = serve(keys=(KEY,))
    for accept in ("*/*", BROWSER_ACCEPT):
        code, _, body = await fetch(
            reactor, server.root + "/", "-H", f"Accept: {accept}"
        )
        assert code == 200, "the page stays open when signing is on"
        assert b"Signed URLs required" in body
        assert b"txpipe sign --secret-file KEY --ttl 600 --scope receive" in body


@pytest_twisted.ensureDeferred
async def test_version_head_and_other_methods(
    reactor: Any, server: RunningServer
) -> None:
    code, headers, body = await fetch(reactor, server.root + "/version")
    assert (code, body) == (200, f"{__version__}\n".encode())
    assert headers[b"content-type"] == [b"text/plain; charset=utf-8"]
    code, headers, body = await fetch(reactor, server.root + "/", "--head")
    assert code == 200 and body == b""
    assert int(headers[b"content-length"][0]) > 100
    code, headers, body = await fetch(reactor, server.root + "/", "-d", "x")
    assert code == 405 and headers[b"allow"] == [b"GET"]
