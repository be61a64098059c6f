"""
A C{twistd -n pipe} child process for the benchmarks, measured from /proc.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

TWISTD = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
]


class Server:
    """A C{twistd -n pipe} child process on a free loopback port."""

    def __init__(self, workdir: Path, options: Optional[List[str]] = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.process = subprocess.Popen(
            [
                *TWISTD,
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
        self.port = 0
        for raw in self.process.stdout:
            match = re.search(rb"listening on IPv4Address\(.*port=(\d+)\)", raw)
            if match:
                self.port = int(match.group(1))
                break
        if not self.port:
            raise SystemExit("twistd pipe did not start (is txpipe installed?)")
        # Keep draining the log so the server never blocks on it.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def status_kib(self, field: str) -> int:
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        assert match
        return int(match.group(1))

    def io(self, field: str) -> int:
        text = Path(f"/proc/{self.process.pid}/io").read_text()
        match = re.search(rf"^{field}: (\d+)$", text, re.M)
        assert match
        return int(match.group(1))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1]
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def status(self) -> Dict[str, object]:
        """The server's C{/api/v1/status} document."""
        url = f"http://127.0.0.1:{self.port}/api/v1/status"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
