"""
Child processes driven by the tests' reactor: curl (or any command whose
output is collected as curl's), the C{txpipe} command, and the files and
digests they move.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

CURL = "curl"


class CurlResult:
    """
    What a finished curl printed and how it exited.

    @ivar code: the exit code (or C{-signal} when killed).
    @ivar digest: SHA-256 hex of standard output.
    @ivar size: bytes on standard output.
    @ivar text: standard output, when kept.
    @ivar stderr: standard error.
    """

    code: int
    digest: str
    size: int
    text: bytes
    stderr: bytes

    def __repr__(self) -> str:
        return (
            f"<curl exit={self.code} size={self.size} text={self.text[-300:]!r}"
            f" stderr={self.stderr[-300:]!r}>"
        )


class _CurlProtocol(ProcessProtocol):
    def __init__(self, keep_text: bool) -> None:
        self._digest = hashlib.sha256()
        self._keep = keep_text
        self._text = bytearray()
        self._stderr = bytearray()
        self._size = 0
        self.ended: defer.Deferred[CurlResult] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self._digest.update(data)
        self._size += len(data)
        if self._keep:
            self._text += data

    def errReceived(self, data: bytes) -> None:
        self._stderr += data

    def processEnded(self, reason: Failure) -> None:
        result = CurlResult()
        value = reason.value
        result.code = (
            value.exitCode if value.exitCode is not None else -(value.signal or 0)
        )
        result.digest = self._digest.hexdigest()
        result.size = self._size
        result.text = bytes(self._text)
        result.stderr = bytes(self._stderr)
        self.ended.callback(result)


class Curl:
    """
    A running curl process.
    """

    def __init__(self, protocol: _CurlProtocol) -> None:
        self._protocol = protocol
        self.ended = protocol.ended

    def kill(self) -> None:
        transport = self._protocol.transport
        if transport is not None and self._protocol.ended.called is False:
            transport.signalProcess("KILL")


def curl(
    reactor: Any,
    *args: str,
    stdin: Optional[Path] = None,
    keep_text: bool = False,
) -> Curl:
    """
    Start C{curl -sS ARGS...}; standard input from C{stdin} (a file) or
    empty.
    """
    return spawn(reactor, [CURL, "-sS", *args], stdin=stdin, keep_text=keep_text)


def spawn(
    reactor: Any,
    argv: List[str],
    stdin: Optional[Path] = None,
    keep_text: bool = False,
    cwd: Optional[Path] = None,
    env: Optional[Dict[str, str]] = None,
) -> Curl:
    """
    Start C{argv} (curl, or a script that runs curls), with its output
    collected as for curl; standard input from C{stdin} (a file) or empty;
    this environment unless C{env} is given.
    """
    protocol = _CurlProtocol(keep_text)
    fds: Dict[int, Any] = {1: "r", 2: "r"}
    handle = None
    if stdin is not None:
        handle = open(stdin, "rb")
        fds[0] = handle.fileno()
    else:
        fds[0] = "w"
    reactor.spawnProcess(
        protocol,
        argv[0],
        argv,
        env=dict(os.environ) if env is None else env,
        childFDs=fds,
        path=None if cwd is None else str(cwd),
    )
    if handle is not None:
        handle.close()
    elif protocol.transport is not None:
        protocol.transport.closeStdin()
    return Curl(protocol)


def payload(tmp_path: Path, size: int, name: str = "payload.bin") -> Path:
    """
    A file of C{size} random bytes.
    """
    path = tmp_path / name
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 1 << 20))
            f.write(chunk)
            remaining -= len(chunk)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: The sender's last line after a complete transfer.
DONE = re.compile(rb"^\[INFO\] done: bytes=(\d+) receivers=(\d+)/(\d+)", re.M)


#: Runs the txpipe command and reports its own peak RSS (KiB) on stderr, as
#: its last line C{maxrss N}.  Its own: on Linux, C{VmHWM} of
#: C{/proc/self/status}, the high-water mark of the memory this program used
#: since it was exec'd.  Not C{getrusage}'s C{ru_maxrss}: Linux folds into it
#: the RSS of the address space the child had before exec, the spawner's
#: (Twisted's C{spawnProcess} forks or vforks the test process), so a
#: receiver of 49 MiB read 111 MiB when the test process was 60 MiB larger,
#: and it read more the larger pytest had grown, with the suite and the load.
#: Where there is no C{/proc}, C{ru_maxrss}.
TXPIPE = [
    sys.executable,
    "-c",
    "\n".join(
        [
            "import re, resource, sys",
            "from pipe._cli.main import main",
            "code = main(sys.argv[1:])",
            "try:",
            "    with open('/proc/self/status') as status:",
            "        found = re.search(r'VmHWM:\\s+(\\d+)', status.read())",
            "except OSError:",
            "    found = None",
            "usage = resource.getrusage(resource.RUSAGE_SELF)",
            "peak = int(found.group(1)) if found else usage.ru_maxrss",
            "print('maxrss', peak, file=sys.stderr)",
            "sys.exit(code)",
        ]
    ),
]


class Child(ProcessProtocol):
    """
    A child process (the C{txpipe} command) with its standard output and
    error kept; C{ended} fires with its exit status (C{-signal} if killed).
    """

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

    def feed(self, data: bytes) -> None:
        """Write to the child's standard input (see L{run}'s C{feed})."""
        assert self.transport is not None
        self.transport.write(data)

    def signal(self, name: str) -> None:
        assert self.transport is not None
        self.transport.signalProcess(name)


def run(
    reactor: Any,
    argv: List[str],
    stdin: Optional[Path] = None,
    cwd: Optional[Path] = None,
    feed: bool = False,
) -> Child:
    """
    Start C{argv}; standard input from C{stdin} (a file), or a pipe the
    test writes to with L{Child.feed} and closes with C{closeStdin} when
    C{feed}, else empty.
    """
    child = Child()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    fds: Dict[int, Any] = {1: "r", 2: "r"}
    handle = open(stdin, "rb") if stdin is not None else None
    fds[0] = handle.fileno() if handle is not None else "w"
    reactor.spawnProcess(
        child, argv[0], argv, env=env, childFDs=fds, path=str(cwd or "/")
    )
    if handle is not None:
        handle.close()
    elif child.transport is not None and not feed:
        child.transport.closeStdin()
    return child


def txpipe(
    reactor: Any, *args: str, stdin: Optional[Path] = None, feed: bool = False
) -> Child:
    return run(reactor, [*TXPIPE, *args], stdin=stdin, feed=feed)


async def ended(child: Child) -> Tuple[int, bytes, bytes]:
    code = await child.ended
    return code, bytes(child.out), bytes(child.err)
