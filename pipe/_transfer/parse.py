# -*- test-case-name: tests.test_resource -*-
"""
A pipe request, parsed once into one immutable value.

L{parse_request} reads everything the pipe resource needs from a request
(the pipe's path, C{n}, the wait, the scope and the sender's response mode)
and refuses, with a L{Refusal}, anything malformed.  What follows (the
signature check, admission, joining the path) works on the L{PipeRequest}.
"""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence
from urllib.parse import unquote_to_bytes

import attr

from pipe._http.mount import PIPE_PREFIX
from pipe._settings import Settings
from pipe._transfer import messages as messages
from pipe._transfer.refusal import Refusal
from pipe.signing import Scope

if TYPE_CHECKING:
    from pipe._http.request import StreamingRequest

__all__ = [
    "ALLOWED_METHODS",
    "MAX_NAME_LENGTH",
    "MAX_PATH_LENGTH",
    "PIPE_PREFIX",
    "PipeRequest",
    "SenderResponse",
    "bearer_token",
    "parse_n",
    "parse_name",
    "parse_path",
    "parse_request",
    "parse_sender_response",
    "query_params",
]

#: A query's parameters: each percent-decoded name, its values in order.
Params = Dict[bytes, List[bytes]]

#: The longest pipe path, in raw bytes.
MAX_PATH_LENGTH = 1024

#: The methods of a pipe (C{Allow} of a 405, and the CORS preflight's).
ALLOWED_METHODS = b"GET, PUT, POST, OPTIONS"

#: The methods of a party, and the scope each joins with.
_SCOPES = {b"GET": Scope.RECEIVE, b"PUT": Scope.SEND, b"POST": Scope.SEND}

_N_SYNTAX = re.compile(rb"[1-9][0-9]*")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")

#: The longest receiver name, in characters.
MAX_NAME_LENGTH = 64

#: A receiver name: printable ASCII, from 1 to L{MAX_NAME_LENGTH} characters.
_NAME_SYNTAX = re.compile(rb"[\x20-\x7e]{1,%d}" % MAX_NAME_LENGTH)


class SenderResponse(enum.Enum):
    """
    How a sender's response is written (request header
    C{Txpipe-Sender-Response}; see L{pipe._transfer.sender}).

      - C{STREAM}: C{200} as soon as the sender is registered, then progress
        lines while it waits and transfers, then the final line
        (L{pipe._transfer.sender.StreamResponse}).
      - C{DEFERRED}: nothing until the transfer ends (or the sender is sent
        away while waiting), then C{200} and the final line only
        (L{pipe._transfer.sender.DeferredResponse}).  For proxies that stop
        forwarding a request body once the response has begun (nginx's
        C{proxy_pass}).
    """

    STREAM = "stream"
    DEFERRED = "deferred"


@attr.s(auto_attribs=True, frozen=True, slots=True)
class PipeRequest:
    """
    What a sender's or receiver's request asks for.

    @ivar path: the pipe's path: the raw bytes after L{PIPE_PREFIX} (and
        the pipe tree's mount, if any).
    @ivar n: the number of receivers.
    @ivar wait: how long the party may wait for its transfer to start
        (seconds; 0: no limit).
    @ivar scope: L{Scope.SEND} (C{PUT}, C{POST}) or L{Scope.RECEIVE}
        (C{GET}).
    @ivar response: how a sender wants its response (receivers: always
        L{SenderResponse.STREAM}).
    @ivar params: the query's parameters, percent-decoded, each with its
        values in order (the signature's are read from it).
    @ivar bearer: the token of its one C{Authorization: Bearer} header, if
        it has one (never logged; see L{pipe._transfer.guard.TokenGate}).
    @ivar minimum: the quorum, C{min}: with fewer than C{n} receivers, the
        sender's transfer starts at its wait deadline if at least this many
        are there (L{None}: not given; a receiver's is only compared with
        its sender's).
    @ivar name: the receiver's name, for the sender's lines and the log
        (L{None}: unnamed; senders: always L{None}).  The one place a
        receiver's name is decided: today the C{Txpipe-Receiver} header
        (L{parse_name}); another source (a token's claim) replaces it with
        C{attr.evolve(pipe, name=parse_name([claim]))} before the party is
        made.
    """

    path: bytes
    n: int
    wait: float
    scope: Scope
    response: SenderResponse
    params: Params
    minimum: Optional[int] = None
    name: Optional[str] = None
    bearer: Optional[bytes] = attr.ib(default=None, repr=False)


def parse_request(
    request: StreamingRequest, settings: Settings, prefix: bytes = PIPE_PREFIX
) -> PipeRequest:
    """
    Parse a C{GET}, C{PUT} or C{POST} of a pipe.

    @param prefix: the raw path prefix of the site's pipes (see
        L{parse_path}).
    @raise Refusal: for a malformed path (404, 400, 414), a method that is
        not a pipe's (405), or a malformed C{n}, C{min}, C{wait},
        C{Txpipe-Sender-Response} or C{Txpipe-Receiver} (400).
    """
    path = parse_path(request.path, prefix)
    method = request.method
    scope = _SCOPES.get(method)
    if scope is None:
        raise Refusal(
            405,
            messages.method_not_allowed(method),
            "method_not_allowed",
            {b"allow": ALLOWED_METHODS},
        )
    params = query_params(request.uri.partition(b"?")[2])
    n = _n(params.get(b"n", []), settings.max_receivers)
    wait = _wait(params.get(b"wait", []), settings.wait_timeout)
    minimum = _minimum(params[b"min"], n) if b"min" in params else None
    bearer = bearer_token(request)
    if scope is Scope.SEND:
        response = parse_sender_response(request)
        return PipeRequest(
            path, n, wait, scope, response, params, minimum, bearer=bearer
        )
    names = request.requestHeaders.getRawHeaders(b"txpipe-receiver")
    name = parse_name(names) if names is not None else None
    return PipeRequest(
        path,
        n,
        wait,
        scope,
        SenderResponse.STREAM,
        params,
        minimum,
        name,
        bearer=bearer,
    )


def bearer_token(request: StreamingRequest) -> Optional[bytes]:
    """
    The token of a request's C{Authorization: Bearer TOKEN} header (the
    scheme in any case), or L{None} if it has no such header, or more than
    one C{Authorization}.
    """
    values = request.requestHeaders.getRawHeaders(b"authorization")
    if not values or len(values) != 1:
        return None
    scheme, _, token = values[0].strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip() or None


def query_params(query: bytes) -> Params:
    """
    The parameters of a raw query string: split on C{&}, each name and
    value percent-decoded (C{+} is a space), values in order.
    """
    params: Params = {}
    for part in query.split(b"&") if query else []:
        key, _, value = part.partition(b"=")
        name = unquote_to_bytes(key.replace(b"+", b" "))
        params.setdefault(name, []).append(unquote_to_bytes(value.replace(b"+", b" ")))
    return params


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

    @raise Refusal: (400) for anything else.
    """
    return _n(query_params(query).get(b"n", []), maximum)


def _n(values: List[bytes], maximum: int) -> int:
    if not values:
        return 1
    n = _whole_number(values, maximum)
    if n is None:
        raise Refusal(400, messages.bad_n(values, maximum), "bad_n")
    return n


def _minimum(values: List[bytes], n: int) -> int:
    """
    The quorum C{min}: one whole number from 1 to C{n}.

    @raise Refusal: (400) for anything else, naming the values and C{n}.
    """
    minimum = _whole_number(values, n)
    if minimum is None:
        raise Refusal(400, messages.bad_min(values, n), "bad_min")
    return minimum


def parse_name(values: Sequence[bytes]) -> str:
    """
    A receiver's name (request header C{Txpipe-Receiver}): one value of 1
    to L{MAX_NAME_LENGTH} printable ASCII characters (surrounding spaces
    are not part of it).

    @raise Refusal: (400) for anything else: a control or non-ASCII byte,
        too long, empty, or more than one.
    """
    if len(values) == 1:
        value = values[0].strip(b" ")
        if _NAME_SYNTAX.fullmatch(value):
            return value.decode("ascii")
    raise Refusal(400, messages.bad_name(values, MAX_NAME_LENGTH), "bad_name")


def _wait(values: List[bytes], maximum: float) -> float:
    """
    How long a party may wait: the server's C{maximum}, or less if the query
    asks for less with C{wait=SECONDS} (more is cut to the maximum).  A
    C{maximum} of 0 means no limit.

    @raise Refusal: (400) when C{wait} is not one whole number from 1.
    """
    if not values:
        return maximum
    wait = _whole_number(values, 10**9)
    if wait is None:
        raise Refusal(400, messages.bad_wait(values), "bad_wait")
    return float(wait) if not maximum else min(float(wait), maximum)


def parse_sender_response(request: StreamingRequest) -> SenderResponse:
    """
    How a sender wants its response (request header
    C{Txpipe-Sender-Response}: C{stream}, the default, or C{deferred}; see
    L{SenderResponse}).

    @raise Refusal: (400) for any other value, or more than one.
    """
    values = request.requestHeaders.getRawHeaders(b"txpipe-sender-response")
    if not values:
        return SenderResponse.STREAM
    if len(values) == 1:
        try:
            return SenderResponse(values[0].strip().lower().decode("ascii"))
        except ValueError:  # not ASCII, or not a SenderResponse
            pass
    raise Refusal(400, messages.bad_sender_response(values), "bad_sender_response")


def parse_path(raw: bytes, prefix: bytes = PIPE_PREFIX) -> bytes:
    """
    The pipe path of a raw request path: everything after C{prefix},
    neither percent-decoded nor normalised.

    @param prefix: the raw path prefix of the site's pipes: L{PIPE_PREFIX},
        or it under the pipe tree's mount (C{/ci/api/v1/pipe/}, see
        L{pipe._http.mount}).
    @raise Refusal: 404 outside the prefix, 400 when empty or holding a
        control byte, 414 when longer than L{MAX_PATH_LENGTH}.
    """
    if raw == prefix[:-1]:
        raise Refusal(400, messages.path_empty(prefix), "path_empty")
    if not raw.startswith(prefix):
        raise Refusal(404, messages.not_found(prefix), "not_found")
    path = raw[len(prefix) :]
    if not path:
        raise Refusal(400, messages.path_empty(prefix), "path_empty")
    if len(path) > MAX_PATH_LENGTH:
        raise Refusal(
            414, messages.path_too_long(len(path), MAX_PATH_LENGTH), "path_too_long"
        )
    control = _CONTROL.search(path)
    if control:
        raise Refusal(400, messages.path_control(control.group()[0]), "path_control")
    return path
