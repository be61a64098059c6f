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
    kernel.  A position names a byte of the stream, so "every byte up to
    the end of this response" stays exact when more is written later (the
    next response on a keep-alive connection, or the TLS layer's
    C{close_notify}).

Elsewhere, and for sockets that are not TCP, neither can be known.

This module knows nothing about Twisted.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Callable, Optional, Tuple

__all__ = ["SUPPORTED", "acknowledged", "duplicate", "position", "unacknowledged"]

_INT = b"\0\0\0\0"
_TCP_FAMILIES = {socket.AF_INET, socket.AF_INET6}


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
    The number of bytes written to C{sock} that its peer's TCP has not
    acknowledged (sent or not), or L{None} when that cannot be known: not
    a TCP socket, an unsupported platform, or a socket already closed.
    """
    if sock is None or _read is None or sock.family not in _TCP_FAMILIES:
        return None
    try:
        return _read(sock)
    except (OSError, ValueError):  # ValueError: a closed socket's fd is -1
        return None


def _tcp_info_reader() -> Optional[Callable[[socket.socket], int]]:
    """
    Linux's cumulative acknowledged byte count (C{tcpi_bytes_acked}, a
    64-bit field at offset 120 of C{struct tcp_info}, since Linux 4.1).
    """
    if not sys.platform.startswith("linux") or not hasattr(socket, "TCP_INFO"):
        return None
    option = socket.TCP_INFO
    size = _BYTES_ACKED + 8

    def bytes_acked(sock: socket.socket) -> int:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, size)
        if len(info) < size:
            raise OSError("TCP_INFO has no tcpi_bytes_acked (Linux before 4.1)")
        value: int = struct.unpack_from("Q", info, _BYTES_ACKED)[0]
        return value

    return bytes_acked


_BYTES_ACKED = 120
_acked = _tcp_info_reader()


def acknowledged(sock: Optional[socket.socket]) -> Optional[int]:
    """
    How many bytes the peer of the TCP socket C{sock} has acknowledged since
    the connection began, or L{None} when that cannot be known.
    """
    if sock is None or _acked is None or sock.family not in _TCP_FAMILIES:
        return None
    try:
        return _acked(sock)
    except (OSError, ValueError):
        return None


def position(sock: Optional[socket.socket]) -> Optional[Tuple[int, int]]:
    """
    Where the byte stream of the TCP socket C{sock} stands: C{(acknowledged,
    written)}, the bytes its peer has acknowledged and the bytes handed to
    the kernel since the connection began; L{None} when that cannot be
    known.

    The two come from two system calls, and an acknowledgement may arrive
    between them; the acknowledged count is read on both sides of the
    send queue's, until it did not move (writes cannot interleave: the
    caller is the only writer).
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
