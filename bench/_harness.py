"""
What every benchmark under bench/ shares: the servers (txpipe through
L{_twistd}, the peer piping-server), measuring a server (L{Meter}), curl
parties, the run's state (L{Bench}), HTTP helpers for raw sockets, and the
versions a report names.  Not a script: C{compare.py}, C{fanout.py},
C{balancers.py} and C{soak.py} import it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import resource
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Tuple

from _twistd import ChildServer, Server, free_port

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
#: The floor: a bare twisted.web site doing a small pipe's two requests.
FLOOR = "twisted.web"
#: The C epoll fan-out reference (C{--reference}), built outside git.
REFERENCE = "c-reference"
#: Where C{compare.py} looks for the reference's binary by default.
REFERENCE_BINARY = BENCH / "ref" / "ref_fanout"
REFERENCE_BUILD = "gcc -O2 -Wall -o bench/ref/ref_fanout /path/to/ref_fanout.c"

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
        start_on_port(
            self,
            [str(PEER), "--host", "127.0.0.1", "--http-port", str(self.port)],
            "piping-server",
        )


def start_on_port(server: ChildServer, argv: List[str], what: str) -> None:
    """
    Start C{argv}, a server that listens on C{server.port} (chosen before),
    as C{server}'s process, and wait until it accepts connections.
    """
    server.process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    server.drain_in_background()
    deadline = time.monotonic() + 30
    while True:
        if server.process.poll() is not None:
            raise SystemExit(f"{what} exited: {b''.join(server.tail)!r}")
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise SystemExit(f"{what} did not accept connections") from None
            time.sleep(0.05)


class FloorServer(ChildServer):
    """
    C{floor_server.py}: a stock twisted.web C{Site} that matches a C{GET}
    and a C{PUT} by path and nothing more (small pipes only: the body is
    spooled by twisted.web), run by this interpreter, after C{preamble}
    (Python code, as for L{_twistd.Server}).
    """

    name = FLOOR
    prefix = "/"

    def __init__(self, preamble: str = "") -> None:
        super().__init__()
        script = str(BENCH / "floor_server.py")
        run = f"import runpy; runpy.run_path({script!r}, run_name='__main__')"
        self.process = subprocess.Popen(
            [sys.executable, "-c", preamble + run],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.tail.append(raw)
            if raw.startswith(b"listening on "):
                self.port = int(raw.split()[-1])
                break
        if not self.port:
            raise SystemExit(f"floor_server.py did not start: {b''.join(self.tail)!r}")
        self.drain_in_background()


class ReferenceServer(ChildServer):
    """
    The C epoll fan-out reference (C{ref_fanout PORT}, loopback only, its
    default 4 MiB ring per pipe): the practical limit of read()/write()
    fan-out with the same clients.  It speaks just enough of the pipe
    protocol for curl senders and receivers, on txpipe's URLs.
    """

    name = REFERENCE
    prefix = "/api/v1/pipe/"

    def __init__(self, binary: Path) -> None:
        super().__init__()
        self.port = free_port()
        start_on_port(self, [str(binary), str(self.port)], str(binary))


def make_tls_files(directory: Path) -> Tuple[Path, Path]:
    """
    A throwaway self-signed key and certificate for 127.0.0.1 (the
    C{openssl} command; clients use C{curl -k}): C{(key, certificate)}.
    """
    key, cert = directory / "tls-key.pem", directory / "tls-cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


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


def _insecure(url: str) -> List[str]:
    """C{-k} for an C{https} URL: the benchmarks' certificate is self-signed."""
    return ["-k"] if url.startswith("https:") else []


def receiver_curl(url: str, limit: Optional[str] = None, digest: bool = False) -> Curl:
    rate = _insecure(url) + ([] if limit is None else ["--limit-rate", limit])
    if digest:
        return Curl("receiver", [*rate, url], digest=True)
    return Curl("receiver", [*rate, "-o", "/dev/null", "-w", "%{size_download}", url])


def sender_curl(
    url: str, upload: Optional[Path], size: int, block: bytes, offset: int = 0
) -> Curl:
    if upload is not None:
        return Curl("sender", [*_insecure(url), "-T", str(upload), url])
    return Curl(
        "sender", [*_insecure(url), "-T", "-", url], payload=(size, block, offset)
    )


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
    #: A key and certificate: txpipe servers also listen with TLS on them.
    tls: Optional[Tuple[Path, Path]] = None
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
            server = Server(self.workdir, txpipe_options, tls=self.tls)
        elif kind == BASELINE:
            server = Server(
                self.workdir,
                txpipe_options,
                python=self.args.baseline,
                name=BASELINE,
                tls=self.tls,
            )
        elif kind == REFERENCE:
            server = ReferenceServer(Path(self.args.reference))
        elif kind == FLOOR:
            server = FloorServer()
            self.started.append(server)
            return server  # small pipes only: no warm-up with 8 MiB
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
    found["twisted"] = importlib.metadata.version("twisted")
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


def answers(port: int, path: str = "/healthz") -> bool:
    """Whether a server on this loopback port answers C{path} with 200."""
    try:
        url = f"http://127.0.0.1:{port}{path}"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
