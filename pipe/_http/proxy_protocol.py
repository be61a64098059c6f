# -*- test-case-name: tests.test_proxy_protocol -*-
"""
C{haproxy:} listeners whose PROXY protocol v1 line is checked before
Twisted reads it.

Twisted's v1 parser takes any bytes as an address: C{PROXY TCP4
1.2.3.4\\nFORGED\\x1b[31m 127.0.0.1 1111 80} names a client that writes a
raw ESC and a forged line into the log and becomes a per-address key of its
own, and a source that is not ASCII or a port that is not a number raises
out of the parser as an "Unhandled Error".  L{listen_endpoint} builds
C{haproxy:} listeners whose wrapper (L{CheckedProxyWrapper}) reads the v1
line first and hands it to Twisted only when L{v1_problem} finds nothing
wrong with it: the protocol is C{TCP4}, C{TCP6} or C{UNKNOWN}, each address
is one C{ipaddress} parses, of the protocol's family and with no IPv6 zone
id, and each port is a decimal number up to 65535.  Anything else closes
the connection with one log line that says why, the line escaped (see
L{pipe._http.shown.show}).  The v2 header is binary (its addresses are
bytes, always an address) and goes to Twisted's parser unchanged.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from pipe._compat import internals as compat
from pipe._http.shown import show

__all__ = ["CheckedProxyWrapper", "listen_endpoint", "v1_problem"]

_V1_SIGNATURE = b"PROXY"
#: The longest v1 line, its CRLF included (the PROXY protocol's 107 bytes).
_V1_LONGEST = 107
_FAMILIES = {
    b"TCP4": ipaddress.IPv4Address,
    b"TCP6": ipaddress.IPv6Address,
}
_PREFIX = "haproxy:"

_log = Logger(namespace="pipe.proxy")


def _address_problem(text: bytes, family: Any) -> Optional[str]:
    try:
        address = family(text.decode("ascii"))
    except ValueError:
        return "an address that is not one of its protocol"
    if getattr(address, "scope_id", None) is not None:
        return "an address with a zone id"
    return None


def _port_problem(text: bytes) -> Optional[str]:
    if not (text.isdigit() and len(text) <= 5 and int(text) <= 65535):
        return "a port that is not a number up to 65535"
    return None


def v1_problem(line: bytes) -> Optional[str]:
    """
    What is wrong with C{line}, a PROXY protocol v1 line without its CRLF,
    or L{None} when Twisted may parse it (see the module docstring).
    """
    fields = line.split(b" ")
    if fields[0] != _V1_SIGNATURE or len(fields) < 2:
        return "not a PROXY v1 line"
    if fields[1] == b"UNKNOWN":
        return None
    family = _FAMILIES.get(fields[1])
    if family is None:
        return "a protocol other than TCP4, TCP6 or UNKNOWN"
    if len(fields) != 6:
        return "not six fields"
    for address in fields[2:4]:
        problem = _address_problem(address, family)
        if problem is not None:
            return problem
    for port in fields[4:6]:
        problem = _port_problem(port)
        if problem is not None:
            return problem
    return None


class _Header(enum.Enum):
    """
    Where a connection of L{CheckedProxyWrapper} stands.

        - C{FIRST} --first read starts with C{PROXY}--> C{V1_LINE}
        - C{FIRST} --anything else--> C{PASSED} (Twisted decides: v2, or
          closed)
        - C{V1_LINE} --the line is good--> C{PASSED}
        - C{V1_LINE} --the line is bad, or too long--> C{REFUSED}
    """

    FIRST = "first"
    V1_LINE = "v1 line"
    PASSED = "passed"
    REFUSED = "refused"


class CheckedProxyWrapper(compat.HAProxyProtocolWrapper):
    """
    Twisted's PROXY protocol wrapper, with the v1 line checked by
    L{v1_problem} before Twisted's parser reads it.
    """

    _stage = _Header.FIRST
    _pending = b""

    def dataReceived(self, data: bytes) -> None:
        if self._stage is _Header.PASSED:
            super().dataReceived(data)
            return
        if self._stage is _Header.REFUSED:
            return
        if self._stage is _Header.FIRST:
            if not data.startswith(_V1_SIGNATURE):
                self._stage = _Header.PASSED
                super().dataReceived(data)
                return
            self._stage = _Header.V1_LINE
        self._pending += data
        end = self._pending.find(b"\r\n")
        if end == -1:
            if len(self._pending) >= _V1_LONGEST:
                self._refuse("no CRLF within 107 bytes", self._pending[:_V1_LONGEST])
            return
        line = self._pending[:end]
        problem = "longer than 107 bytes" if end + 2 > _V1_LONGEST else None
        problem = problem or v1_problem(line)
        if problem is not None:
            self._refuse(problem, line)
            return
        pending, self._pending = self._pending, b""
        self._stage = _Header.PASSED
        super().dataReceived(pending)

    def _refuse(self, reason: str, line: bytes) -> None:
        self._stage = _Header.REFUSED
        self._pending = b""
        assert self.transport is not None
        peer = self.transport.getPeer()
        _log.info(
            "refused a connection from {peer}: bad PROXY v1 line ({reason}): {line}",
            peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}",
            reason=reason,
            line=show(line, 128),
        )
        self.loseConnection()


class _CheckedProxyFactory(compat.HAProxyWrappingFactory):
    # Twisted types the attribute as its own wrapper class; a subclass is
    # what it builds here.
    protocol = CheckedProxyWrapper  # type: ignore[assignment]


@implementer(IStreamServerEndpoint)
class _CheckedProxyEndpoint:
    """
    The endpoint of a C{haproxy:} description: the inner endpoint, each
    connection wrapped in a L{CheckedProxyWrapper}.
    """

    def __init__(self, inner: IStreamServerEndpoint) -> None:
        self._inner = inner

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        listening: Deferred[IListeningPort] = self._inner.listen(
            _CheckedProxyFactory(factory)
        )
        return listening


def listen_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    The endpoint of C{description}, as L{serverFromString} makes it, except
    that a C{haproxy:} prefix wraps the rest in L{CheckedProxyWrapper}s
    instead of Twisted's own.
    """
    if description[: len(_PREFIX)].lower() != _PREFIX:
        endpoint: IStreamServerEndpoint = serverFromString(reactor, description)
        return endpoint
    return _CheckedProxyEndpoint(listen_endpoint(reactor, description[len(_PREFIX) :]))
