# -*- test-case-name: tests.test_strict -*-
"""
Which fixes of Twisted 22.4.0 to 24.7.0 the installed Twisted lacks, found
by its behaviour.

Each flag below is the answer of a real L{HTTPChannel} of the installed
Twisted, on a L{StringTransport}, to the input a fix changed the answer
to: a distribution's backported fix (Debian's 22.4.0 has several) counts
as the fix, and no answer depends on how Twisted's code is written.  The
probes run once, when this module is imported, in well under a
millisecond each, with no reactor.
"""

from __future__ import annotations

import io
from typing import Any, List, Optional

from twisted.internet.testing import StringTransport
from twisted.web import http
from twisted.web.http_headers import Headers

__all__ = [
    "EAGER_PIPELINING",
    "LATE_PIPELINE_BUFFER",
    "LAX_CHUNK_SIZE",
    "LAX_CONTENT_LENGTH",
    "LAX_REQUEST_LINE",
    "PAIRS_TO_WRITE_HEADERS",
]


class _Unanswered(http.Request):
    """
    A request that is never answered (a probe only looks at parsing), and
    whose body is kept in memory: Twisted spools a chunked body to a
    temporary file, which a read-only root may not have.
    """

    def gotLength(self, length: Optional[int]) -> None:
        self.content = io.BytesIO()

    def process(self) -> None:
        pass


class _Probe(http.HTTPChannel):
    """
    A channel with no timers, whose requests are never answered, and that
    records what the probes ask.
    """

    requestFactory = _Unanswered
    timeOut = None
    buffered_at_body_end: List[bool]
    header_types: List[type]

    def __init__(self) -> None:
        super().__init__()
        self.buffered_at_body_end = []
        self.header_types = []

    def allContentReceived(self) -> None:
        self.buffered_at_body_end.append(bool(self._dataBuffer))
        super().allContentReceived()

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Any
    ) -> None:
        self.header_types.append(type(headers))


def _probe(data: bytes, transport: Optional[StringTransport] = None) -> _Probe:
    channel = _Probe()
    channel.makeConnection(transport or StringTransport())
    channel.dataReceived(data)
    return channel


def _refused(data: bytes) -> bool:
    transport = StringTransport()
    _probe(data, transport)
    return transport.value().startswith(b"HTTP/1.1 400")


#: Twisted before 22.4.0 takes a signed C{Content-Length} (C{+3}, C{-3}) as a
#: number (request smuggling, CVE-2022-24801).
LAX_CONTENT_LENGTH = not _refused(b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx")

#: Twisted before 22.4.0 parses a chunk-size line with C{int(size, 16)}
#: (C{-5}, C{0x5}, C{+5} pass) and takes any bytes in chunk extensions
#: (CVE-2022-24801).
LAX_CHUNK_SIZE = not _refused(
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n+1\r\nx\r\n0\r\n\r\n"
)

#: Twisted before 24.7.0 takes any request line of three words (any
#: whitespace between them, any method, target or version bytes) and any
#: header name that does not end in whitespace.
LAX_REQUEST_LINE = not _refused(b"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n")

#: Twisted before 23.10.0 goes on parsing the rest of a read once a request
#: is complete, so a request pipelined behind one still being answered is
#: answered first, its response written into the other's (CVE-2023-46137).
EAGER_PIPELINING = (
    len(_probe(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n").requests) > 1
)

#: Twisted before 24.7.0 handles a request whose body just ended before it
#: keeps what followed the body in the same read, so a request pipelined
#: there is answered late or out of order (CVE-2024-41671).
LATE_PIPELINE_BUFFER = _probe(
    b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET / HTTP/1.1\r\n\r\n"
).buffered_at_body_end == [False]


def _pairs_to_write_headers() -> bool:
    channel = _probe(b"")
    request = http.Request(channel)
    request.clientproto = b"HTTP/1.1"
    request.method = b"GET"
    request.write(b"x")
    return channel.header_types != [Headers]


#: Twisted before 24.7.0 hands a response's headers to the channel's
#: C{writeHeaders} as a list of pairs; 24.7.0 and newer as L{Headers}.
PAIRS_TO_WRITE_HEADERS = _pairs_to_write_headers()
