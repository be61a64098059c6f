"""
Small-pipe scenarios of C{compare.py}: C{tiny} (1 KiB pipes through
C{http.client}, sequential and from 20 threads) and C{concurrent} (50
pipes of 3 receivers at once).
"""

from __future__ import annotations

import http.client
import threading
import time
from typing import Dict, List, Optional, Tuple

from _harness import (
    Bench,
    Curl,
    Meter,
    Metrics,
    MiB,
    Params,
    percentile,
    receiver_curl,
    sender_curl,
    wait_all,
)
from _twistd import ChildServer


def tiny_transfer(
    server: ChildServer, path: str, payload: bytes
) -> Tuple[Optional[float], str]:
    """
    One 1-receiver transfer over fresh connections: the receiver's GET goes
    out first, then the sender's PUT, then both responses are read.  The
    latency, or C{None} and what went wrong.
    """
    target = f"{server.prefix}{path}?n=1"
    started = time.monotonic()
    receiver = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    sender = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        receiver.request("GET", target)
        sender.request(
            "PUT", target, body=payload, headers={"Content-Length": str(len(payload))}
        )
        got = receiver.getresponse()
        body = got.read()
        sent = sender.getresponse()
        sent.read()
        latency = time.monotonic() - started
    except (OSError, http.client.HTTPException) as e:
        return None, f"{type(e).__name__}: {e}"
    finally:
        receiver.close()
        sender.close()
    if got.status != 200 or sent.status != 200:
        return None, f"status receiver {got.status} sender {sent.status}"
    if body != payload:
        return None, f"body of {len(body)} bytes differs"
    return latency, ""


def run_tiny(bench: Bench, server: ChildServer, params: Params) -> Metrics:
    count = params["count"]
    threads = params["threads"]
    payload = bench.block[-params["size"] :]
    for _ in range(20):
        tiny_transfer(server, bench.path("tiny-warm"), payload)
    latencies: List[float] = []
    errors: List[str] = []
    paths = [bench.path("tiny") for _ in range(count)]

    def worker(mine: List[str]) -> None:
        for path in mine:
            latency, error = tiny_transfer(server, path, payload)
            if latency is None:
                errors.append(error)
            else:
                latencies.append(latency)

    with Meter(server) as meter:
        workers = [
            threading.Thread(target=worker, args=(paths[i::threads],))
            for i in range(threads)
        ]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        meter.stop()
    assert meter.wall is not None
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return {
        **meter.metrics(len(latencies) * len(payload)),
        "transfers_per_s": round(len(latencies) / meter.wall, 1),
        "p50_ms": None if p50 is None else round(p50 * 1000, 2),
        "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        "cpu_ms_per_transfer": round(meter.cpu * 1000 / count, 3),
        "failures": len(errors),
        "errors": sorted(set(errors))[:5],
        "ok": not errors,
    }


def run_concurrent(bench: Bench, server: ChildServer, params: Params) -> Metrics:
    pipes, n = params["pipes"], params["receivers"]
    size = params["size_mib"] * MiB
    # Each pipe its own content: the random block from a different offset.
    offsets = [i * (MiB + 4099) for i in range(pipes)]
    files = [bench.payload_file("concurrent", size, o) for o in offsets]
    digests = [bench.digest(f) for f in files]
    urls = [server.url(bench.path("concurrent"), n) for _ in range(pipes)]
    senders: List[Curl] = []
    receivers: List[List[Curl]] = []
    with Meter(server) as meter:
        if params["order"] == "senders_first":
            senders = [
                sender_curl(u, f, size, bench.block) for u, f in zip(urls, files)
            ]
            receivers = [
                [receiver_curl(u, digest=True) for _ in range(n)] for u in urls
            ]
        else:
            receivers = [
                [receiver_curl(u, digest=True) for _ in range(n)] for u in urls
            ]
            senders = [
                sender_curl(u, f, size, bench.block) for u, f in zip(urls, files)
            ]
        everyone = senders + [r for group in receivers for r in group]
        hung = wait_all(everyone, meter.started + params["timeout_s"])
        meter.stop()
    kinds: Dict[str, int] = {}
    failed_pipes = 0
    for sender, group, digest in zip(senders, receivers, digests):
        problems = [concurrent_failure(sender, None, size)]
        problems += [concurrent_failure(r, digest, size) for r in group]
        for kind in filter(None, problems):
            kinds[kind] = kinds.get(kind, 0) + 1
        failed_pipes += any(problems)
    delivered = sum(
        r.nbytes
        for group, digest in zip(receivers, digests)
        for r in group
        if r.sha256 == digest
    )
    return {
        **meter.metrics(delivered),
        "failures": sum(kinds.values()),
        "failed_pipes": failed_pipes,
        "hung": hung,
        "failure_kinds": kinds,
        "ok": not kinds,
    }


def concurrent_failure(party: Curl, digest: Optional[str], size: int) -> str:
    """What went wrong with one party of a concurrent run, or C{""}."""
    if party.hung:
        return f"{party.role} hung"
    if digest is not None and party.nbytes < size:
        return f"receiver truncated (curl exit {party.returncode})"
    if digest is not None and party.sha256 != digest:
        return f"receiver hash mismatch (curl exit {party.returncode})"
    if party.returncode != 0:
        return f"{party.role} curl exit {party.returncode}"
    return ""
