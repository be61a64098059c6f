# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics at C{/metrics}, served with C{prometheus_client}'s
Twisted integration on a listener of their own (C{--metrics-listen}).

Two collectors: the L{pipe._transfer.statistics.Statistics} of the server's
L{Registry} (the counters and histograms of ended transfers, refusals,
stalls and waits), and L{LiveCollector}, which reads what is present now
(pipes, parties, bytes of running transfers) from the registry.
C{prometheus_client} renders a scrape in a thread of the reactor's pool (it
is a WSGI application), so the live figures come from one snapshot taken in
the reactor thread (C{blockingCallFromThread}); the statistics are
thread-safe on their own.
No label holds a path.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.threads import blockingCallFromThread
from twisted.web.resource import Resource
from twisted.web.server import Site

from pipe import __version__
from pipe._transfer import messages as messages
from pipe._transfer.registry import Registry
from pipe._transfer.rendezvous import Stage

__all__ = ["LiveCollector", "metrics_registry", "metrics_site"]


def _snapshot(registry: Registry) -> Dict[str, Any]:
    """
    What is live now, read in the reactor thread.
    """
    rendezvous = registry.rendezvous
    senders, receivers = rendezvous.totals()
    received, written = registry.live_bytes()
    return {
        "waiting": rendezvous.count(Stage.WAITING),
        "running": rendezvous.count(Stage.RUNNING),
        "closed": rendezvous.count(Stage.CLOSED),
        "awaiting_acks": registry.awaiting_acks_count(),
        "senders": senders,
        "receivers": receivers,
        "received": received,
        "written": written,
        "draining": int(registry.lifecycle.value == "draining"),
        "spent_signatures": registry.guard.spent_count if registry.guard else 0,
    }


#: The live metrics without labels: family, name, help, snapshot key.
_SINGLE = [
    (GaugeMetricFamily, "txpipe_senders_connected", "Senders present.", "senders"),
    (
        GaugeMetricFamily,
        "txpipe_receivers_connected",
        "Receivers present.",
        "receivers",
    ),
    (GaugeMetricFamily, "txpipe_draining", "1 while draining.", "draining"),
    (
        CounterMetricFamily,
        "txpipe_received_bytes",
        "Upload bytes received, running transfers included.",
        "received",
    ),
    (
        CounterMetricFamily,
        "txpipe_written_bytes",
        "Bytes written to receivers, summed over receivers, running transfers"
        " included.",
        "written",
    ),
    (
        GaugeMetricFamily,
        "txpipe_spent_signatures",
        "Used signed URLs remembered until they expire.",
        "spent_signatures",
    ),
]


class LiveCollector:
    """
    A C{prometheus_client} collector of what a L{Registry} holds now.

    @param in_thread: whether C{collect} runs outside the reactor thread (a
        scrape does), so the snapshot is taken in the reactor thread.
    """

    def __init__(
        self, registry: Registry, reactor: Any, in_thread: bool = True
    ) -> None:
        self._registry = registry
        self._reactor = reactor
        self._in_thread = in_thread

    def collect(self) -> Iterator[Metric]:
        if self._in_thread:
            s = blockingCallFromThread(self._reactor, _snapshot, self._registry)
        else:
            s = _snapshot(self._registry)
        info = GaugeMetricFamily(
            "txpipe_info", "The txpipe version (value 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        pipes = GaugeMetricFamily("txpipe_pipes", "Pipes by stage.", labels=["stage"])
        pipes.add_metric(["waiting"], s["waiting"])
        pipes.add_metric(["running"], s["running"])
        pipes.add_metric(["closed"], s["closed"])
        yield pipes
        yield GaugeMetricFamily(
            "txpipe_pipes_awaiting_acks",
            "Running pipes whose upload is complete, waiting for receivers to"
            " acknowledge the last bytes.",
            value=s["awaiting_acks"],
        )
        for family, name, doc, key in _SINGLE:
            yield family(name, doc, value=s[key])


def metrics_registry(registry: Registry, reactor: Any) -> CollectorRegistry:
    """
    A C{CollectorRegistry} of txpipe's figures only (not the process-wide
    one): the registry's statistics and its live figures.
    """
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(registry.statistics.collectors)
    collectors.register(LiveCollector(registry, reactor))  # type: ignore[arg-type]
    return collectors


def metrics_site(registry: Registry, reactor: Any) -> Site:
    """
    The site of C{--metrics-listen}: C{/metrics}, and a plain-text 404
    for everything else.

    C{prometheus_client.twisted} imports the global reactor, so this is
    only called once the reactor is installed (by C{twistd}).
    """
    from prometheus_client.twisted import MetricsResource

    root = _PlainNotFound()
    root.putChild(b"metrics", MetricsResource(metrics_registry(registry, reactor)))
    return _QuietSite(root)


class _QuietSite(Site):
    """
    A site without an access log: a scrape every few seconds is no news.
    """

    def log(self, request: Any) -> None:
        """
        Log nothing.
        """


class _PlainNotFound(Resource):
    """
    A root whose every path but its children is a plain-text 404.
    """

    def getChild(self, name: bytes, request: Any) -> Resource:
        return self

    def render(self, request: Any) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return messages.metrics_not_found()
