"""
Helpers for end-to-end tests: real listening servers, real curl processes.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from twisted.internet import defer, task
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

CURL = "curl"

#: The C{twistd} of the running interpreter.
TWISTD = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
]


def twistd_pipe(
    listen: str = "tcp:0:interface=127.0.0.1", *options: str, log: str = "-"
) -> List[str]:
    """
    The command line of C{twistd --nodaemon pipe} listening on C{listen},
    logging to C{log} (a file name, C{-} for standard output, or
    C{logger=NAME} for an observer factory).
    """
    logging = f"--{log}" if log.startswith("logger=") else f"--logfile={log}"
    return [
        *TWISTD,
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


def wait_for(
    reactor: Any,
    condition: Callable[[], bool],
    timeout: float = 15.0,
    what: str = "condition",
) -> defer.Deferred[None]:
    """
    Poll C{condition} every 5 ms until it holds; fail after C{timeout}
    seconds.  This waits for a state, it does not sleep for a time.
    """
    deadline = reactor.seconds() + timeout

    @defer.inlineCallbacks
    def poll() -> Any:
        while not condition():
            if reactor.seconds() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            yield task.deferLater(reactor, 0.005, lambda: None)

    return poll()


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


DONE = re.compile(rb"^\[INFO\] done: bytes=(\d+) receivers=(\d+)/(\d+)", re.M)


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
            match = re.search(
                rb"listening on IPv4Address\(type='TCP', host='[^']+', port=(\d+)\)"
                rb'|"port": (\d+)',
                self.output,
            )
            if match:
                self.port = int(match.group(1) or match.group(2))
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
    Start the installed C{twistd -n pipe} on a free loopback port, from a
    directory outside the source tree (so that the installed plugin, not the
    checkout, is what runs).
    """
    server = TwistdServer()
    argv = twistd_pipe(
        "tcp:0:interface=127.0.0.1",
        *options,
        log=f"logger={logger}" if logger else "-",
    )
    reactor.spawnProcess(server, sys.executable, argv, env=child_env(), path=str(cwd))
    return server


def raw_http(
    reactor: Any, port: int, data: bytes, timeout: float = 10.0
) -> defer.Deferred[bytes]:
    """
    Send C{data} on a new loopback connection and collect everything the
    server writes until it closes the connection.
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory, Protocol

    received = bytearray()
    done: defer.Deferred[bytes] = defer.Deferred()

    class Client(Protocol):
        def connectionMade(self) -> None:
            assert self.transport is not None
            self.transport.write(data)

        def dataReceived(self, chunk: bytes) -> None:
            received.extend(chunk)

        def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
            if not done.called:
                done.callback(bytes(received))

    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    connecting = endpoint.connect(Factory.forProtocol(Client))
    connecting.addErrback(done.errback)
    done.addTimeout(timeout, reactor)
    return done


async def server_status(reactor: Any, port: int) -> Dict[str, Any]:
    """
    The server's C{/api/v1/status} document.
    """
    import treq

    response = await treq.get(f"http://127.0.0.1:{port}/api/v1/status", reactor=reactor)
    document: Dict[str, Any] = await response.json()
    return document


async def wait_for_status(
    reactor: Any,
    port: int,
    condition: Callable[[Dict[str, Any]], bool],
    timeout: float = 15.0,
    what: str = "status",
) -> Dict[str, Any]:
    """
    Poll the server's status every 5 ms until C{condition} holds for it;
    fail after C{timeout} seconds.  Returns the document that satisfied it.
    """
    deadline = reactor.seconds() + timeout
    while True:
        document = await server_status(reactor, port)
        if condition(document):
            return document
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {document}")
        await task.deferLater(reactor, 0.005, lambda: None)


class RawReceiver:
    """
    A receiver on a plain socket with a small receive buffer, read only as
    the test says: the kernel buffers between the server and it are then
    known, and it can stop reading, or die, at any byte.

    @ivar head: the response's status line and headers, once read.
    @ivar body: the response body read so far (chunked framing included).
    @ivar eof: the stream ended (closed or reset).
    @ivar was_reset: the server reset the connection.
    """

    def __init__(
        self,
        port: int,
        path: str,
        n: int = 1,
        rcvbuf: int = 32 * 1024,
        version: bytes = b"HTTP/1.1",
    ) -> None:
        import socket

        self.sock = sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            b"GET /api/v1/pipe/%s?n=%d %s\r\nHost: t\r\n\r\n"
            % (path.encode(), n, version)
        )
        sock.setblocking(False)
        self._raw = bytearray()
        self.head = b""
        self.body = bytearray()
        self.eof = False
        self.was_reset = False

    def queued(self) -> int:
        """
        Bytes waiting in this socket's receive buffer (C{FIONREAD}).
        """
        import fcntl
        import struct
        import termios

        value: int = struct.unpack(
            "i", fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0" * 4)
        )[0]
        return value

    def read(self, limit: int = 1 << 30) -> int:
        """
        Read what is available now, at most C{limit} body bytes; return how
        many body bytes were read.  Notes the end of the stream.
        """
        before = len(self.body)
        while len(self.body) - before < limit and not self.eof:
            want = max(1, limit - (len(self.body) - before))
            try:
                data = self.sock.recv(min(want, 65536))
            except BlockingIOError:
                break
            except ConnectionResetError:
                self.eof = self.was_reset = True
                break
            if not data:
                self.eof = True
                break
            if self.head:
                self.body += data
            else:
                self._raw += data
                head, sep, rest = bytes(self._raw).partition(b"\r\n\r\n")
                if sep:
                    self.head = head
                    self.body += rest
        return len(self.body) - before

    async def read_at(self, reactor: Any, total: int, rate: float) -> None:
        """
        Read until C{total} body bytes are in, at about C{rate} bytes per
        second (in steps of 50 ms).
        """
        step = 0.05
        while len(self.body) < total and not self.eof:
            self.read(max(1, int(rate * step)))
            await task.deferLater(reactor, step, lambda: None)

    async def read_all(self, reactor: Any, total: int, timeout: float = 30) -> None:
        """
        Read at full speed until C{total} body bytes are in (or the end),
        and not more.
        """
        deadline = reactor.seconds() + timeout
        while len(self.body) < total and not self.eof:
            self.read(total - len(self.body))
            if reactor.seconds() > deadline:
                raise AssertionError(f"only {len(self.body)} of {total} bytes arrived")
            await task.deferLater(reactor, 0.002, lambda: None)

    def reset(self) -> None:
        """
        Die: close with a reset (as a killed process with unread data).
        """
        import socket
        import struct

        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def split_responses(data: bytes) -> List[Any]:
    """
    Split what a server wrote on one connection into its HTTP/1.1
    responses, in order, as C{(status line, headers, body)}: bodies framed
    by C{Content-Length} or chunked (decoded); an unframed last body runs
    to the end.  A C{1xx} response counts as one (no body).

    @raise ValueError: the data is not a sequence of whole responses.
    """
    responses = []
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"no end of headers in {head[:80]!r}")
        status, *lines = head.split(b"\r\n")
        if not status.startswith(b"HTTP/1."):
            raise ValueError(f"not a status line: {status[:80]!r}")
        headers: Dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if status.split(b" ")[1].startswith(b"1"):
            body = b""
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            if len(rest) < length:
                raise ValueError(f"body cut short: {len(rest)} of {length}")
            body, rest = rest[:length], rest[length:]
        elif headers.get(b"transfer-encoding") == b"chunked":
            chunks = []
            while True:
                size_line, crlf, rest = rest.partition(b"\r\n")
                if not crlf:
                    raise ValueError("chunked body cut short")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    _, end, rest = rest.partition(b"\r\n")
                    if not end:
                        raise ValueError("no end of the chunked body")
                    break
                chunks.append(rest[:size])
                if rest[size : size + 2] != b"\r\n":
                    raise ValueError("chunk without its CRLF")
                rest = rest[size + 2 :]
            body = b"".join(chunks)
        else:
            body, rest = rest, b""
        responses.append((status, headers, body))
    return responses
