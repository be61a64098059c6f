#!/usr/bin/env python3
"""
Side-by-side benchmark: txpipe (C{twistd -n pipe}) against nwtgck's
piping-server 1.x, over loopback, with the same clients, interleaved run by
run (txpipe, piping-server, txpipe, piping-server, ...) so that any drift of
the machine hits both.  It measures; it asserts nothing: the exit status is
0 whatever the numbers say (2 only when the peer is missing).

    python bench/compare.py                      # everything, 5-20 minutes
    python bench/compare.py --quick              # a smoke run, under 2 minutes
    python bench/compare.py --only tiny,scale --json /tmp/compare.jsonl
    python bench/compare.py --no-peer            # txpipe alone
    python bench/compare.py --no-peer --baseline /tmp/old/bin/python
                                                 # before/after, interleaved

Options: C{--reps K} (fanout, throttled, tiny; default 3), C{--concurrent-reps
K} (default 20), C{--scale-reps K} (default 1), C{--only NAME[,NAME]},
C{--quick} (sizes cut to 32 MiB, 16 MiB, 1 GiB, 200 tiny transfers, 2,000
waiting and n=200 in C{scale}, one repetition, two of C{concurrent}),
C{--no-peer}, C{--json FILE} (the same JSON lines, also to FILE),
C{--baseline PYTHON} (also run the txpipe installed for that interpreter,
e.g. a venv with the previous commit, as C{txpipe-baseline}, interleaved;
the table adds C{txpipe/base}).  Servers take turns at going first, one
repetition to the next.

The peer is installed once, outside git (C{bench/peer/} is ignored):

    mkdir -p bench/peer && cd bench/peer && npm install piping-server@1

Without it the script prints that command and exits 2, unless C{--no-peer}.
It runs as C{piping-server --host 127.0.0.1 --http-port PORT} on a free port
(the script's shebang starts node itself, so its pid is the server's); its
URLs are C{/<path>?n=N} where txpipe's are C{/api/v1/pipe/<path>?n=N}.

One server of each kind, started at the beginning and warmed up with one
8 MiB transfer to 2 receivers, serves every scenario except C{scale}, which
starts a fresh (warmed-up) server of each kind per run so that its RSS
figures start from an idle process; txpipe's gets C{--max-pipes 20000}
(default 10,000; C{--max-receivers} defaults to 1000, passed explicitly).
The open-files soft limit is raised to the hard limit first, and the
servers inherit it.  Every transfer uses a path of its own.

Scenarios:

  - C{fanout}: one curl sender, N curl receivers (C{curl -sS -o /dev/null -w
    %{size_download}}) with N = 1, 10, 30, 256 MiB, sent with C{-T file} (a
    file in /dev/shm, written once) and with C{-T -} (a 64 MiB random block
    repeated into curl's stdin by a thread), receivers first or sender first
    (the second group 0.2 s after the first): 12 parameter sets.
  - C{throttled}: 3 receivers, the first with C{--limit-rate 5M}, 64 MiB
    C{-T -}, receivers first.  Also C{receiver_finish_s} (each receiver's
    finish, from the transfer's start), C{slow_finish_s} and
    C{fast_early_s}: how long before the slow receiver the first fast one
    finished (small when the server paces all receivers to the slowest; what
    remains is what kernel socket buffers hold).
  - C{tiny}: 1 KiB, n=1, Python C{http.client}, new connections each time:
    the receiver's GET is sent, then the sender's PUT (with Content-Length),
    then the receiver's response is read, then the sender's; latency is from
    the start to both read, and the body must equal the payload.  Both
    servers accept either arrival order; the GET is simply sent first.
    C{threads=1}: 1000 transfers in sequence; C{threads=20}: 20 threads, each
    the same loop on its own paths, 1000 in all.  20 warm-up transfers
    first.  C{transfers_per_s}, C{p50_ms}, C{p99_ms}, C{cpu_ms_per_transfer}.
  - C{concurrent}: 50 pipes at once, each 3 receivers of 4 MiB of its own
    content (the random block from a different offset, C{-T file}), all 200
    curls started in one go; each repetition runs it once receivers first
    and once senders first (C{order}), so C{--concurrent-reps 20} is 10 of
    each.  Receivers' stdout is hashed (SHA-256) by a thread; after 60 s what
    is left is killed and counted as hung.  C{failures} (failed parties),
    C{failed_pipes}, C{hung}, C{failure_kinds} (hung, truncated, hash
    mismatch, curl exit code).
  - C{scale}, C{part=waiting}: 10,000 receivers on 10,000 paths as raw
    non-blocking sockets (C{selectors}), each sending its GET; wait until the
    server's open files (/proc/PID/fd) grew by 10,000 (give or take 10) or
    30 s (C{reached_s}), 1 s more, then C{rss_held_mib} and
    C{kib_per_receiver}; C{answered_early} counts sockets the server answered
    or closed meanwhile (should be 0).  Then all close, and C{released_s} is
    how long the server took to fall back to its files before.
  - C{scale}, C{part=fanout}: one pipe, n=1000 raw-socket receivers
    (C{Connection: close}), all connected first, then one C{http.client}
    sender of 1 MiB; C{time_s} from the sender's start until every receiver
    read to EOF (the Python client reading 1000 sockets is a large part of
    it); each response parsed (status, Content-Length or chunked) and its
    body's SHA-256 checked: C{completed}.
  - C{big}: 4 GiB C{-T -} to 3 curl receivers, 1 repetition per server:
    C{rss_before_mib}, C{rss_peak_mib}, C{rss_end_mib}, C{rss_timeline_mib}
    (about 40 samples), and C{fanout_256_rss_growth_mib}, the median RSS
    growth of the same server in this invocation's 256 MiB fan-out runs.

Per run it prints one JSON line (C{server}, C{scenario}, C{params}, C{rep},
C{fresh_server}, then the metrics).  Common metrics: C{wall_s} (for curl
transfers, from the start of the group that completes the pipe, so the
0.2 s between the groups is not counted); C{delivered_mib_s} (bytes all
receivers got, summed, over C{wall_s}); C{cpu_s} and C{cpu_s_per_gib}
(server utime+stime from /proc/PID/stat, 10 ms resolution, per GiB
delivered); C{rss_before_mib}; C{rss_peak_mib} (VmRSS sampled every 50 ms
by a thread); C{hwm_peak_mib} (VmHWM, reset through /proc/PID/clear_refs
at the start: the exact peak); C{rss_growth_mib} (sampled peak minus
before); C{rss_end_mib}; C{write_bytes} (server disk writes, /proc/PID/io);
C{ok}: every receiver got exactly the right bytes (byte count, or SHA-256
in C{concurrent} and C{scale}) and every client ended well (curl exit 0,
status 200); C{problems} or C{errors} say what did not.  Lines of either
server's log that look like trouble (errors, transfers that did not
complete, aborted receivers) are printed as C{{"server_log": ...}}.

At the end a table gives, per scenario, parameter set and server, how many
runs were ok, and the median and (min..max) of the main metrics, with the
ratio of the medians txpipe/piping-server; then the same as
C{{"summary": ...}} JSON lines.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import hashlib
import http.client
import importlib.metadata
import json
import math
import os
import resource
import secrets
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

from _twistd import ChildServer, Server

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = 64 * MiB
BENCH = Path(__file__).resolve().parent
PEER = BENCH / "peer" / "node_modules" / ".bin" / "piping-server"
PEER_INSTALL = "mkdir -p bench/peer && cd bench/peer && npm install piping-server@1"
TXPIPE = "txpipe"
PEER_NAME = "piping-server"
#: With C{--baseline PYTHON}: txpipe as installed for that interpreter.
BASELINE = "txpipe-baseline"

Params = Dict[str, Any]
Metrics = Dict[str, Any]


# -- servers ---------------------------------------------------------------


class PipingServer(ChildServer):
    """nwtgck's piping-server (node) on a free loopback port."""

    name = PEER_NAME
    prefix = "/"

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        # The script's shebang runs node itself: this pid is the server's.
        self.process = subprocess.Popen(
            [str(PEER), "--host", "127.0.0.1", "--http-port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.drain_in_background()
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"piping-server exited: {b''.join(self.tail)!r}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(
                        "piping-server did not accept connections"
                    ) from None
                time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- measuring -------------------------------------------------------------


class Meter:
    """
    Measure one server over one run: CPU, disk writes, RSS before, sampled
    every 50 ms by a thread (peak, and with C{timeline} every sample), the
    exact peak through VmHWM, and the wall time until L{stop}.
    """

    def __init__(self, server: ChildServer, timeline: bool = False) -> None:
        self.server = server
        self.timeline = timeline
        self.samples: List[Tuple[float, int]] = []
        self.wall: Optional[float] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Meter:
        server = self.server
        self.rss_before = server.status_kib("VmRSS")
        self.peak = self.rss_before
        self.hwm_reset = server.reset_peak_rss()
        self.writes_before = server.io("write_bytes")
        self.cpu_before = server.cpu_seconds()
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.server.status_kib("VmRSS")
            except (OSError, AssertionError):
                return
            self.peak = max(self.peak, rss)
            if self.timeline:
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(0.05)

    def stop(self) -> None:
        """End the measured span (idempotent)."""
        if self.wall is not None:
            return
        self.wall = time.monotonic() - self.started
        self._stop.set()
        self._thread.join()
        server = self.server
        self.rss_end = server.status_kib("VmRSS")
        self.peak = max(self.peak, self.rss_end)
        self.hwm = server.status_kib("VmHWM") if self.hwm_reset else None
        self.cpu = server.cpu_seconds() - self.cpu_before
        self.writes = server.io("write_bytes") - self.writes_before

    def metrics(self, delivered: int) -> Metrics:
        """The common metrics, given the bytes all receivers got."""
        self.stop()
        assert self.wall is not None
        return {
            "wall_s": round(self.wall, 3),
            "delivered_mib_s": round(delivered / MiB / self.wall, 1),
            "cpu_s": round(self.cpu, 3),
            "cpu_s_per_gib": round(self.cpu / (delivered / GiB), 3)
            if delivered
            else None,
            "rss_before_mib": mib(self.rss_before),
            "rss_peak_mib": mib(self.peak),
            "hwm_peak_mib": None if self.hwm is None else mib(self.hwm),
            "rss_growth_mib": mib(self.peak - self.rss_before),
            "rss_end_mib": mib(self.rss_end),
            "write_bytes": self.writes,
        }


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def percentile(values: List[float], p: float) -> Optional[float]:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# -- curl parties ----------------------------------------------------------


def feed(stdin: IO[bytes], size: int, block: bytes, offset: int = 0) -> None:
    """Write C{size} bytes of C{block} repeated (from C{offset}), then close."""
    try:
        view = memoryview(block)
        remaining = size
        position = offset % len(block)
        while remaining:
            piece = view[position : position + remaining]
            stdin.write(piece)
            remaining -= len(piece)
            position = 0
    except (BrokenPipeError, ValueError):
        pass
    finally:
        try:
            stdin.close()
        except BrokenPipeError:
            pass


class Curl:
    """
    One curl process.  A thread collects its output (or, with C{digest}, the
    byte count and SHA-256 of its stdout), its exit status and the moment it
    ended; with C{payload} another thread feeds its stdin.
    """

    def __init__(
        self,
        role: str,
        args: List[str],
        payload: Optional[Tuple[int, bytes, int]] = None,
        digest: bool = False,
    ) -> None:
        self.role = role
        self.digest = digest
        self.out = b""
        self.err = b""
        self.nbytes = 0
        self.sha256: Optional[str] = None
        self.returncode: Optional[int] = None
        self.finished: Optional[float] = None
        self.hung = False
        self.proc = subprocess.Popen(
            ["curl", "-sS", *args],
            stdin=subprocess.PIPE if payload else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()
        if payload:
            assert self.proc.stdin is not None
            threading.Thread(
                target=feed, args=(self.proc.stdin, *payload), daemon=True
            ).start()

    def _collect(self) -> None:
        stdout, stderr = self.proc.stdout, self.proc.stderr
        assert stdout is not None and stderr is not None
        if self.digest:
            sha = hashlib.sha256()
            while True:
                chunk = os.read(stdout.fileno(), MiB)
                if not chunk:
                    break
                sha.update(chunk)
                self.nbytes += len(chunk)
            self.sha256 = sha.hexdigest()
        else:
            self.out = stdout.read()
        self.err = stderr.read()
        self.returncode = self.proc.wait()
        self.finished = time.monotonic()

    def join(self, deadline: float) -> bool:
        """Wait until C{deadline}; C{False} if it is still running."""
        self._collector.join(max(0.0, deadline - time.monotonic()))
        return not self._collector.is_alive()

    def kill(self) -> None:
        self.hung = True
        self.proc.kill()
        self._collector.join()

    def size_download(self) -> int:
        """The byte count that C{-w %{size_download}} printed."""
        try:
            return int(self.out.split()[-1])
        except (IndexError, ValueError):
            return -1

    def last_line(self) -> str:
        lines = self.out.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else self.err.decode("utf-8", "replace").strip()


def receiver_curl(url: str, limit: Optional[str] = None, digest: bool = False) -> Curl:
    rate = [] if limit is None else ["--limit-rate", limit]
    if digest:
        return Curl("receiver", [*rate, url], digest=True)
    return Curl("receiver", [*rate, "-o", "/dev/null", "-w", "%{size_download}", url])


def sender_curl(
    url: str, upload: Optional[Path], size: int, block: bytes, offset: int = 0
) -> Curl:
    if upload is not None:
        return Curl("sender", ["-T", str(upload), url])
    return Curl("sender", ["-T", "-", url], payload=(size, block, offset))


def wait_all(parties: List[Curl], deadline: float) -> int:
    """Wait for every party until C{deadline}, kill the rest; how many hung."""
    hung = 0
    for party in parties:
        if not party.join(deadline):
            party.kill()
            hung += 1
    return hung


def curl_pipe(
    url: str,
    n: int,
    size: int,
    block: bytes,
    order: str,
    upload: Optional[Path] = None,
    limits: Optional[Dict[int, str]] = None,
) -> Tuple[Curl, List[Curl], float]:
    """
    Start one curl sender and C{n} byte-counting curl receivers, one group
    0.2 s after the other; also return when the second group (the one that
    completes the pipe, so starts the transfer) was started.
    """

    def receivers() -> List[Curl]:
        return [receiver_curl(url, (limits or {}).get(i)) for i in range(n)]

    if order == "sender_first":
        sender = sender_curl(url, upload, size, block)
        time.sleep(0.2)  # the benchmark, not a test: let the sender register
        second = time.monotonic()
        return sender, receivers(), second
    started = receivers()
    time.sleep(0.2)
    second = time.monotonic()
    return sender_curl(url, upload, size, block), started, second


def transfer_timeout(delivered: int) -> float:
    """A hang guard far above any plausible time."""
    return 120 + delivered / (20 * MiB)


def counted_outcome(size: int, sender: Curl, receivers: List[Curl]) -> Metrics:
    """C{ok}, the bytes delivered and what went wrong, for byte counts."""
    sizes = [r.size_download() for r in receivers]
    bad = [
        f"{p.role} {i}: " + ("hung" if p.hung else f"curl exit {p.returncode}")
        for i, p in enumerate([sender, *receivers])
        if p.hung or p.returncode != 0
    ]
    bad += [f"receiver {i}: {s} bytes" for i, s in enumerate(sizes) if s != size]
    return {
        "delivered": sum(max(0, s) for s in sizes),
        "ok": not bad,
        "problems": bad[:10],
        "sender_last_line": sender.last_line()[:200],
    }


# -- the run ---------------------------------------------------------------


@dataclass
class Bench:
    """What every scenario shares: options, payload, work directory, output."""

    args: argparse.Namespace
    block: bytes
    workdir: Path
    kinds: List[str]
    json_file: Optional[IO[str]] = None
    records: List[Dict[str, Any]] = field(default_factory=list)
    started: List[ChildServer] = field(default_factory=list)
    _files: Dict[str, Path] = field(default_factory=dict)
    _digests: Dict[Path, str] = field(default_factory=dict)
    _run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    _counter: int = 0

    def path(self, scenario: str) -> str:
        """A pipe path never used before in this invocation."""
        self._counter += 1
        return f"{scenario}-{self._run_id}-{self._counter}"

    def payload_file(self, name: str, size: int, offset: int = 0) -> Path:
        """A file of C{size} bytes of the block (from C{offset}), made once."""
        key = f"{name}-{size}-{offset}"
        if key not in self._files:
            target = self.workdir / f"{key}.payload"
            with open(target, "wb") as f:
                feed(f, size, self.block, offset)
            self._files[key] = target
        return self._files[key]

    def start(
        self, kind: str, txpipe_options: Optional[List[str]] = None
    ) -> ChildServer:
        """Start a server of C{kind} and warm it up with one small transfer."""
        server: ChildServer
        if kind == TXPIPE:
            server = Server(self.workdir, txpipe_options)
        elif kind == BASELINE:
            server = Server(
                self.workdir, txpipe_options, python=self.args.baseline, name=BASELINE
            )
        else:
            server = PipingServer()
        self.started.append(server)
        url = server.url(self.path("warmup"), 2)
        sender, receivers, _ = curl_pipe(url, 2, 8 * MiB, self.block, "receivers_first")
        wait_all([sender, *receivers], time.monotonic() + 60)
        outcome = counted_outcome(8 * MiB, sender, receivers)
        if not outcome["ok"]:
            self.write({"warmup_failed": server.name, **outcome})
        return server

    def digest(self, path: Path) -> str:
        """The SHA-256 of a payload file, computed once."""
        if path not in self._digests:
            self._digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        return self._digests[path]

    def emit(self, record: Dict[str, Any]) -> None:
        """Print one run's record and keep it for the summary."""
        self.records.append(record)
        self.write(record)

    def write(self, document: Dict[str, Any]) -> None:
        """Print one JSON line, also to the C{--json} file."""
        line = json.dumps(document)
        print(line, flush=True)
        if self.json_file is not None:
            self.json_file.write(line + "\n")
            self.json_file.flush()


# -- scenarios -------------------------------------------------------------


def run_fanout(bench: Bench, server: ChildServer, params: Params) -> Metrics:
    size = params["size_mib"] * MiB
    n = params["receivers"]
    upload = bench.payload_file("fanout", size) if params["upload"] == "file" else None
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


class RawReceivers:
    """
    Raw non-blocking sockets, each sending one GET and keeping what comes
    back, driven by one C{selectors} loop.
    """

    def __init__(self, port: int, requests: List[bytes]) -> None:
        self.selector = selectors.DefaultSelector()
        self.pending: Dict[socket.socket, bytes] = {}
        self.received: Dict[socket.socket, List[bytes]] = {}
        self.eof: Dict[socket.socket, float] = {}
        self.failed_connects = 0
        for request in requests:
            sock = socket.socket()
            sock.setblocking(False)
            err = sock.connect_ex(("127.0.0.1", port))
            if err not in (0, errno.EINPROGRESS):
                self.failed_connects += 1
                sock.close()
                continue
            self.pending[sock] = request
            self.received[sock] = []
            self.selector.register(sock, selectors.EVENT_WRITE)

    @property
    def sent(self) -> int:
        return len(self.received) - len(self.pending)

    def poll(self, timeout: float) -> None:
        """Send what can be sent, read what arrived, for up to C{timeout}."""
        for key, events in self.selector.select(timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if events & selectors.EVENT_WRITE:
                self._write(sock)
            elif events & selectors.EVENT_READ:
                self._read(sock)

    def _write(self, sock: socket.socket) -> None:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.failed_connects += 1
            self._finish(sock)
            del self.pending[sock]
            return
        try:
            written = sock.send(self.pending[sock])
        except OSError:
            self.failed_connects += 1
            self._finish(sock)
            del self.pending[sock]
            return
        rest = self.pending[sock][written:]
        if rest:
            self.pending[sock] = rest
        else:
            del self.pending[sock]
            self.selector.modify(sock, selectors.EVENT_READ)

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(256 * 1024)
        except OSError:
            data = b""
        if data:
            self.received[sock].append(data)
        else:
            self._finish(sock)

    def _finish(self, sock: socket.socket) -> None:
        self.eof[sock] = time.monotonic()
        self.selector.unregister(sock)

    def answered(self) -> int:
        """How many got any byte back or were closed by the server."""
        return sum(1 for s, data in self.received.items() if data or s in self.eof)

    def close(self) -> None:
        for sock in self.received:
            if sock not in self.eof:
                self.selector.unregister(sock)
            sock.close()
        self.selector.close()


def run_scale_waiting(bench: Bench, server: ChildServer, params: Params) -> Metrics:
    count = params["receivers"]
    host = f"Host: 127.0.0.1:{server.port}\r\n"
    requests = [
        f"GET {server.prefix}{bench.path('scale')}?n=1 HTTP/1.1\r\n{host}\r\n".encode()
        for _ in range(count)
    ]
    fds_before = server.fd_count()
    with Meter(server) as meter:
        clients = RawReceivers(server.port, requests)
        deadline = meter.started + 30
        reached: Optional[float] = None
        next_check = 0.0
        while time.monotonic() < deadline:
            clients.poll(0.02)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.1
                # Give or take a few files of its own the server may close.
                if server.fd_count() >= fds_before + count - 10:
                    reached = now - meter.started
                    break
        settle = time.monotonic() + 1
        while time.monotonic() < settle:
            clients.poll(0.05)
        fds_held = server.fd_count()
        rss_held = server.status_kib("VmRSS")
        answered = clients.answered()
        closing = time.monotonic()
        clients.close()
        released: Optional[float] = None
        while time.monotonic() < closing + 30:
            if server.fd_count() <= fds_before + 2:
                released = time.monotonic() - closing
                break
            time.sleep(0.05)
        meter.stop()
    fds_after = server.fd_count()
    return {
        **meter.metrics(0),
        "receivers": count,
        "requests_sent": clients.sent,
        "failed_connects": clients.failed_connects,
        "fds_before": fds_before,
        "fds_held": fds_held,
        "reached_s": None if reached is None else round(reached, 2),
        "rss_held_mib": mib(rss_held),
        "rss_held_growth_mib": mib(rss_held - meter.rss_before),
        "kib_per_receiver": round((rss_held - meter.rss_before) / count, 2),
        "answered_early": answered,
        "fds_after": fds_after,
        "released_s": None if released is None else round(released, 2),
        "ok": reached is not None and not answered and released is not None,
    }


def parse_response(raw: bytes) -> Tuple[int, bytes, str]:
    """Status, body and a problem (or C{""}) of one raw HTTP/1.1 response."""
    head, found, rest = raw.partition(b"\r\n\r\n")
    if not found:
        return 0, b"", "no end of headers"
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return 0, b"", f"bad status line {lines[0][:60]!r}"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return (status, *dechunk(rest))
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        if len(rest) != length:
            return status, rest, f"{len(rest)} of {length} bytes"
        return status, rest, ""
    return status, rest, ""


def dechunk(data: bytes) -> Tuple[bytes, str]:
    """Decode a chunked body: the body, and a problem or C{""}."""
    body: List[bytes] = []
    position = 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            return b"".join(body), "truncated chunk size"
        size = int(data[position:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(body), ""
        chunk = data[end + 2 : end + 2 + size]
        if len(chunk) < size:
            return b"".join(body) + chunk, "truncated chunk"
        body.append(chunk)
        position = end + 2 + size + 2


def run_scale_fanout(bench: Bench, server: ChildServer, params: Params) -> Metrics:
    n = params["receivers"]
    payload = bench.block[: params["size_mib"] * MiB]
    digest = hashlib.sha256(payload).hexdigest()
    target = f"{server.prefix}{bench.path('scale-fanout')}?n={n}"
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    fds_before = server.fd_count()
    sent: Dict[str, Any] = {}

    def send() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            conn.request(
                "PUT",
                target,
                body=payload,
                headers={"Content-Length": str(len(payload))},
            )
            response = conn.getresponse()
            sent["status"] = response.status
            sent["last_line"] = response.read().decode("utf-8", "replace").strip()
            sent["last_line"] = sent["last_line"].splitlines()[-1][:200]
        except (OSError, http.client.HTTPException, IndexError) as e:
            sent["error"] = f"{type(e).__name__}: {e}"
        finally:
            conn.close()

    with Meter(server) as meter:
        clients = RawReceivers(server.port, [request] * n)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            clients.poll(0.02)
            if not clients.pending and server.fd_count() >= fds_before + n - 10:
                break
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            clients.poll(0.05)
        started = time.monotonic()
        sender = threading.Thread(target=send)
        sender.start()
        deadline = started + 60
        while len(clients.eof) < len(clients.received) and time.monotonic() < deadline:
            clients.poll(0.05)
        last_eof = max(clients.eof.values(), default=started)
        sender.join(max(0.0, deadline - time.monotonic()))
        meter.stop()
    completed = 0
    problems: Dict[str, int] = {}
    for sock, chunks in clients.received.items():
        status, body, problem = parse_response(b"".join(chunks))
        if sock not in clients.eof:
            problem = "no EOF"
        elif status != 200:
            problem = problem or f"status {status}"
        elif not problem and hashlib.sha256(body).hexdigest() != digest:
            problem = "hash mismatch"
        if problem:
            problems[problem] = problems.get(problem, 0) + 1
        else:
            completed += 1
    clients.close()
    took = last_eof - started
    return {
        **meter.metrics(completed * len(payload)),
        "time_s": round(took, 3),
        "receivers": n,
        "completed": completed,
        "problems": problems,
        "failed_connects": clients.failed_connects,
        "sender_status": sent.get("status"),
        "sender_last_line": sent.get("last_line", sent.get("error")),
        "ok": completed == n and sent.get("status") == 200,
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


@dataclass
class Scenario:
    """A named scenario: its parameter sets, repetitions and summary."""

    name: str
    run: Callable[[Bench, ChildServer, Params], Metrics]
    param_sets: Callable[[argparse.Namespace], List[Params]]
    reps: Callable[[argparse.Namespace], int]
    summary: List[Tuple[str, str]]
    fresh: bool = False
    txpipe_options: List[str] = field(default_factory=list)


def fanout_sets(args: argparse.Namespace) -> List[Params]:
    return [
        {"size_mib": 32 if args.quick else 256, "receivers": n, "upload": u, "order": o}
        for n in (1, 10, 30)
        for u in ("file", "stdin")
        for o in ("receivers_first", "sender_first")
    ]


THROUGHPUT = [
    ("delivered_mib_s", "MiB/s"),
    ("wall_s", "wall s"),
    ("cpu_s_per_gib", "CPU s/GiB"),
    ("rss_peak_mib", "peak RSS MiB"),
    ("hwm_peak_mib", "VmHWM MiB"),
    ("rss_growth_mib", "RSS growth MiB"),
    ("write_bytes", "disk writes"),
]

SCENARIOS = [
    Scenario("fanout", run_fanout, fanout_sets, lambda a: a.reps, THROUGHPUT),
    Scenario(
        "throttled",
        run_throttled,
        lambda a: [{"size_mib": 16 if a.quick else 64, "receivers": 3, "limit": "5M"}],
        lambda a: a.reps,
        [
            ("wall_s", "wall s"),
            ("slow_finish_s", "slow done s"),
            ("fast_early_s", "fast early s"),
            ("cpu_s_per_gib", "CPU s/GiB"),
            ("rss_peak_mib", "peak RSS MiB"),
            ("rss_growth_mib", "RSS growth MiB"),
        ],
    ),
    Scenario(
        "tiny",
        run_tiny,
        lambda a: [
            {"size": 1024, "count": a.tiny_count, "threads": t} for t in (1, 20)
        ],
        lambda a: a.reps,
        [
            ("transfers_per_s", "transfers/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("cpu_ms_per_transfer", "CPU ms/transfer"),
            ("rss_peak_mib", "peak RSS MiB"),
            ("failures", "failures"),
        ],
    ),
    Scenario(
        "concurrent",
        run_concurrent,
        lambda a: [
            {
                "pipes": 50,
                "receivers": 3,
                "size_mib": 4,
                "upload": "file",
                "order": order,
                "timeout_s": 60,
            }
            for order in ("receivers_first", "senders_first")
        ],
        lambda a: max(1, a.concurrent_reps // 2),
        [
            ("wall_s", "wall s"),
            ("failures", "failed parties"),
            ("failed_pipes", "failed pipes"),
            ("hung", "hung parties"),
            ("delivered_mib_s", "MiB/s"),
            ("cpu_s_per_gib", "CPU s/GiB"),
            ("rss_peak_mib", "peak RSS MiB"),
        ],
    ),
    Scenario(
        "scale",
        lambda b, s, p: SCALE_RUNS[p["part"]](b, s, p),
        lambda a: [
            {"part": "waiting", "receivers": 2000 if a.quick else 10_000},
            {"part": "fanout", "receivers": 200 if a.quick else 1000, "size_mib": 1},
        ],
        lambda a: a.scale_reps,
        [
            ("rss_before_mib", "RSS before MiB"),
            ("rss_held_mib", "RSS held MiB"),
            ("kib_per_receiver", "KiB/waiting rcv"),
            ("reached_s", "all held s"),
            ("released_s", "fds freed s"),
            ("answered_early", "answered early"),
            ("time_s", "fan-out time s"),
            ("completed", "receivers ok"),
            ("rss_peak_mib", "peak RSS MiB"),
            ("rss_growth_mib", "RSS growth MiB"),
            ("cpu_s", "CPU s"),
        ],
        fresh=True,
        txpipe_options=["--max-pipes", "20000", "--max-receivers", "1000"],
    ),
    Scenario(
        "big",
        run_big,
        lambda a: [
            {"size_mib": 1024 if a.quick else 4096, "receivers": 3, "upload": "stdin"}
        ],
        lambda a: 1,
        [
            ("delivered_mib_s", "MiB/s"),
            ("cpu_s_per_gib", "CPU s/GiB"),
            ("rss_before_mib", "RSS start MiB"),
            ("rss_peak_mib", "peak RSS MiB"),
            ("hwm_peak_mib", "VmHWM MiB"),
            ("rss_end_mib", "RSS end MiB"),
            ("rss_growth_mib", "RSS growth MiB"),
            ("fanout_256_rss_growth_mib", "256MiB growth"),
            ("write_bytes", "disk writes"),
        ],
    ),
]

SCALE_RUNS: Dict[str, Callable[[Bench, ChildServer, Params], Metrics]] = {
    "waiting": run_scale_waiting,
    "fanout": run_scale_fanout,
}


def run_scenario(
    bench: Bench, scenario: Scenario, shared: Dict[str, ChildServer]
) -> None:
    """
    Every repetition of every parameter set on every server, interleaved:
    repetition, then parameter set, then server, the servers' order turned
    round on every other repetition (what the first run pays for, such as
    the client's first large allocations, falls on each in turn).
    """
    param_sets = scenario.param_sets(bench.args)
    for rep in range(scenario.reps(bench.args)):
        kinds = bench.kinds if rep % 2 == 0 else bench.kinds[::-1]
        for params in param_sets:
            for kind in kinds:
                if scenario.fresh:
                    server = bench.start(kind, scenario.txpipe_options)
                else:
                    server = shared[kind]
                # To match the run with the servers' own log lines.
                started_at = datetime.datetime.now(datetime.timezone.utc)
                try:
                    metrics = scenario.run(bench, server, params)
                finally:
                    if scenario.fresh:
                        server.stop()
                bench.emit(
                    {
                        "server": server.name,
                        "scenario": scenario.name,
                        "params": params,
                        "rep": rep,
                        "fresh_server": scenario.fresh,
                        "started_at": started_at.isoformat(timespec="milliseconds"),
                        **metrics,
                    }
                )


# -- the summary -----------------------------------------------------------


def summarize(bench: Bench, scenarios: List[Scenario]) -> List[Dict[str, Any]]:
    """Per scenario, parameter set and server: median, min and max."""
    summaries = []
    for scenario in scenarios:
        seen: List[str] = []
        for record in bench.records:
            key = json.dumps(record["params"], sort_keys=True)
            if record["scenario"] == scenario.name and key not in seen:
                seen.append(key)
        for key in seen:
            servers: Dict[str, Any] = {}
            for kind in bench.kinds:
                runs = [
                    r
                    for r in bench.records
                    if r["scenario"] == scenario.name
                    and r["server"] == kind
                    and json.dumps(r["params"], sort_keys=True) == key
                ]
                entry: Dict[str, Any] = {
                    "runs": len(runs),
                    "ok": sum(1 for r in runs if r.get("ok")),
                }
                for metric, _ in scenario.summary:
                    values = [r[metric] for r in runs if r.get(metric) is not None]
                    if values:
                        entry[metric] = {
                            "median": round(statistics.median(values), 3),
                            "min": min(values),
                            "max": max(values),
                        }
                kinds: Dict[str, int] = {}
                for r in runs:
                    for kind_name, count in r.get("failure_kinds", {}).items():
                        kinds[kind_name] = kinds.get(kind_name, 0) + count
                if kinds:
                    entry["failure_kinds"] = kinds
                servers[kind] = entry
            summaries.append(
                {
                    "scenario": scenario.name,
                    "params": json.loads(key),
                    "servers": servers,
                    "ratio": ratios(scenario, servers),
                    "ratio_baseline": ratios(scenario, servers, BASELINE),
                }
            )
    return summaries


def ratios(
    scenario: Scenario, servers: Dict[str, Any], other: str = PEER_NAME
) -> Dict[str, float]:
    """txpipe's median over C{other}'s, where both are non-zero."""
    result = {}
    if TXPIPE in servers and other in servers:
        for metric, _ in scenario.summary:
            ours = servers[TXPIPE].get(metric)
            theirs = servers[other].get(metric)
            if ours and theirs and ours["median"] and theirs["median"]:
                result[metric] = round(ours["median"] / theirs["median"], 2)
    return result


def number(value: float) -> str:
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def print_table(summaries: List[Dict[str, Any]], scenarios: List[Scenario]) -> None:
    labels = {s.name: s.summary for s in scenarios}
    kinds = list(summaries[0]["servers"]) if summaries else []
    print()
    header = f"  {'metric':<18}" + "".join(
        f"{k + ' median (min..max)':>34}" for k in kinds
    )
    others = [k for k in kinds if k != TXPIPE]
    header += "".join(
        f"{'txpipe/' + ('base' if k == BASELINE else 'peer'):>15}" for k in others
    )
    for summary in summaries:
        params = " ".join(f"{k}={v}" for k, v in summary["params"].items())
        print(f"== {summary['scenario']}  {params}")
        print(header)
        servers = summary["servers"]
        ok_row = "".join(
            f"{str(servers[k]['ok']) + '/' + str(servers[k]['runs']):>34}"
            for k in kinds
        )
        print(f"  {'ok runs':<18}{ok_row}")
        for metric, label in labels[summary["scenario"]]:
            if not any(metric in servers[k] for k in kinds):
                continue
            cells = []
            for k in kinds:
                stats = servers[k].get(metric)
                cells.append(
                    f"{number(stats['median'])} ({number(stats['min'])}.."
                    f"{number(stats['max'])})"
                    if stats
                    else "-"
                )
            row = f"  {label:<18}" + "".join(f"{c:>34}" for c in cells)
            for k in others:
                key = "ratio_baseline" if k == BASELINE else "ratio"
                ratio = summary[key].get(metric)
                row += f"{'-' if ratio is None else f'{ratio:.2f}':>15}"
            print(row)
        for k in kinds:
            if "failure_kinds" in servers[k]:
                print(f"  {k} failures: {json.dumps(servers[k]['failure_kinds'])}")
        print()


# -- main ------------------------------------------------------------------


def raise_file_limit() -> None:
    """Raise the open-files soft limit to the hard one (children inherit)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def versions(baseline: Optional[str] = None) -> Dict[str, str]:
    found = {"python": sys.version.split()[0]}
    try:
        found[TXPIPE] = importlib.metadata.version("txpipe")
    except importlib.metadata.PackageNotFoundError:
        found[TXPIPE] = "?"
    if baseline:
        found[BASELINE] = subprocess.run(
            [baseline, "-c", "import pipe; print(pipe.__file__, pipe.__version__)"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    package = BENCH / "peer" / "node_modules" / "piping-server" / "package.json"
    if package.exists():
        found[PEER_NAME] = json.loads(package.read_text())["version"]
    return found


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reps", type=int, help="repetitions of fanout, throttled, tiny (3)"
    )
    parser.add_argument(
        "--concurrent-reps", type=int, help="repetitions of concurrent (20)"
    )
    parser.add_argument(
        "--scale-reps", type=int, default=1, help="repetitions of scale (1)"
    )
    parser.add_argument(
        "--only",
        help="comma-separated scenarios: " + ",".join(s.name for s in SCENARIOS),
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, fewer repetitions"
    )
    parser.add_argument("--no-peer", action="store_true", help="no piping-server")
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also run, interleaved, the txpipe installed for this interpreter "
        "(a venv with an earlier version): before/after in one run",
    )
    parser.add_argument("--json", help="also write the JSON lines to this file")
    args = parser.parse_args()
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.concurrent_reps is None:
        args.concurrent_reps = 2 if args.quick else 20
    args.tiny_count = 200 if args.quick else 1000
    return args


def select(args: argparse.Namespace) -> List[Scenario]:
    if not args.only:
        return SCENARIOS
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    known = {s.name for s in SCENARIOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario {unknown}; known: {sorted(known)}")
    return [s for s in SCENARIOS if s.name in names]


def main() -> None:
    args = parse_args()
    scenarios = select(args)
    if not args.no_peer and not PEER.exists():
        print(
            f"piping-server not found at {PEER}; install it with\n\n"
            f"    {PEER_INSTALL}\n\nor run txpipe alone with --no-peer.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    raise_file_limit()
    kinds = [TXPIPE] if args.no_peer else [TXPIPE, PEER_NAME]
    if args.baseline:
        kinds.append(BASELINE)
    shm = Path("/dev/shm")
    json_file = open(args.json, "w") if args.json else None
    try:
        with tempfile.TemporaryDirectory(
            prefix="txpipe-compare-", dir=str(shm) if shm.is_dir() else None
        ) as tmp:
            bench = Bench(args, os.urandom(BLOCK), Path(tmp), kinds, json_file)
            run_all(bench, scenarios)
        summaries = summarize(bench, scenarios)
        print_table(summaries, scenarios)
        for summary in summaries:
            bench.write({"summary": summary})
    finally:
        if json_file is not None:
            json_file.close()


def run_all(bench: Bench, scenarios: List[Scenario]) -> None:
    """Start the shared servers, run the scenarios, stop, report server logs."""
    bench.write(
        {
            "info": {
                "versions": versions(bench.args.baseline),
                "cpus": os.cpu_count(),
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                "workdir": str(bench.workdir),
                "scenarios": [s.name for s in scenarios],
                "fresh_servers": [s.name for s in scenarios if s.fresh],
                "note": "one server of each kind serves every scenario but "
                "those in fresh_servers, which start a fresh (warmed-up) "
                "server of each kind per run",
            }
        }
    )
    shared: Dict[str, ChildServer] = {}
    try:
        if any(not s.fresh for s in scenarios):
            for kind in bench.kinds:
                shared[kind] = bench.start(kind)
        for scenario in scenarios:
            run_scenario(bench, scenario, shared)
    finally:
        for server in shared.values():
            server.stop()
    for server in bench.started:
        if server.trouble:
            lines = [b.decode("utf-8", "replace").rstrip() for b in server.trouble]
            bench.write(
                {
                    "server_log": {
                        "server": server.name,
                        "pid": server.pid,
                        "lines": len(lines),
                        "first": lines[:20],
                    }
                }
            )


if __name__ == "__main__":
    main()
