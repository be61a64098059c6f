# -*- test-case-name: tests.test_mount_end_to_end -*-
"""
What the access log of a mixed site (an application's tree with the pipe
tree mounted under a prefix) may see of a request: everything but a
signature.

The pipe tree writes no access log, but the application's requests are
logged as a stock L{twisted.web.server.Site} logs them, the request target
and the C{Referer} included.  A signed pipe URL can land there: mistyped
(C{//ci/api/v1/pipe/...?sig=...} is not under C{/ci}, so it is the
application's), or as the page a browser came from.  L{without_signature}
hands the log formatter a view of the request whose target and
C{Referer} have every C{sig} parameter's value replaced.
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import unquote_to_bytes

__all__ = ["REDACTED", "redact_signature", "without_signature"]

#: What an access log shows for a signature's value.
REDACTED = b"REDACTED"
_SIGNATURE = b"sig"


def _is_signature(name: bytes) -> bool:
    # As the query is parsed: a percent-encoded name (%73ig) is still sig.
    return unquote_to_bytes(name.replace(b"+", b" ")).strip() == _SIGNATURE


def redact_signature(target: bytes) -> bytes:
    """
    C{target} (a request target or a URL) with the value of every query
    parameter named C{sig} (however percent-encoded) replaced by
    L{REDACTED}; anything else unchanged.
    """
    head, question, query = target.partition(b"?")
    if not question:
        return target
    query, hash_, fragment = query.partition(b"#")
    parts = []
    for part in query.split(b"&"):
        name = part.partition(b"=")[0]
        parts.append(name + b"=" + REDACTED if _is_signature(name) else part)
    return head + question + b"&".join(parts) + hash_ + fragment


class _WithoutSignature:
    """
    A request as an access-log formatter reads it, its target and
    C{Referer} passed through L{redact_signature}; everything else is the
    request's own.
    """

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = redact_signature(request.uri)

    def getHeader(self, name: bytes) -> Optional[bytes]:
        value: Optional[bytes] = self._request.getHeader(name)
        if value is not None and name.lower() == b"referer":
            return redact_signature(value)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def without_signature(request: Any) -> Any:
    """
    A view of C{request} for an access log's formatter, with no signature
    in it (see the module docstring).
    """
    return _WithoutSignature(request)
