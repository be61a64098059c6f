"""
The C{txpipe} command end to end: C{send}, C{recv} and C{serve} as child
processes against a real C{twistd -n pipe}: every exit status, the one-line
messages (and C{-v}), streaming from a slow producer, prompt exits on a
refusal or a signal, C{recv -o FILE} never leaving unverified data, and a
multi-GiB transfer through both at flat memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shlex
import socket
import struct
import sys
import termios
from pathlib import Path
from typing import Any, List, Tuple

import pytest_twisted

from pipe import __version__
from pipe._cli.exit import ExitStatus
from pipe.client import receive

from .helpers import (
    TXPIPE,
    Child,
    TwistdServer,
    curl,
    ended,
    payload,
    run,
    sha256_of,
    start_twistd,
    txpipe,
    wait_for,
    wait_for_status,
)


async def ended_promptly(
    reactor: Any, child: Child, within: float = 30.0
) -> Tuple[int, bytes, bytes]:
    """
    L{ended}, for a child that must exit by itself: one still running
    after C{within} seconds is killed and the test fails (a bound on a
    hang, not a pause: a child that exits returns at once).
    """
    killer = reactor.callLater(within, child.signal, "KILL")
    result = await ended(child)
    assert killer.active(), f"still running after {within} s: {result[2]!r}"
    killer.cancel()
    return result


def closed_port() -> socket.socket:
    """
    A loopback socket bound to a port and not listening: a connection to
    that port is refused for as long as the socket is kept.
    """
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    return held


def leftovers(directory: Path) -> List[str]:
    """The temporary files C{recv -o} left in C{directory}."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


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
    """
    Every status of L{ExitStatus} that C{send} and C{recv} can end with
    before or around a transfer, each with its one plain line saying what
    happened and how many bytes moved.  An unknown host and a refused
    connection are the same status for both commands: 4, the connection
    failed (not 2: the command line was fine).
    """
    server, base = await serving(reactor, tmp_path)
    port = server.port
    assert port is not None
    held = closed_port()
    refused = f"http://127.0.0.1:{held.getsockname()[1]}/api/v1/pipe/r"
    unknown = "http://nonexistent.invalid/api/v1/pipe/u"
    data = str(payload(tmp_path, 1000))
    cases: List[Tuple[List[str], ExitStatus, bytes]] = [
        (
            ["recv", f"{base}/x?n=0"],
            ExitStatus.REJECTED,
            rb"the server refused the request with HTTP 400: n must be [^\n]+"
            rb" \(0 bytes received\)",
        ),
        (
            ["send", f"{base}/x?n=0", data],
            ExitStatus.REJECTED,
            rb"the server refused the request with HTTP 400: n must be [^\n]+"
            rb" \(\d+ bytes sent\)",
        ),
        (
            ["recv", f"{base}/lonely?wait=1"],
            ExitStatus.WAIT_TIMEOUT,
            rb"the pipe did not start in time: timed out after 1 s waiting:"
            rb" sender not connected, 1 of 1 receivers connected \(0 bytes received\)",
        ),
        (
            ["send", f"{base}/lonely-sender?wait=1", data],
            ExitStatus.WAIT_TIMEOUT,
            rb"the pipe did not start in time: timed out after 1 s waiting:"
            rb" sender connected, 0 of 1 receivers connected \(\d+ bytes sent\)",
        ),
        (
            ["send"],
            ExitStatus.USAGE_ERROR,
            rb"usage: (?s:.+)\ntxpipe \w+: error: [^\n]+",
        ),
        (
            ["recv"],
            ExitStatus.USAGE_ERROR,
            rb"usage: (?s:.+)\ntxpipe \w+: error: [^\n]+",
        ),
        (
            ["send", f"{base}/y", "/nonexistent"],
            ExitStatus.USAGE_ERROR,
            rb"cannot read /nonexistent: No such file or directory",
        ),
        (
            ["recv", f"{base}/y", "-o", "/nonexistent/out.bin"],
            ExitStatus.USAGE_ERROR,
            rb"cannot write /nonexistent/out.bin: No such file or directory",
        ),
        (
            ["send", "pipe.example/p", data],
            ExitStatus.USAGE_ERROR,
            rb"URL must be http\(s\)://HOST/\.\.\., got 'pipe.example/p'",
        ),
        (
            ["recv", "ftp://pipe.example/p"],
            ExitStatus.USAGE_ERROR,
            rb"URL must be http\(s\)://HOST/\.\.\., got 'ftp://pipe.example/p'",
        ),
        (
            ["send", unknown, data],
            ExitStatus.FAILED,
            rb"could not connect to nonexistent.invalid:80: the host name is"
            rb" unknown \(0 bytes sent\)",
        ),
        (
            ["recv", unknown],
            ExitStatus.FAILED,
            rb"could not connect to nonexistent.invalid:80: the host name is"
            rb" unknown \(0 bytes received\)",
        ),
        (
            ["send", refused, data],
            ExitStatus.FAILED,
            rb"could not connect to 127.0.0.1:\d+: the connection was refused"
            rb" \(0 bytes sent\)",
        ),
        (
            ["recv", refused],
            ExitStatus.FAILED,
            rb"could not connect to 127.0.0.1:\d+: the connection was refused"
            rb" \(0 bytes received\)",
        ),
    ]
    try:
        children = [(txpipe(reactor, *args), args, s, line) for args, s, line in cases]
        for child, args, status, line in children:
            code, _, err = await ended_promptly(reactor, child)
            assert code == status, (args, err)
            said = re.sub(rb"maxrss \d+\n\Z", b"", err)
            if not line.startswith(b"usage"):
                line = b"txpipe %s: %s" % (args[0].encode(), line)
            assert re.fullmatch(line + rb"\n", said), (args, err)

        # Mid-transfer: a receiver whose output fails is 4; the sender that
        # loses it is 4.
        big = payload(tmp_path, 32 * 1024 * 1024, "big.bin")
        full = txpipe(reactor, "recv", f"{base}/full", "-o", "/dev/full")
        await wait_for_status(reactor, port, lambda d: d["receivers_connected"] == 1)
        code, _, send_err = await ended(
            txpipe(reactor, "send", f"{base}/full", str(big))
        )
        assert code == ExitStatus.FAILED, send_err
        assert re.search(
            rb"^txpipe send: (the transfer failed: bytes=\d+ receivers=0/1: [^\n]+"
            rb"|the transfer ended early: [^\n]+) \(\d+ bytes sent\)$",
            send_err,
            re.M,
        ), send_err
        code, _, err = await ended(full)
        assert code == ExitStatus.FAILED, err
        assert re.search(
            rb"^txpipe recv: could not write to /dev/full: No space left on device"
            rb" \(\d+ bytes received\)$",
            err,
            re.M,
        ), err
    finally:
        held.close()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_serve_that_cannot_listen_exits_1(reactor: Any, tmp_path: Path) -> None:
    """C{txpipe serve} on a port already taken: L{ExitStatus.SERVER_FAILED}."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        listen = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        child = run(
            reactor, [sys.executable, "-m", "pipe", "serve", "--listen", listen]
        )
        code, _, err = await ended_promptly(reactor, child)
        assert code == ExitStatus.SERVER_FAILED, err
        assert b"cannot listen" in err
    finally:
        taken.close()


@pytest_twisted.ensureDeferred
async def test_recv_to_a_file_keeps_only_verified_data(
    reactor: Any, tmp_path: Path
) -> None:
    """
    C{recv -o FILE} writes a temporary file beside FILE and renames it only
    when the data is whole and verified: on a SHA-256 mismatch (6) FILE
    keeps what it had and no temporary file is left; on success FILE is
    replaced, keeping its permissions.
    """
    server, base = await serving(reactor, tmp_path)
    port = server.port
    assert port is not None
    try:
        data = payload(tmp_path, 3 * 1024 * 1024 + 5)
        where = tmp_path / "out"
        where.mkdir()
        out = where / "build.tar"
        out.write_bytes(b"the previous build")
        out.chmod(0o640)
        url = f"{base}/verified-{os.getpid()}"
        receiving = txpipe(reactor, "recv", url, "-o", str(out), "--sha256", "0" * 64)
        await wait_for_status(reactor, port, lambda d: d["receivers_connected"] == 1)
        assert len(leftovers(where)) == 1, "the temporary file is beside FILE"
        code, _, err = await ended(txpipe(reactor, "send", url, str(data)))
        assert code == ExitStatus.OK, err
        code, _, err = await ended(receiving)
        assert code == ExitStatus.DIGEST_MISMATCH, err
        assert re.search(
            rb"^txpipe recv: SHA-256 mismatch: got %s, expected 0{64}"
            rb" \(3145733 bytes received; %s left as it was\)$"
            % (sha256_of(data).encode(), re.escape(str(out).encode())),
            err,
            re.M,
        ), err
        assert out.read_bytes() == b"the previous build"
        assert leftovers(where) == []

        receiving = txpipe(
            reactor, "recv", url, "-o", str(out), "--sha256", sha256_of(data)
        )
        code, _, err = await ended(txpipe(reactor, "send", url, str(data)))
        assert code == ExitStatus.OK, err
        code, _, err = await ended(receiving)
        assert code == ExitStatus.OK, err
        assert sha256_of(out) == sha256_of(data)
        assert out.stat().st_mode & 0o777 == 0o640
        assert leftovers(where) == []
    finally:
        await server.stop()


class RawSender:
    """
    A sender on a plain socket: it declares a length, sends part of the
    body, and dies (a reset) when the test says.
    """

    def __init__(self, port: int, path: str, length: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(
            b"PUT /api/v1/pipe/%s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
            % (path.encode(), length)
        )

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def die(self) -> None:
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.sock.close()


@pytest_twisted.ensureDeferred
async def test_cut_stream_is_one_plain_line_and_leaves_no_file(
    reactor: Any, tmp_path: Path
) -> None:
    """
    A sender killed mid-transfer: each receiver exits 4 with one line
    saying the stream was cut and how many bytes arrived (no Twisted
    reprs); C{-v} adds Twisted's failures; C{-o FILE} leaves neither FILE
    nor its temporary file.
    """
    server, base = await serving(reactor, tmp_path)
    port = server.port
    assert port is not None
    try:
        where = tmp_path / "out"
        where.mkdir()
        path = f"cut-{os.getpid()}"
        url = f"{base}/{path}?n=2"
        to_file = txpipe(reactor, "recv", url, "-o", str(where / "received.bin"))
        verbose = txpipe(reactor, "recv", url, "-v")
        await wait_for_status(reactor, port, lambda d: d["receivers_connected"] == 2)
        sender = RawSender(port, f"{path}?n=2", 10 * 1024 * 1024)
        piece = os.urandom(100_000)
        sender.send(piece)
        await wait_for(reactor, lambda: len(verbose.out) == len(piece), what="piece")
        sender.die()

        code, _, err = await ended(to_file)
        assert code == ExitStatus.FAILED, err
        line = (
            rb"txpipe recv: the stream was cut: the connection closed before the"
            rb" end of the data \(\d+ bytes received; %s not created\)\n"
            % re.escape(str(where / "received.bin").encode())
        )
        assert re.fullmatch(line + rb"maxrss \d+\n", err), err
        assert leftovers(where) == [] and list(where.iterdir()) == []

        code, _, err = await ended(verbose)
        assert code == ExitStatus.FAILED, err
        assert bytes(verbose.out) == piece
        first, _, rest = err.partition(b"\n")
        assert first == (
            b"txpipe recv: the stream was cut: the connection closed before the"
            b" end of the data (100000 bytes received)"
        )
        assert b"ConnectionLost" in rest or b"ConnectionDone" in rest, err
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_send_streams_a_slow_producer_as_it_writes(
    reactor: Any, tmp_path: Path
) -> None:
    """
    C{producer | txpipe send URL}: what the producer wrote reaches the
    receiver while the producer is still open (not once 256 KiB or the
    end have gathered), and the whole stream arrives intact.
    """
    server, base = await serving(reactor, tmp_path)
    port = server.port
    assert port is not None
    try:
        url = f"{base}/slow-{os.getpid()}"
        got = io.BytesIO()
        receiving = receive(url, got, reactor=reactor)
        await wait_for_status(reactor, port, lambda d: d["receivers_connected"] == 1)
        sender = txpipe(reactor, "send", url, "-q", feed=True)
        first = os.urandom(1000)
        sender.feed(first)
        await wait_for(
            reactor, lambda: len(got.getvalue()) >= len(first), what="first piece"
        )
        assert got.getvalue() == first
        assert not sender.ended.called
        rest = os.urandom(3 * 1024 * 1024)
        sender.feed(rest)
        assert sender.transport is not None
        sender.transport.closeStdin()
        code, _, err = await ended(sender)
        assert code == ExitStatus.OK, err
        digest = hashlib.sha256(first + rest).hexdigest()
        assert f"sha256 {digest}  {len(first + rest)} bytes".encode() in err
        assert (await receiving).sha256 == digest
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_refused_or_interrupted_transfers_exit_promptly(
    reactor: Any, tmp_path: Path
) -> None:
    """
    A sender whose standard input never ends still exits at once when the
    server refuses it (3) or when it gets C{SIGTERM} (4, interrupted); a
    waiting C{recv -o FILE} interrupted by Ctrl-C exits 4 and leaves FILE
    as it was, with no temporary file.
    """
    server, base = await serving(reactor, tmp_path)
    port = server.port
    assert port is not None
    try:
        refused = txpipe(reactor, "send", f"{base}/endless?n=0", "-q", feed=True)
        refused.feed(b"some bytes, and more to come")
        code, _, err = await ended_promptly(reactor, refused)
        assert code == ExitStatus.REJECTED, err
        assert b"the server refused the request with HTTP 400" in err

        sending = txpipe(reactor, "send", f"{base}/endless", "-q", feed=True)
        await wait_for_status(reactor, port, lambda d: d["senders_connected"] == 1)
        sending.signal("TERM")
        code, _, err = await ended_promptly(reactor, sending)
        assert code == ExitStatus.FAILED, err
        assert re.search(rb"^txpipe send: interrupted \(0 bytes sent\)$", err, re.M)

        out = tmp_path / "kept.bin"
        out.write_bytes(b"kept")
        receiving = txpipe(reactor, "recv", f"{base}/nobody-sends", "-o", str(out))
        await wait_for_status(reactor, port, lambda d: d["receivers_connected"] == 1)
        receiving.signal("INT")
        code, _, err = await ended_promptly(reactor, receiving)
        assert code == ExitStatus.FAILED, err
        assert re.search(
            rb"^txpipe recv: interrupted \(0 bytes received; %s left as it was\)$"
            % re.escape(str(out).encode()),
            err,
            re.M,
        ), err
        assert out.read_bytes() == b"kept" and leftovers(tmp_path) == []
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


async def peaks_through_send_and_recv(
    reactor: Any, url: str, size: int
) -> Tuple[float, float]:
    """
    Move C{size} bytes of zeros through C{txpipe send -} and C{txpipe recv
    -o /dev/null} on C{url}; the peak RSS (MiB) of each, as L{TXPIPE}
    measures it: the process's own.
    """
    receiving = txpipe(reactor, "recv", url, "-o", "/dev/null", "-q")
    command = shlex.join([*TXPIPE, "send", url, "-", "-q"])
    sender = run(reactor, ["/bin/sh", "-c", f"head -c {size} /dev/zero | {command}"])
    code, _, send_err = await ended(sender)
    assert code == 0, send_err
    code, _, recv_err = await ended(receiving)
    assert code == 0, recv_err
    moved = f"{size} bytes".encode()
    assert moved in send_err and moved in recv_err, (send_err, recv_err)
    return maxrss_mib(send_err), maxrss_mib(recv_err)


#: How much more memory (MiB) 2 GiB may take than 1 MiB, in send or recv.
GROWTH_MIB = 8


@pytest_twisted.ensureDeferred
async def test_two_gib_through_send_and_recv_at_flat_memory(
    reactor: Any, tmp_path: Path
) -> None:
    """
    Memory does not grow with the payload: 2 GiB through C{txpipe send}
    and C{txpipe recv} leave each with a peak RSS under 100 MiB and within
    L{GROWTH_MIB} of its own peak for 1 MiB moved the same way just before
    (same server, same options, same machine load).

    The peaks are each process's own (L{TXPIPE}: C{VmHWM}).  C{ru_maxrss},
    which this test read before, also holds the RSS the test process had
    when it spawned the child: C{recv} (spawned directly; C{send} runs
    under C{sh}) read 51 MiB with this test alone, 62 after the rest of
    this module, 78 and, under load, 103 to 105 in fuller runs, and 111
    with the test process made 60 MiB larger, while its own peak stayed at
    49 to 50 MiB (see L{test_txpipe_reports_its_own_peak_memory}).

    The absolute bound catches a command that is large whatever it moves;
    the growth bound is the promise itself.  8 MiB: the measured growth
    is 0.3 to 1.3 MiB (quiet on Twisted 22.1 to 26.10, and on 26.10 beside
    three CPU burners and a disk writer), and anything that holds on to more than
    8 MiB of the 2 GiB (128 socket reads of 64 KiB: a buffer that fills
    while the sink is behind, or a leak of one read in 256) exceeds it.
    """
    server, base = await serving(reactor, tmp_path)
    try:
        url = f"{base}/flat-{os.getpid()}"
        small = await peaks_through_send_and_recv(reactor, f"{url}-small", 1024**2)
        big = await peaks_through_send_and_recv(reactor, f"{url}-big", 2 * 1024**3)
        for who, at_small, at_big in zip(("send", "recv"), small, big):
            assert at_big < 100, (who, at_big)
            assert at_big - at_small < GROWTH_MIB, (who, at_small, at_big)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_txpipe_reports_its_own_peak_memory(reactor: Any) -> None:
    """
    The C{maxrss} that L{TXPIPE} reports is the command's own peak, not
    the test process's: spawned while this process holds 128 MiB more,
    a C{txpipe} that only parses its arguments still reports under 100.
    """
    held = b"\x01" * (128 * 1024 * 1024)
    child = txpipe(reactor, "recv", "x", "-q")
    code, _, err = await ended_promptly(reactor, child)
    assert len(held) == 128 * 1024 * 1024  # held until the child ended
    assert code == ExitStatus.USAGE_ERROR, err
    assert maxrss_mib(err) < 100, err


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
            child = Child()
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
