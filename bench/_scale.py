"""
Scale scenarios of C{compare.py}: 10,000 waiting receivers (memory per
receiver) and one pipe to 1,000 raw-socket receivers.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import selectors
import socket
import threading
import time
from typing import Any, Dict, List, Optional

from _harness import Bench, Meter, Metrics, MiB, Params, mib, parse_response
from _twistd import ChildServer


class RawReceivers:
    """
    Raw non-blocking sockets, each sending one GET and keeping what comes
    back, driven by one C{selectors} loop.
    """

    def __init__(self, port: int, requests: List[bytes]) -> None:
        self.selector = selectors.DefaultSelector()
        self.pending: Dict[socket.socket, bytes] = {}
        self.received: Dict[socket.socket, List[bytes]] = {}
        self.eof: Dict[socket.socket, float] = {}
        self.failed_connects = 0
        for request in requests:
            sock = socket.socket()
            sock.setblocking(False)
            err = sock.connect_ex(("127.0.0.1", port))
            if err not in (0, errno.EINPROGRESS):
                self.failed_connects += 1
                sock.close()
                continue
            self.pending[sock] = request
            self.received[sock] = []
            self.selector.register(sock, selectors.EVENT_WRITE)

    @property
    def sent(self) -> int:
        return len(self.received) - len(self.pending)

    def poll(self, timeout: float) -> None:
        """Send what can be sent, read what arrived, for up to C{timeout}."""
        for key, events in self.selector.select(timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if events & selectors.EVENT_WRITE:
                self._write(sock)
            elif events & selectors.EVENT_READ:
                self._read(sock)

    def _write(self, sock: socket.socket) -> None:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.failed_connects += 1
            self._finish(sock)
            del self.pending[sock]
            return
        try:
            written = sock.send(self.pending[sock])
        except OSError:
            self.failed_connects += 1
            self._finish(sock)
            del self.pending[sock]
            return
        rest = self.pending[sock][written:]
        if rest:
            self.pending[sock] = rest
        else:
            del self.pending[sock]
            self.selector.modify(sock, selectors.EVENT_READ)

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(256 * 1024)
        except OSError:
            data = b""
        if data:
            self.received[sock].append(data)
        else:
            self._finish(sock)

    def _finish(self, sock: socket.socket) -> None:
        self.eof[sock] = time.monotonic()
        self.selector.unregister(sock)

    def answered(self) -> int:
        """How many got any byte back or were closed by the server."""
        return sum(1 for s, data in self.received.items() if data or s in self.eof)

    def close(self) -> None:
        for sock in self.received:
            if sock not in self.eof:
                self.selector.unregister(sock)
            sock.close()
        self.selector.close()


def run_scale_waiting(bench: Bench, server: ChildServer, params: Params) -> Metrics:
    count = params["receivers"]
    host = f"Host: 127.0.0.1:{server.port}\r\n"
    requests = [
        f"GET {server.prefix}{bench.path('scale')}?n=1 HTTP/1.1\r\n{host}\r\n".encode()
        for _ in range(count)
    ]
    fds_before = server.fd_count()
    with Meter(server) as meter:
        clients = RawReceivers(server.port, requests)
        deadline = meter.started + 30
        reached: Optional[float] = None
        next_check = 0.0
        while time.monotonic() < deadline:
            clients.poll(0.02)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.1
                # Give or take a few files of its own the server may close.
                if server.fd_count() >= fds_before + count - 10:
                    reached = now - meter.started
                    break
        settle = time.monotonic() + 1
        while time.monotonic() < settle:
            clients.poll(0.05)
        fds_held = server.fd_count()
        rss_held = server.status_kib("VmRSS")
        answered = clients.answered()
        closing = time.monotonic()
        clients.close()
        released: Optional[float] = None
        while time.monotonic() < closing + 30:
            if server.fd_count() <= fds_before + 2:
                released = time.monotonic() - closing
                break
            time.sleep(0.05)
        meter.stop()
    fds_after = server.fd_count()
    return {
        **meter.metrics(0),
        "receivers": count,
        "requests_sent": clients.sent,
        "failed_connects": clients.failed_connects,
        "fds_before": fds_before,
        "fds_held": fds_held,
        "reached_s": None if reached is None else round(reached, 2),
        "rss_held_mib": mib(rss_held),
        "rss_held_growth_mib": mib(rss_held - meter.rss_before),
        "kib_per_receiver": round((rss_held - meter.rss_before) / count, 2),
        "answered_early": answered,
        "fds_after": fds_after,
        "released_s": None if released is None else round(released, 2),
        "ok": reached is not None and not answered and released is not None,
    }


def run_scale_fanout(bench: Bench, server: ChildServer, params: Params) -> Metrics:
    n = params["receivers"]
    payload = bench.block[: params["size_mib"] * MiB]
    digest = hashlib.sha256(payload).hexdigest()
    target = f"{server.prefix}{bench.path('scale-fanout')}?n={n}"
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    fds_before = server.fd_count()
    sent: Dict[str, Any] = {}

    def send() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            conn.request(
                "PUT",
                target,
                body=payload,
                headers={"Content-Length": str(len(payload))},
            )
            response = conn.getresponse()
            sent["status"] = response.status
            sent["last_line"] = response.read().decode("utf-8", "replace").strip()
            sent["last_line"] = sent["last_line"].splitlines()[-1][:200]
        except (OSError, http.client.HTTPException, IndexError) as e:
            sent["error"] = f"{type(e).__name__}: {e}"
        finally:
            conn.close()

    with Meter(server) as meter:
        clients = RawReceivers(server.port, [request] * n)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            clients.poll(0.02)
            if not clients.pending and server.fd_count() >= fds_before + n - 10:
                break
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            clients.poll(0.05)
        started = time.monotonic()
        sender = threading.Thread(target=send)
        sender.start()
        deadline = started + 60
        while len(clients.eof) < len(clients.received) and time.monotonic() < deadline:
            clients.poll(0.05)
        last_eof = max(clients.eof.values(), default=started)
        sender.join(max(0.0, deadline - time.monotonic()))
        meter.stop()
    completed = 0
    problems: Dict[str, int] = {}
    for sock, chunks in clients.received.items():
        status, body, problem = parse_response(b"".join(chunks))
        if sock not in clients.eof:
            problem = "no EOF"
        elif status != 200:
            problem = problem or f"status {status}"
        elif not problem and hashlib.sha256(body).hexdigest() != digest:
            problem = "hash mismatch"
        if problem:
            problems[problem] = problems.get(problem, 0) + 1
        else:
            completed += 1
    clients.close()
    took = last_eof - started
    return {
        **meter.metrics(completed * len(payload)),
        "time_s": round(took, 3),
        "receivers": n,
        "completed": completed,
        "problems": problems,
        "failed_connects": clients.failed_connects,
        "sender_status": sent.get("status"),
        "sender_last_line": sent.get("last_line", sent.get("error")),
        "ok": completed == n and sent.get("status") == 200,
    }
