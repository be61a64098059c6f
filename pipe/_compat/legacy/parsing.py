# -*- test-case-name: tests.test_strict -*-
"""
Request parsing as the newest Twisted does it, on every Twisted txpipe
supports.

Twisted tightened its HTTP/1.1 server over the releases txpipe supports
(see L{pipe._compat.supported.OLDEST_TWISTED}): signed C{Content-Length} values and
lax chunk-size lines are refused from 22.4.0 (CVE-2022-24801), a request
pipelined behind one still being answered waits for it from 23.10.0
(CVE-2023-46137) and 24.7.0 (CVE-2024-41671), and request lines and header
names are checked token by token from 24.7.0.  L{StrictChannel} adds each
check the installed Twisted lacks (found by L{pipe._compat.internals} from Twisted's
own code, so a distribution's backported fix counts) and nothing where
Twisted has it: on the newest Twisted it is Twisted's channel unchanged.
Hostile input gets the same answers on every supported Twisted, and
pipelined requests are answered in order, never inside another response.
The chunk-size check is in L{pipe._http.chunked} (through
L{pipe._compat.internals.check_chunk_size_line}).
"""

from __future__ import annotations

import re

from twisted.web.http import HTTPChannel

from pipe._compat import internals as compat

__all__ = ["StrictChannel", "valid_header_name", "valid_request_line"]

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


@compat.finish_request_body_in_order
class StrictChannel(HTTPChannel):
    """
    An L{HTTPChannel} that parses requests as Twisted 24.7.0 does, on every
    supported Twisted (see the module docstring).  Each method below exists
    only where the installed Twisted lacks what it adds.
    """

    if compat.LAX_REQUEST_LINE:

        def lineReceived(self, line: bytes) -> None:
            """
            Refuse a request line Twisted 24.7.0 would refuse.
            """
            if (
                line
                and self.persistent
                and compat.awaiting_request_line(self)
                and not valid_request_line(line)
            ):
                line = _REFUSED_LINE
            super().lineReceived(line)

    if compat.LAX_REQUEST_LINE or compat.LAX_CONTENT_LENGTH:

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
                compat.respond_bad_request(self)
                return False
            return bool(super().headerReceived(line))

    if compat.EAGER_PIPELINING:

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
            if compat.handling_request(self):
                compat.hold_pipelined(self, data)
                return
            super().rawDataReceived(data)
