# -*- test-case-name: tests.test_hardening -*-
"""
How a transfer ends: the one word the log event, the statistics and the
sender's last line agree on.  A leaf module, so that the fan-out, which
decides most outcomes, and L{pipe._transfer.transfer}, which owns a transfer's end,
both name them without importing each other.
"""

from __future__ import annotations

import enum

__all__ = ["Outcome"]


class Outcome(enum.Enum):
    """
    How a transfer ended.

      - C{COMPLETE}: every receiver's connection acknowledged every byte.
      - C{RECEIVER_LOST}: a receiver disconnected before the end.
      - C{RECEIVER_STALLED}: a receiver was dropped for taking no bytes (or
        too few) for the stall timeout.
      - C{SENDER_LOST}: the upload ended before its end (disconnect, or a
        body shorter than its C{Content-Length}).
      - C{WAIT_TIMEOUT}: the transfer never started (used by the parties).
      - C{IDLE_TIMEOUT}: the sender sent nothing for the idle timeout.
      - C{DRAINED}: the server shut down before the transfer ended.
      - C{SERVER_ERROR}: an unexpected error in the server failed it.
    """

    COMPLETE = "complete"
    RECEIVER_LOST = "receiver_lost"
    RECEIVER_STALLED = "receiver_stalled"
    SENDER_LOST = "sender_lost"
    WAIT_TIMEOUT = "wait_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    DRAINED = "drained"
    SERVER_ERROR = "server_error"
