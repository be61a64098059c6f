# -*- test-case-name: tests.test_channel -*-
"""
The write path of txpipe's channels: straight to the socket, and held while
a write batch is open.

L{WritingChannel} is an L{HTTPChannel} whose response writes skip
Twisted's per-write buffering when nothing is buffered (one C{sendmsg}),
and are held, while the site's L{pipe._batch.WriteBatch} is open, to be
sent with the rest of the batch's writes to this connection.
L{pipe._channel.StreamingChannel} builds on it.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, List, Optional, Sequence

from twisted.internet.tcp import Connection
from twisted.web.http_headers import Headers

from . import _compat as compat
from ._batch import WriteBatch
from ._strict import StrictChannel

__all__ = ["WritingChannel", "header_lines", "pending_bytes", "tcp_connection"]


def pending_bytes(transport: Any) -> Optional[int]:
    """
    Bytes written to C{transport} that it has not yet handed to the kernel,
    or L{None} when the transport cannot tell.  Reads the write buffer of
    Twisted's file-descriptor transports (through wrappers such as TLS).
    """
    layer = transport
    while layer is not None:
        pending = compat.buffered(layer)
        if pending is not None:
            return pending
        layer = getattr(layer, "transport", None)
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
    while isinstance(transport, compat.HAProxyProtocolWrapper):
        transport = transport.transport
    return transport if isinstance(transport, Connection) else None


def _plain_socket(connection: Optional[Connection]) -> Optional[socket.socket]:
    """
    The socket of C{connection} (see L{tcp_connection}) if it is plain (not
    TLS), which L{StreamingChannel} may write to directly; else L{None}.
    """
    if connection is not None and not getattr(connection, "TLS", False):
        return connection.socket
    return None


def _as_bytes(iovec: Sequence[bytes]) -> List[bytes]:
    """
    C{iovec} with every piece as C{bytes}, as Twisted's transports require
    (chunk data arrives as C{memoryview} slices of a read, see
    L{pipe._chunked}; C{sendmsg} takes those as they are).
    """
    return [piece if type(piece) is bytes else bytes(piece) for piece in iovec]


def _unsent(iovec: Sequence[bytes], sent: int) -> List[bytes]:
    """
    The pieces of C{iovec} left after its first C{sent} bytes.
    """
    rest: List[bytes] = []
    for piece in iovec:
        if sent >= len(piece):
            sent -= len(piece)
        else:
            rest.append(piece[sent:] if sent else piece)
            sent = 0
    return rest


class WritingChannel(StrictChannel):
    """
    An L{HTTPChannel} with txpipe's write path (see the module docstring).

    @ivar _held: what a write batch holds for this connection (L{None}:
        nothing).
    """

    _connection: Optional[Connection] = None
    _socket: Optional[socket.socket] = None
    _batch: Optional[WriteBatch] = None
    _held: Optional[List[bytes]] = None
    #: Encoded header lines that the next L{writeHeaders} writes after the
    #: response's own headers (set by the request about to write them).
    fixed_headers = b""

    def connectionMade(self) -> None:
        super().connectionMade()
        # Found once: the layers of a connection do not change.
        self._connection = tcp_connection(self.transport)
        self._socket = _plain_socket(self._connection)
        self._batch = getattr(getattr(self, "site", None), "write_batch", None)
        self._after_held: List[Callable[[], None]] = []

    @property
    def tcp_transport(self) -> Optional[Connection]:
        """
        Twisted's TCP connection under this channel's transport (see
        L{tcp_connection}), or L{None} (TLS, a Unix socket, a test
        transport).
        """
        return self._connection

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Any
    ) -> None:
        """
        Write a response's status line and headers as Twisted does, but
        through L{writeSequence}, so that they too go straight to the socket
        when nothing is buffered (and the body after them, in turn).
        """
        if not isinstance(headers, Headers):
            # Twisted's backward-compatible form (pairs), sanitized as
            # Twisted does; the fixed headers follow them all the same.
            pairs, headers = headers, Headers()
            for name, value in pairs:
                headers.addRawHeader(name, value)
        sequence = [version, b" ", code, b" ", reason, b"\r\n"]
        sequence.extend(header_lines(headers))
        if self.fixed_headers:
            sequence.append(self.fixed_headers)
            self.fixed_headers = b""
        sequence.append(b"\r\n")
        self.writeSequence(sequence)

    def write(self, data: bytes) -> None:
        """
        Write response data: held while a write batch is open (see
        L{pipe._batch}), else straight to the socket when the transport has
        nothing buffered, else through the transport (see L{writeSequence}).
        """
        if self._hold((data,)):
            return
        if not self._write_through((data,)):
            super().write(data if type(data) is bytes else bytes(data))

    def writeSequence(self, iovec: Sequence[bytes]) -> None:
        """
        Write response data, scatter/gather.

        Twisted's transport buffers every write until the reactor's next
        iteration: one C{epoll_ctl} to watch for writability, one to stop,
        and a join that copies the pieces (a chunk's framing and its data)
        into one string, for every write to every receiver.  When the
        transport has nothing buffered, that detour changes nothing about
        order or flow control, so the pieces go to the kernel at once with
        one C{sendmsg}; what the socket does not take is handed to the
        transport, whose buffer and producer pausing apply as always.
        While a write batch is open, the pieces are held and sent with the
        rest of the batch's writes to this connection (L{send_held}).
        """
        if self._hold(iovec):
            return
        if not self._write_through(iovec):
            super().writeSequence(_as_bytes(iovec))

    # Write batches (see pipe._batch).

    def _hold(self, iovec: Sequence[bytes]) -> bool:
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

    def unsent(self) -> int:
        """
        Bytes written to this connection that its transport has not handed
        to the kernel yet: what a write batch holds, and what Twisted's
        transport buffers (0 where it cannot tell).
        """
        held = sum(map(len, self._held)) if self._held else 0
        return held + (pending_bytes(self.transport) or 0)

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

    def _write_through(self, iovec: Sequence[bytes]) -> bool:
        """
        Send C{iovec} directly if the connection allows it, buffering any
        rest in the transport.  Returns whether C{iovec} was taken care of;
        on any socket error it was not, and the transport's own write path
        meets the error and loses the connection as it always does.
        """
        sock = self._socket
        transport = self.transport
        if (
            sock is None
            or transport is None
            or not compat.writable_at_once(self._connection)
        ):
            return False
        try:
            sent = sock.sendmsg(iovec)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        if sent < sum(map(len, iovec)):
            transport.writeSequence(_as_bytes(_unsent(iovec, sent)))
        return True
