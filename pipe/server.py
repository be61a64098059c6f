# -*- test-case-name: tests.test_end_to_end -*-
"""
Building the L{Site}: the one supported way to serve pipes.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Site

from ._relay import Relay
from ._request import StreamingChannel, StreamingRequest
from ._settings import Settings
from .resource import PipeResource, RootResource

__all__ = ["PipeSite", "Settings", "make_site"]


class PipeSite(Site):
    """
    A L{Site} whose connections are L{StreamingChannel}s (HTTP/1.x only: no
    HTTP/2 through ALPN) and whose requests are L{StreamingRequest}s.

    The access log is off: a pipe path is a credential, and the pipe logs
    each transfer itself with a digest of its path.

    @ivar pipes: the L{PipeResource}.
    @ivar relay: the server-wide state; C{relay.rendezvous} holds every
        waiting and running path, C{relay.drain()} shuts down gracefully.
    @ivar header_timeout: seconds a client has to send its request line and
        headers (0: no limit); read by L{StreamingChannel}.
    """

    protocol = StreamingChannel  # type: ignore[assignment]
    requestFactory = StreamingRequest
    displayTracebacks = False

    def __init__(self, pipes: PipeResource, reactor: IReactorTime) -> None:
        super().__init__(RootResource(pipes), reactor=reactor)
        self.pipes = pipes
        self.relay = pipes.relay
        self.header_timeout = pipes.relay.settings.header_timeout

    def acceptableProtocols(self) -> List[bytes]:
        """
        Offer only HTTP/1.1 through TLS ALPN, even when the C{h2} package is
        installed (stock L{Site} then offers C{h2}): Twisted's HTTP/2 stack
        buffers a flow-control window per slow stream, and the streaming
        channel is HTTP/1.x only.
        """
        return [b"http/1.1"]

    def log(self, request: object) -> None:
        """
        Write no access log line (see the class docstring).
        """


def make_site(reactor: IReactorTime, settings: Optional[Settings] = None) -> PipeSite:
    """
    Build the site that serves pipes at C{/api/v1/pipe/<path>}, with
    C{/healthz} and C{/api/v1/status}.

    @param reactor: the reactor (its clock drives every timeout).
    @param settings: limits and timeouts (the defaults of C{twistd pipe}).
    """
    relay = Relay(reactor, settings if settings is not None else Settings())
    return PipeSite(PipeResource(relay), reactor)
