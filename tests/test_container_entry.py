"""
The container image's entry point (L{pipe._deploy.container}) and C{HEALTHCHECK}
(L{pipe._deploy.healthcheck}) as real processes on loopback, and the version the
C{Dockerfile} and the Kubernetes Deployment carry.  The image itself is
tested in C{tests/container} (C{tox -e container}).
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import pytest

import pipe

from .helpers import RawReceiver, child_env, reported_port
from .helpers.container import read_lines

ROOT = Path(__file__).resolve().parent.parent


class Server:
    """
    C{python -m pipe._deploy.container ARGS} on a loopback port, its output read
    line by line.
    """

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipe._deploy.container", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(),
        )
        self.lines: List[str] = []
        self.pending = bytearray()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        stream = self.process.stdout
        assert stream is not None
        for line in read_lines(stream.fileno(), timeout, self.pending):
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no {pattern!r} in:\n" + "".join(self.lines))

    def port(self) -> int:
        return reported_port(self.wait_for(r"listening on ").string)

    def stop(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.status(timeout)

    def status(self, timeout: float = 30) -> int:
        out, _ = self.process.communicate(timeout=timeout)
        self.lines.append(self.pending.decode("utf-8", "replace") + out)
        self.pending.clear()
        return self.process.returncode

    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def servers() -> Iterator[List[Server]]:
    started: List[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.communicate()


def start(servers: List[Server], *args: str) -> Server:
    server = Server("--listen", "tcp:0:interface=127.0.0.1", *args)
    servers.append(server)
    return server


def healthcheck(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipe._deploy.healthcheck"],
        env={**child_env(), "TXPIPE_HEALTHCHECK_URL": url},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_sigterm_with_nothing_running_drains_and_exits_0(
    servers: List[Server],
) -> None:
    """
    Unlike plain twistd (status 143 after SIGTERM), the entry point ends a
    drain that aborted nothing with status 0.
    """
    server = start(servers)
    port = server.port()
    check = healthcheck(f"http://127.0.0.1:{port}/healthz")
    assert (check.returncode, check.stdout.strip()) == (0, "200 ok")
    assert server.stop() == 0, server.output()
    assert "received SIGTERM: draining, then stopping" in server.output()
    assert "drained" in server.output()


def test_a_drain_that_aborts_a_transfer_exits_143(
    servers: List[Server], tmp_path: Path
) -> None:
    """
    A receiver that stops reading outlasts C{--drain-timeout 1}: the drain
    aborts its transfer, and the status says so, as twistd's would.
    """
    server = start(servers, "--drain-timeout", "1")
    port = server.port()
    data = tmp_path / "payload"
    data.write_bytes(b"x" * (32 * 1024 * 1024))
    receiver = RawReceiver(port, "stuck")
    sender = subprocess.Popen(
        [
            *("curl", "-sS", "--no-buffer", "-T", str(data)),
            f"http://127.0.0.1:{port}/api/v1/pipe/stuck?n=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert sender.stdout is not None
        for line in sender.stdout:
            if "transfer started" in line:
                break
        assert server.stop() == 128 + signal.SIGTERM, server.output()
        assert "drain timeout: aborting" in server.output()
    finally:
        sender.kill()
        sender.communicate()
        receiver.sock.close()


def test_a_listener_that_cannot_listen_exits_1(servers: List[Server]) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        server = Server("--listen", f"tcp:{port}:interface=127.0.0.1")
        servers.append(server)
        assert server.status() == 1
        assert "cannot listen on" in server.output()
    finally:
        taken.close()


def test_the_healthcheck_fails_when_nothing_answers() -> None:
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()
    result = healthcheck(f"http://127.0.0.1:{port}/healthz")
    assert result.returncode == 1
    assert result.stdout.strip()


def test_the_image_and_the_manifests_carry_the_package_version() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"\nARG VERSION={pipe.__version__}\n" in dockerfile
    deployment = (ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text()
    assert f"image: txpipe:{pipe.__version__}\n" in deployment


def test_the_drain_watch_is_a_log_observer() -> None:
    from twisted.logger import ILogObserver
    from zope.interface.verify import verifyObject

    from pipe._deploy.container import _DrainWatch

    watch = _DrainWatch()
    assert verifyObject(ILogObserver, watch)
    watch({"log_namespace": "pipe._registry.Registry", "log_format": "drained"})
    assert not watch.aborted
    watch(
        {
            "log_namespace": "pipe._registry.Registry",
            "log_format": "drain timeout: x",
        }
    )
    assert watch.aborted
