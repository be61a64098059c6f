"""
Prometheus metrics: scraped over HTTP with curl during and after real
transfers, parsed with C{prometheus_client}'s own parser.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory

from pipe._metrics import metrics_site
from pipe.server import Settings, make_site

from .helpers import HeldReceiver, RunningServer, curl, payload, start_twistd, wait_for

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


@pytest.fixture
def metered(reactor: Any) -> Iterator[Tuple[RunningServer, str]]:
    site = make_site(reactor, Settings(stall_timeout=0))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    metrics = reactor.listenTCP(
        0, metrics_site(site.registry, reactor), interface="127.0.0.1"
    )
    yield (
        RunningServer(site, port),
        f"http://127.0.0.1:{metrics.getHost().port}/metrics",
    )
    pytest_twisted.blockon(port.stopListening())
    pytest_twisted.blockon(metrics.stopListening())


async def scrape(reactor: Any, url: str) -> Tuple[str, Samples]:
    result = await curl(reactor, "-f", url, keep_text=True).ended
    assert result.code == 0, result
    text = result.text.decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest_twisted.ensureDeferred
async def test_metrics_during_and_after_transfers(
    reactor: Any, metered: Tuple[RunningServer, str], tmp_path: Path
) -> None:
    server, url = metered
    secret_path = "secret-build-path-0123"
    waiting = curl(reactor, server.url(secret_path, "n=2"))
    await wait_for(
        reactor, lambda: server.rendezvous.parties(secret_path.encode()) == (False, 1)
    )
    text, samples = await scrape(reactor, url)
    assert value(samples, "txpipe_pipes", stage="waiting") == 1
    assert value(samples, "txpipe_pipes", stage="running") == 0
    assert value(samples, "txpipe_receivers_connected") == 1
    assert value(samples, "txpipe_senders_connected") == 0
    assert value(samples, "txpipe_info", version=__import__("pipe").__version__) == 1

    # A running transfer, held by a receiver that does not read: the bytes
    # already written show while it runs.
    held = HeldReceiver(b"/api/v1/pipe/" + secret_path.encode() + b"?n=2")
    await TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port).connect(
        Factory.forProtocol(lambda: held)
    )
    data = payload(tmp_path, 8 * 1024 * 1024)
    sending = curl(reactor, "-T", str(data), server.url(secret_path, "n=2"))
    await wait_for(reactor, lambda: server.site.registry.live_bytes()[0] > 0)
    text, samples = await scrape(reactor, url)
    assert value(samples, "txpipe_pipes", stage="running") == 1
    assert value(samples, "txpipe_received_bytes_total") > 0
    assert value(samples, "txpipe_written_bytes_total") > 0
    assert secret_path not in text
    held.resume()
    assert (await sending.ended).code == 0
    await waiting.ended
    await held.ended

    # A refusal and a wait timeout.
    assert (await curl(reactor, "-f", server.url("x", "n=0")).ended).code == 22
    assert (await curl(reactor, "-f", server.url("y", "wait=1")).ended).code == 22

    text, samples = await scrape(reactor, url)
    size = 8 * 1024 * 1024
    assert value(samples, "txpipe_transfers_total", outcome="complete") == 1
    assert value(samples, "txpipe_transfers_total", outcome="sender_lost") == 0
    assert value(samples, "txpipe_received_bytes_total") == size
    assert value(samples, "txpipe_written_bytes_total") == 2 * size
    assert value(samples, "txpipe_pipes_awaiting_acks") == 0
    assert value(samples, "txpipe_rejections_total", reason="bad_n") == 1
    assert value(samples, "txpipe_wait_timeouts_total") == 1
    assert value(samples, "txpipe_receivers_stalled_total") == 0
    assert value(samples, "txpipe_wait_seconds_count") == 3
    assert value(samples, "txpipe_wait_seconds_bucket", le="+Inf") == 3
    assert value(samples, "txpipe_transfer_duration_seconds_count") == 1
    assert value(samples, "txpipe_transfer_duration_seconds_sum") > 0
    assert value(samples, "txpipe_pipes", stage="waiting") == 0
    assert value(samples, "txpipe_receivers_connected") == 0
    assert secret_path not in text
    labels = set(re.findall(r'(\w+)="', text))
    assert labels <= {"stage", "version", "outcome", "reason", "method", "le"}


@pytest_twisted.ensureDeferred
async def test_other_paths_are_a_plain_404(
    reactor: Any, metered: Tuple[RunningServer, str]
) -> None:
    _, url = metered
    result = await curl(
        reactor, "-w", "%{http_code}", url.replace("/metrics", "/x"), keep_text=True
    ).ended
    assert result.text.endswith(b"404")
    assert result.text.startswith(b"[ERROR] not found")


@pytest_twisted.ensureDeferred
async def test_twistd_metrics_listen(reactor: Any, tmp_path: Path) -> None:
    server = start_twistd(
        reactor, tmp_path, "--metrics-listen", "tcp:0:interface=127.0.0.1"
    )
    try:
        port = await server.listening
        await wait_for(reactor, lambda: server.output.count(b"listening on") >= 2)
        ports = [
            int(p)
            for p in re.findall(
                rb"listening on IPv4Address\(.*port=(\d+)\)", server.output
            )
        ]
        metrics_port = next(p for p in ports if p != port)
        await curl(
            reactor, "-d", "x", f"http://127.0.0.1:{port}/api/v1/pipe/p?wait=1"
        ).ended
        _, samples = await scrape(reactor, f"http://127.0.0.1:{metrics_port}/metrics")
        assert value(samples, "txpipe_wait_timeouts_total") == 1
        assert value(samples, "txpipe_transfers_total", outcome="wait_timeout") == 1
    finally:
        await server.stop()


def test_statistics_are_per_server_and_status_reads_them() -> None:
    """
    Each server counts in collectors of its own; C{/api/v1/status} and the
    collectors read the same counters.
    """
    from twisted.internet.task import Clock

    from pipe._transfer.outcome import Outcome
    from pipe._transfer.registry import Registry

    one, other = Registry(Clock(), Settings()), Registry(Clock(), Settings())
    one.statistics.transfer_ended(Outcome.COMPLETE, 10, 20, 0.5)
    one.statistics.transfer_ended(Outcome.RECEIVER_LOST, 3, 1)
    one.statistics.refused("bad_n")
    one.statistics.wait_timed_out()
    one.statistics.receiver_stalled()
    one.statistics.party_waited(0.2)
    status = one.status()
    assert status["transfers"]["complete"] == 1
    assert status["transfers"]["receiver_lost"] == 1
    assert status["transfers"]["sender_lost"] == 0
    assert (status["bytes_received"], status["bytes_written"]) == (13, 21)
    collectors = one.statistics.collectors
    assert (
        collectors.get_sample_value("txpipe_transfers_total", {"outcome": "complete"})
        == status["transfers"]["complete"]
    )
    assert (
        collectors.get_sample_value("txpipe_rejections_total", {"reason": "bad_n"}) == 1
    )
    assert collectors.get_sample_value("txpipe_wait_timeouts_total") == 1
    assert collectors.get_sample_value("txpipe_receivers_stalled_total") == 1
    assert collectors.get_sample_value("txpipe_transfer_duration_seconds_count") == 1
    assert collectors.get_sample_value("txpipe_wait_seconds_sum") == 0.2
    assert other.status()["transfers"]["complete"] == 0
    assert (
        other.statistics.collectors.get_sample_value("txpipe_wait_timeouts_total") == 0
    )


def test_every_refusal_reason_is_exported_from_the_start() -> None:
    """
    Each reason's counter is there at 0 before its first refusal (a series
    that first appears at 1 shows no increase to rate() and increase()),
    the reasons are those docs/operations.md lists, and the status reads
    only the reasons that happened.
    """
    from twisted.internet.task import Clock

    from pipe._transfer.refusal import REASONS
    from pipe._transfer.registry import Registry

    server = Registry(Clock(), Settings())
    collectors = server.statistics.collectors
    for reason in REASONS:
        assert (
            collectors.get_sample_value("txpipe_rejections_total", {"reason": reason})
            == 0
        )
    assert not [
        sample
        for metric in collectors.collect()
        if metric.name == "txpipe_rejections"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.value
    ]
    docs = (
        Path(__file__).resolve().parent.parent / "docs" / "operations.md"
    ).read_text()
    rows = [
        line
        for line in docs.splitlines()
        if line.startswith("| `txpipe_rejections_total`")
    ]
    (row,) = rows
    named = set(re.findall(r"`([a-z_]+)`", row)) - {"txpipe_rejections_total", "reason"}
    assert named == set(REASONS)
