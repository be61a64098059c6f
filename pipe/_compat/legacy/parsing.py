# -*- test-case-name: tests.test_strict -*-
"""
Request parsing and response heads as Twisted 24.7.0 does them, for older
releases.

Twisted tightened its HTTP/1.1 server over the releases txpipe supports:
signed C{Content-Length} values and lax chunk-size lines are refused from
22.4.0 (CVE-2022-24801), a request pipelined behind one still being
answered waits for it from 23.10.0 (CVE-2023-46137) and 24.7.0
(CVE-2024-41671), and request lines and header names are checked token by
token from 24.7.0.  L{StrictParsing} adds each check the installed Twisted
lacks (found by L{pipe._compat.legacy.detect}, from Twisted's behaviour)
and nothing where Twisted has it; L{pipe._compat.legacy.channel} puts it in
front of a channel class only when it adds something.  Hostile input gets
the same answers on every supported Twisted, and pipelined requests are
answered in order, never inside another response.  The chunk-size check
is L{pipe._compat.legacy.chunks}.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

import pipe._compat.legacy.detect as detect

__all__ = ["StrictParsing", "valid_header_name", "valid_request_line"]

if TYPE_CHECKING:
    _Channel = HTTPChannel
else:
    _Channel = object

#: Twisted 24.7.0's token bytes (C{twisted.web.http._istoken}).
_TOKEN = re.compile(rb"[A-Za-z0-9!#$%^'*+\-.^_`|~]+")
#: Twisted 24.7.0's request-target bytes: printable, no space.
_TARGET = re.compile(rb"[\x21-\xb0]+")
_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")

#: A request line every Twisted refuses: where an older Twisted would take
#: a line the newest refuses, it is handed this instead, so that the
#: refusal is Twisted's own (and the channel's bad-request answer).
_REFUSED_LINE = b"-"


def valid_request_line(line: bytes) -> bool:
    """
    Whether Twisted 24.7.0 takes C{line} as a request line: a method
    token, one space, a printable target, one space, C{HTTP/1.0} or
    C{HTTP/1.1}.
    """
    parts = line.split(b" ")
    if len(parts) != 3:
        return False
    method, target, version = parts
    return (
        version in _VERSIONS
        and _TOKEN.fullmatch(method) is not None
        and _TARGET.fullmatch(target) is not None
    )


def valid_header_name(name: bytes) -> bool:
    """
    Whether Twisted 24.7.0 takes C{name} as a header name (a token).
    """
    return _TOKEN.fullmatch(name) is not None


class StrictParsing(_Channel):
    """
    A mixin for an L{HTTPChannel} subclass, in front of it: requests are
    parsed, and response heads written, as Twisted 24.7.0 does, on every
    supported Twisted (see the module docstring).  Each method below exists
    only where the installed Twisted lacks what it adds; on the newest
    Twisted the class is empty, and L{pipe._compat.legacy.channel} does not
    use it.
    """

    if detect.LAX_REQUEST_LINE:

        def lineReceived(self, line: bytes) -> None:
            """
            Refuse a request line Twisted 24.7.0 would refuse.
            """
            if (
                line
                and self.persistent
                and self._HTTPChannel__first_line  # type: ignore[attr-defined]
                and not valid_request_line(line)
            ):
                line = _REFUSED_LINE
            super().lineReceived(line)

    if detect.LAX_REQUEST_LINE or detect.LAX_CONTENT_LENGTH:

        def headerReceived(self, line: bytes) -> bool:
            """
            Refuse a header name that is not a token, and a
            C{Content-Length} that is not digits, as Twisted 24.7.0 does.
            """
            name, colon, value = line.partition(b":")
            if colon and (
                not valid_header_name(name)
                or (
                    name.lower() == b"content-length"
                    and not value.strip(b" \t").isdigit()
                )
            ):
                self._respondToBadRequestAndDisconnect()
                return False
            return bool(super().headerReceived(line))

    if detect.EAGER_PIPELINING:

        def allContentReceived(self) -> None:
            """
            Stop parsing the rest of this read as requests until this
            request is answered (L{rawDataReceived} keeps it).
            """
            self.setRawMode()
            super().allContentReceived()

        def rawDataReceived(self, data: bytes) -> None:
            """
            Keep what is read while a request is answered for when it is
            done, instead of decoding it as a body.
            """
            if self._handlingRequest:
                self._dataBuffer.append(data)
                return
            super().rawDataReceived(data)

    if detect.LATE_PIPELINE_BUFFER:

        def _finishRequestBody(self, data: bytes) -> None:
            """
            Keep what followed a request's body before handling the request,
            as Twisted 24.7.0 does.
            """
            self._dataBuffer.append(data)
            self.allContentReceived()

    if detect.PAIRS_TO_WRITE_HEADERS:

        def writeHeaders(
            self, version: bytes, code: bytes, reason: bytes, headers: Any
        ) -> None:
            """
            Hand the channel's own C{writeHeaders} the response's headers as
            L{Headers}, as Twisted 24.7.0's C{Request.write} does, not as
            pairs (sanitized as L{Headers} sanitizes them).
            """
            if not isinstance(headers, Headers):
                pairs, headers = headers, Headers()
                for name, value in pairs:
                    headers.addRawHeader(name, value)
            super().writeHeaders(version, code, reason, headers)
