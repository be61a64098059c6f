# -*- test-case-name: tests.test_strict -*-
"""
Header values refused as Twisted 26.10 refuses them, on older releases.

Twisted refuses a header value holding NUL, CR or LF (RFC 9110 section 5.5)
only from 26.10.0: 25.x refuses a NUL but takes a CR or a LF (a bare LF
does not end a header line, so C{X-Foo: x\\nTransfer-Encoding: chunked} is
one header), 24.x and older take all three, and 22.1.0 strips every
whitespace byte around a value, so C{Transfer-Encoding: chunked\\x0b} is
chunked there.  L{StrictHeaderValues} refuses all of them with Twisted's own
bad-request answer, on any Twisted that takes one of the probes below;
L{pipe._compat.patches} puts it in front of the channel only there.  (It is
not in L{pipe._compat.legacy}: it is needed on releases up to 26.4.0, so it
goes when Twisted's floor reaches 26.10.0, not 24.7.0.)
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Optional

from twisted.internet.testing import StringTransport
from twisted.web import http

__all__ = [
    "LAX_HEADER_VALUES",
    "StrictHeaderValues",
    "valid_header_line",
    "valid_transfer_encoding",
]

if TYPE_CHECKING:
    _Channel = http.HTTPChannel
else:
    _Channel = object

#: The bytes Twisted 26.10.0 refuses in a header value.
_VALUE_FORBIDDEN = b"\x00\r\n"
#: The C{Transfer-Encoding} values Twisted takes (in any case).
_TRANSFER_CODINGS = (b"chunked", b"identity")
#: How Twisted before 24.7.0 joins a folded header line to the one before
#: (a LF, then the line with its leading SP or HT); 24.7.0 joins with a SP.
_FOLD = re.compile(rb"\n[ \t]*")


def valid_header_line(line: bytes) -> bool:
    """
    Whether Twisted 26.10.0 takes C{line}, one line of a request's header
    section as read (between two CRLFs), for its value: no NUL, CR or LF.
    """
    return line.translate(None, _VALUE_FORBIDDEN) == line


def valid_transfer_encoding(value: bytes) -> bool:
    """
    Whether C{value} is a C{Transfer-Encoding} Twisted takes: C{chunked} or
    C{identity} in any case, once only SP and HT are stripped from its ends
    (C{chunked\\x0b}, C{\\x0cchunked} and C{chunked\\r} are none of them).
    """
    return value.strip(b" \t").lower() in _TRANSFER_CODINGS


class _Unanswered(http.Request):
    """
    A request that is never answered, whose body (none) is kept in memory:
    a probe writes no file (a read-only root may have no temporary
    directory).
    """

    def gotLength(self, length: Optional[int]) -> None:
        self.content = io.BytesIO()

    def process(self) -> None:
        pass


def _refused(value: bytes) -> bool:
    """
    Whether the installed Twisted answers 400 to a header whose value holds
    C{value} (a real channel on a string transport, no reactor).
    """
    channel = http.HTTPChannel()
    channel.requestFactory = _Unanswered  # type: ignore[assignment]
    channel.timeOut = None
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET / HTTP/1.1\r\nX-Foo: a" + value + b"b\r\n\r\n")
    return transport.value().startswith(b"HTTP/1.1 400")


#: Whether the installed Twisted takes a NUL, CR or LF in a header value
#: (found by its behaviour: a distribution's backported fix counts).
LAX_HEADER_VALUES = not all(_refused(byte) for byte in (b"\x00", b"\r", b"\n"))


class StrictHeaderValues(_Channel):
    """
    A mixin for an L{HTTPChannel} subclass, in front of it: header values
    refused as Twisted 26.10.0 refuses them (see the module docstring).
    """

    def lineReceived(self, line: bytes) -> None:
        """
        Refuse a header line whose value holds NUL, CR or LF.
        """
        if (
            line
            and not self._HTTPChannel__first_line  # type: ignore[attr-defined]
            and not valid_header_line(line)
        ):
            self._respondToBadRequestAndDisconnect()
            return
        super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:
        """
        Refuse a C{Transfer-Encoding} that L{valid_transfer_encoding}
        refuses; join a folded line with a SP, as Twisted 24.7.0 does
        (older releases join it with the LF that L{lineReceived} refuses
        everywhere else).
        """
        line = _FOLD.sub(b" ", line)
        name, colon, value = line.partition(b":")
        if (
            colon
            and name.strip(b" \t").lower() == b"transfer-encoding"
            and not valid_transfer_encoding(value)
        ):
            self._respondToBadRequestAndDisconnect()
            return False
        return bool(super().headerReceived(line))
