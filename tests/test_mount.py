"""
A site that mounts the pipe tree into an application's own resource tree
(L{pipe._http.mount}), on real L{StreamingChannel}s over L{StringTransport}s:
requests outside the prefix are twisted.web's own (the body spooled to
C{request.content}, the form and query in C{request.args}, Twisted's
automatic C{100 Continue} and idle timeout); requests under it stream as in
the pipe-only site, which is unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any, List

import pytest
from twisted.internet.task import Clock
from twisted.web import http

try:
    from twisted.web.pages import notFound
except ImportError:  # Twisted before 22.10
    from twisted.web.resource import NoResource as notFound  # type: ignore[assignment]
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from pipe._http.mount import ROOT, mount_at
from pipe._http.request import DISCARD_LIMIT, Body, StreamingRequest
from pipe.resource import PipeResource
from pipe.server import PipeSite, make_site
from pipe.signing import Scope, canonical, sign_url, signature

from .helpers import Peer, put_head


class Form(Resource):
    """
    An application's form handler: answers what stock twisted.web gave it.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[Any] = []

    def render(self, request: Any) -> bytes:
        self.requests.append(request)
        name = request.args.get(b"name", [b"-"])[0]
        return b"name=" + name + b" content=" + request.content.read()


class Root(Resource):
    """
    An application's root, with twisted.web's own 404 page.
    """

    def getChild(self, name: bytes, request: Any) -> IResource:
        return notFound()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def form() -> Form:
    return Form()


@pytest.fixture
def mixed(clock: Clock, form: Form) -> PipeSite:
    root = Root()
    root.putChild(b"form", form)
    return make_site(clock, root=root, prefix=b"ci")  # type: ignore[arg-type]


@pytest.fixture
def spooled(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """
    The lengths of the bodies twisted.web spooled (through its
    C{_getContentFile}, which makes C{request.content}).
    """
    lengths: List[Any] = []
    stock = http._getContentFile

    def spool(length: Any) -> Any:
        lengths.append(length)
        return stock(length)

    monkeypatch.setattr("twisted.web.http._getContentFile", spool)
    return lengths


def form_post(body: bytes, path: bytes = b"/form", extra: bytes = b"") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n"
    )


def test_form_post_outside_the_prefix_is_spooled_and_parsed(
    mixed: PipeSite, form: Form, spooled: List[Any]
) -> None:
    """
    A form C{POST} to the application's resource renders only once its body
    is complete, with the body in C{request.content} and the form in
    C{request.args}, as stock twisted.web does.
    """
    peer = Peer(mixed)
    body = b"name=ada&x=1"
    peer.send(form_post(body) + body[:5])
    assert peer.output() == b"", "stock: no render before the body is complete"
    assert form.requests == []
    peer.send(body[5:])
    assert peer.body() == b"name=ada content=" + body
    assert spooled == [len(body)]
    (request,) = form.requests
    assert request.body is Body.STOCK
    assert not request.streams
    assert request.args == {b"name": [b"ada"], b"x": [b"1"]}
    assert b"Content-Type: text/html" in peer.output(), "Twisted's default type"


def test_get_query_outside_the_prefix_is_parsed(mixed: PipeSite, form: Form) -> None:
    peer = Peer(mixed)
    peer.send(b"GET /form?name=grace HTTP/1.1\r\nHost: t\r\n\r\n")
    assert peer.body() == b"name=grace content="
    assert form.requests[0].args == {b"name": [b"grace"]}


def test_chunked_post_outside_the_prefix_goes_to_a_temporary_file(
    mixed: PipeSite, form: Form, spooled: List[Any]
) -> None:
    """
    A chunked body is spooled as Twisted spools one (its length unknown:
    a temporary file), not decoded by the pipe's own chunked decoder.
    """
    peer = Peer(mixed)
    peer.send(
        b"POST /form HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert peer.body() == b"name=- content=hello world"
    assert spooled == [None]
    assert not isinstance(form.requests[0].content, io.BytesIO)


def test_pipe_upload_under_the_prefix_is_never_written_to_content(
    mixed: PipeSite, spooled: List[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Under the prefix, the sender's request renders as soon as its headers
    are in and its body streams to the receiver: nothing is spooled, no
    temporary file is made, C{content} stays empty.
    """

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a temporary file was made")

    monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    receiver = Peer(mixed)
    receiver.send(b"GET /ci/api/v1/pipe/x?n=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert mixed.pipes.rendezvous.parties(b"x") == (False, 1)
    sender = Peer(mixed)
    data = os.urandom(300_000)
    sender.send(
        b"PUT /ci/api/v1/pipe/x?n=1 HTTP/1.1\r\nHost: t\r\n"
        b"Content-Length: %d\r\n\r\n" % len(data)
    )
    (request,) = sender.channel.requests
    content = request.content
    assert request.streams and request.body is Body.STREAMING
    assert sender.output().startswith(b"HTTP/1.1 200 OK\r\n"), "rendered at once"
    assert isinstance(content, io.BytesIO)
    for i in range(0, len(data), 65536):
        sender.send(data[i : i + 65536])
        # Twisted closes it once the request is done.
        assert content.closed or content.getvalue() == b""
    assert content.closed
    assert hashlib.sha256(receiver.body()).digest() == hashlib.sha256(data).digest()
    assert request.body is Body.COMPLETE
    assert spooled == []


def test_100_continue_outside_the_prefix_is_twisteds(mixed: PipeSite) -> None:
    """
    Twisted answers C{Expect: 100-continue} at once, before any body, for
    the application's own resources.
    """
    peer = Peer(mixed)
    peer.send(form_post(b"name=bob", extra=b"Expect: 100-continue\r\n"))
    assert peer.output() == b"HTTP/1.1 100 Continue\r\n\r\n"
    peer.send(b"name=bob")
    assert peer.body() == b"name=bob content=name=bob"


def test_100_continue_outside_the_prefix_follows_pipelined_responses(
    mixed: PipeSite,
) -> None:
    """
    Requests pipelined in one read: the responses written while it is
    handled are held and sent together, and Twisted's C{100 Continue},
    which it writes to the transport itself, still comes after the
    responses to the requests before it.
    """
    peer = Peer(mixed)
    body = b"name=ada"
    peer.send(
        form_post(body)
        + body
        + b"GET /ci/healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        + form_post(body, extra=b"Expect: 100-continue\r\n")
    )
    out = peer.output()
    assert out.count(b"HTTP/1.1 ") == 3
    assert out.endswith(b"ok\nHTTP/1.1 100 Continue\r\n\r\n")
    peer.send(body)
    assert peer.output().endswith(b"\r\n\r\nname=ada content=name=ada")


def test_100_continue_under_the_prefix_is_the_pipes(mixed: PipeSite) -> None:
    """
    Under the prefix, a sender gets C{100 Continue} only when its upload
    is accepted, never when it is refused.
    """
    receiver = Peer(mixed)
    receiver.send(b"GET /ci/api/v1/pipe/x?n=2 HTTP/1.1\r\nHost: t\r\n\r\n")
    refused = Peer(mixed)
    refused.send(
        put_head(n=3, length=5, extra=b"Expect: 100-continue\r\n").replace(
            b"PUT /", b"PUT /ci/"
        )
    )
    assert refused.output().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"100 Continue" not in refused.output()
    accepted = Peer(mixed)
    accepted.send(
        put_head(n=2, length=5, extra=b"Expect: 100-continue\r\n").replace(
            b"PUT /", b"PUT /ci/"
        )
    )
    assert accepted.output().startswith(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
    )


@pytest.mark.parametrize(
    "path",
    [b"/cix/api/v1/pipe/x", b"/c%69/api/v1/pipe/x", b"/api/v1/pipe/x"],
)
def test_the_decision_is_on_the_raw_path(
    mixed: PipeSite, path: bytes, spooled: List[Any]
) -> None:
    """
    Only a raw path that is the prefix or starts with it and a slash
    streams; anything else is the application's (here a stock 404).
    """
    peer = Peer(mixed)
    body = b"abc"
    peer.send(form_post(body, path=path) + body)
    assert peer.output().startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"No Such Resource" in peer.output(), "twisted.web's own 404 page"
    assert spooled == [len(body)]
    assert mixed.pipes.rendezvous.parties(b"x") == (False, 0)


@pytest.mark.parametrize("path", [b"/ci", b"/ci/", b"/ci/healthz", b"/ci/version"])
def test_the_whole_pipe_tree_is_under_the_prefix(mixed: PipeSite, path: bytes) -> None:
    peer = Peer(mixed)
    peer.send(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    out = peer.output()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; charset=utf-8" in out


def test_status_and_landing_page_under_the_prefix(mixed: PipeSite) -> None:
    peer = Peer(mixed)
    peer.send(b"GET /ci/api/v1/status HTTP/1.1\r\nHost: t\r\n\r\n")
    assert peer.output().startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(peer.body()) == mixed.registry.status()
    landing = Peer(mixed)
    landing.send(b"GET /ci/ HTTP/1.1\r\nHost: pipes.example\r\n\r\n")
    page = landing.body()
    assert b"http://pipes.example/ci/api/v1/pipe/my-build/" in page
    assert b"http://pipes.example/ci/healthz" in page
    assert b"http://pipes.example/api/" not in page


def test_refusals_under_the_prefix_name_the_mounted_pipe_urls(mixed: PipeSite) -> None:
    peer = Peer(mixed)
    peer.send(b"GET /ci/nothing HTTP/1.1\r\nHost: t\r\n\r\n")
    assert peer.output().startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert peer.body() == b"[ERROR] not found: pipes are at /ci/api/v1/pipe/<path>\n"
    empty = Peer(mixed)
    empty.send(b"GET /ci/api/v1/pipe/ HTTP/1.1\r\nHost: t\r\n\r\n")
    assert empty.output().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert empty.body() == (
        b"[ERROR] the pipe path is empty: use /ci/api/v1/pipe/<path>\n"
    )


@pytest.mark.parametrize("path", [b"/healthz", b"/ci/healthz"])
def test_early_answer_under_the_pipe_tree_discards_the_body(
    clock: Clock, mixed: PipeSite, path: bytes, spooled: List[Any]
) -> None:
    """
    The pipe-only site, unchanged, and the pipe tree of a mixed site: every
    path streams, so a C{POST} with a body to C{/healthz} is answered at
    once and its body dropped boundedly, never spooled.
    """
    site = mixed if path.startswith(b"/ci") else make_site(clock)  # type: ignore[arg-type]
    peer = Peer(site)
    peer.send(
        form_post(b"", path=path).replace(
            b"Length: 0", b"Length: %d" % (10 * DISCARD_LIMIT)
        )
    )
    out = peer.output()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(b"ok\n")
    assert not peer.transport.disconnecting
    peer.send(b"x" * (DISCARD_LIMIT + 1))
    assert peer.transport.disconnecting
    assert peer.output() == out
    assert spooled == []


def test_pipe_only_site_streams_every_path(clock: Clock) -> None:
    """
    In the site without a root, every request is decided to stream (it is
    answered before its body), with the pipe tree at the site's root.
    """
    site = make_site(clock)  # type: ignore[arg-type]
    assert site.mount is ROOT and site.resource is site.tree
    assert site.timeOut is None, "the header timeout replaces the idle timeout"
    for path in (b"/form", b"/anything", b"/healthz"):
        peer = Peer(site)
        peer.send(form_post(b"abc", path=path))
        (request,) = peer.channel.requests
        assert request.streams and request.body is Body.DISCARDING
        assert peer.output().startswith(b"HTTP/1.1 ")


def test_idle_timeout_outside_the_prefix_is_twisteds(
    clock: Clock, mixed: PipeSite
) -> None:
    """
    A stock request whose body stops arriving is closed by Twisted's idle
    timeout; a pipe sender waiting for its receivers under the prefix is
    not.
    """
    timeout = mixed.timeOut
    assert timeout is not None and timeout == Site.timeOut
    stalled = Peer(mixed)
    stalled.send(form_post(b"name=0123456789") + b"name")
    sender = Peer(mixed)
    sender.send(put_head(n=1, length=100).replace(b"PUT /", b"PUT /ci/"))
    clock.advance(timeout - 1)
    assert not stalled.transport.disconnecting
    clock.advance(1)
    assert stalled.transport.disconnecting
    assert not sender.transport.disconnecting


def test_access_log_has_the_applications_requests_only(
    clock: Clock, mixed: PipeSite
) -> None:
    mixed.startFactory()
    logged = io.BytesIO()
    mixed.logFile = logged
    for path in (b"/form?name=a", b"/ci/healthz", b"/ci/api/v1/pipe/secret"):
        Peer(mixed).send(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    lines = logged.getvalue().splitlines()
    assert len(lines) == 1 and b'"GET /form?name=a HTTP/1.1" 200' in lines[0]
    mixed.stopFactory()


def test_root_and_prefix_go_together(clock: Clock) -> None:
    with pytest.raises(ValueError):
        make_site(clock, root=Resource())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_site(clock, prefix=b"ci")  # type: ignore[arg-type]
    registry = make_site(clock).registry  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PipeSite(PipeResource(registry), clock, Resource())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PipeSite(PipeResource(registry, b"ci"), clock)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "prefix",
    [
        b"",
        b"/",
        b"a//b",
        b"..",
        b".",
        b"a b",
        b"c%69",
        b"api/v1/pipe",
        b"x/api/v1/pipe/y",
        "ci",
    ],
)
def test_a_prefix_is_plain_path_segments(prefix: Any) -> None:
    with pytest.raises(ValueError):
        mount_at(prefix)


def test_mount_paths() -> None:
    assert mount_at(b"ci").path == b"/ci"
    assert mount_at(b"/tools/pipes/").path == b"/tools/pipes"
    assert mount_at(b"tools/pipes").pipe_prefix == b"/tools/pipes/api/v1/pipe/"
    assert mount_at(b"api").path == b"/api", "api alone is a plain segment"
    assert ROOT.holds(b"/anything") and ROOT.segments == []


def test_a_deeper_prefix_mounts_the_tree(clock: Clock, form: Form) -> None:
    root = Root()
    root.putChild(b"form", form)
    site = make_site(clock, root=root, prefix=b"tools/pipes")  # type: ignore[arg-type]
    receiver = Peer(site)
    receiver.send(b"GET /tools/pipes/api/v1/pipe/a/b?n=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert site.pipes.rendezvous.parties(b"a/b") == (False, 1)
    request = receiver.channel.requests[0]
    assert request.prepath == [b"tools", b"pipes", b"api", b"v1", b"pipe"]


def test_signed_url_under_a_mount_covers_the_pipe_path() -> None:
    """
    L{sign_url} signs the path after C{/api/v1/pipe/} of a mounted URL, as
    the server of a mixed site reads it.
    """
    key = b"k" * 32
    url = "http://h/ci/api/v1/pipe/build-1/out.tar?n=3"
    signed = sign_url(url, key, "send", 60, now=1000)
    assert signed.startswith("http://h/ci/api/v1/pipe/build-1/out.tar?n=3&expires=1060")
    expected = signature(key, canonical(Scope.SEND, b"build-1/out.tar", 3, 1060))
    assert signed.endswith("&sig=" + expected)
    with pytest.raises(ValueError):
        sign_url("http://h/ci/api/v1/pipe/", key, "send", 60)


def test_requests_of_a_mixed_site_are_streaming_requests(mixed: PipeSite) -> None:
    assert mixed.requestFactory is StreamingRequest
