# -*- test-case-name: tests.test_channel -*-
"""
Writes made while one read is handled, sent together when it is done.

Handling one read of one connection can write to many: a tiny pipe's whole
transfer (the sender's status line, headers and progress lines, its last
line and end; each receiver's headers and body) happens while the sender's
request is read.  Each of those writes would be one C{sendmsg}.  While a
L{WriteBatch} is open, a connection holds what it is asked to write, and
when the outermost batch closes every connection that holds something sends
it with one C{sendmsg}: nothing is held past the handling of the read that
wrote it.

This module knows nothing about HTTP; of Twisted it uses only the logger,
for a holder whose send fails.
"""

from __future__ import annotations

from typing import List

from zope.interface import Interface

from pipe._compat.logger import pinned_logger

__all__ = ["IHolder", "WriteBatch"]


class IHolder(Interface):
    """
    A connection that holds writes while a batch is open.
    """

    def send_held() -> None:
        """
        Send what was held, then do what waited for it.  Called by the
        batch, once per batch in which the holder held something.
        """


class WriteBatch:
    """
    Nested C{open}/C{close} around the handling of a read; when the
    outermost one closes, every L{IHolder} that held writes sends them, the
    last to hold first (receivers, whose delivery may end the transfer, go
    before the sender that then writes its last line), until none holds
    anything.

    @ivar depth: how many batches are open; writes are held while above 0.
    """

    log = pinned_logger("pipe._batch.WriteBatch")

    def __init__(self) -> None:
        self.depth = 0
        self._holders: List[IHolder] = []

    def open(self) -> None:
        self.depth += 1

    def close(self) -> None:
        """
        Close one batch; the outermost sends everything held.  While it
        sends, writes are still held (and sent in turn), so that what a
        send leads to (a receiver's delivery ends the transfer, the sender
        writes its last line) joins what that connection holds.
        """
        if self.depth > 1:
            self.depth -= 1
            return
        try:
            holders = self._holders
            while holders:
                holder = holders.pop()
                try:
                    holder.send_held()
                except Exception:
                    self.log.failure("sending held writes failed")
        finally:
            self.depth -= 1

    def hold(self, holder: IHolder) -> None:
        """
        C{holder} holds writes now (it calls this once per batch, with its
        first held write).
        """
        self._holders.append(holder)
