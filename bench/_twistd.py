"""
Server child processes for the benchmarks, measured from /proc: a
C{twistd -n pipe} (L{Server}) and the generic part any server shares
(L{ChildServer}).
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Deque, Dict, List, Optional

TWISTD = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
]

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
    A C{twistd -n pipe} child process on a free loopback port, run by
    C{python} (another environment's interpreter runs the txpipe installed
    there: a baseline to compare with); C{preamble} is Python code run
    before twistd starts (C{cost.py} loads its tracer with it).
    """

    name = "txpipe"
    prefix = "/api/v1/pipe/"

    def __init__(
        self,
        workdir: Path,
        options: Optional[List[str]] = None,
        python: str = sys.executable,
        name: str = "txpipe",
        preamble: str = "",
    ) -> None:
        super().__init__()
        self.name = name
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.process = subprocess.Popen(
            [
                python,
                "-c",
                preamble + TWISTD[2],
                "--nodaemon",
                "--pidfile=",
                "--logfile=-",
                "pipe",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                *(options or []),
            ],
            cwd=str(workdir),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.tail.append(raw)
            match = re.search(rb"listening on IPv4Address\(.*port=(\d+)\)", raw)
            if match:
                self.port = int(match.group(1))
                break
        if not self.port:
            raise SystemExit("twistd pipe did not start (is txpipe installed?)")
        self.drain_in_background()

    def status(self) -> Dict[str, object]:
        """The server's C{/api/v1/status} document."""
        url = f"http://127.0.0.1:{self.port}/api/v1/status"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
