"""
Sharding by path behind HAProxy and nginx, for real: the configurations in
C{deploy/} (with ports and paths rewritten) in front of three C{twistd -n
pipe} backends on loopback, driven by curl.

For each balancer: 30 concurrent pipes of n=3 with random payloads arrive
byte for byte and are spread over all three backends; then, with slow
receivers, one backend is killed mid-run: exactly the pipes on it fail (its
receivers and senders see an error), the others complete; then the same
paths work again, on the survivors.

And the client behind each balancer is the client: HAProxy names it with
the PROXY protocol (C{send-proxy-v2} to C{haproxy:} listeners), nginx in
C{X-Forwarded-For}, believed from it (C{--trusted-proxies}); curl clients
on 127.0.0.2 and 127.0.0.3 appear in the transfer log with their own
addresses, and C{--max-connections-per-ip} holds each to its own count.

Run by C{tox -e balancers} (C{.ci/run} installs HAProxy and nginx); skipped
where they are not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from ..helpers import (
    LOOPBACK,
    answers,
    free_port,
    start_pipe,
    twistd_pipe,
    wait_until,
)
from ..helpers.programs import installed_or_skip

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PIPES = 30
RECEIVERS = 3

# Debian installs both in sbin, which a user's PATH may lack.
(HAPROXY, NGINX), pytestmark = installed_or_skip(
    ["haproxy", "nginx"],
    ["/usr/sbin", "/sbin"],
    "TXPIPE_REQUIRE_BALANCERS",
    "balancers",
    "HAProxy and nginx are not installed (.ci/run installs them)",
)


class Backend:
    """
    One C{twistd -n pipe} on two loopback listeners it picks the ports of:
    C{port} plain (for nginx, whose C{X-Forwarded-For} it trusts, and for
    the tests' own requests), C{proxy_port} a C{haproxy:} listener (for
    HAProxy's C{send-proxy-v2}); both known once L{start} returns.
    """

    def __init__(
        self, directory: Path, name: str, options: Tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.port = 0
        self.proxy_port = 0
        self.options = options
        self.log = directory / f"{name}.log"
        self.directory = directory
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        self.process, (self.port, self.proxy_port), _ = start_pipe(
            twistd_pipe(
                LOOPBACK,
                "--listen",
                "haproxy:tcp:0:interface=127.0.0.1",
                "--trusted-proxies",
                "127.0.0.1",
                "--wait-timeout",
                "60",
                *self.options,
                log=str(self.log),
            ),
            self.directory,
            log=self.log,
            listeners=2,
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
            self.process = None

    def status(self) -> Dict[str, object]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}/api/v1/status", timeout=5
        ) as r:
            return json.load(r)  # type: ignore[no-any-return]

    def transfer_lines(self) -> List[str]:
        """The transfer log's lines of this backend."""
        text = self.log.read_text() if self.log.exists() else ""
        return re.findall(r"transfer [0-9a-f]{12} \w+: .*", text)

    def completed_digests(self) -> List[str]:
        """The path digests of the transfers this backend completed."""
        text = self.log.read_text() if self.log.exists() else ""
        return re.findall(r"transfer ([0-9a-f]{12}) complete", text)


def digest(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:12]


def rewrite_servers(text: str, pattern: str, line: str, backends: List[Backend]) -> str:
    """Replace the configuration's example server lines by ours."""
    lines = [
        line.format(name=b.name, port=b.port, proxy_port=b.proxy_port) for b in backends
    ]
    out, count = re.subn(
        pattern, lambda m: lines.pop(0) if lines else "", text, flags=re.M
    )
    assert count == len(backends), (
        f"expected {len(backends)} server lines, found {count}"
    )
    return out


class Balancer:
    """HAProxy or nginx running a rewritten copy of its deploy/ file."""

    def __init__(self, kind: str, directory: Path, backends: List[Backend]) -> None:
        self.kind = kind
        self.port = free_port()
        self.directory = directory / kind
        self.directory.mkdir()
        self.output = self.directory / "output.log"
        if kind == "haproxy":
            text = (DEPLOY / "haproxy.cfg").read_text()
            text = text.replace("bind :8080", f"bind 127.0.0.1:{self.port}")
            text = rewrite_servers(
                text,
                r"^    server txpipe\d 127\.0\.0\.1:808\d$",
                "    server {name} 127.0.0.1:{proxy_port}",
                backends,
            )
            config = self.directory / "haproxy.cfg"
            config.write_text(text)
            argv = [str(HAPROXY), "-db", "-f", str(config)]
        else:
            text = (DEPLOY / "nginx.conf").read_text()
            text = text.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
            text = text.replace(
                "/run/nginx-txpipe.pid", str(self.directory / "nginx.pid")
            )
            text = text.replace("/tmp/nginx-txpipe", str(self.directory / "tmp"))
            text = rewrite_servers(
                text,
                r"^        server 127\.0\.0\.1:808\d (.*)$",
                "        server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;",
                backends,
            )
            config = self.directory / "nginx.conf"
            config.write_text(text)
            argv = [
                str(NGINX),
                "-c",
                str(config),
                "-p",
                str(self.directory),
                "-g",
                "daemon off;",
            ]
        with open(self.output, "wb") as output:
            self.process = subprocess.Popen(
                argv, stdout=output, stderr=subprocess.STDOUT, cwd=self.directory
            )
        wait_until(lambda: answers(self.port), f"{kind} to listen")

    def url(self, path: str, query: str = f"n={RECEIVERS}") -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/pipe/{path}?{query}"

    def wait_until_down(self, backend: Backend) -> None:
        """
        Wait until the balancer no longer sends new pipes to C{backend}:
        HAProxy logs it when its health checks take a server out; nginx
        (no active checks) skips a backend on its first refused connection,
        so there is nothing to wait for.
        """
        if self.kind == "haproxy":
            down = f"Server txpipe/{backend.name} is DOWN"
            wait_until(lambda: down in self.output.read_text(), down)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def transfer(
    balancer: Balancer,
    path: str,
    payload: Path,
    workdir: Path,
    limit: Optional[str] = None,
) -> Tuple[int, List[Tuple[int, str]]]:
    """
    One pipe: RECEIVERS curl receivers and one curl sender, started
    together in no particular order (txpipe takes either), (uploading at
    C{limit} bytes per second if given, so that the transfer is still
    running seconds later: no buffer on the way can hold what has not been
    sent), all through the balancer.  Returns the sender's exit status and
    each receiver's (exit status, SHA-256 of what it got).
    """
    url = balancer.url(path)
    workdir.mkdir(exist_ok=True)
    outs = [workdir / f"{digest(path)}-{i}.out" for i in range(RECEIVERS)]
    rate = ["--limit-rate", limit] if limit else []
    receivers = [
        subprocess.Popen(
            ["curl", "-sS", "-f", "-o", str(o), url], stderr=subprocess.DEVNULL
        )
        for o in outs
    ]
    sender = subprocess.run(
        ["curl", "-sS", "-f", *rate, "-T", str(payload), "-o", "/dev/null", url],
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    results = []
    for receiver, out in zip(receivers, outs):
        code = receiver.wait(timeout=120)
        got = hashlib.sha256(out.read_bytes()).hexdigest() if out.exists() else ""
        results.append((code, got))
    return sender.returncode, results


def payloads(
    directory: Path, size: int, paths: Optional[List[str]] = None
) -> Dict[str, Tuple[Path, str]]:
    """A random payload (its file and SHA-256) per pipe path."""
    run = secrets.token_hex(4)
    paths = paths or [f"shard/{run}/{i}" for i in range(PIPES)]
    made = {}
    for i, path in enumerate(paths):
        data = os.urandom(size + i)
        file = directory / f"payload-{run}-{i}"
        file.write_bytes(data)
        made[path] = (file, hashlib.sha256(data).hexdigest())
    return made


def run_all(
    balancer: Balancer,
    pipes: Dict[str, Tuple[Path, str]],
    workdir: Path,
    limit: Optional[str] = None,
) -> Dict[str, Tuple[int, List[Tuple[int, str]]]]:
    with ThreadPoolExecutor(max_workers=PIPES) as pool:
        futures = {
            path: pool.submit(transfer, balancer, path, file, workdir, limit)
            for path, (file, _) in pipes.items()
        }
        return {path: future.result() for path, future in futures.items()}


def owners(backends: List[Backend]) -> Dict[str, Backend]:
    """The backend that completed each path digest's transfers."""
    return {done: b for b in backends for done in b.completed_digests()}


def _kill_when_running(backend: Backend, pipes: int) -> None:
    """
    Kill C{backend} once its C{pipes} rate-limited transfers all run: each
    takes seconds, so they are then mid-way.
    """
    wait_until(
        lambda: backend.status()["pipes_running"] == pipes,  # type: ignore[index]
        f"{pipes} pipes running on {backend.name}",
    )
    backend.kill()


@pytest.fixture
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[List[Backend]]:
    """
    Three backends, with the extra options a test names in its
    C{backend_options} attribute.
    """
    options = getattr(request.function, "backend_options", ())
    started = [Backend(tmp_path, f"txpipe{i}", options) for i in (1, 2, 3)]
    for backend in started:
        backend.start()
    yield started
    for backend in started:
        backend.stop()


@pytest.fixture(params=["haproxy", "nginx"])
def balancer(
    request: pytest.FixtureRequest, backends: List[Backend], tmp_path: Path
) -> Iterator[Balancer]:
    """Each balancer in turn, running its deploy/ file in front of backends."""
    started = Balancer(request.param, tmp_path, backends)
    yield started
    started.stop()


def test_sharding_through_the_balancer(
    balancer: Balancer, backends: List[Backend], tmp_path: Path
) -> None:
    # 1. Thirty pipes at once: every byte right, all backends used.
    pipes = payloads(tmp_path, 256 * 1024)
    results = run_all(balancer, pipes, tmp_path / "round1")
    for path, (sender, receivers) in results.items():
        assert sender == 0, (path, sender)
        assert receivers == [(0, pipes[path][1])] * RECEIVERS, path
    owner = owners(backends)
    for backend in backends:
        assert backend.status()["transfers"]["complete"] > 0, backend.name  # type: ignore[index]
    assert {digest(p) for p in pipes} <= set(owner), "a transfer was logged nowhere"

    # The balancer's log names no pipe: no path, no query string.
    log = balancer.output.read_text(errors="replace")
    if balancer.kind == "haproxy":
        assert " 200 " in log, "HAProxy logs each request"
    assert not [p for p in pipes if p in log], "a pipe path reached the log"
    assert f"n={RECEIVERS}" not in log

    # 2. Slow senders; one backend killed mid-run: only its pipes fail.
    victim = backends[1]
    mine = {p for p in pipes if owner[digest(p)] is victim}
    assert mine and len(mine) < PIPES
    with ThreadPoolExecutor(max_workers=1) as killer:
        killed = killer.submit(_kill_when_running, victim, len(mine))
        slow = payloads(tmp_path, 1024 * 1024, list(pipes))
        results = run_all(balancer, slow, tmp_path / "round2", limit="200k")
        killed.result()
    for path, (sender, receivers) in results.items():
        if path in mine:
            assert sender != 0, (path, "its backend died: the sender must fail")
            assert all(code != 0 for code, _ in receivers), (path, receivers)
        else:
            assert sender == 0, (path, sender)
            assert receivers == [(0, slow[path][1])] * RECEIVERS, path

    # 3. The same paths again: the dead backend's paths go to survivors.
    balancer.wait_until_down(victim)
    before = {b.name: len(b.completed_digests()) for b in backends if b is not victim}
    results = run_all(balancer, pipes, tmp_path / "round3")
    for path, (sender, receivers) in results.items():
        assert sender == 0, (path, sender)
        assert receivers == [(0, pipes[path][1])] * RECEIVERS, path
    moved = set()
    for backend in backends:
        if backend is not victim:
            for done in backend.completed_digests()[before[backend.name] :]:
                moved.add(done)
                # Consistent hashing: a survivor's own paths stay put.
                if owner[done] is not victim:
                    assert owner[done] is backend, (done, backend.name)
    assert {digest(p) for p in mine} <= moved


def writes_settled(pid: int, quiet: float = 0.5) -> Callable[[], bool]:
    """
    A check that holds once process C{pid} has written nothing for
    C{quiet} seconds (C{wchar} in /proc/PID/io): an upload stuck behind
    full buffers.
    """
    last: List[Tuple[int, float]] = []

    def check() -> bool:
        text = Path(f"/proc/{pid}/io").read_text()
        written = int(re.search(r"^wchar: (\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
        now = time.monotonic()
        if not last or last[0][0] != written:
            last[:] = [(written, now)]
        return now - last[0][1] >= quiet

    return check


def test_held_back_upload_through_the_balancer(
    balancer: Balancer, backends: List[Backend], tmp_path: Path
) -> None:
    """
    An upload far bigger than the socket buffers on the way, held back by
    txpipe: first while the sender waits for its receivers, then paced by a
    throttled receiver.  The balancer must keep forwarding the body after
    the response has begun (nginx does not: deploy/nginx.conf asks txpipe
    to defer the sender's response) and every byte must arrive.
    """
    size = 24 * 1024 * 1024
    data = os.urandom(size)
    upload = tmp_path / "upload"
    upload.write_bytes(data)
    url = balancer.url("held/" + secrets.token_hex(4))
    sender = subprocess.Popen(
        ["curl", "-sS", "-f", "--max-time", "60", "-T", str(upload), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(
        lambda: any(b.status()["pipes_waiting"] == 1 for b in backends),
        "the sender to wait",
    )
    wait_until(writes_settled(sender.pid), "the upload to fill every buffer")
    rates = [["--limit-rate", "6M"], [], []]
    outs = [tmp_path / f"out{i}" for i in range(RECEIVERS)]
    receivers = [
        subprocess.Popen(
            ["curl", "-sS", "-f", "--max-time", "60", *rate, "-o", str(out), url]
        )
        for rate, out in zip(rates, outs)
    ]
    codes = [r.wait(timeout=90) for r in receivers]
    stdout, stderr = sender.communicate(timeout=90)
    assert sender.returncode == 0, (stdout, stderr)
    assert codes == [0] * RECEIVERS
    expected = hashlib.sha256(data).hexdigest()
    for out in outs:
        assert hashlib.sha256(out.read_bytes()).hexdigest() == expected
    assert b"[INFO] done: bytes=%d receivers=3/3" % size in stdout


def test_a_draining_backend_finishes_its_transfers_and_gets_no_new_pipes(
    balancer: Balancer, backends: List[Backend], tmp_path: Path
) -> None:
    """
    SIGTERM to a backend while one of its pipes runs: that transfer
    completes (the drain lets it), and a new pipe on another of its paths
    goes to a survivor once the balancer has noticed.
    """
    pipes = payloads(tmp_path, 64 * 1024)
    run_all(balancer, pipes, tmp_path / "probe")
    owner = owners(backends)
    victim = backends[0]
    mine = [p for p in pipes if owner[digest(p)] is victim]
    assert len(mine) >= 2, "the victim owns too few of 30 paths"
    slow_path, later_path = mine[:2]
    slow = payloads(tmp_path, 2 * 1024 * 1024, [slow_path])
    later = payloads(tmp_path, 256 * 1024, [later_path])
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(
            transfer, balancer, slow_path, slow[slow_path][0], tmp_path / "slow", "512k"
        )
        wait_until(
            lambda: victim.status()["pipes_running"] == 1, "the slow pipe to run"
        )
        assert victim.process is not None
        victim.process.send_signal(signal.SIGTERM)
        balancer.wait_until_down(victim)
        sender, receivers = transfer(
            balancer, later_path, later[later_path][0], tmp_path / "later"
        )
        assert sender == 0
        assert receivers == [(0, later[later_path][1])] * RECEIVERS
        sender, receivers = running.result()
    assert sender == 0, "the drain must let the running transfer finish"
    assert receivers == [(0, slow[slow_path][1])] * RECEIVERS
    assert victim.completed_digests().count(digest(later_path)) == 1  # the probe
    # twistd ends by re-raising the signal that stopped it.
    assert victim.process.wait(timeout=30) in (0, -signal.SIGTERM)


def _curl_from(source: str, *args: str) -> List[str]:
    return ["curl", "-sS", "--interface", source, "--max-time", "60", *args]


def test_clients_behind_the_balancer_keep_their_own_addresses(
    balancer: Balancer, backends: List[Backend], tmp_path: Path
) -> None:
    """
    Clients on 127.0.0.2, .3 and .4 through the balancer: with
    C{--max-connections-per-ip 1}, the second party of 127.0.0.2 is refused
    while 127.0.0.3 joins the same pipe; 127.0.0.4 sends; the transfer log
    names each party by its own address (HAProxy: with its port, from the
    PROXY protocol; nginx: the host, from X-Forwarded-For).
    """
    path = "clients/" + secrets.token_hex(4)
    url = balancer.url(path, "n=2")
    data = os.urandom(256 * 1024)
    upload = tmp_path / "upload"
    upload.write_bytes(data)
    first = subprocess.Popen(
        _curl_from("127.0.0.2", "-f", "-o", str(tmp_path / "a"), url)
    )
    wait_until(
        lambda: sum(b.status()["pipes_waiting"] for b in backends) == 1,  # type: ignore[misc]
        "the first receiver to wait",
    )
    refused = subprocess.run(
        _curl_from("127.0.0.2", "-w", "\n%{http_code}", url),
        capture_output=True,
        timeout=90,
    )
    assert refused.stdout.endswith(b"\n503"), refused
    assert b"too many parties from 127.0.0.2: 1" in refused.stdout
    second = subprocess.Popen(
        _curl_from("127.0.0.3", "-f", "-o", str(tmp_path / "b"), url)
    )
    sender = subprocess.run(
        _curl_from("127.0.0.4", "-f", "-T", str(upload), url),
        capture_output=True,
        timeout=90,
    )
    assert sender.returncode == 0, sender
    assert b"[INFO] done: bytes=%d receivers=2/2" % len(data) in sender.stdout
    assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0
    expected = hashlib.sha256(data).hexdigest()
    for out in ("a", "b"):
        assert hashlib.sha256((tmp_path / out).read_bytes()).hexdigest() == expected
    (line,) = [
        line
        for b in backends
        for line in b.transfer_lines()
        if line.startswith(f"transfer {digest(path)} complete")
    ]
    port = r":\d+" if balancer.kind == "haproxy" else ""
    match = re.search(r"sender (\S+), receivers (\S+), (\S+)$", line)
    assert match is not None, line
    sender_address, *receiver_addresses = match.groups()
    assert re.fullmatch(rf"127\.0\.0\.4{port}", sender_address), line
    hosts = sorted(a.rsplit(":", 1)[0] if port else a for a in receiver_addresses)
    assert hosts == ["127.0.0.2", "127.0.0.3"], line
    for address in receiver_addresses:
        assert re.fullmatch(rf"127\.0\.0\.[23]{port}", address), line


test_clients_behind_the_balancer_keep_their_own_addresses.backend_options = (  # type: ignore[attr-defined]
    "--max-connections-per-ip",
    "1",
)
