"""
The C{txpipe} command end to end: C{send}, C{recv} and C{serve} as child
processes against a real C{twistd -n pipe}, every exit status, and a
multi-GiB transfer through both at flat memory.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import struct
import sys
import termios
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest_twisted
from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from pipe import __version__

from .helpers import (
    TwistdServer,
    curl,
    payload,
    sha256_of,
    start_twistd,
    wait_for_status,
)

#: Runs the txpipe command and reports its own peak RSS (KiB) on stderr.
TXPIPE = [
    sys.executable,
    "-c",
    "import resource, sys; from pipe._cli import main; status = main(sys.argv[1:]);"
    " print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
    " file=sys.stderr); sys.exit(status)",
]


class _Child(ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        # A child killed by a signal has no exit code: report -signal, never
        # a success.
        value = reason.value
        code = value.exitCode
        self.ended.callback(code if code is not None else -(value.signal or 1))


def run(
    reactor: Any,
    argv: List[str],
    stdin: Optional[Path] = None,
    cwd: Optional[Path] = None,
) -> _Child:
    child = _Child()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    fds: Dict[int, Any] = {1: "r", 2: "r"}
    handle = open(stdin, "rb") if stdin is not None else None
    fds[0] = handle.fileno() if handle is not None else "w"
    reactor.spawnProcess(
        child, argv[0], argv, env=env, childFDs=fds, path=str(cwd or "/")
    )
    if handle is not None:
        handle.close()
    elif child.transport is not None:
        child.transport.closeStdin()
    return child


def txpipe(reactor: Any, *args: str, stdin: Optional[Path] = None) -> _Child:
    return run(reactor, [*TXPIPE, *args], stdin=stdin)


async def ended(child: _Child) -> Tuple[int, bytes, bytes]:
    code = await child.ended
    return code, bytes(child.out), bytes(child.err)


def maxrss_mib(err: bytes) -> float:
    match = re.search(rb"maxrss (\d+)", err)
    assert match, err
    return int(match.group(1)) / 1024


async def serving(reactor: Any, tmp_path: Path) -> Tuple[TwistdServer, str]:
    server = start_twistd(reactor, tmp_path)
    port = await server.listening
    return server, f"http://127.0.0.1:{port}/api/v1/pipe"


@pytest_twisted.ensureDeferred
async def test_send_and_recv(reactor: Any, tmp_path: Path) -> None:
    server, base = await serving(reactor, tmp_path)
    try:
        data = payload(tmp_path, 5 * 1024 * 1024 + 3)
        digest = sha256_of(data)
        url = f"{base}/cli-{os.getpid()}?n=2"
        out = tmp_path / "received.bin"
        to_file = txpipe(reactor, "recv", url, "-o", str(out))
        to_stdout = txpipe(reactor, "recv", url, "--sha256", digest.upper())
        sender = txpipe(reactor, "send", url, str(data))
        code, _, err = await ended(sender)
        assert code == 0, err
        assert re.search(rb"^\[INFO\] done: bytes=5242883 receivers=2/2", err, re.M)
        assert f"sha256 {digest}  5242883 bytes".encode() in err
        assert b"\r" not in err, "no progress bar when stderr is not a terminal"
        for child in (to_file, to_stdout):
            code, _, err = await ended(child)
            assert code == 0, err
            assert f"sha256 {digest}  5242883 bytes".encode() in err
        assert sha256_of(out) == digest
        assert len(to_stdout.out) == 5242883
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_send_deferred(reactor: Any, tmp_path: Path) -> None:
    """C{--deferred}: the same transfer, answered after the upload."""
    server, base = await serving(reactor, tmp_path)
    try:
        data = payload(tmp_path, 1024 * 1024)
        url = f"{base}/cli-deferred-{os.getpid()}"
        sender = txpipe(reactor, "send", "--deferred", url, str(data))
        receiver = txpipe(reactor, "recv", url, "--sha256", sha256_of(data))
        code, _, err = await ended(sender)
        assert code == 0, err
        assert re.search(rb"^\[INFO\] done: bytes=1048576 receivers=1/1", err, re.M)
        code, _, err = await ended(receiver)
        assert code == 0, err
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_exit_statuses(reactor: Any, tmp_path: Path) -> None:
    server, base = await serving(reactor, tmp_path)
    port = server.port
    assert port is not None
    try:
        code, _, err = await ended(txpipe(reactor, "recv", f"{base}/x?n=0"))
        assert code == 3 and b"400: [ERROR] n must be" in err
        code, _, err = await ended(txpipe(reactor, "recv", f"{base}/x?wait=1"))
        assert code == 5 and b"timed out after 1 s" in err
        code, _, err = await ended(txpipe(reactor, "send"))
        assert code == 2
        code, _, err = await ended(txpipe(reactor, "send", f"{base}/y", "/nonexistent"))
        assert code == 2 and b"No such file" in err

        receiving = txpipe(reactor, "recv", f"{base}/z", "--sha256", "0" * 64, "-q")
        await ended(txpipe(reactor, "send", f"{base}/z", str(payload(tmp_path, 1000))))
        code, _, err = await ended(receiving)
        assert code == 6 and b"SHA-256 mismatch" in err

        # A receiver that goes away mid-transfer: the sender fails (4).
        slow = curl(reactor, "--limit-rate", "100k", "-o", "/dev/null", f"{base}/w")
        await wait_for_status(reactor, port, lambda d: d["receivers_connected"] == 1)
        big = payload(tmp_path, 32 * 1024 * 1024, "big.bin")
        sending = txpipe(reactor, "send", f"{base}/w", str(big))
        # At 100 KiB/s, 32 MiB take minutes: once it runs, it is mid-way.
        await wait_for_status(reactor, port, lambda d: d["pipes_running"] == 1)
        slow.kill()
        code, _, err = await ended(sending)
        assert code == 4, err
        assert b"[ERROR] failed:" in err or b"the connection ended" in err
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_serve_runs_the_server(reactor: Any, tmp_path: Path) -> None:
    server = TwistdServer()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = [
        sys.executable,
        "-m",
        "pipe",
        "serve",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]
    reactor.spawnProcess(server, sys.executable, argv, env=env, path=str(tmp_path))
    try:
        port = await server.listening
        result = await curl(
            reactor, f"http://127.0.0.1:{port}/version", keep_text=True
        ).ended
        assert result.text == f"{__version__}\n".encode()
    finally:
        assert await server.stop() == 0


@pytest_twisted.ensureDeferred
async def test_two_gib_through_send_and_recv_at_flat_memory(
    reactor: Any, tmp_path: Path
) -> None:
    server, base = await serving(reactor, tmp_path)
    size = 2 * 1024**3
    try:
        url = f"{base}/big-{os.getpid()}"
        receiving = txpipe(reactor, "recv", url, "-o", "/dev/null", "-q")
        command = shlex.join([*TXPIPE, "send", url, "-", "-q"])
        sender = run(
            reactor, ["/bin/sh", "-c", f"head -c {size} /dev/zero | {command}"]
        )
        code, _, send_err = await ended(sender)
        assert code == 0, send_err
        code, _, recv_err = await ended(receiving)
        assert code == 0, recv_err
        assert (
            f"{size} bytes".encode() in send_err
            and f"{size} bytes".encode() in recv_err
        )
        assert maxrss_mib(send_err) < 100, send_err
        assert maxrss_mib(recv_err) < 100, recv_err
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_progress_bar_on_a_terminal(reactor: Any, tmp_path: Path) -> None:
    """
    With stderr on a terminal, send shows a bar with the receivers it
    waits for, and both show bytes; with -q, nothing but the result.
    """
    server, base = await serving(reactor, tmp_path)
    try:
        data = payload(tmp_path, 4 * 1024 * 1024)
        url = f"{base}/tty-{os.getpid()}?n=1"
        terminals = [os.openpty() for _ in range(3)]
        for _, secondary in terminals:
            size = struct.pack("HHHH", 24, 100, 0, 0)
            fcntl.ioctl(secondary, termios.TIOCSWINSZ, size)
        children = []
        for (_, secondary), args in zip(
            terminals,
            [
                ["send", url, str(data)],
                ["recv", url, "-o", "/dev/null"],
                ["recv", "x", "-q"],
            ],
        ):
            child = _Child()
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            reactor.spawnProcess(
                child,
                sys.executable,
                [*TXPIPE, *args],
                env=env,
                childFDs={0: "w", 1: "r", 2: secondary},
            )
            os.close(secondary)
            children.append(child)
            if args[0] == "send":
                # The receiver comes once the sender waits, so that the
                # sender's bar shows the wait.
                assert server.port is not None
                await wait_for_status(
                    reactor, server.port, lambda d: d["senders_connected"] == 1
                )
        codes = []
        for child in children[:2]:
            codes.append(await child.ended)
        assert codes == [0, 0]
        await children[2].ended
        shown = []
        for primary, _ in terminals:
            out = bytearray()
            os.set_blocking(primary, False)
            while True:
                try:
                    chunk = os.read(primary, 65536)
                except (BlockingIOError, OSError):
                    break
                if not chunk:
                    break
                out += chunk
            os.close(primary)
            shown.append(bytes(out))
        send_tty, recv_tty, quiet_tty = shown
        assert b"\r" in send_tty and b"send" in send_tty, send_tty
        assert b"waiting: 0/1 receivers" in send_tty, send_tty
        assert b"\r" in recv_tty and b"recv" in recv_tty, recv_tty
        assert b"\r" not in quiet_tty.replace(b"\r\n", b"\n"), quiet_tty
    finally:
        await server.stop()
