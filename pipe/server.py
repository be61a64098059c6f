# -*- test-case-name: tests.test_end_to_end -*-
"""
Building the L{Site}: the one supported way to serve pipes.
"""

from __future__ import annotations

from typing import List, Optional, Set

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Site

from ._batch import WriteBatch
from ._channel import StreamingChannel
from ._relay import Relay
from ._request import StreamingRequest
from ._settings import Settings
from .resource import PipeResource, site_tree

__all__ = ["PipeSite", "Settings", "make_site"]

#: On shutdown, how long finished responses get to flush before the
#: remaining connections are aborted.
CLOSE_GRACE = 10.0


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
    @ivar write_batch: the L{WriteBatch} its channels hold writes in while
        they handle a read.
    """

    protocol = StreamingChannel  # type: ignore[assignment]
    requestFactory = StreamingRequest
    displayTracebacks = False

    def __init__(self, pipes: PipeResource, reactor: IReactorTime) -> None:
        super().__init__(site_tree(pipes), reactor=reactor)
        self.pipes = pipes
        self.relay = pipes.relay
        self.header_timeout = pipes.relay.settings.header_timeout
        if self.header_timeout:
            # The header timeout already closes a connection that sends no
            # request (from its start, or from its last response's end);
            # Twisted's own idle timeout would only add a timer to each.
            self.timeOut = None
        self.write_batch = WriteBatch()
        self._channels: Set[StreamingChannel] = set()

    def channel_opened(self, channel: StreamingChannel) -> None:
        """
        Called by every L{StreamingChannel} of this site when connected.
        """
        self._channels.add(channel)

    def channel_closed(self, channel: StreamingChannel) -> None:
        """
        Called by every L{StreamingChannel} of this site when disconnected.
        """
        self._channels.discard(channel)

    def end_keep_alive(self) -> None:
        """
        Stop keeping connections alive (at the start of a drain): close the
        idle ones now, and every other one once its last response is done,
        so that a proxy's pooled connection cannot carry a new request to a
        server that would refuse it.
        """
        for channel in list(self._channels):
            channel.persistent = False
            if not channel.requests:
                channel.loseConnection()

    def close_connections(self, grace: float = CLOSE_GRACE) -> Deferred[None]:
        """
        Close every open connection once what was written to it has been
        sent (finished responses are flushed, idle keep-alive connections
        end); abort those still open after C{grace} seconds.

        @return: fires when every connection is closed.
        """
        channels = list(self._channels)
        for channel in channels:
            channel.loseConnection()
        closing = DeferredList([c.closed for c in channels], consumeErrors=True)
        timer = self.reactor.callLater(grace, self._abort_remaining)  # type: ignore[attr-defined]

        def done(_: object) -> None:
            if timer.active():
                timer.cancel()

        closing.addCallback(done)
        return closing  # type: ignore[return-value]

    def _abort_remaining(self) -> None:
        for channel in list(self._channels):
            transport = channel.transport
            if transport is not None:
                transport.abortConnection()  # type: ignore[attr-defined]

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
