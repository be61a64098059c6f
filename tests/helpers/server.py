"""
A pipe server in the tests' own reactor (the C{server} and C{serve}
fixtures of C{conftest.py} make them), and what several end-to-end modules
ask of a running server.
"""

from __future__ import annotations

from typing import Any

from pipe.server import PipeSite

from .processes import curl

#: The signing key of the end-to-end tests of signed URLs.
KEY = b"end-to-end-signing-key-0123456789"


class RunningServer:
    """
    A pipe server listening on 127.0.0.1 in the test's reactor.

    @ivar site: the L{PipeSite}.
    @ivar base: the URL of the pipe prefix, C{http://127.0.0.1:PORT/api/v1/pipe}.
    """

    def __init__(self, site: PipeSite, port: Any) -> None:
        self.site = site
        self.port = port
        self.root = f"http://127.0.0.1:{port.getHost().port}"
        self.base = self.root + "/api/v1/pipe"

    @property
    def rendezvous(self) -> Any:
        return self.site.pipes.rendezvous

    def parties(self, path: str) -> Any:
        """Whether C{path} has a sender, and how many receivers it has."""
        return self.rendezvous.parties(path.encode())

    def url(self, path: str, query: str = "") -> str:
        return f"{self.base}/{path}" + (f"?{query}" if query else "")


async def application_resources(
    reactor: Any, base: str, static: bytes, form: bool
) -> None:
    """
    curl gets C{/static/hello.txt} (C{static}) and, if C{form}, posts
    C{name=ada} to the C{/greet} form of the application at C{base}.
    """
    got = await curl(reactor, "-fsS", f"{base}/static/hello.txt", keep_text=True).ended
    assert (got.code, got.text) == (0, static)
    if form:
        answer = await curl(
            reactor, "-fsS", "-d", "name=ada", f"{base}/greet", keep_text=True
        ).ended
        assert (answer.code, answer.text) == (0, b"hello ada\n")
