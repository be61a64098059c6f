# -*- test-case-name: tests.test_client -*-
"""
The records L{pipe.client} hands its caller (progress and results) and the
types of what it sends from and receives into.
"""

from __future__ import annotations

import os
from typing import IO, Callable, List, Optional, Union

import attr
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IBodyProducer

__all__ = [
    "Progress",
    "ProgressCallback",
    "ReceiveResult",
    "SendResult",
    "Sink",
    "Source",
]


@attr.s(auto_attribs=True, frozen=True)
class Progress:
    """
    Where a transfer is, for a progress callback.

    @ivar bytes: body bytes sent or received so far.
    @ivar total: the body's length when known, else L{None}.
    @ivar receivers: receivers connected, as the sender last heard
        (L{None} for a receiver, or before the server said).
    @ivar n: the pipe's receiver count (L{None} until the server said).
    @ivar started: whether the transfer has started.
    """

    bytes: int
    total: Optional[int]
    receivers: Optional[int] = None
    n: Optional[int] = None
    started: bool = False


@attr.s(auto_attribs=True, frozen=True)
class SendResult:
    """
    A completed send.

    @ivar bytes: the bytes the server received, by its summary.
    @ivar receivers: how many receivers got every byte (all n).
    @ivar sha256: hex SHA-256 of what was sent.
    @ivar summary: the server's last line, C{[INFO] done: ...}.
    @ivar lines: every progress line of the server's response.
    """

    bytes: int
    receivers: int
    sha256: str
    summary: str
    lines: List[str]


@attr.s(auto_attribs=True, frozen=True)
class ReceiveResult:
    """
    A completed receive.

    @ivar bytes: the bytes received.
    @ivar sha256: their hex SHA-256.
    @ivar content_type: the response's C{Content-Type}.
    """

    bytes: int
    sha256: str
    content_type: Optional[str]


ProgressCallback = Callable[[Progress], None]
Source = Union[str, "os.PathLike[str]", IO[bytes], IBodyProducer]
Sink = Union[IO[bytes], IConsumer]
