"""
C{twistd -n pipe} in a child process, started on port 0 and asked for its
port once.

The command line, the environment and the reading of the ports a server
reports live in C{bench/_twistd.py}, the one implementation that the
benchmarks (scripts run as C{python bench/NAME.py}, which import their
neighbours as top-level modules and must run without Twisted in their own
process) and the tests share.  The tests import it, not the other way
round: the bench directory is put at the end of C{sys.path} here (and on
mypy's path by C{pyproject.toml}), whereas the benchmarks importing the
tests package would load Twisted and every test helper into the measuring
process.  This module adds what only the tests need: L{TwistdServer}, the
same start driven by the tests' reactor.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from typing import Any, List, Optional

from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

_BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if _BENCH not in sys.path:
    sys.path.append(_BENCH)

from _twistd import (  # noqa: E402
    LOOPBACK,
    TWISTD,
    ServerEnded,
    child_env,
    free_port,
    listening_ports,
    start_pipe,
    twistd_pipe,
)

__all__ = [
    "LOOPBACK",
    "TWISTD",
    "ServerEnded",
    "StopRecorder",
    "TwistdServer",
    "child_env",
    "free_port",
    "listening_ports",
    "reported_port",
    "start_pipe",
    "start_twistd",
    "twistd_pipe",
]


class StopRecorder:
    """
    A reactor that records what a listener asks of it when it fails (a
    stop when running, an exit after shutdown), and does none of it.
    """

    def __init__(self) -> None:
        self.triggers: List[Any] = []
        self.when_running: List[Any] = []

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        self.triggers.append((phase, event, f))

    def callWhenRunning(self, f: Any, *args: Any) -> None:
        self.when_running.append(f)


def reported_port(line: str) -> int:
    """
    The port a server's C{listening on} log line reports (as
    L{listening_ports} reads it).
    """
    ports = listening_ports(line.encode())
    assert ports, f"no port in {line!r}"
    return ports[0]


class TwistdServer(ProcessProtocol):
    """
    C{twistd -n pipe} in a child process, for tests that measure the
    server process itself (memory, disk writes) or the installed plugin.
    """

    def __init__(self) -> None:
        self.output = bytearray()
        self.port: Optional[int] = None
        self.listening: defer.Deferred[int] = defer.Deferred()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if self.port is None:
            ports = listening_ports(bytes(self.output))
            if ports:
                self.port = ports[0]
                self.listening.callback(self.port)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if not self.listening.called:
            self.listening.errback(
                AssertionError(f"twistd ended before listening: {bytes(self.output)!r}")
            )
        # twistd re-raises the signal that stopped it, so a clean stop by
        # SIGTERM ends with that signal rather than with status 0.
        value = reason.value
        self.ended.callback(0 if value.signal == signal.SIGTERM else value.exitCode)

    @property
    def pid(self) -> int:
        assert self.transport is not None
        return self.transport.pid  # type: ignore[no-any-return]

    def stop(self) -> defer.Deferred[int]:
        if not self.ended.called and self.transport is not None:
            try:
                self.transport.signalProcess("TERM")
            except ProcessExitedAlready:
                pass
        return self.ended

    def status(self, field: str) -> int:
        """
        A C{/proc/PID/status} field in KiB (C{VmRSS}, C{VmHWM}).
        """
        text = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        assert match, text
        return int(match.group(1))

    def io(self, field: str) -> int:
        """
        A C{/proc/PID/io} counter (C{write_bytes}).
        """
        text = Path(f"/proc/{self.pid}/io").read_text()
        match = re.search(rf"^{field}: (\d+)$", text, re.M)
        assert match, text
        return int(match.group(1))


def start_twistd(
    reactor: Any, cwd: Path, *options: str, logger: Optional[str] = None
) -> TwistdServer:
    """
    Start the installed C{twistd -n pipe} on a loopback port of its choosing
    (its port: L{TwistdServer.listening}), from a directory outside the
    source tree (so that the installed plugin, not the checkout, is what
    runs).
    """
    server = TwistdServer()
    argv = twistd_pipe(
        LOOPBACK,
        *options,
        log=f"logger={logger}" if logger else "-",
    )
    reactor.spawnProcess(server, sys.executable, argv, env=child_env(), path=str(cwd))
    return server
