# -*- test-case-name: tests.test_window -*-
"""
How much of an upload one read takes, and what that lets one pipe hold.

Every read of an upload becomes one write to each receiver, so the read
size sets the number of system calls and of Python steps per byte copied:
reads of 1 MiB instead of 256 KiB cut them by four (see
docs/performance.md).  What a pipe holds in memory grows with it, though: a
receiver whose socket is full keeps the unsent rest of a write (at most one
read; on plain TCP a view of the shared read, L{pipe._http.rest}, behind
TLS an encrypted copy), and may have had less than L{PAUSE_THRESHOLD}
buffered before that write; the upload is paused as soon as one receiver
keeps a rest, but the read in hand is written to every receiver first.
So a transfer to C{n} receivers with reads of C{r} bytes holds at most
(L{window}):

    r                       the read in hand, shared by every receiver
  + n * (r + 64 KiB)        each receiver's rest and transport buffer

(with every receiver on plain TCP, C{r + n * 64 KiB}: the rests are views).

The read size of a running transfer (L{read_size}) is the largest power of
two that keeps this within L{WINDOW_BUDGET} (64 MiB), between
L{MIN_READ_SIZE} and L{MAX_READ_SIZE}: 2 MiB for 1 to 30 receivers, 1 MiB
for 31 to 59, 512 KiB for 60 to 112, and from 113 receivers on the 256 KiB
of a sender that waits (from 205 receivers on, the window passes the
budget: C{n * 320 KiB} and a read, as before reads grew).  The budget is
half of what the kernel may buffer for 30 receivers' sockets (Linux's
default C{tcp_wmem} maximum, 4 MiB each): a pipe holds no more than its
receivers' send buffers, whose size it does not set.

This module knows nothing about Twisted or HTTP; the channel applies the
size (L{pipe._http.channel.StreamingChannel.set_read_size}), the sender's
side chooses it when the transfer starts.
"""

from __future__ import annotations

import functools

__all__ = [
    "MAX_READ_SIZE",
    "MIN_READ_SIZE",
    "PAUSE_THRESHOLD",
    "WINDOW_BUDGET",
    "keep_large_reads_off_the_heap",
    "read_size",
    "window",
]

KiB = 1024
MiB = 1024 * KiB

#: The largest read of a running transfer's upload.
MAX_READ_SIZE = 2 * MiB

#: The smallest: also the read size of an upload whose transfer has not
#: started (L{pipe._http.channel.UPLOAD_READ_SIZE}).
MIN_READ_SIZE = 256 * KiB

#: What a receiver's transport buffers before it pauses the upload
#: (Twisted's C{FileDescriptor.bufferSize}).
PAUSE_THRESHOLD = 64 * KiB

#: What one pipe may hold at most, by L{window}, for up to 204 receivers.
WINDOW_BUDGET = 64 * MiB


def window(receivers: int, read: int) -> int:
    """
    The most a transfer to C{receivers} receivers, reading C{read} bytes at
    a time, holds of its upload (see the module docstring).
    """
    return read + receivers * (read + PAUSE_THRESHOLD)


@functools.cache
def read_size(receivers: int) -> int:
    """
    The read size of a transfer to C{receivers} receivers: the largest
    power of two from L{MIN_READ_SIZE} to L{MAX_READ_SIZE} whose L{window}
    is within L{WINDOW_BUDGET} (L{MIN_READ_SIZE} if none is).  Remembered
    per number of receivers (at most C{--max-receivers} of them): a tiny
    pipe pays one call into C for it.
    """
    size = MAX_READ_SIZE
    while size > MIN_READ_SIZE and window(receivers, size) > WINDOW_BUDGET:
        size //= 2
    return size


#: glibc's C{mallopt} parameter number of C{M_MMAP_THRESHOLD}.
_M_MMAP_THRESHOLD = -3


def keep_large_reads_off_the_heap() -> bool:
    """
    Make every allocation of 1 MiB or more a mapping of its own, returned to
    the kernel when it is freed; whether the C library took it.

    glibc serves a block above its mmap threshold (128 KiB at start) with a
    mapping, but raises the threshold to the size of each such block freed,
    up to 32 MiB: after the first 2 MiB read is freed, every later read comes
    from the heap, whose freed reads stay in the process (C{bench/soak.py}
    saw 18 to 24 MiB of growth under mixed traffic, against 8 allowed).
    Setting the threshold fixes it (and stops its adjustment) for the whole
    process.  Nothing happens where the C library has no C{mallopt}.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MAX_READ_SIZE // 2))
