# -*- test-case-name: tests.test_resource -*-
"""
The server's resources: the pipe resource, and the tree of every path the
server answers (L{site_tree}).

L{PipeResource} serves C{/api/v1/pipe/<path>}: C{PUT} or C{POST} sends, C{GET}
receives, C{OPTIONS} answers a CORS preflight.  It has the request parsed
(L{pipe._transfer.parse}), its signature checked and the party admitted, joins it to
its path, starts the transfer when the path completes, and answers every
refusal in one place.  The protocol is described in C{docs/protocol.md}.
"""

from __future__ import annotations

import json
from typing import Optional, Union

import attr
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pipe._http.mount import ROOT, Mount, mount_at
from pipe._http.request import StreamingRequest
from pipe._landing import Landing, Version
from pipe._transfer import messages as messages
from pipe._transfer.guard import AUTHENTICATE, BEARER, Grant
from pipe._transfer.parse import (
    ALLOWED_METHODS,
    MAX_PATH_LENGTH,
    PIPE_PREFIX,
    PipeRequest,
    parse_name,
    parse_path,
    parse_request,
)
from pipe._transfer.parties import Receiver, client_address, client_host
from pipe._transfer.refusal import Refusal
from pipe._transfer.registry import Lifecycle, Registry
from pipe._transfer.rendezvous import (
    CountMismatch,
    Match,
    MinMismatch,
    PathClosed,
    QuorumStarted,
    ReceiversFull,
    Rejected,
    Rendezvous,
    SenderTaken,
    TransferRunning,
)
from pipe._transfer.sender import Sender
from pipe._transfer.transfer import Transfer
from pipe.signing import Scope

__all__ = [
    "MAX_PATH_LENGTH",
    "PIPE_PREFIX",
    "PipeResource",
    "RootResource",
]

#: The status of a request whose path refuses it, by the rendezvous'
#: reason: a malformed request (another C{n}), or a conflict with the
#: path's state.
_REJECTION_STATUS = {
    CountMismatch: 400,
    MinMismatch: 400,
    QuorumStarted: 410,
    PathClosed: 409,
    SenderTaken: 409,
    ReceiversFull: 409,
    TransferRunning: 409,
}

ALLOWED_HEADERS = (
    b"Content-Type, Content-Disposition, X-Piping, Txpipe-Sender-Response,"
    b" Authorization, Txpipe-Receiver"
)

_log = Logger(namespace="pipe.resource")


def refusal_for(rejected: Rejected) -> Refusal:
    """
    The answer to a party its path rejected (L{pipe._transfer.rendezvous}): the
    rejection's message, with its status (400, 409, or 410 for a receiver
    too late for a transfer that started with a quorum).
    """
    return Refusal(_REJECTION_STATUS[type(rejected)], rejected.body, rejected.reason)


def _respond(request: StreamingRequest, refusal: Refusal) -> bytes:
    """
    Set up an error response and log the rejection; C{render} returns the
    body and L{twisted.web.server.Request.render} finishes it.
    """
    _log.info(
        "rejected {method} from {client}: {code} {reason}",
        method=messages.show(request.method, 16),
        client=client_address(request),
        code=refusal.code,
        reason=refusal.body.decode("ascii").strip(),
    )
    return request.plain_response(refusal.code, refusal.body, refusal.headers)


def _named_by_token(pipe: PipeRequest, grant: Optional[Grant]) -> PipeRequest:
    """
    C{pipe}, named by its token's claim where the rule that admitted it
    names one (C{receiver_name}) and the request names itself not.

    @raise Refusal: (400) the claim's value is not a receiver name.
    """
    admission = grant.admission if grant is not None else None
    named = admission.match.receiver_name if admission is not None else None
    if named is None:
        return pipe
    return attr.evolve(pipe, name=parse_name([named.encode("utf-8")]))


class PipeResource(Resource):
    """
    C{/api/v1/pipe/<path>}: the sender and receivers of every pipe.

    A sender's upload is streamed (see L{pipe._http.request.StreamingRequest}):
    this resource renders it as soon as its headers are in, and its body is
    copied by a L{pipe._transfer.fanout.Fanout} to the receivers' requests.  Every
    refusal, whatever refuses (the request's syntax, the signature, the
    server's limits, the path), is a L{Refusal}, answered and counted in
    one place.

    @ivar registry: the server's L{Registry} (rendezvous, limits,
        statistics).
    @ivar mount: where the pipe tree sits in its site (see L{pipe._http.mount}).
    """

    isLeaf = True

    def __init__(self, registry: Registry, prefix: Optional[bytes] = None) -> None:
        """
        @param registry: the server-wide state.
        @param prefix: the path the whole pipe tree is mounted under
            (C{b"ci"}: pipes at C{/ci/api/v1/pipe/<path>}), or L{None} for
            the site's root; see L{pipe.server.make_site}.
        @raise ValueError: C{prefix} is not a plain path (see
            L{pipe._http.mount.mount_at}).
        """
        super().__init__()
        self.registry = registry
        self.mount: Mount = ROOT if prefix is None else mount_at(prefix)
        self._pipe_prefix = self.mount.pipe_prefix

    @property
    def rendezvous(self) -> Rendezvous:  # type: ignore[type-arg]
        """
        The table of waiting and running paths (the registry's).
        """
        return self.registry.rendezvous

    def render(self, request: StreamingRequest) -> object:  # type: ignore[override]
        try:
            if request.method == b"OPTIONS":
                parse_path(request.path, self._pipe_prefix)
                return self._preflight(request)
            self._join(
                request,
                parse_request(request, self.registry.settings, self._pipe_prefix),
            )
        except Refusal as refusal:
            self.registry.statistics.refused(refusal.reason)
            return _respond(request, refusal)
        return NOT_DONE_YET

    def _join(self, request: StreamingRequest, pipe: PipeRequest) -> None:
        """
        Check the party's signature and the server's limits, then join its
        path as a sender or a receiver; if that completes the path, start
        the transfer (L{pipe._transfer.transfer}).

        @raise Refusal: the signature, a limit or the path refuses it.
        """
        grant = self._authenticate(pipe)
        if pipe.scope is Scope.RECEIVE and pipe.name is None:
            pipe = _named_by_token(pipe, grant)
        registry = self.registry
        registry.admit(pipe.path, client_host(request))
        party: Union[Receiver, Sender]
        if pipe.scope is Scope.RECEIVE:
            party = Receiver(request, pipe, registry, grant)
        else:
            party = Sender(request, pipe, registry, grant, self._start_transfer)
        try:
            match = party.join()
        except Rejected as rejected:
            raise refusal_for(rejected) from None
        if match is not None:
            Transfer(registry, match).start()

    def _start_transfer(self, match: Match[Sender, Receiver]) -> None:
        """
        Start the transfer of a match: made by a join, or at a sender's
        wait deadline with its quorum.
        """
        Transfer(self.registry, match).start()

    def _authenticate(self, pipe: PipeRequest) -> Optional[Grant]:
        """
        Check the request's credentials: its OIDC token (a Bearer token,
        or no signature where only tokens are taken; see
        L{pipe._transfer.guard.TokenGate.check}), else its signed URL when signing
        is on (see L{pipe._transfer.guard.Guard.check}).

        @raise Refusal: 401 (no credentials, a bad token), 403 (refused),
            503 (the token issuer's keys cannot be had now).
        """
        registry = self.registry
        gate, guard = registry.token_gate, registry.guard
        if gate is not None and (pipe.bearer is not None or guard is None):
            grant = gate.check(pipe.scope, pipe.path, pipe.bearer)
            registry.statistics.admitted("token")
            return grant
        if guard is None:
            return None
        try:
            signed = guard.check(
                pipe.scope,
                pipe.path,
                pipe.n,
                pipe.params.get(b"expires", []),
                pipe.params.get(b"scope", []),
                pipe.params.get(b"sig", []),
                pipe.minimum,
            )
        except Refusal as refusal:
            if gate is not None and refusal.code == 401:
                refusal.headers[b"www-authenticate"] = BEARER + b", " + AUTHENTICATE
            raise
        if signed is not None:
            registry.statistics.admitted("signature")
        return signed

    def _preflight(self, request: StreamingRequest) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"access-control-allow-origin", b"*")
        request.setHeader(b"access-control-allow-methods", ALLOWED_METHODS)
        request.setHeader(b"access-control-allow-headers", ALLOWED_HEADERS)
        request.setHeader(b"access-control-max-age", b"86400")
        return b""


class _Health(Resource):
    """
    C{/healthz}: C{200 ok}, or C{503 draining} once shutting down.  Cheap,
    and not logged.
    """

    isLeaf = True

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self._registry = registry

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        if self._registry.lifecycle is Lifecycle.DRAINING:
            return request.plain_response(503, b"draining\n")
        return request.plain_response(200, b"ok\n")


class _Status(Resource):
    """
    C{/api/v1/status}: the server's counters as JSON (no paths).
    """

    isLeaf = True

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self._registry = registry

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        body = json.dumps(self._registry.status(), sort_keys=True).encode() + b"\n"
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"access-control-allow-origin", b"*")
        return body


class _NotFound(Resource):
    """
    A plain-text 404 for every path outside the API, naming where pipes
    are (C{pipe_prefix}: under the mount, if any).
    """

    isLeaf = True

    def __init__(self, pipe_prefix: bytes = PIPE_PREFIX) -> None:
        super().__init__()
        self._message = messages.not_found(pipe_prefix)

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        return _respond(request, Refusal(404, self._message, "not_found"))


class _Directory(Resource):
    """
    An intermediate path segment (C{/api}, C{/api/v1}): its own children,
    plain-text 404 for everything else.
    """

    def __init__(self, pipe_prefix: bytes = PIPE_PREFIX) -> None:
        super().__init__()
        self._not_found = _NotFound(pipe_prefix)

    def getChild(self, name: bytes, request: object) -> Resource:
        return self._not_found

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        return self._not_found.render(request)


class RootResource(_Directory):
    """
    The server root: C{/} says what this server is (an HTML page or plain
    text, see L{pipe._landing}); its children are put by L{site_tree};
    everything else is a plain-text 404.
    """

    def __init__(self, landing: Landing, pipe_prefix: bytes = PIPE_PREFIX) -> None:
        super().__init__(pipe_prefix)
        self._landing = landing

    def getChild(self, name: bytes, request: object) -> Resource:
        if name == b"":
            return self
        return self._not_found

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        if request.method not in (b"GET", b"HEAD"):
            return _respond(
                request,
                Refusal(
                    405,
                    messages.method_not_allowed(request.method),
                    "method_not_allowed",
                    {b"allow": b"GET"},
                ),
            )
        return self._landing.render(request)


def site_tree(pipes: PipeResource) -> RootResource:
    """
    Every path the server answers, in one place::

        /                  the landing page (HTML or plain text)
        /healthz           200 ok, or 503 draining
        /version           the version, plain text
        /api/v1/status     the counters, JSON
        /api/v1/pipe/...   the pipes (L{PipeResource})

    and a plain-text 404 for everything else; all of it under the pipes'
    mount, if any (C{/ci/healthz}, ...; see L{pipe._http.mount}).
    """
    registry = pipes.registry
    mount = pipes.mount
    root = RootResource(Landing(registry, mount.path), mount.pipe_prefix)
    root.putChild(b"healthz", _Health(registry))
    root.putChild(b"version", Version())
    api = _Directory(mount.pipe_prefix)
    root.putChild(b"api", api)
    v1 = _Directory(mount.pipe_prefix)
    api.putChild(b"v1", v1)
    v1.putChild(b"status", _Status(registry))
    v1.putChild(b"pipe", pipes)
    return root
