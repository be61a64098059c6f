"""
The floor of a small pipe in twisted.web, for C{compare.py --floor}: the
least a pipe server built on twisted.web must do, and nothing else.

A stock L{twisted.web.server.Site} with one leaf resource: a C{GET} waits
for the C{PUT} of the same path (or takes the body that came first), the
C{PUT}'s body (spooled by twisted.web, as stock twisted.web does) is
answered to the C{GET} with its length, and the C{PUT} is answered with one
line.  No limits, no streaming, no fan-out, no delivery check, no log line,
no metrics: the difference between txpipe's CPU per transfer and this
server's is what txpipe itself costs on top of twisted.web.  Like
C{twistd pipe}, it calls C{gc.freeze()} once the reactor runs.

Usage: C{python floor_server.py}; it prints C{listening on PORT} (a free
loopback port) and serves until terminated.
"""

from __future__ import annotations

import gc
from typing import Dict

from twisted.web import resource, server
from twisted.web.iweb import IRequest


class Floor(resource.Resource):
    """Pipes of one receiver, matched by path, bodies held in memory."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: Dict[bytes, server.Request] = {}
        self.bodies: Dict[bytes, bytes] = {}

    def render_GET(self, request: server.Request) -> object:
        body = self.bodies.pop(request.path, None)
        if body is not None:
            return self._body(request, body)
        self.waiting[request.path] = request
        request.notifyFinish().addErrback(
            lambda _: self.waiting.pop(request.path, None)
        )
        return server.NOT_DONE_YET

    def render_PUT(self, request: server.Request) -> bytes:
        assert request.content is not None
        body = request.content.read()
        receiver = self.waiting.pop(request.path, None)
        if receiver is None:
            self.bodies[request.path] = body
        else:
            receiver.write(self._body(receiver, body))
            receiver.finish()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"[INFO] done\n"

    @staticmethod
    def _body(request: IRequest, body: bytes) -> bytes:
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body


def main() -> None:
    from twisted.internet import reactor

    site = server.Site(Floor())
    site.log = lambda request: None  # type: ignore[method-assign]
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined,arg-type]
    print(f"listening on {port.getHost().port}", flush=True)  # type: ignore[attr-defined]
    reactor.callWhenRunning(gc.freeze)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
