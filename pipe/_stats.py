# -*- test-case-name: tests.test_metrics -*-
"""
A fixed-bucket histogram, kept by the relay in the reactor thread and read
by the metrics endpoint (which turns it into Prometheus' format).
"""

from __future__ import annotations

import bisect
from typing import List, Sequence, Tuple

__all__ = ["DURATION_BUCKETS", "WAIT_BUCKETS", "Histogram"]

#: Seconds a party waits for its transfer to start: from an instant
#: rendezvous to the default 600 s wait timeout.
WAIT_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)

#: Seconds a transfer runs: from a tiny file to a large image over a slow
#: receiver.
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


class Histogram:
    """
    Counts of observations at or under each upper bound, their sum and
    their count (Prometheus' cumulative buckets, C{+Inf} implied).
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> List[Tuple[str, int]]:
        """
        C{(upper bound, count at or under it)} pairs, ending with C{+Inf}.
        """
        out: List[Tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self._counts):
            running += count
            out.append((bound, running))
        return out
