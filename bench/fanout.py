#!/usr/bin/env python3
"""
Fan-out benchmark: one curl sender, N curl receivers, against a real
C{twistd -n pipe} process.  Prints a table and one JSON line per run: wall
time, aggregate delivered MiB/s, server CPU seconds per GiB delivered, the
server's RSS before and its peak during the run, its disk writes, and
whether every receiver got every byte.

It measures; it asserts nothing.  Run it from an environment where txpipe is
installed (C{pip install .}):

    python bench/fanout.py                       # the default scenarios
    python bench/fanout.py --size 1024 --receivers 30 --upload stdin
    python bench/fanout.py --size 64 --receivers 3 --throttle 1M

Payload bytes come from a 64 MiB random block repeated, streamed through a
pipe into the sender's curl (C{-T -}) or, for C{--upload file}, a file of the
full size written to a temporary directory first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from _harness import BLOCK, MiB, feed
from _twistd import Server


def run(
    server: Server,
    name: str,
    size: int,
    receivers: int,
    upload: str,
    order: str,
    throttle: Optional[str],
    block: bytes,
    workdir: Path,
) -> Dict[str, object]:
    url = f"http://127.0.0.1:{server.port}/api/v1/pipe/{name}?n={receivers}"
    payload_file: Optional[Path] = None
    if upload == "file":
        payload_file = workdir / "payload.bin"
        with open(payload_file, "wb") as f:
            remaining = size
            while remaining:
                piece = block[: min(len(block), remaining)]
                f.write(piece)
                remaining -= len(piece)

    def start_receivers() -> List[subprocess.Popen[bytes]]:
        procs = []
        for i in range(receivers):
            limit = ["--limit-rate", throttle] if throttle and i == 0 else []
            procs.append(
                subprocess.Popen(
                    [
                        "curl",
                        "-sS",
                        *limit,
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{size_download}",
                        url,
                    ],
                    stdout=subprocess.PIPE,
                )
            )
        return procs

    def start_sender() -> subprocess.Popen[bytes]:
        if payload_file is not None:
            return subprocess.Popen(
                ["curl", "-sS", "-T", str(payload_file), url], stdout=subprocess.PIPE
            )
        proc = subprocess.Popen(
            ["curl", "-sS", "-T", "-", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None
        threading.Thread(
            target=feed, args=(proc.stdin, size, block), daemon=True
        ).start()
        return proc

    rss_before = server.status_kib("VmRSS")
    hwm_before = server.status_kib("VmHWM")
    writes_before = server.io("write_bytes")
    cpu_before = server.cpu_seconds()
    peak = [rss_before]
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.is_set():
            try:
                peak[0] = max(peak[0], server.status_kib("VmRSS"))
            except (OSError, AssertionError):
                return
            stop_sampling.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    if order == "sender_first":
        sender = start_sender()
        time.sleep(0.2)  # the benchmark, not a test: let the sender register
        procs = start_receivers()
    else:
        procs = start_receivers()
        time.sleep(0.2)
        sender = start_sender()
    sizes = [int(p.communicate()[0] or 0) for p in procs]
    assert sender.stdout is not None
    sender_out = sender.stdout.read()
    sender.wait()
    wall = time.monotonic() - started
    stop_sampling.set()
    sampler.join()
    delivered = sum(sizes)
    cpu = server.cpu_seconds() - cpu_before
    ok = all(s == size for s in sizes) and sender.returncode == 0
    if payload_file is not None:
        payload_file.unlink()
    return {
        "scenario": name,
        "size_mib": size // MiB,
        "receivers": receivers,
        "upload": upload,
        "order": order,
        "throttle": throttle,
        "wall_s": round(wall, 3),
        "delivered_mib_s": round(delivered / MiB / wall, 1),
        "cpu_s_per_gib": round(cpu / (delivered / (1024 * MiB)), 3)
        if delivered
        else None,
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_peak_mib": round(peak[0] / 1024, 1),
        "rss_growth_mib": round((peak[0] - rss_before) / 1024, 1),
        "hwm_growth_mib": round((server.status_kib("VmHWM") - hwm_before) / 1024, 1),
        "disk_write_bytes": server.io("write_bytes") - writes_before,
        "all_bytes_ok": ok,
        "sender_last_line": sender_out.decode("ascii", "replace")
        .strip()
        .splitlines()[-1:],
    }


DEFAULT_SCENARIOS = [
    # (size MiB, receivers, upload, order, throttle)
    (256, 1, "file", "receivers_first", None),
    (256, 10, "stdin", "receivers_first", None),
    (256, 30, "file", "sender_first", None),
    (1024, 30, "stdin", "receivers_first", None),
    (64, 3, "stdin", "receivers_first", "4M"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, help="payload MiB")
    parser.add_argument("--receivers", type=int, default=3)
    parser.add_argument("--upload", choices=["file", "stdin"], default="stdin")
    parser.add_argument(
        "--order",
        choices=["sender_first", "receivers_first"],
        default="receivers_first",
    )
    parser.add_argument("--throttle", help="curl --limit-rate for receiver 1, e.g. 1M")
    args = parser.parse_args()
    scenarios = (
        [(args.size, args.receivers, args.upload, args.order, args.throttle)]
        if args.size
        else DEFAULT_SCENARIOS
    )
    block = os.urandom(BLOCK)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = Server(workdir)
        try:
            # Warm up: the first transfer allocates what every later one reuses.
            run(
                server,
                "warmup",
                8 * MiB,
                2,
                "stdin",
                "receivers_first",
                None,
                block,
                workdir,
            )
            results = []
            for i, (size, n, upload, order, throttle) in enumerate(scenarios):
                result = run(
                    server,
                    f"run{i}",
                    size * MiB,
                    n,
                    upload,
                    order,
                    throttle,
                    block,
                    workdir,
                )
                results.append(result)
                print(json.dumps(result), flush=True)
        finally:
            server.stop()
    print()
    columns = [
        ("MiB", "size_mib", 6),
        ("n", "receivers", 4),
        ("upload", "upload", 6),
        ("order", "order", 15),
        ("throttle", "throttle", 8),
        ("wall s", "wall_s", 8),
        ("MiB/s", "delivered_mib_s", 8),
        ("CPU s/GiB", "cpu_s_per_gib", 9),
        ("RSS MiB", "rss_before_mib", 8),
        ("+peak", "rss_growth_mib", 6),
        ("disk", "disk_write_bytes", 5),
        ("ok", "all_bytes_ok", 5),
    ]
    print(" ".join(f"{title:>{width}}" for title, _, width in columns))
    for r in results:
        print(" ".join(f"{r[key]!s:>{width}}" for _, key, width in columns))


if __name__ == "__main__":
    main()
