# -*- test-case-name: tests.test_channel -*-
"""
The write path of txpipe's channels: straight to the socket, and held while
a write batch is open.

L{WritePath} is a mixin of L{pipe._http.channel.StreamingChannel}: its
response writes skip Twisted's per-write buffering when nothing is
buffered (one C{sendmsg}), and are held, while the site's
L{pipe._http.batch.WriteBatch} is open, to be sent with the rest of the
batch's writes to this connection.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence

from twisted.internet.tcp import Connection, Server
from twisted.web.http_headers import Headers
from zope.interface import implementer

from pipe._compat import internals as compat
from pipe._http import tcp as _tcp
from pipe._http.batch import IHolder, WriteBatch
from pipe._http.interfaces import IPipeSite
from pipe._http.rest import Buffer, Rest, unsent

__all__ = [
    "WritePath",
    "header_lines",
    "pending_bytes",
    "tcp_connection",
    "tcp_socket_of",
]

if TYPE_CHECKING:
    from twisted.web.http import HTTPChannel as _Channel
else:
    _Channel = object


def pending_bytes(transport: Any) -> Optional[int]:
    """
    Bytes written to C{transport} that it has not yet handed to the kernel,
    or L{None} when the transport cannot tell.  Reads the write buffer of
    Twisted's file-descriptor transports (through wrappers such as TLS).
    """
    for layer in _tcp.layers(transport):
        pending = compat.buffered(layer)
        if pending is not None:
            return pending
    return None


def header_lines(headers: Headers) -> List[bytes]:
    """
    C{headers} as the pieces of their header lines (C{Name: value\\r\\n}),
    names as Twisted writes them.
    """
    pieces: List[bytes] = []
    for name, values in headers.getAllRawHeaders():
        for value in values:
            pieces.extend((name, b": ", value, b"\r\n"))
    return pieces


def tcp_connection(transport: Any) -> Optional[Connection]:
    """
    The TCP connection of Twisted's own that C{transport} is, or that it
    wraps in PROXY-protocol wrappers (a C{haproxy:} listener's: once the
    header is read it passes every byte through unchanged, both ways);
    L{None} for anything else (TLS, Unix sockets, test transports).
    """
    if type(transport) is Server:
        return transport  # the usual case, without the walk down the layers
    for layer in _tcp.layers(transport):
        if not isinstance(layer, compat.HAProxyProtocolWrapper):
            return layer if isinstance(layer, Connection) else None
    return None


def tcp_socket_of(transport: Any) -> Optional[socket.socket]:
    """
    The TCP socket under C{transport}, through wrapping transports (TLS),
    or L{None} (no socket, or not TCP: a Unix socket).
    """
    sock = _tcp.socket_under(transport)
    return sock if sock is not None and _tcp.is_tcp(sock) else None


def _plain_socket(connection: Optional[Connection]) -> Optional[socket.socket]:
    """
    The socket of C{connection} (see L{tcp_connection}) if it is plain (not
    TLS), which L{StreamingChannel} may write to directly; else L{None}.
    """
    if connection is not None and not getattr(connection, "TLS", False):
        return connection.socket
    return None


def _as_bytes(iovec: Sequence[Buffer]) -> List[bytes]:
    """
    C{iovec} with every piece as C{bytes}, as Twisted's transports require
    (chunk data arrives as C{memoryview} slices of a read, see
    L{pipe._http.chunked}; C{sendmsg} takes those as they are).
    """
    return [piece if type(piece) is bytes else bytes(piece) for piece in iovec]


@implementer(IHolder)
class WritePath(_Channel):
    """
    A mixin for an L{HTTPChannel} subclass, in front of it: txpipe's write
    path (see the module docstring).

    Its site (C{site}, set by the site that builds it, before it is
    connected) provides L{IPipeSite}.

    The channel is the only writer of its transport: a request writes its
    head and body through C{writeHeaders}, C{write} and C{writeSequence}
    (Twisted's contract), and asks for extra head lines with
    L{add_to_head}.

    @ivar _held: what a write batch holds for this connection (L{None}:
        nothing).
    @ivar _head_lines: encoded header lines that the next L{writeHeaders}
        writes after the response's own headers (see L{add_to_head}).
    """

    site: IPipeSite  # set by the site (Twisted's contract), checked at connect
    _site: IPipeSite
    _connection: Optional[Connection] = None
    _socket: Optional[socket.socket] = None
    _tcp: Optional[socket.socket] = None
    _batch: Optional[WriteBatch] = None
    _held: Optional[List[Buffer]] = None
    _rest: Optional[Rest] = None
    _head_lines = b""

    def connectionMade(self) -> None:
        super().connectionMade()
        site = self.site
        if not IPipeSite.providedBy(site):
            raise RuntimeError(f"a txpipe channel needs an IPipeSite, got {site!r}")
        self._site = site
        # Found once: the layers of a connection do not change.  The TCP
        # socket is also the acknowledging layer's (under TLS too).
        self._connection = connection = tcp_connection(self.transport)
        self._socket = _plain_socket(connection)
        if connection is not None:
            sock = connection.socket
            self._tcp = sock if _tcp.is_tcp(sock) else None
        else:
            self._tcp = tcp_socket_of(self.transport)
        self._batch = site.write_batch
        self._after_held: List[Callable[[], None]] = []

    @property
    def tcp_transport(self) -> Optional[Connection]:
        """
        Twisted's TCP connection under this channel's transport (see
        L{tcp_connection}), or L{None} (TLS, a Unix socket, a test
        transport).
        """
        return self._connection

    def add_to_head(self, lines: bytes) -> None:
        """
        Write C{lines} (encoded header lines) after the headers of the next
        head L{writeHeaders} writes, and only that one (see
        L{pipe._http.interfaces.IConnection.add_to_head}).
        """
        self._head_lines = lines

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Headers
    ) -> None:
        """
        Write a response's status line and headers as Twisted does (a copy
        of Twisted's, listed in L{pipe._compat.internals.TWISTED_NAMES}), but through
        L{writeSequence}, so that they too go straight to the socket when
        nothing is buffered (and the body after them, in turn); the lines of
        L{add_to_head} follow the response's own headers.
        """
        sequence = [version, b" ", code, b" ", reason, b"\r\n"]
        sequence.extend(header_lines(headers))
        if self._head_lines:
            sequence.append(self._head_lines)
            self._head_lines = b""
        sequence.append(b"\r\n")
        self.writeSequence(sequence)

    def write(self, data: bytes) -> None:
        """
        Write response data: held while a write batch is open (see
        L{pipe._http.batch}), else straight to the socket when the transport has
        nothing buffered, else through the transport (see L{writeSequence}).
        """
        if self._hold((data,)):
            return
        if not self._write_through((data,)):
            super().write(data if type(data) is bytes else bytes(data))

    def writeSequence(self, iovec: Sequence[Buffer]) -> None:
        """
        Write response data, scatter/gather.

        Twisted's transport buffers every write until the reactor's next
        iteration: one C{epoll_ctl} to watch for writability, one to stop,
        and a join that copies the pieces (a chunk's framing and its data)
        into one string, for every write to every receiver.  When the
        transport has nothing buffered, that detour changes nothing about
        order or flow control, so the pieces go to the kernel at once with
        one C{sendmsg}; what the socket does not take is kept, uncopied, and
        sent first when the socket is writable (L{pipe._http.rest.Rest}),
        with the producer paused as the transport's full buffer would.
        While a write batch is open, the pieces are held and sent with the
        rest of the batch's writes to this connection (L{send_held}).
        """
        if self._hold(iovec):
            return
        if not self._write_through(iovec):
            super().writeSequence(_as_bytes(iovec))

    # Write batches (see pipe._http.batch).

    def _hold(self, iovec: Sequence[Buffer]) -> bool:
        """
        Hold C{iovec} if a write batch is open; whether it was held.
        """
        batch = self._batch
        if batch is None or not batch.depth:
            return False
        held = self._held
        if held is None:
            self._held = held = []
            batch.hold(self)
        held.extend(iovec)
        return True

    def unsent(self) -> Optional[int]:
        """
        Bytes written to this connection that its transport has not handed
        to the kernel yet: what a write batch holds, and what Twisted's
        transport buffers (L{None} where it cannot tell and no batch holds
        any).
        """
        held = sum(map(len, self._held)) if self._held else 0
        if self._rest is not None:
            held += len(self._rest)
        buffered = pending_bytes(self.transport)
        if buffered is None:
            return held or None
        return held + buffered

    def after_held(self, work: Callable[[], None]) -> bool:
        """
        If writes are held, do C{work} once they are sent (once per batch),
        and say so; else do nothing and return C{False}.
        """
        if self._held is None:
            return False
        if work not in self._after_held:
            self._after_held.append(work)
        return True

    def send_held(self) -> None:
        """
        Send what the batch held, with one C{sendmsg} where the socket takes
        it, then do what waited for it (a delivery check, the keep-alive
        timers).  Called by the batch when it closes.
        """
        held, self._held = self._held, None
        after, self._after_held = self._after_held, []
        if held and self.transport is not None:
            if not self._write_through(held):
                super().writeSequence(_as_bytes(held))
        for work in after:
            work()

    def drop_held(self) -> None:
        """
        Forget what is held and what waited for it: the connection is being
        reset on purpose.
        """
        if self._held is not None:
            self._held = []
            self._after_held = []

    def _write_through(self, iovec: Sequence[Buffer]) -> bool:
        """
        Send C{iovec} directly if the connection allows it (nothing
        buffered, no L{Rest} left), keeping any rest as a L{Rest}, which
        pauses the producer until it is sent.  Returns whether C{iovec} was
        taken care of;
        on any socket error it was not, and the transport's own write path
        meets the error and loses the connection as it always does.
        """
        sock = self._socket
        connection = self._connection
        if (
            sock is None
            or connection is None
            or self.transport is None
            or self._rest is not None
            or not compat.writable_at_once(connection)
        ):
            return False
        try:
            sent = sock.sendmsg(iovec)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        if sent < sum(map(len, iovec)):
            # Kept as views of the write's buffers, sent before anything
            # written after it (see pipe._http.rest).
            self._rest = Rest(connection, sock, unsent(iovec, sent), self._rest_sent)
        return True

    def _rest_sent(self) -> None:
        self._rest = None
