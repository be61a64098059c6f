# -*- test-case-name: tests.test_resource -*-
"""
The pipe resource: methods, query parsing, response headers and errors.

L{PipeResource} serves C{/api/v1/pipe/<path>}: C{PUT} or C{POST} sends, C{GET}
receives, C{OPTIONS} answers a CORS preflight.  The protocol is described in
C{docs/protocol.md}.
"""

from __future__ import annotations

import json
import re
from typing import Dict, List, Optional
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from . import _messages as messages
from ._guard import Denied, Grant
from ._landing import Landing, Version
from ._parties import (
    RETRY_AFTER,
    Receiver,
    Sender,
    SenderResponse,
    client_address,
    client_host,
)
from ._relay import Lifecycle, Relay, Unavailable
from ._rendezvous import (
    CountMismatch,
    ReceiversFull,
    Rejected,
    Rendezvous,
    SenderTaken,
    TransferRunning,
)
from ._request import StreamingRequest
from .signing import Scope

__all__ = ["MAX_PATH_LENGTH", "PIPE_PREFIX", "PipeResource", "RootResource"]

#: The URL path prefix of every pipe.
PIPE_PREFIX = b"/api/v1/pipe/"

#: The longest pipe path, in raw bytes.
MAX_PATH_LENGTH = 1024

ALLOWED_METHODS = b"GET, PUT, POST, OPTIONS"
ALLOWED_HEADERS = b"Content-Type, Content-Disposition, X-Piping, Txpipe-Sender-Response"

#: The challenge of a 401: a signed URL, not credentials in headers.
AUTHENTICATE = b'Signed-URL realm="txpipe"'

_N_SYNTAX = re.compile(rb"[1-9][0-9]*")
_log = Logger(namespace="pipe.resource")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


class _Refusal(Exception):
    """
    A request that gets an error response: status, body, extra headers, and
    the reason as a metric label (the name of the message, C{bad_n}).
    """

    def __init__(
        self,
        code: int,
        body: bytes,
        headers: Optional[Dict[bytes, bytes]] = None,
        reason: str = "other",
    ) -> None:
        super().__init__(code, body)
        self.code = code
        self.body = body
        self.headers = headers or {}
        self.reason = reason


def _respond(request: StreamingRequest, refusal: _Refusal) -> bytes:
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


def _query_values(query: bytes, name: bytes) -> List[bytes]:
    """
    The percent-decoded values of parameter C{name} in a raw query string.
    """
    values: List[bytes] = []
    for part in query.split(b"&") if query else []:
        key, _, value = part.partition(b"=")
        if unquote_to_bytes(key.replace(b"+", b" ")) == name:
            values.append(unquote_to_bytes(value.replace(b"+", b" ")))
    return values


def _whole_number(values: List[bytes], maximum: int) -> Optional[int]:
    """
    The one value in C{values} if it is digits with no sign and no leading
    zero, from 1 to C{maximum}; else L{None}.
    """
    if len(values) == 1:
        value = values[0]
        if (
            _N_SYNTAX.fullmatch(value)
            and len(value) <= len(str(maximum))
            and int(value) <= maximum
        ):
            return int(value)
    return None


def parse_n(query: bytes, maximum: int) -> int:
    """
    The number of receivers from a raw query string.

    Parameters are split on C{&} and percent-decoded; only C{n} is read.  It
    must be given at most once, as digits with no sign and no leading zero,
    from 1 to C{maximum}; absent means 1.

    @raise _Refusal: (400) for anything else.
    """
    values = _query_values(query, b"n")
    if not values:
        return 1
    n = _whole_number(values, maximum)
    if n is None:
        raise _Refusal(400, messages.bad_n(values, maximum), reason="bad_n")
    return n


def parse_wait(query: bytes, maximum: float) -> float:
    """
    How long a party may wait: the server's C{maximum}, or less if the query
    asks for less with C{wait=SECONDS} (more is cut to the maximum).  A
    C{maximum} of 0 means no limit.

    @raise _Refusal: (400) when C{wait} is not one whole number from 1.
    """
    values = _query_values(query, b"wait")
    if not values:
        return maximum
    wait = _whole_number(values, 10**9)
    if wait is None:
        raise _Refusal(400, messages.bad_wait(values), reason="bad_wait")
    return float(wait) if not maximum else min(float(wait), maximum)


def parse_sender_response(request: StreamingRequest) -> SenderResponse:
    """
    How a sender wants its response (request header
    C{Txpipe-Sender-Response}: C{stream}, the default, or C{deferred}; see
    L{SenderResponse}).

    @raise _Refusal: (400) for any other value, or more than one.
    """
    values = request.requestHeaders.getRawHeaders(b"txpipe-sender-response")
    if not values:
        return SenderResponse.STREAM
    if len(values) == 1:
        try:
            return SenderResponse(values[0].strip().lower().decode("ascii"))
        except ValueError:  # not ASCII, or not a SenderResponse
            pass
    raise _Refusal(
        400, messages.bad_sender_response(values), reason="bad_sender_response"
    )


def parse_path(raw: bytes) -> bytes:
    """
    The pipe path of a raw request path: everything after L{PIPE_PREFIX},
    neither percent-decoded nor normalised.

    @raise _Refusal: 404 outside the prefix, 400 when empty or holding a
        control byte, 414 when longer than L{MAX_PATH_LENGTH}.
    """
    if raw == PIPE_PREFIX.rstrip(b"/"):
        raise _Refusal(400, messages.path_empty(), reason="path_empty")
    if not raw.startswith(PIPE_PREFIX):
        raise _Refusal(404, messages.not_found(), reason="not_found")
    path = raw[len(PIPE_PREFIX) :]
    if not path:
        raise _Refusal(400, messages.path_empty(), reason="path_empty")
    if len(path) > MAX_PATH_LENGTH:
        raise _Refusal(
            414,
            messages.path_too_long(len(path), MAX_PATH_LENGTH),
            reason="path_too_long",
        )
    control = _CONTROL.search(path)
    if control:
        raise _Refusal(
            400, messages.path_control(control.group()[0]), reason="path_control"
        )
    return path


def _rejection(error: Rejected) -> _Refusal:
    if isinstance(error, CountMismatch):
        return _Refusal(
            400,
            messages.count_mismatch(error.given, error.waiting),
            reason="count_mismatch",
        )
    if isinstance(error, SenderTaken):
        return _Refusal(409, messages.sender_taken(), reason="sender_taken")
    if isinstance(error, ReceiversFull):
        return _Refusal(409, messages.receivers_full(error.n), reason="receivers_full")
    if isinstance(error, TransferRunning):
        return _Refusal(409, messages.transfer_running(), reason="transfer_running")
    raise AssertionError(f"unknown rejection {error!r}")


class PipeResource(Resource):
    """
    C{/api/v1/pipe/<path>}: the sender and receivers of every pipe.

    A sender's upload is streamed (see L{pipe._request.StreamingRequest}):
    this resource renders it as soon as its headers are in, and its body is
    relayed by a L{pipe._fanout.Fanout} to the receivers' requests.

    @ivar relay: the server-wide state (rendezvous, limits, statistics).
    """

    isLeaf = True

    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self.relay = relay

    @property
    def rendezvous(self) -> Rendezvous:  # type: ignore[type-arg]
        """
        The registry of waiting and running paths.
        """
        return self.relay.rendezvous

    def render(self, request: StreamingRequest) -> object:  # type: ignore[override]
        try:
            return self._render(request)
        except _Refusal as refusal:
            self.relay.statistics.refused(refusal.reason)
            return _respond(request, refusal)

    def _render(self, request: StreamingRequest) -> object:
        path = parse_path(request.path)
        method = request.method
        if method == b"OPTIONS":
            return self._preflight(request)
        if method not in (b"GET", b"PUT", b"POST"):
            raise _Refusal(
                405,
                messages.method_not_allowed(method),
                {b"allow": ALLOWED_METHODS},
                reason="method_not_allowed",
            )
        settings = self.relay.settings
        _, _, query = request.uri.partition(b"?")
        n = parse_n(query, settings.max_receivers)
        wait = parse_wait(query, settings.wait_timeout)
        if method == b"GET":
            scope, response = Scope.RECEIVE, SenderResponse.STREAM
        else:
            scope, response = Scope.SEND, parse_sender_response(request)
        grant = self._authenticate(scope, path, n, query)
        try:
            self.relay.admit(path, client_host(request))
        except Unavailable as unavailable:
            raise _Refusal(
                503,
                unavailable.body,
                {b"retry-after": RETRY_AFTER},
                reason=unavailable.reason,
            ) from None
        try:
            if method == b"GET":
                Receiver(request, path, n, self.relay, wait, grant).join()
            else:
                Sender(request, path, n, self.relay, wait, grant, response).join()
        except Rejected as error:
            raise _rejection(error) from None
        return NOT_DONE_YET

    def _authenticate(
        self, scope: Scope, path: bytes, n: int, query: bytes
    ) -> Optional[Grant]:
        """
        Check the request's signed URL when signing is on (see
        L{pipe._guard.Guard.check}).

        @raise _Refusal: 401 (no signature) or 403 (refused).
        """
        guard = self.relay.guard
        if guard is None:
            return None
        try:
            return guard.check(
                scope,
                path,
                n,
                _query_values(query, b"expires"),
                _query_values(query, b"scope"),
                _query_values(query, b"sig"),
            )
        except Denied as denied:
            headers = {b"www-authenticate": AUTHENTICATE} if denied.code == 401 else {}
            raise _Refusal(
                denied.code, denied.body, headers, reason=denied.reason
            ) from None

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

    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self._relay = relay

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        if self._relay.lifecycle is Lifecycle.DRAINING:
            return request.plain_response(503, b"draining\n")
        return request.plain_response(200, b"ok\n")


class _Status(Resource):
    """
    C{/api/v1/status}: the server's counters as JSON (no paths).
    """

    isLeaf = True

    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self._relay = relay

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        body = json.dumps(self._relay.status(), sort_keys=True).encode() + b"\n"
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"access-control-allow-origin", b"*")
        return body


class _NotFound(Resource):
    """
    A plain-text 404 for every path outside the API.
    """

    isLeaf = True

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        return _respond(
            request,
            _Refusal(404, messages.not_found(), reason="not_found"),
        )


class _Directory(Resource):
    """
    An intermediate path segment (C{/api}, C{/api/v1}): its own children,
    plain-text 404 for everything else.
    """

    def getChild(self, name: bytes, request: object) -> Resource:
        return _NotFound()

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        return _NotFound().render(request)


class RootResource(_Directory):
    """
    The server root: C{/} says what this server is (an HTML page or plain
    text, see L{pipe._landing}), C{/version} its version; C{/api/v1/pipe/}
    holds the pipes; everything else is a plain-text 404.
    """

    def __init__(self, pipes: PipeResource) -> None:
        super().__init__()
        api = _Directory()
        version = _Directory()
        api.putChild(b"v1", version)
        version.putChild(b"pipe", pipes)
        version.putChild(b"status", _Status(pipes.relay))
        self.putChild(b"api", api)
        self.putChild(b"healthz", _Health(pipes.relay))
        self.putChild(b"version", Version())
        self._landing = Landing(pipes.relay)

    def getChild(self, name: bytes, request: object) -> Resource:
        if name == b"":
            return self
        return _NotFound()

    def render(self, request: StreamingRequest) -> bytes:  # type: ignore[override]
        if request.method not in (b"GET", b"HEAD"):
            return _respond(
                request,
                _Refusal(
                    405,
                    messages.method_not_allowed(request.method),
                    {b"allow": b"GET"},
                    reason="method_not_allowed",
                ),
            )
        return self._landing.render(request)
