"""
Starting C{twistd -n pipe} and learning its ports, shared by the
benchmarks and the tests (which import this module: see
C{tests/helpers/twistd.py}); and the server child processes of the
benchmarks, measured from /proc: a C{twistd -n pipe} (L{Server}) and the
generic part any server shares (L{ChildServer}).

A server is started on port 0 and asked for its port once: every listener
of C{twistd pipe} logs C{txpipe VERSION listening on ADDRESS} when it is
bound, in the order of its C{--listen} options, then its
C{--metrics-listen} ones (L{listening_ports} reads them from the text log
or the JSON log).  No port is picked beforehand, so none can be taken by
another process in between.

This module uses the standard library only: the benchmarks' own process
never imports Twisted.
"""

from __future__ import annotations

import collections
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Deque, Dict, List, Optional, Tuple

#: Python code that runs C{twistd} with this process's arguments.
TWISTD_CODE = (
    "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"
)

#: The C{twistd} of the running interpreter.
TWISTD = [sys.executable, "-c", TWISTD_CODE]

#: A listener on a port the kernel picks, on the loopback interface.
LOOPBACK = "tcp:0:interface=127.0.0.1"

# The line every listener of twistd pipe logs once bound (pipe.tap), in the
# text log; an IPv6 address has more fields after the port.
_LISTENING = re.compile(
    rb"listening on IPv[46]Address\(type='TCP', host='[^']*', port=(\d+)[,)]"
)


def twistd_pipe(
    listen: str = LOOPBACK,
    *options: str,
    log: str = "-",
    python: str = sys.executable,
    preamble: str = "",
) -> List[str]:
    """
    The command line of C{twistd --nodaemon pipe} listening on C{listen},
    logging to C{log} (a file name, C{-} for standard output, or
    C{logger=NAME} for an observer factory), run by C{python} after the
    Python code C{preamble}.
    """
    logging = f"--{log}" if log.startswith("logger=") else f"--logfile={log}"
    return [
        python,
        "-c",
        preamble + TWISTD_CODE,
        "--nodaemon",
        "--pidfile=",
        logging,
        "pipe",
        "--listen",
        listen,
        *options,
    ]


def child_env() -> Dict[str, str]:
    """
    This environment without C{PYTHONPATH}, so that a child C{twistd} runs the
    installed plugin, not the checkout.
    """
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def listening_ports(output: bytes) -> List[int]:
    """
    The TCP ports a server reported in C{output} (its log so far: text, or
    one JSON event a line), in the order it listened on them: a C{twistd
    pipe}'s C{--listen} endpoints, then its C{--metrics-listen} ones.
    """
    ports: List[int] = []
    for line in output.splitlines():
        line = line.lstrip(b"\x1e")  # a JSON log's record separator, if any
        if line.startswith(b"{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(event, dict)
                and "listening on" in str(event.get("log_format", ""))
                and isinstance(event.get("port"), int)
            ):
                ports.append(event["port"])
            continue
        match = _LISTENING.search(line)
        if match:
            ports.append(int(match.group(1)))
    return ports


def free_port() -> int:
    """
    A loopback port that is free now, for a server that cannot be given
    port 0 and asked which port it got (HAProxy, nginx and Prometheus read
    their port from a configuration file; piping-server from its command
    line).  Never for C{twistd pipe}: see L{start_pipe}.

    The port is bound, closed and reused: another process may take it in
    between, and the server then fails to start, visibly.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerEnded(Exception):
    """
    The server ended, or did not report its ports in time.
    """


def start_pipe(
    argv: List[str],
    cwd: Path,
    log: Optional[Path] = None,
    listeners: int = 1,
    timeout: float = 60.0,
) -> Tuple[subprocess.Popen[bytes], List[int], List[bytes]]:
    """
    Start C{argv} (a L{twistd_pipe} command line) in C{cwd} with
    L{child_env}, and wait until it reports C{listeners} ports.

    With C{log} (the file C{argv} logs to), the log is read as it grows;
    the child's standard output and error are this process's.  Without it, the
    child's output (C{--logfile=-}) is a pipe read line by line: the caller
    must keep reading the rest (C{process.stdout}), or the child blocks.

    @return: the process, its ports in the order it listened (see
        L{listening_ports}), and the lines of output read (none with C{log}).
    @raise ServerEnded: it ended first, or C{timeout} seconds passed.
    """
    deadline = time.monotonic() + timeout
    if log is not None:
        process = subprocess.Popen(argv, cwd=cwd, env=child_env())
        while True:
            text = log.read_bytes() if log.exists() else b""
            ports = listening_ports(text)
            if len(ports) >= listeners:
                return process, ports, []
            if process.poll() is not None or time.monotonic() > deadline:
                _end(process)
                raise ServerEnded(f"the server did not start: {text[-2000:]!r}")
            time.sleep(0.02)
    process = subprocess.Popen(
        argv, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    lines = _lines_until(process.stdout, listeners, deadline)
    ports = listening_ports(b"".join(lines))
    if len(ports) < listeners:
        _end(process)
        raise ServerEnded(f"the server did not start: {b''.join(lines)[-2000:]!r}")
    return process, ports, lines


def _lines_until(stream: IO[bytes], listeners: int, deadline: float) -> List[bytes]:
    """
    The lines of C{stream} up to the one that reports the C{listeners}th
    port, or up to its end, or those read by C{deadline} (a reader thread
    waits for each line, so a silent child cannot hang the caller).
    """
    lines: List[bytes] = []
    found = threading.Event()

    def read() -> None:
        count = 0
        for line in stream:
            lines.append(line)
            count += len(listening_ports(line))
            if count >= listeners:
                break
        found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    found.wait(max(0.0, deadline - time.monotonic()))
    if not found.is_set():
        return list(lines)
    reader.join()
    return lines


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


# Log lines worth a look in either server's output: errors, and every
# transfer or party that did not end normally.
_TROUBLE = re.compile(
    rb"Traceback|Unhandled|CRITICAL|#error|#critical|#warn|\[ERROR\]|\[WARN\]"
    rb"|uncaughtException|on-aborted|on-error|rejected |left while waiting"
    rb"|no complete request|transfer [0-9a-f]+ (?!complete:)[a-z_]+:"
)


class ChildServer:
    """
    A server child process: its output drained by a thread (the last lines
    and every line that looks like trouble kept), and its CPU, memory, disk
    writes and open files read from /proc.

    @ivar name: the server's name in results.
    @ivar prefix: the URL path in front of a pipe's path.
    @ivar port: the loopback port it listens on.
    """

    name = "server"
    prefix = "/"

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes]
        self.tail: Deque[bytes] = collections.deque(maxlen=200)
        self.trouble: List[bytes] = []

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.tail.append(line)
            if _TROUBLE.search(line) and len(self.trouble) < 1000:
                self.trouble.append(line)

    def drain_in_background(self) -> None:
        """Keep reading the log so the server never blocks on it."""
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str, n: int) -> str:
        """The URL of pipe C{path} for C{n} receivers."""
        return f"http://127.0.0.1:{self.port}{self.prefix}{path}?n={n}"

    def status_kib(self, field: str) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        assert match
        return int(match.group(1))

    def reset_peak_rss(self) -> bool:
        """
        Reset the kernel's peak RSS (VmHWM) to the current RSS, so that
        VmHWM later is the exact peak since now; C{False} if not allowed.
        """
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def io(self, field: str) -> int:
        text = Path(f"/proc/{self.pid}/io").read_text()
        match = re.search(rf"^{field}: (\d+)$", text, re.M)
        assert match
        return int(match.group(1))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1]
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def fd_count(self) -> int:
        """How many files (sockets included) the server holds open."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Server(ChildServer):
    """
    A C{twistd -n pipe} child process on a loopback port of its choosing
    (see L{start_pipe}), run by
    C{python} (another environment's interpreter runs the txpipe installed
    there: a baseline to compare with); C{preamble} is Python code run
    before twistd starts (C{cost.py} loads its tracer with it).  With
    C{tls} (a key and a certificate file) it also listens with TLS, on
    C{tls_port}.
    """

    name = "txpipe"
    prefix = "/api/v1/pipe/"
    tls_port = 0

    def __init__(
        self,
        workdir: Path,
        options: Optional[List[str]] = None,
        python: str = sys.executable,
        name: str = "txpipe",
        preamble: str = "",
        tls: Optional[Tuple[Path, Path]] = None,
    ) -> None:
        super().__init__()
        self.name = name
        options = list(options or [])
        if tls is not None:
            key, cert = tls
            options[:0] = [
                "--listen",
                f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            ]
        argv = twistd_pipe(LOOPBACK, *options, python=python, preamble=preamble)
        try:
            self.process, ports, lines = start_pipe(
                argv, workdir, listeners=1 if tls is None else 2
            )
        except ServerEnded as e:
            raise SystemExit(
                f"twistd pipe did not start (is txpipe installed?): {e}"
            ) from None
        self.port = ports[0]
        if tls is not None:
            self.tls_port = ports[1]
        self.tail.extend(lines)
        self.drain_in_background()

    def tls_url(self, path: str, n: int) -> str:
        """The C{https} URL of pipe C{path} (a server started with C{tls})."""
        return f"https://127.0.0.1:{self.tls_port}{self.prefix}{path}?n={n}"

    def status(self) -> Dict[str, object]:
        """The server's C{/api/v1/status} document."""
        url = f"http://127.0.0.1:{self.port}/api/v1/status"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
