# -*- test-case-name: tests.test_delivery -*-
"""
What the kernel knows about the sending side of a TCP connection: how many
of the bytes written to it the peer's TCP has acknowledged.

A response is only delivered when the receiver's kernel has every byte of
it; handing the last byte to our own kernel proves nothing (several
megabytes can wait in the two kernels' buffers).

  - L{unacknowledged}: the bytes written and not yet acknowledged, with
    C{ioctl(fd, SIOCOUTQ)} on Linux (C{TIOCOUTQ} is the same request),
    C{getsockopt(SO_NWRITE)} on macOS and C{ioctl(fd, FIONWRITE)} on
    FreeBSD.
  - L{position}: on Linux, where the connection's byte stream stands: how
    many bytes the peer has acknowledged since the connection began
    (C{tcpi_bytes_acked} of C{TCP_INFO}) and how many were handed to the
    kernel (from the same C{TCP_INFO}), in one system call.  A position
    names a byte of the stream, so "every byte up to the end of this
    response" stays exact when more is written later (the
    next response on a keep-alive connection, or the TLS layer's
    C{close_notify}).

Elsewhere, and for sockets that are not TCP, neither can be known.

It also finds the socket under a connection's transport (L{layers},
L{socket_under}) and sets one up to be reset when closed
(L{reset_on_close}).

This module knows nothing about Twisted: a transport is anything with an
optional C{socket} and an optional C{transport} it wraps.
"""

from __future__ import annotations

import _socket
import socket
import struct
import sys
from typing import Any, Callable, List, Optional, Tuple

__all__ = [
    "SUPPORTED",
    "acknowledged",
    "acknowledged_or_reset",
    "duplicate",
    "is_tcp",
    "layers",
    "position",
    "reset_on_close",
    "socket_under",
    "unacknowledged",
]

_INT = b"\0\0\0\0"
_TCP_FAMILIES = {int(socket.AF_INET), int(socket.AF_INET6)}

# A socket's family and type as plain numbers: C{socket.socket}'s own
# properties convert each into an enum member first.
_raw_family = _socket.socket.family.__get__  # type: ignore[attr-defined]
_raw_type = _socket.socket.type.__get__  # type: ignore[attr-defined]


def _reader() -> Optional[Callable[[socket.socket], int]]:
    """
    The platform's way of reading a TCP socket's unacknowledged byte count.
    """
    if sys.platform.startswith("linux"):
        import fcntl
        import termios

        request = termios.TIOCOUTQ

        def linux(sock: socket.socket) -> int:
            value: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), request, _INT))[
                0
            ]
            return value

        return linux
    if sys.platform == "darwin":
        so_nwrite = 0x1024

        def darwin(sock: socket.socket) -> int:
            return sock.getsockopt(socket.SOL_SOCKET, so_nwrite)

        return darwin
    if sys.platform.startswith("freebsd"):
        import fcntl

        fionwrite = 0x40046677

        def freebsd(sock: socket.socket) -> int:
            value: int = struct.unpack(
                "i", fcntl.ioctl(sock.fileno(), fionwrite, _INT)
            )[0]
            return value

        return freebsd
    return None


_read = _reader()

#: Whether this platform can tell how much a TCP peer has acknowledged.
SUPPORTED = _read is not None


def unacknowledged(sock: Optional[socket.socket]) -> Optional[int]:
    """
    The number of bytes written to the TCP socket C{sock} that its peer's
    TCP has not acknowledged (sent or not), or L{None} when that cannot be
    known: no socket, an unsupported platform, or a socket already closed.
    """
    if sock is None or _read is None:
        return None
    try:
        return _read(sock)
    except (OSError, ValueError):  # ValueError: a closed socket's fd is -1
        return None


# Offsets in Linux's struct tcp_info (include/uapi/linux/tcp.h), which only
# ever grows: tcpi_bytes_acked (u64, Linux 4.1), tcpi_notsent_bytes (u32,
# 4.6), tcpi_bytes_sent and tcpi_bytes_retrans (u64, 4.19).
_BYTES_ACKED = 120
_NOTSENT_BYTES = 144
_BYTES_SENT = 200
_BYTES_RETRANS = 208
_TCP_INFO_SIZE = _BYTES_RETRANS + 8


def _tcp_info(sock: socket.socket) -> bytes:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)


_LINUX = sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")

#: tcpi_state of a connection that is over (reset, or closed on both sides).
_TCP_CLOSE = 7


def _read_info(sock: Optional[socket.socket]) -> Optional[bytes]:
    """
    C{TCP_INFO} of C{sock} up to C{tcpi_bytes_retrans}, or L{None} where it
    holds no acknowledged count (not Linux 4.1+, no socket, closed).
    """
    if sock is None or not _LINUX:
        return None
    try:
        info = _tcp_info(sock)
    except (OSError, ValueError):
        return None
    return info if len(info) >= _BYTES_ACKED + 8 else None


def acknowledged(sock: Optional[socket.socket]) -> Optional[int]:
    """
    How many bytes the peer of the TCP socket C{sock} has acknowledged since
    the connection began, or L{None} when that cannot be known.
    """
    state = acknowledged_or_reset(sock)
    return None if state is None else state[0]


def acknowledged_or_reset(sock: Optional[socket.socket]) -> Optional[Tuple[int, bool]]:
    """
    On Linux, the peer's acknowledged count of the TCP socket C{sock} (see
    L{acknowledged}), and whether the connection is over (C{TCP_CLOSE}: it
    was reset, or both sides closed): one consistent read, for a socket
    this side has closed but still holds (see L{duplicate}).  L{None} when
    that cannot be known.
    """
    info = _read_info(sock)
    if info is None:
        return None
    value: int = struct.unpack_from("Q", info, _BYTES_ACKED)[0]
    return value, info[0] == _TCP_CLOSE


def position(sock: Optional[socket.socket]) -> Optional[Tuple[int, int]]:
    """
    Where the byte stream of the TCP socket C{sock} stands: C{(acknowledged,
    written)}, the bytes its peer has acknowledged and the bytes handed to
    the kernel since the connection began; L{None} when that cannot be
    known.

    One C{TCP_INFO} read is one consistent snapshot: what was written is
    what was sent, less what was sent again, plus what is not sent yet
    (the same as the acknowledged count plus C{SIOCOUTQ}, read at once).
    Before Linux 4.19 the send queue is read beside it, between two
    acknowledged counts, until they agree.
    """
    info = _read_info(sock)
    if info is None:
        return None
    if len(info) >= _TCP_INFO_SIZE:
        acked, sent, again = (
            struct.unpack_from("Q", info, offset)[0]
            for offset in (_BYTES_ACKED, _BYTES_SENT, _BYTES_RETRANS)
        )
        unsent: int = struct.unpack_from("I", info, _NOTSENT_BYTES)[0]
        return acked, sent - again + unsent
    assert sock is not None
    return _position_in_steps(sock)


def _position_in_steps(sock: socket.socket) -> Optional[Tuple[int, int]]:
    """
    L{position} from the acknowledged count and the send queue (two system
    calls, and an acknowledgement may arrive between them): the count is
    read on both sides of the queue, until it did not move.
    """
    before = queued = 0
    for _ in range(8):
        before_ = acknowledged(sock)
        queued_ = unacknowledged(sock)
        after = acknowledged(sock)
        if before_ is None or queued_ is None or after is None:
            return None
        before, queued = before_, queued_
        if before == after:
            break
    # When acknowledgements kept arriving, the queue was read after the
    # first count: the sum can then only fall short of what was written.
    return before, before + queued


def is_tcp(sock: socket.socket) -> bool:
    """
    Whether C{sock} is a TCP socket, the only kind the other functions of
    this module may be given (they do not check).
    """
    return _raw_family(sock) in _TCP_FAMILIES and _raw_type(sock) == socket.SOCK_STREAM


def duplicate(sock: Optional[socket.socket]) -> Optional[socket.socket]:
    """
    A second descriptor of the TCP socket C{sock}, so that its
    unacknowledged count can still be read after the first one is closed
    (L{None} where the count cannot be read, or no descriptor is left).

    While the duplicate is open the kernel keeps the connection: the
    caller must close it as soon as it has its answer, and at once when the
    connection is reset on purpose (a reset set up with C{SO_LINGER} is sent
    when the last descriptor closes).
    """
    if unacknowledged(sock) is None:
        return None
    assert sock is not None
    try:
        return sock.dup()
    except OSError:
        return None


def layers(transport: Any) -> List[Any]:
    """
    C{transport} and each transport it wraps, outermost first (a TLS or
    PROXY-protocol wrapper's C{transport}, down to the connection): the one
    walk down a connection's layers.  (A list, not a generator: it is made
    per connection and per delivery check, and a generator costs a Python
    call per step.)
    """
    found = []
    layer = transport
    while layer is not None:
        found.append(layer)
        layer = getattr(layer, "transport", None)
    return found


def socket_under(transport: Any) -> Optional[socket.socket]:
    """
    The socket of the first layer of C{transport} that has one (see
    L{layers}), or L{None}.
    """
    for layer in layers(transport):
        sock = getattr(layer, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
    return None


def reset_on_close(sock: Optional[socket.socket]) -> None:
    """
    Make the close of C{sock}'s last descriptor send a TCP reset
    (C{SO_LINGER} 0), dropping anything unsent.  Nothing if there is no
    socket or it refuses.
    """
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
