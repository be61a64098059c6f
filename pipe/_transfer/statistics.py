# -*- test-case-name: tests.test_metrics -*-
"""
What the server counts, on C{prometheus_client}: counters and histograms in
a C{CollectorRegistry} of the server's own (never the process-wide one, so two servers
in one process, or a host application's metrics, never mix), updated
through named methods by whoever sees the event happen.

C{/metrics} (L{pipe._metrics}) serves these collectors, and C{/api/v1/status}
(L{pipe._transfer.registry.Registry.status}) reads the same counters, so the two never
disagree.  C{prometheus_client}'s metrics are thread-safe: they are updated
in the reactor thread and read by a scrape in a pool thread.
"""

from __future__ import annotations

from typing import Dict, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram

from pipe._transfer.outcome import Outcome
from pipe._transfer.refusal import REASONS

__all__ = ["AUTH_METHODS", "DURATION_BUCKETS", "WAIT_BUCKETS", "Statistics"]

#: The credential methods, by the first word of their refusals' reasons.
AUTH_METHODS = {"signature": "signature", "token": "token"}

#: Seconds a party waits for its transfer to start: from an instant
#: rendezvous to the default 600 s wait timeout.
WAIT_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)

#: Seconds a transfer runs: from a tiny file to a large image over a slow
#: receiver.
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


class Statistics:
    """
    The server's counters and histograms.

    @ivar collectors: the C{CollectorRegistry} that holds them (and, with
        C{--metrics-listen}, the collector of what is live; see
        L{pipe._metrics}).
    @ivar bytes_received: upload bytes received by transfers that ended.
    @ivar bytes_written: bytes written to receivers by transfers that
        ended, summed over receivers.
    """

    def __init__(self) -> None:
        self.collectors = registry = CollectorRegistry(auto_describe=False)
        self._transfers = Counter(
            "txpipe_transfers",
            "Ended transfers by outcome.",
            ["outcome"],
            registry=registry,
        )
        self._by_outcome = {
            outcome: self._transfers.labels(outcome.value) for outcome in Outcome
        }
        self._rejections = Counter(
            "txpipe_rejections",
            "Refused requests by reason (the name of the error message).",
            ["reason"],
            registry=registry,
        )
        # Exported at 0 from the start: a series that first appears at 1
        # shows no increase to rate() and increase(), so alerts and
        # dashboards would miss a reason's first refusals.
        for reason in REASONS:
            self._rejections.labels(reason)
        self._admissions = Counter(
            "txpipe_admissions",
            "Parties admitted by a credential, by method (signature, token).",
            ["method"],
            registry=registry,
        )
        self._auth_refusals = Counter(
            "txpipe_authentication_refusals",
            "Parties refused for their credentials, by method (signature, "
            "token) and reason.",
            ["method", "reason"],
            registry=registry,
        )
        for method in AUTH_METHODS.values():
            self._admissions.labels(method)
        for reason in REASONS:
            refused_by = AUTH_METHODS.get(reason.partition("_")[0])
            if refused_by is not None:
                self._auth_refusals.labels(refused_by, reason)
        self._stalled = Counter(
            "txpipe_receivers_stalled",
            "Receivers dropped by the stall watchdog.",
            registry=registry,
        )
        self._quorum_starts = Counter(
            "txpipe_quorum_starts",
            "Transfers started at their sender's wait deadline with fewer than"
            " n receivers (at least its min).",
            registry=registry,
        )
        self._quorum_joined = Counter(
            "txpipe_quorum_receivers_joined",
            "Receivers that joined the transfers started with a quorum.",
            registry=registry,
        )
        self._quorum_missing = Counter(
            "txpipe_quorum_receivers_never_joined",
            "Receivers the transfers started with a quorum waited for and never got.",
            registry=registry,
        )
        self._wait_timeouts = Counter(
            "txpipe_wait_timeouts",
            "Parties whose wait for their transfer timed out.",
            registry=registry,
        )
        self._waits = Histogram(
            "txpipe_wait_seconds",
            "How long each party of a started transfer waited for it.",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self._durations = Histogram(
            "txpipe_transfer_duration_seconds",
            "How long each ended transfer ran.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # Bytes count running transfers too, which only the registry knows:
        # L{pipe._metrics} exports them with the live figures.
        self.bytes_received = 0
        self.bytes_written = 0

    # Events.

    def transfer_ended(
        self,
        outcome: Outcome,
        received: int,
        written: int,
        seconds: Optional[float] = None,
    ) -> None:
        """
        A transfer ended: C{received} upload bytes, C{written} bytes
        written to receivers (summed), after running C{seconds} (L{None}:
        it never started).
        """
        self._by_outcome[outcome].inc()
        self.bytes_received += received
        self.bytes_written += written
        if seconds is not None:
            self._durations.observe(seconds)

    def party_waited(self, seconds: float) -> None:
        """
        A party's transfer started after it waited C{seconds}.
        """
        self._waits.observe(seconds)

    def quorum_started(self, joined: int, n: int) -> None:
        """
        A transfer started at its sender's wait deadline with C{joined} of
        its C{n} receivers.
        """
        self._quorum_starts.inc()
        self._quorum_joined.inc(joined)
        self._quorum_missing.inc(n - joined)

    def wait_timed_out(self) -> None:
        """
        A party's wait for its transfer timed out.
        """
        self._wait_timeouts.inc()

    def receiver_stalled(self) -> None:
        """
        The stall watchdog dropped a receiver.
        """
        self._stalled.inc()

    def refused(self, reason: str) -> None:
        """
        A request was refused; C{reason} names the error message.
        """
        self._rejections.labels(reason).inc()
        method = AUTH_METHODS.get(reason.partition("_")[0])
        if method is not None:
            self._auth_refusals.labels(method, reason).inc()

    def admitted(self, method: str) -> None:
        """
        A party was admitted by its credential: C{signature} or C{token}.
        """
        self._admissions.labels(method).inc()

    # Figures.

    def transfers(self) -> Dict[Outcome, int]:
        """
        Ended transfers by outcome.
        """
        counts = {outcome: 0 for outcome in Outcome}
        by_value = {outcome.value: outcome for outcome in Outcome}
        for metric in self._transfers.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    counts[by_value[sample.labels["outcome"]]] = int(sample.value)
        return counts
