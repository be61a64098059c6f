"""
What one tiny pipe costs the server in Python work, counted exactly.

    python bench/cost.py                        # txpipe against the twisted.web floor
    python bench/cost.py --threads 20           # the same from 20 threads
    python bench/cost.py --baseline /path/to/other/venv/bin/python

CPU time per transfer on a shared 2-core machine moves by 20 % from one
minute to the next, so a change of 10 us cannot be seen in it.  This script
counts instead: it starts a real C{twistd -n pipe} (its default text log
included) and the twisted.web floor (C{floor_server.py}: a stock C{Site}
that only matches a GET and a PUT by path), each with a tracer loaded
(C{_tracer.py}), warms each up, and counts what C{--transfers} tiny
transfers (1 KiB, n=1, C{http.client}, the receiver's GET first, as in
C{compare.py}'s C{tiny}) make each server do: Python function calls,
bytecodes executed and calls into C, per transfer.  The counts repeat to
within a few per cent run after run and machine after machine; the tracer
slows the servers down many times, so the script says nothing about speed.

It prints the totals, where txpipe's work above the floor goes (by module
and by function), and with C{--baseline} the same counts for the txpipe
installed for another interpreter, to compare two versions.  Like the
other benchmarks it measures and never asserts.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Counter, Dict, List, Optional

from _harness import BENCH, FLOOR, FloorServer
from _small import tiny_transfer
from _twistd import ChildServer, Server

#: The payload of each transfer (C{--payload} makes it larger).
PAYLOAD = os.urandom(1024)
WARMUP = 100
KINDS = ("calls", "bytecodes", "c_calls")
LABELS = {
    "calls": "Python calls",
    "bytecodes": "bytecodes",
    "c_calls": "calls into C",
}

Counts = Dict[str, Counter[str]]


def traced(start: Callable[[str], ChildServer], out: Path) -> ChildServer:
    """Start a server with the tracer loaded, writing its counts to C{out}."""
    return start(
        f"import sys; sys.path.insert(0, {str(BENCH)!r}); import _tracer;"
        f" _tracer.install({str(out)!r}); "
    )


def transfers(server: ChildServer, count: int, threads: int, tag: str) -> int:
    """
    Run C{count} tiny transfers from C{threads} threads; the failures.  The
    paths are the same for every server (twisted.web checks a request
    line byte by byte in Python: a longer path is more work).
    """
    failures: List[str] = []

    def worker(index: int) -> None:
        for k in range(count // threads):
            _, error = tiny_transfer(server, f"cost-{tag}-{index}-{k}", PAYLOAD)
            if error:
                failures.append(error)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(failures)


def measure(
    name: str, start: Callable[[str], ChildServer], count: int, threads: int
) -> Counts:
    """Count what C{count} tiny transfers make server C{name} do."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "counts.json"
        server = traced(start, out)
        try:
            transfers(server, WARMUP, 1, "warm")
            os.kill(server.pid, signal.SIGUSR1)
            time.sleep(0.5)
            failed = transfers(server, count, threads, "cost")
            os.kill(server.pid, signal.SIGUSR2)
            deadline = time.monotonic() + 60
            while not out.exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} wrote no counts")
                time.sleep(0.1)
            raw = json.loads(out.read_text())
        finally:
            server.stop()
    counts = {kind: collections.Counter(raw[kind]) for kind in KINDS}
    totals = {kind: round(sum(counts[kind].values()) / count) for kind in KINDS}
    print(
        json.dumps(
            {
                "server": name,
                "transfers": count,
                "threads": threads,
                "failures": failed,
                "per_transfer": totals,
            }
        ),
        flush=True,
    )
    return counts


def module(key: str) -> str:
    """C{pipe/_http/channel.py}, C{twisted/web}, C{stdlib/string.py}, ..."""
    path = key.rsplit(":", 1)[0]
    if path.startswith("/"):  # a script: bench/floor_server.py
        return "/".join(path.split("/")[-2:])
    parts = path.split("/")
    if parts[0] == "twisted" and len(parts) > 2:
        return "/".join(parts[:2])
    if parts[0] in ("pipe", "stdlib"):
        return path
    return parts[0]


def grouped(counter: Counter[str]) -> Counter[str]:
    by: Counter[str] = collections.Counter()
    for key, n in counter.items():
        by[module(key)] += n
    return by


def table(rows: List[List[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  "
            + "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths))
            )
        )


def report(results: Dict[str, Counts], count: int, threads: int, top: int) -> None:
    ours, floor = results["txpipe"], results[FLOOR]
    baseline: Optional[Counts] = results.get("txpipe-baseline")

    def per(counter: Counter[str], key: Optional[str] = None) -> float:
        return (counter[key] if key is not None else sum(counter.values())) / count

    how = "in sequence" if threads == 1 else f"from {threads} threads"
    size = f"{len(PAYLOAD) / 1024:,.0f} KiB"
    print(f"\nper transfer ({size}, n=1; {count} transfers {how}):")
    head = ["", "txpipe", "twisted.web floor", "txpipe above the floor"]
    if baseline is not None:
        head += ["baseline", "txpipe - baseline"]
    rows = [head]
    for kind in KINDS:
        row = [
            LABELS[kind],
            f"{per(ours[kind]):,.0f}",
            f"{per(floor[kind]):,.0f}",
            f"{per(ours[kind]) - per(floor[kind]):+,.0f}",
        ]
        if baseline is not None:
            row += [
                f"{per(baseline[kind]):,.0f}",
                f"{per(ours[kind]) - per(baseline[kind]):+,.0f}",
            ]
        rows.append(row)
    table(rows)

    ours_by, floor_by = grouped(ours["bytecodes"]), grouped(floor["bytecodes"])
    above = collections.Counter(
        {k: ours_by[k] - floor_by[k] for k in set(ours_by) | set(floor_by)}
    )
    print(f"\nbytecodes per transfer above the floor, by module (top {top}):")
    rows = [["module", "txpipe", "floor", "above"]]
    for key, _ in above.most_common(top):
        rows.append(
            [
                key,
                f"{per(ours_by, key):,.0f}",
                f"{per(floor_by, key):,.0f}",
                f"{per(above, key):+,.0f}",
            ]
        )
    table(rows)

    print(f"\ntxpipe's own functions by bytecodes per transfer (top {top}):")
    rows = [["function", "bytecodes", "calls"]]
    own = collections.Counter(
        {k: n for k, n in ours["bytecodes"].items() if k.startswith("pipe/")}
    )
    for key, _ in own.most_common(top):
        rows.append([key, f"{per(own, key):,.0f}", f"{per(ours['calls'], key):.1f}"])
    table(rows)
    print(
        f"  ({len(own)} functions of txpipe ran, {per(own):,.0f} bytecodes per"
        " transfer in all)"
    )

    if baseline is not None:
        diff = collections.Counter(ours["bytecodes"])
        diff.subtract(baseline["bytecodes"])
        changed = sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]
        print(f"\nbytecodes per transfer, txpipe - baseline (top {top} changes):")
        rows = [["function", "change"]]
        rows += [[key, f"{n / count:+,.1f}"] for key, n in changed if n]
        table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--payload",
        type=int,
        default=1024,
        metavar="BYTES",
        help="bytes per transfer (default 1 KiB: a tiny pipe; a few MiB add"
        " socket reads and body pieces, the per-piece path)",
    )
    parser.add_argument("--top", type=int, default=15, help="rows per list")
    parser.add_argument(
        "--raw", metavar="FILE", help="also write every count, per server, as JSON"
    )
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also count the txpipe installed for this interpreter",
    )
    args = parser.parse_args()
    global PAYLOAD
    PAYLOAD = os.urandom(args.payload)
    count = args.transfers - args.transfers % args.threads
    with tempfile.TemporaryDirectory() as workdir:
        starts: Dict[str, Callable[[str], ChildServer]] = {
            "txpipe": lambda pre: Server(Path(workdir), preamble=pre),
            FLOOR: lambda pre: FloorServer(preamble=pre),
        }
        if args.baseline:
            starts["txpipe-baseline"] = lambda pre: Server(
                Path(workdir),
                python=args.baseline,
                name="txpipe-baseline",
                preamble=pre,
            )
        results = {
            name: measure(name, start, count, args.threads)
            for name, start in starts.items()
        }
    if args.raw:
        Path(args.raw).write_text(json.dumps({"transfers": count, "servers": results}))
    report(results, count, args.threads, args.top)


if __name__ == "__main__":
    main()
