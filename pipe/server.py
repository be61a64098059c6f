# -*- test-case-name: tests.test_end_to_end -*-
"""
Building the L{Site}: the one supported way to serve pipes, alone or in an
application's own resource tree, on one port.
"""

from __future__ import annotations

from typing import List, Optional, Set

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, getChildForRequest
from twisted.web.server import Site
from zope.interface import implementer

from pipe._http.access_log import without_signature
from pipe._http.batch import WriteBatch
from pipe._http.channel import StreamingChannel
from pipe._http.interfaces import IPipeSite
from pipe._http.request import StreamingRequest
from pipe._http.window import keep_large_reads_off_the_heap
from pipe._settings import Settings
from pipe._transfer.registry import Registry
from pipe.resource import PipeResource, site_tree

__all__ = ["PipeSite", "Settings", "make_site"]

#: On shutdown, how long finished responses get to flush before the
#: remaining connections are aborted.
CLOSE_GRACE = 10.0


@implementer(IPipeSite)
class PipeSite(Site):
    """
    A L{Site} whose connections are L{StreamingChannel}s (HTTP/1.x only: no
    HTTP/2 through ALPN) and whose requests are L{StreamingRequest}s.

    It serves the pipe tree (L{site_tree}) alone, or an application's own
    resource tree with the pipe tree mounted under a prefix (see
    L{make_site}): then the requests under the prefix stream, and every
    other one is handled as a stock L{Site} handles it (see
    L{pipe._http.mount}).  Connection handling (the header timeout, the drain)
    is the same for all.

    The access log is off for the pipe tree: a pipe path is a credential,
    and the pipe logs each transfer itself with a digest of its path.  The
    application's own requests are logged as a stock L{Site} logs them.

    @ivar pipes: the L{PipeResource}.
    @ivar mount: where the pipe tree sits (C{pipes.mount}).
    @ivar tree: the pipe tree; C{resource} is the site's root: the pipe
        tree, or the application's own root.
    @ivar registry: the server-wide state (L{pipe._transfer.registry.Registry});
        C{registry.rendezvous} holds every waiting and running path,
        C{registry.drain()} shuts down gracefully.
    @ivar header_timeout: seconds a client has to send its request line and
        headers (0: no limit); read by L{StreamingChannel}.  This and the
        other attributes and methods its channels use are its
        L{IPipeSite}.
    @ivar trusted_proxies: the networks whose C{X-Forwarded-For} names the
        client (C{--trusted-proxies}); read by L{pipe._transfer.parties}.
    @ivar write_batch: the L{WriteBatch} its channels hold writes in while
        they handle a read.
    """

    protocol = StreamingChannel  # type: ignore[assignment]
    requestFactory = StreamingRequest
    displayTracebacks = False

    def __init__(
        self,
        pipes: PipeResource,
        reactor: IReactorTime,
        root: Optional[IResource] = None,
    ) -> None:
        """
        @param pipes: the pipe resource; its C{mount} says where the pipe
            tree sits.
        @param reactor: the reactor (its clock drives every timeout).
        @param root: the application's own root resource, when the pipe
            tree is mounted under a prefix; L{None} when the pipe tree is
            the whole site.
        @raise ValueError: C{root} is given and the pipes are not under a
            prefix, or the other way round.
        """
        if (root is None) != (pipes.mount.path == b""):
            raise ValueError(
                "a site with its own root needs the pipes under a prefix,"
                " and pipes under a prefix need the site's own root"
            )
        tree = site_tree(pipes)
        super().__init__(tree if root is None else root, reactor=reactor)
        self.pipes = pipes
        self.mount = pipes.mount
        self.tree = tree
        self.registry = pipes.registry
        self.header_timeout = pipes.registry.settings.header_timeout
        self.trusted_proxies = pipes.registry.settings.trusted_proxies
        if self.header_timeout and root is None:
            # The header timeout already closes a connection that sends no
            # request (from its start, or from its last response's end);
            # Twisted's own idle timeout would only add a timer to each.
            # (A mixed site keeps it: the application's requests are stock.)
            self.timeOut = None
        self.write_batch = WriteBatch()
        self._channels: Set[StreamingChannel] = set()

    def getResourceFor(self, request: IRequest) -> IResource:
        """
        The resource for C{request}: in the application's own tree, as a
        stock L{Site} finds it, or, for a request that streams, in the pipe
        tree past the prefix (C{prepath} then holds the prefix's
        segments).
        """
        if self.resource is self.tree or not getattr(request, "streams", True):
            return super().getResourceFor(request)  # type: ignore[no-any-return]
        request.site = self  # type: ignore[attr-defined]
        request.sitepath = request.prepath[:]  # type: ignore[attr-defined]
        self.mount.enter(request)
        return getChildForRequest(self.tree, request)  # type: ignore[no-any-return]

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

    def drain(self) -> Deferred[None]:
        """
        Shut down gracefully, as C{twistd pipe} does on C{SIGTERM}: stop
        keeping connections alive (L{end_keep_alive}), drain the registry
        (C{registry.drain()}: waiting parties get 503, running transfers get
        the drain timeout), then close every connection left
        (L{close_connections}).  All of it applies to the whole site: in a
        mixed site, to the application's own connections too.  C{twistd
        pipe} stops its listeners first; a connection made during the
        drain is answered (pipes: 503) and then closed with the rest.

        @return: fires when every connection is closed.
        """
        self.end_keep_alive()
        drained = self.registry.drain()
        drained.addCallback(lambda _: self.close_connections())
        return drained

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
            channel.abort()

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
        Write no access log line for the pipe tree; log the application's
        own requests as a stock L{Site} does (see the class docstring),
        with no signature in the line (L{without_signature}).
        """
        if self.resource is not self.tree and not getattr(request, "streams", True):
            super().log(without_signature(request))


def make_site(
    reactor: IReactorTime,
    settings: Optional[Settings] = None,
    *,
    root: Optional[IResource] = None,
    prefix: Optional[bytes] = None,
) -> PipeSite:
    """
    Build the site that serves pipes at C{/api/v1/pipe/<path>}, with
    C{/healthz} and C{/api/v1/status}.

    With C{root} and C{prefix}, the site serves the application's own
    resource tree C{root}, as a stock L{Site} would (request bodies
    spooled to C{request.content}, forms and queries parsed into
    C{request.args}, automatic C{100 Continue}), and the whole pipe tree
    under C{/<prefix>/} (C{/ci/api/v1/pipe/<path>}, C{/ci/healthz},
    C{/ci/api/v1/status}, C{/ci/}), where uploads stream as they do in the
    pipe-only site.  Whether a request is under the prefix is decided on
    its raw path (the request target's bytes as sent, before
    percent-decoding or any other normalisation), once, when its headers
    are in.  C{root} is not changed (nothing is put into it); a request
    whose raw path is C{/ci} or starts with C{/ci/} never reaches it, but
    C{/c%69/...} and C{//ci/...} do (twisted.web decodes C{%69} while
    traversing C{root}, so a child of C{root} named like the prefix is
    reached that way).  The access log the site writes for C{root}'s
    requests never holds a signature (L{pipe._http.access_log}).

    @param reactor: the reactor (its clock drives every timeout).
    @param settings: limits and timeouts (the defaults of C{twistd pipe}).
    @param root: the application's own root resource.
    @param prefix: the path segments the pipe tree is mounted under:
        C{b"ci"}, C{b"tools/pipes"} (letters, digits and C{.-_~}).
    @raise ValueError: only one of C{root} and C{prefix} is given, or
        C{prefix} is not a plain path (see L{pipe._http.mount.mount_at}).
    """
    if (root is None) != (prefix is None):
        raise ValueError("give both root and prefix, or neither")
    keep_large_reads_off_the_heap()
    registry = Registry(reactor, settings if settings is not None else Settings())
    return PipeSite(PipeResource(registry, prefix), reactor, root)
