# -*- test-case-name: tests.test_strict -*-
"""
Request parsing as the newest Twisted does it, on every Twisted txpipe
supports.

Twisted tightened its HTTP/1.1 server over the releases txpipe supports
(see L{pipe._supported.OLDEST_TWISTED}): signed C{Content-Length} values and
lax chunk-size lines are refused from 22.4.0 (CVE-2022-24801), a request
pipelined behind one still being answered waits for it from 23.10.0
(CVE-2023-46137) and 24.7.0 (CVE-2024-41671), and request lines and header
names are checked token by token from 24.7.0, as are header values from
24.7.0 (no NUL, CR or LF; C{Transfer-Encoding} compared after stripping only
SP and HT, so C{chunked\x0b} is not C{chunked}).  L{StrictChannel} adds each
check the installed Twisted lacks (found by L{pipe._compat} from Twisted's
own code, so a distribution's backported fix counts) and nothing where
Twisted has it: on the newest Twisted it is Twisted's channel unchanged.
Hostile input gets the same answers on every supported Twisted, and
pipelined requests are answered in order, never inside another response.
The chunk-size check is in L{pipe._chunked} (through
L{pipe._compat.check_chunk_size_line}).
"""

from __future__ import annotations

import re

from twisted.web.http import HTTPChannel

from . import _compat as compat

__all__ = [
    "StrictChannel",
    "valid_header_line",
    "valid_header_name",
    "valid_request_line",
    "valid_transfer_encoding",
]

#: Twisted 24.7.0's token bytes (C{twisted.web.http._istoken}).
_TOKEN = re.compile(rb"[A-Za-z0-9!#$%^'*+\-.^_`|~]+")
#: Twisted 24.7.0's request-target bytes: printable, no space.
_TARGET = re.compile(rb"[\x21-\xb0]+")
_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")
#: The bytes Twisted 24.7.0 refuses in a header value (RFC 9110 section 5.5).
_VALUE_FORBIDDEN = b"\x00\r\n"
#: The C{Transfer-Encoding} values Twisted 24.7.0 takes (in any case).
_TRANSFER_CODINGS = (b"chunked", b"identity")
#: How Twisted before 24.7.0 joins a folded header line to the one before
#: (a LF, then the line with its leading SP or HT); 24.7.0 joins with a SP.
_FOLD = re.compile(rb"\n[ \t]*")


def _checks_header_values() -> bool:
    """
    Whether the installed Twisted refuses header values as 24.7.0 does:
    its C{headerReceived} strips only SP and HT and looks for NUL, CR and LF
    (found in its code, so a distribution's backported fix counts).
    """
    code = getattr(HTTPChannel.headerReceived, "__code__", None)
    constants = code.co_consts if code is not None else ()
    return _VALUE_FORBIDDEN in constants and b" \t" in constants


#: Twisted before 24.7.0 takes NUL, CR and LF inside a header line, and
#: strips every whitespace byte (VT, FF, CR) around a value, so that
#: C{Transfer-Encoding: chunked\x0b} is read as chunked.
LAX_HEADER_VALUE = not _checks_header_values()

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


def valid_header_line(line: bytes) -> bool:
    """
    Whether Twisted 24.7.0 takes C{line}, one line of a request's header
    section as read (between two CRLFs), for its value: no NUL, CR or LF
    (a bare LF does not end a line, so C{X-Foo: x\nTransfer-Encoding:
    chunked} is one line, refused).
    """
    return line.translate(None, _VALUE_FORBIDDEN) == line


def valid_transfer_encoding(value: bytes) -> bool:
    """
    Whether Twisted 24.7.0 takes C{value} as a C{Transfer-Encoding}:
    C{chunked} or C{identity} in any case, once only SP and HT are stripped
    from its ends (C{chunked\x0b}, C{\x0cchunked} and C{chunked\r} are
    none of them).
    """
    return value.strip(b" \t").lower() in _TRANSFER_CODINGS


@compat.finish_request_body_in_order
class StrictChannel(HTTPChannel):
    """
    An L{HTTPChannel} that parses requests as Twisted 24.7.0 does, on every
    supported Twisted (see the module docstring).  Each method below exists
    only where the installed Twisted lacks what it adds.
    """

    if compat.LAX_REQUEST_LINE or LAX_HEADER_VALUE:

        def lineReceived(self, line: bytes) -> None:
            """
            Refuse a request line, and a header line, that Twisted 24.7.0
            would refuse.
            """
            if not line:
                super().lineReceived(line)
                return
            awaiting = compat.awaiting_request_line(self)
            if awaiting and self.persistent and not valid_request_line(line):
                line = _REFUSED_LINE
            elif not awaiting and LAX_HEADER_VALUE and not valid_header_line(line):
                compat.respond_bad_request(self)
                return
            super().lineReceived(line)

    if compat.LAX_REQUEST_LINE or compat.LAX_CONTENT_LENGTH or LAX_HEADER_VALUE:

        def headerReceived(self, line: bytes) -> bool:
            """
            Refuse a header name that is not a token, a C{Content-Length}
            that is not digits, and a C{Transfer-Encoding} that
            L{valid_transfer_encoding} refuses, as Twisted 24.7.0 does; join
            a folded line with a SP, as 24.7.0 does.
            """
            if LAX_HEADER_VALUE:
                # lineReceived refused every other LF: these are folds.
                line = _FOLD.sub(b" ", line)
            name, colon, value = line.partition(b":")
            if colon and (
                not valid_header_name(name)
                or (
                    name.lower() == b"content-length"
                    and not value.strip(b" \t").isdigit()
                )
                or (
                    name.lower() == b"transfer-encoding"
                    and not valid_transfer_encoding(value)
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
