"""
An application's own resource tree and the pipe tree on one real listening
port (L{pipe.server.make_site} with C{root} and C{prefix}), driven by real
curl processes, the client library and the C{txpipe} command: a static
file and a form are served as stock twisted.web serves them, a pipe under
the prefix streams (nothing spooled), and signed URLs work under it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterator, List, NamedTuple, Optional, Type

import pytest
import pytest_twisted
from twisted.web.resource import Resource
from twisted.web.static import File

from pipe._http.request import StreamingRequest
from pipe.client import PipeRejected, receive, send
from pipe.server import PipeSite, Settings, make_site
from pipe.signing import sign_url

from .helpers import (
    DONE,
    application_resources,
    curl,
    ended,
    payload,
    raw_http,
    sha256_of,
    txpipe,
    wait_for,
)

KEY = b"0123456789abcdef0123456789abcdef"


class Greeting(Resource):
    """
    An application's form handler: stock twisted.web parses its form.
    """

    isLeaf = True

    def render_POST(self, request: Any) -> bytes:
        return b"hello " + request.args[b"name"][0] + b"\n"


class Seen(NamedTuple):
    """
    What a request held in C{content} once its body was complete.

    @ivar uri: the request target.
    @ivar streams: whether it was handled as a stream.
    @ivar memory: whether C{content} was an in-memory buffer (stock
        twisted.web spools a chunked or large body to a temporary file).
    @ivar spooled: the bytes written to C{content}.
    """

    uri: bytes
    streams: bool
    memory: bool
    spooled: int


def recording(seen: List[Seen]) -> Type[StreamingRequest]:
    """
    A L{StreamingRequest} that notes, when its body is complete (before
    Twisted rewinds and later closes C{content}), what C{content} holds.
    """

    class Recording(StreamingRequest):
        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
            content = self.content
            assert content is not None
            seen.append(
                Seen(
                    path,
                    self.streams,
                    isinstance(content, io.BytesIO),
                    content.tell(),
                )
            )
            super().requestReceived(command, path, version)

    return Recording


class Mixed(NamedTuple):
    site: PipeSite
    root: str
    seen: List[Seen]


@pytest.fixture
def mixed(reactor: Any, tmp_path: Path) -> Iterator[Any]:
    """
    Start a mixed site on a loopback port: C{/static/} (a directory),
    C{/greet} (a form) and the pipes under C{/ci/}.
    """
    ports: List[Any] = []

    def start(settings: Optional[Settings] = None) -> Mixed:
        static = tmp_path / "static"
        static.mkdir(exist_ok=True)
        (static / "hello.txt").write_bytes(b"static hello\n")
        root = Resource()
        root.putChild(b"static", File(str(static)))
        root.putChild(b"greet", Greeting())
        site = make_site(reactor, settings, root=root, prefix=b"ci")
        seen: List[Seen] = []
        site.requestFactory = recording(seen)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        ports.append(port)
        return Mixed(site, f"http://127.0.0.1:{port.getHost().port}", seen)

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_static_form_and_pipes_on_one_port(
    reactor: Any, tmp_path: Path, mixed: Any
) -> None:
    """
    curl gets a static file and a form's answer from the application's
    resources; a chunked upload under the prefix reaches three receivers
    byte for byte, and nothing of it is spooled, while the form's body is.
    """
    server: Mixed = mixed()
    await application_resources(reactor, server.root, b"static hello\n", form=True)
    data = payload(tmp_path, 4 * 1024 * 1024 + 3)
    url = f"{server.root}/ci/api/v1/pipe/build-7/out.tar?n=3"
    receivers = [curl(reactor, "-fsS", url) for _ in range(3)]
    await wait_for(
        reactor,
        lambda: server.site.pipes.rendezvous.parties(b"build-7/out.tar") == (False, 3),
    )
    sender = await curl(
        reactor, "-fsS", "-T", "-", url, stdin=data, keep_text=True
    ).ended
    results = [await r.ended for r in receivers]
    assert sender.code == 0, sender
    done = DONE.search(sender.text)
    assert done is not None, sender
    assert done.groups() == (str(data.stat().st_size).encode(), b"3", b"3")
    digest = sha256_of(data)
    assert [(r.code, r.digest) for r in results] == [(0, digest)] * 3

    bodies = {s.uri: s for s in server.seen}
    upload = bodies[b"/ci/api/v1/pipe/build-7/out.tar?n=3"]
    assert upload == Seen(upload.uri, streams=True, memory=True, spooled=0)
    assert bodies[b"/greet"] == Seen(b"/greet", streams=False, memory=True, spooled=8)


@pytest_twisted.ensureDeferred
async def test_signed_urls_client_and_command_under_the_prefix(
    reactor: Any, tmp_path: Path, mixed: Any
) -> None:
    """
    With signing on, URLs signed under the prefix are accepted from the
    client library and from C{txpipe send}/C{recv}; an unsigned one is
    refused.
    """
    server: Mixed = mixed(Settings(keys=(KEY,)))
    data = payload(tmp_path, 1024 * 1024 + 5)
    digest = sha256_of(data)
    url = f"{server.root}/ci/api/v1/pipe/signed/a?n=2"
    send_url = sign_url(url, KEY, "send", 600)
    receive_url = sign_url(url, KEY, "receive", 600)

    into = io.BytesIO()
    by_library = receive(receive_url, into, reactor=reactor)
    by_command = txpipe(reactor, "recv", receive_url, "--sha256", digest)
    await wait_for(
        reactor, lambda: server.site.pipes.rendezvous.parties(b"signed/a") == (False, 2)
    )
    result = await send(send_url, str(data), reactor=reactor)
    assert result.receivers == 2 and result.sha256 == digest
    assert (await by_library).sha256 == digest
    code, _, err = await ended(by_command)
    assert code == 0, err

    again = sign_url(f"{server.root}/ci/api/v1/pipe/signed/b", KEY, "send", 600)
    receiving = txpipe(
        reactor,
        "recv",
        sign_url(again, KEY, "receive", 600),
        "-o",
        str(tmp_path / "got"),
    )
    code, _, err = await ended(txpipe(reactor, "send", again, str(data)))
    assert code == 0, err
    assert (await ended(receiving))[0] == 0
    assert sha256_of(tmp_path / "got") == digest

    with pytest.raises(PipeRejected) as refused:
        await send(url, str(data), reactor=reactor)
    assert refused.value.status == 401


@pytest_twisted.ensureDeferred
async def test_drain_covers_the_whole_site(reactor: Any, mixed: Any) -> None:
    """
    C{site.drain()} sends a waiting receiver under the prefix away with
    503 and closes the application's idle keep-alive connection too.
    """
    server: Mixed = mixed()
    port = int(server.root.rsplit(":", 1)[1])
    idle = raw_http(reactor, port, b"GET /static/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    waiting = curl(
        reactor,
        "-sS",
        "-w",
        "%{http_code}",
        f"{server.root}/ci/api/v1/pipe/drained",
        keep_text=True,
    )
    await wait_for(
        reactor,
        lambda: (
            server.site.pipes.rendezvous.parties(b"drained") == (False, 1)
            and any(s.uri == b"/static/hello.txt" for s in server.seen)
            and sum(not c.requests for c in server.site._channels) == 1
        ),
        what="a waiting receiver and an idle connection",
    )
    await server.site.drain()
    kept = await idle
    assert kept.startswith(b"HTTP/1.1 200 OK\r\n") and kept.endswith(b"static hello\n")
    late = await waiting.ended
    assert late.text.endswith(b"503"), late


@pytest_twisted.ensureDeferred
async def test_the_access_log_never_holds_a_signature(reactor: Any, mixed: Any) -> None:
    """
    The application's access log on a real port: a mistyped signed URL
    (C{//ci/...} and C{/c%69/...} are not under C{/ci}: the raw path
    decides), a percent-encoded C{sig} name, and a signed URL as the
    C{Referer} are logged with every signature's value replaced.
    """
    server: Mixed = mixed(Settings(keys=(KEY,)))
    logged = io.BytesIO()
    server.site.logFile = logged
    port = int(server.root.rsplit(":", 1)[1])
    requests = [
        b"//ci/api/v1/pipe/p?n=1&expires=9&scope=send&sig=FIRSTSIGNATURE",
        b"/c%69/api/v1/pipe/p?sig=SECONDSIGNATURE&n=1",
        b"/greet?%73ig=THIRDSIGNATURE",
    ]
    for target in requests:
        await raw_http(
            reactor,
            port,
            b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Referer: http://t/ci/api/v1/pipe/p?n=1&sig=REFERERSIGNATURE\r\n\r\n",
            timeout=5,
        )
    text = logged.getvalue()
    assert len(text.splitlines()) == 3, text
    assert b"SIGNATURE" not in text, text
    assert text.count(b"sig=REDACTED") == 5, text
    assert b'"GET //ci/api/v1/pipe/p?n=1&expires=9&scope=send&sig=REDACTED' in text
    assert b"%73ig=REDACTED" in text
