# -*- test-case-name: tests.test_quorum -*-
"""
Who sets a running transfer's pace.

While a transfer runs longer than
L{pipe._transfer.watchdog.REPORT_INTERVAL}, its streamed sender gets a
line every so many seconds naming the receiver
that holds the others back: of the receivers whose connection has paused
the upload, the one that has taken the fewest bytes (L{holding_back}).

Nothing here runs per body piece, nor per transfer: the figures are the
ones the fan-out already keeps (each branch's C{sent}, what its
connection has not taken, its start), read once per line, and the line is
due at the stall watchdog's periodic check, which already visits every
running transfer (L{pipe._transfer.watchdog.Watchdogs}; so the lines
come while the stall timeout is on, as it is by default).
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

from pipe._transfer.fanout import Branch

__all__ = ["holding_back"]


def holding_back(
    branches: Iterable[Branch], now: float
) -> Optional[Tuple[Branch, float]]:
    """
    The receiver that holds a transfer back now, and its rate so far
    (MB/s): of the C{branches} whose connection paused the upload, the one
    whose connection has taken the fewest bytes.  L{None} when no branch
    pauses the upload.
    """
    slowest: Optional[Branch] = None
    least = 0
    for branch in branches:
        if not branch.is_paused():
            continue
        pending = branch.outlet.pending()
        taken = branch.sent - (pending or 0)
        if slowest is None or taken < least:
            slowest, least = branch, taken
    if slowest is None:
        return None
    elapsed = now - slowest.started_at
    return slowest, (least / elapsed / 1e6 if elapsed > 0 else 0.0)
