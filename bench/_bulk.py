"""
Bulk scenarios of C{compare.py}: C{fanout} (one sender, N curl receivers,
256 MiB; also C{tls}, the same over TLS), C{throttled} (one slow receiver
among three) and C{big} (4 GiB, memory over time).
"""

from __future__ import annotations

import statistics

from _harness import (
    Bench,
    Meter,
    Metrics,
    MiB,
    Params,
    counted_outcome,
    curl_pipe,
    mib,
    transfer_timeout,
    wait_all,
)
from _twistd import ChildServer


def run_fanout(bench: Bench, server: ChildServer, params: Params) -> Metrics:
    size = params["size_mib"] * MiB
    n = params["receivers"]
    upload = bench.payload_file("fanout", size) if params["upload"] == "file" else None
    if params.get("tls"):
        url = server.tls_url(bench.path("tls"), n)  # type: ignore[attr-defined]
    else:
        url = server.url(bench.path("fanout"), n)
    with Meter(server) as meter:
        sender, receivers, meter.started = curl_pipe(
            url, n, size, bench.block, params["order"], upload
        )
        parties = [sender, *receivers]
        wait_all(parties, meter.started + transfer_timeout(size * n))
        meter.stop()
    outcome = counted_outcome(size, sender, receivers)
    return {**meter.metrics(outcome.pop("delivered")), **outcome}


def run_throttled(bench: Bench, server: ChildServer, params: Params) -> Metrics:
    size = params["size_mib"] * MiB
    n = params["receivers"]
    url = server.url(bench.path("throttled"), n)
    with Meter(server) as meter:
        sender, receivers, meter.started = curl_pipe(
            url, n, size, bench.block, "receivers_first", limits={0: params["limit"]}
        )
        wait_all([sender, *receivers], meter.started + transfer_timeout(size * n))
        meter.stop()
    finish = [
        None if r.finished is None else round(r.finished - meter.started, 2)
        for r in receivers
    ]
    slow, fast = finish[0], [f for f in finish[1:] if f is not None]
    outcome = counted_outcome(size, sender, receivers)
    return {
        **meter.metrics(outcome.pop("delivered")),
        "receiver_finish_s": finish,
        "slow_finish_s": slow,
        # How much earlier than the slow receiver the first fast one finished:
        # near 0 when the server paces everyone to the slowest.
        "fast_early_s": round(slow - min(fast), 2) if slow and fast else None,
        **outcome,
    }


def run_big(bench: Bench, server: ChildServer, params: Params) -> Metrics:
    size = params["size_mib"] * MiB
    n = params["receivers"]
    url = server.url(bench.path("big"), n)
    with Meter(server, timeline=True) as meter:
        sender, receivers, meter.started = curl_pipe(
            url, n, size, bench.block, "receivers_first"
        )
        wait_all([sender, *receivers], meter.started + transfer_timeout(size * n))
        meter.stop()
    outcome = counted_outcome(size, sender, receivers)
    growths = [
        r["rss_growth_mib"]
        for r in bench.records
        if r["server"] == server.name
        and r["scenario"] == "fanout"
        and r["params"]["size_mib"] == 256
    ]
    # About 40 samples (seconds from the transfer's start, MiB), to see
    # whether RSS climbs with the payload.
    step = max(1, len(meter.samples) // 40)
    return {
        **meter.metrics(outcome.pop("delivered")),
        "fanout_256_rss_growth_mib": statistics.median(growths) if growths else None,
        "rss_timeline_mib": [
            [round(t - meter.started, 1), mib(kib)] for t, kib in meter.samples[::step]
        ],
        **outcome,
    }
