#!/usr/bin/env python3
"""
Soak: run a real C{twistd -n pipe} with short timeouts for a bounded time
under a mix of normal transfers, crashed senders, crashed and stalled
receivers, receivers that stop reading or die at the very end (after the
server wrote the last byte, before they took it), wait timeouts, idle
senders and rejections; then check that the server holds no pipe and no
party, that its RSS is within a few MiB of where it started, and that no
sender was told "done" for a receiver that never took its last bytes.

    python bench/soak.py                 # 120 s, prints numbers
    python bench/soak.py --duration 60 --check   # exit 1 if a check fails

Every loop is bounded by the duration; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, List

from _twistd import Server


def curl(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["curl", "-sS", "-m", "30", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **kwargs,  # type: ignore[call-overload]
    )


def scenario_normal(base: str, payload: Path, tag: str) -> None:
    url = f"{base}/{tag}?n=3"
    procs = [curl(url) for _ in range(3)] + [curl("-T", str(payload), url)]
    for p in procs:
        p.wait()


def scenario_crashed_sender(base: str, payload: Path, tag: str) -> None:
    url = f"{base}/{tag}?n=2"
    receivers = [curl("--limit-rate", "4M", url) for _ in range(2)]
    sender = curl("-T", str(payload.with_name("big.bin")), url)
    time.sleep(0.3)
    sender.kill()
    for p in receivers:
        p.wait()
    sender.wait()


def scenario_crashed_receiver(base: str, payload: Path, tag: str) -> None:
    url = f"{base}/{tag}?n=2"
    good = curl(url)
    doomed = curl("--limit-rate", "1M", url)
    sender = curl("-T", str(payload.with_name("big.bin")), url)
    time.sleep(0.3)
    doomed.kill()
    for p in (good, sender, doomed):
        p.wait()


def scenario_stalled_receiver(base: str, payload: Path, tag: str, port: int) -> None:
    url = f"{base}/{tag}?n=2"
    held = socket.create_connection(("127.0.0.1", port))
    held.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    held.sendall(f"GET /api/v1/pipe/{tag}?n=2 HTTP/1.1\r\nHost: s\r\n\r\n".encode())
    good = curl(url)
    sender = curl("-T", str(payload), url)
    good.wait()
    sender.wait()
    held.close()


#: Senders told "done" although a receiver never took its last bytes.
VIOLATIONS: List[str] = []


def _held_receiver(port: int, tag: str, n: int) -> socket.socket:
    """
    A receiver with a small receive buffer that reads nothing until told:
    the kernels hold what the server wrote to it.
    """
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    held.connect(("127.0.0.1", port))
    held.sendall(f"GET /api/v1/pipe/{tag}?n={n} HTTP/1.1\r\nHost: s\r\n\r\n".encode())
    return held


def _read(sock: socket.socket, count: int) -> None:
    sock.settimeout(10)
    got = 0
    while got < count:
        data = sock.recv(min(65536, count - got))
        if not data:
            return
        got += len(data)


def scenario_receiver_stops_at_the_end(
    base: str, payload: Path, tag: str, port: int
) -> None:
    """
    A receiver reads all but the last megabytes, then stops: the server
    has written everything, the stall timeout drops the receiver, and the
    sender must fail.
    """
    url = f"{base}/{tag}?n=2"
    held = _held_receiver(port, tag, 2)
    good = curl(url)
    sender = curl("-T", str(payload), url)
    try:
        _read(held, payload.stat().st_size - 2 * 1024 * 1024)
    except OSError:
        pass
    if sender.wait() == 0:
        VIOLATIONS.append(f"{tag}: done although a receiver stopped at the end")
    good.wait()
    held.close()


def scenario_receiver_dies_after_the_last_byte(
    base: str, payload: Path, tag: str, port: int
) -> None:
    """
    The server writes a 1 MiB response into the kernels at once; the
    receiver dies (reset) before taking it: the sender must fail.
    """
    url = f"{base}/{tag}?n=2"
    small = payload.with_name("small.bin")
    held = _held_receiver(port, tag, 2)
    good = curl(url)
    sender = curl("-T", str(small), url)
    time.sleep(0.3)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    held.close()
    if sender.wait() == 0:
        VIOLATIONS.append(f"{tag}: done although a receiver died before the end")
    good.wait()


def scenario_wait_timeout(base: str, payload: Path, tag: str) -> None:
    curl(f"{base}/{tag}?n=2&wait=1").wait()
    curl("-T", str(payload), f"{base}/{tag}s?n=2&wait=1").wait()


def scenario_idle_sender(base: str, payload: Path, tag: str, port: int) -> None:
    receiver = curl(f"{base}/{tag}")
    sender = socket.create_connection(("127.0.0.1", port))
    sender.sendall(
        f"PUT /api/v1/pipe/{tag} HTTP/1.1\r\nHost: s\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".encode()
    )
    receiver.wait()
    sender.settimeout(10)
    try:
        while sender.recv(65536):
            pass
    except OSError:
        pass
    sender.close()


def scenario_rejections(base: str, payload: Path, tag: str) -> None:
    for query in ("n=0", "n=abc", "n=1&n=2", "wait=x"):
        curl(f"{base}/{tag}?{query}").wait()
    curl("-X", "DELETE", f"{base}/{tag}").wait()
    first = curl(f"{base}/{tag}?n=2")
    time.sleep(0.1)
    curl(f"{base}/{tag}?n=3").wait()
    first.kill()
    first.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--check", action="store_true", help="exit 1 on a failure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        payload = workdir / "payload.bin"
        payload.write_bytes(os.urandom(4 * 1024 * 1024))
        # Crash scenarios need an upload that outlasts the kernel's buffers.
        payload.with_name("big.bin").write_bytes(os.urandom(32 * 1024 * 1024))
        payload.with_name("small.bin").write_bytes(os.urandom(1024 * 1024))
        server = Server(
            workdir,
            [
                "--stall-timeout",
                "1",
                "--idle-timeout",
                "1",
                "--wait-timeout",
                "5",
                "--header-timeout",
                "5",
            ],
        )
        base = f"http://127.0.0.1:{server.port}/api/v1/pipe"
        port = server.port
        scenarios: List[Callable[[str], None]] = [
            lambda tag: scenario_normal(base, payload, tag),
            lambda tag: scenario_crashed_sender(base, payload, tag),
            lambda tag: scenario_crashed_receiver(base, payload, tag),
            lambda tag: scenario_stalled_receiver(base, payload, tag, port),
            lambda tag: scenario_receiver_stops_at_the_end(base, payload, tag, port),
            lambda tag: scenario_receiver_dies_after_the_last_byte(
                base, payload, tag, port
            ),
            lambda tag: scenario_wait_timeout(base, payload, tag),
            lambda tag: scenario_idle_sender(base, payload, tag, port),
            lambda tag: scenario_rejections(base, payload, tag),
        ]
        counts = [0] * args.workers

        def run_workers(seconds: float) -> None:
            deadline = time.monotonic() + seconds

            def worker(w: int) -> None:
                rng = random.Random(w * 7919 + int(seconds))
                while time.monotonic() < deadline:
                    rng.choice(scenarios)(f"w{w}-{counts[w]}")
                    counts[w] += 1

            threads = [
                threading.Thread(target=worker, args=(w,)) for w in range(args.workers)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        # Warm up under the same load first: the baseline is the RSS of a
        # server that has already served this mix (allocator arenas, buffers),
        # so growth afterwards means memory held per transfer.
        for i, run in enumerate(scenarios):
            run(f"warm{i}")
        run_workers(min(20.0, args.duration / 4))
        time.sleep(1)
        baseline = server.status_kib("VmRSS")
        run_workers(args.duration)
        # Let stragglers (timeouts, resets) settle.
        settle = time.monotonic() + 15
        status = server.status()
        while time.monotonic() < settle and (
            status["pipes_waiting"] or status["pipes_running"]
        ):
            time.sleep(0.5)
            status = server.status()
        time.sleep(1)
        status = server.status()
        final = server.status_kib("VmRSS")
        server.stop()
    growth_mib = (final - baseline) / 1024
    result = {
        "duration_s": args.duration,
        "scenarios_run": sum(counts),
        "rss_baseline_mib": round(baseline / 1024, 1),
        "rss_final_mib": round(final / 1024, 1),
        "rss_growth_mib": round(growth_mib, 1),
        "pipes_waiting": status["pipes_waiting"],
        "pipes_running": status["pipes_running"],
        "senders_connected": status["senders_connected"],
        "receivers_connected": status["receivers_connected"],
        "transfers": status["transfers"],
        "false_successes": VIOLATIONS,
    }
    print(json.dumps(result, indent=2))
    ok = (
        status["pipes_waiting"] == 0
        and status["pipes_running"] == 0
        and status["senders_connected"] == 0
        and status["receivers_connected"] == 0
        and growth_mib <= 8
        and sum(counts) > 0
        and not VIOLATIONS
    )
    print("soak:", "ok" if ok else "FAILED")
    if args.check and not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
