"""
Acknowledged delivery end to end, against a real C{twistd -n pipe}: the
sender's C{done} waits until every receiver's TCP has acknowledged every
byte, a receiver that dies before that fails the sender, no timer cuts a
response still in flight, and a waiting sender that dies is forgotten at
once.

Receivers are plain sockets with a 32 KiB receive buffer, read only as
each test says, so that what the kernels hold is known: a 2 MiB response
then fits in the server's send buffer, and the server has written all of
it long before the receiver has it.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import pytest_twisted

from pipe import _tcp

from .helpers import (
    DONE,
    Curl,
    RawReceiver,
    TwistdServer,
    curl,
    payload,
    server_status,
    sha256_of,
    start_twistd,
    wait_for_status,
)

MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    not _tcp.SUPPORTED, reason="the platform cannot tell what a peer acknowledged"
)


@pytest.fixture
def twistd(reactor: Any, tmp_path: Path) -> Iterator[Any]:
    """
    Start C{twistd -n pipe} children with the given options; stop them
    after the test.
    """
    servers: List[TwistdServer] = []

    async def start(*options: str) -> TwistdServer:
        server = start_twistd(reactor, tmp_path, *options)
        servers.append(server)
        await server.listening
        return server

    yield start
    for server in servers:
        pytest_twisted.blockon(server.stop())


def settling(doc: Dict[str, Any]) -> bool:
    return bool(doc["pipes_settling"] == 1)


class HeldTransfer:
    """
    A 2 MiB C{curl -T file} to one L{RawReceiver} that reads nothing until
    the test says so, on a new server.
    """

    server: TwistdServer
    port: int
    data: Path
    receiver: RawReceiver
    sender: Curl


async def held_transfer(
    reactor: Any,
    twistd: Any,
    tmp_path: Path,
    path: str,
    *options: str,
    version: bytes = b"HTTP/1.1",
) -> HeldTransfer:
    held = HeldTransfer()
    held.server = await twistd(*options)
    port = held.server.port
    assert port is not None
    held.port = port
    held.data = payload(tmp_path, 2 * MiB)
    held.receiver = RawReceiver(port, path, version=version)
    await wait_for_status(reactor, port, lambda d: d["receivers_connected"])
    url = f"http://127.0.0.1:{port}/api/v1/pipe/{path}"
    held.sender = curl(reactor, "-T", str(held.data), url, keep_text=True)
    return held


@pytest_twisted.ensureDeferred
async def test_done_waits_until_the_receiver_has_every_byte(
    reactor: Any, twistd: Any, tmp_path: Path
) -> None:
    """
    The issue's first case: 2 MiB to a receiver that reads 512 KiB and
    stops.  The server has written everything (its kernel holds the rest),
    but the sender hears nothing final until the receiver has taken it.
    """
    held = await held_transfer(reactor, twistd, tmp_path, "held")
    await held.receiver.read_all(reactor, 512 * 1024)
    await wait_for_status(reactor, held.port, settling, what="settling")
    assert not held.sender.ended.called, "success reported before delivery"
    held_here = len(held.receiver.body) + held.receiver.queued()
    assert held_here < MiB, "the server has written it all: its kernel holds it"
    await held.receiver.read_all(reactor, 2 * MiB)
    sent = await held.sender.ended
    assert sent.code == 0, sent
    assert DONE.search(sent.text).groups() == (b"2097152", b"1", b"1")  # type: ignore[union-attr]
    assert hashlib.sha256(held.receiver.body).hexdigest() == sha256_of(held.data)
    held.receiver.close()


@pytest_twisted.ensureDeferred
async def test_receiver_that_dies_before_acknowledging_fails_the_sender(
    reactor: Any, twistd: Any, tmp_path: Path
) -> None:
    held = await held_transfer(reactor, twistd, tmp_path, "dies")
    await held.receiver.read_all(reactor, 512 * 1024)
    await wait_for_status(reactor, held.port, settling, what="settling")
    held.receiver.reset()
    sent = await held.sender.ended
    assert sent.code != 0, sent
    assert b"[ERROR] failed: bytes=2097152 receivers=0/1" in sent.text
    assert b"disconnected before acknowledging the last" in sent.text
    doc = await wait_for_status(
        reactor, held.port, lambda d: not d["pipes_running"], what="path free"
    )
    assert doc["transfers"]["receiver_lost"] == 1
    assert doc["transfers"]["complete"] == 0


@pytest_twisted.ensureDeferred
async def test_receiver_that_stops_acknowledging_is_dropped_as_stalled(
    reactor: Any, twistd: Any, tmp_path: Path
) -> None:
    held = await held_transfer(
        reactor, twistd, tmp_path, "stuck", "--stall-timeout", "1"
    )
    await held.receiver.read_all(reactor, 256 * 1024)
    sent = await held.sender.ended
    assert sent.code != 0, sent
    assert b"receiver 1 (" in sent.text and b"stalled" in sent.text
    assert b"receivers=0/1" in sent.text
    await held.receiver.read_all(reactor, 2 * MiB)
    assert held.receiver.was_reset, "a dropped receiver never sees a clean end"
    held.receiver.close()


@pytest_twisted.ensureDeferred
async def test_slow_receiver_outlives_every_timeout_and_gets_every_byte(
    reactor: Any, twistd: Any, tmp_path: Path
) -> None:
    """
    The issue's second case: 2 MiB read at 256 KiB/s (about 8 s) under 3 s
    header, idle and stall timeouts.  The server has written everything
    within a second; no timer may reset the connection while the kernels
    still hold the response.
    """
    held = await held_transfer(
        reactor,
        twistd,
        tmp_path,
        "slow",
        "--header-timeout",
        "3",
        "--idle-timeout",
        "3",
        "--stall-timeout",
        "3",
    )
    await held.receiver.read_at(reactor, 2 * MiB, 256 * 1024)
    assert not held.receiver.eof, "the keep-alive connection was closed"
    assert hashlib.sha256(held.receiver.body).hexdigest() == sha256_of(held.data)
    sent = await held.sender.ended
    assert sent.code == 0, sent
    assert DONE.search(sent.text).groups() == (b"2097152", b"1", b"1")  # type: ignore[union-attr]
    held.receiver.close()


@pytest_twisted.ensureDeferred
async def test_http10_receiver_sees_the_end_at_once_and_counts_when_acknowledged(
    reactor: Any, twistd: Any, tmp_path: Path
) -> None:
    """
    A close-delimited (HTTP/1.0) response: the connection is half-closed
    after the last byte, so the receiver reads to its end, and the sender
    is done only once the receiver has everything.
    """
    held = await held_transfer(reactor, twistd, tmp_path, "old", version=b"HTTP/1.0")
    await wait_for_status(reactor, held.port, settling, what="settling")
    assert not held.sender.ended.called
    await held.receiver.read_all(reactor, 2 * MiB + 1)
    assert held.receiver.eof, "FIN after the last byte"
    assert hashlib.sha256(held.receiver.body).hexdigest() == sha256_of(held.data)
    sent = await held.sender.ended
    assert sent.code == 0, sent
    assert b"receivers=1/1" in sent.text
    held.receiver.close()


@pytest_twisted.ensureDeferred
async def test_one_receiver_of_thirty_dying_after_the_last_write_fails_only_the_sender(
    reactor: Any, twistd: Any, tmp_path: Path
) -> None:
    server = await twistd()
    data = payload(tmp_path, 1 * MiB)
    url = f"http://127.0.0.1:{server.port}/api/v1/pipe/thirty?n=30"
    receivers = [curl(reactor, url) for _ in range(29)]
    doomed = RawReceiver(server.port, "thirty", n=30)
    await wait_for_status(
        reactor, server.port, lambda d: d["receivers_connected"] == 30
    )
    sender = curl(reactor, "-T", str(data), url, keep_text=True)
    await wait_for_status(reactor, server.port, settling, what="settling")
    doomed.reset()
    sent = await sender.ended
    assert sent.code != 0, sent
    assert b"[ERROR] failed: bytes=1048576 receivers=29/30" in sent.text
    digest = sha256_of(data)
    for result in [await r.ended for r in receivers]:
        assert result.code == 0 and result.digest == digest, result


async def _dead_waiting_sender_is_forgotten(
    reactor: Any, server: TwistdServer, head: bytes, body: bytes
) -> None:
    port = server.port
    assert port is not None
    sock = socket.socket()
    sock.connect(("127.0.0.1", port))
    sock.sendall(head + body)
    await wait_for_status(reactor, port, lambda d: d["senders_connected"] == 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    await wait_for_status(
        reactor,
        port,
        lambda d: d["senders_connected"] == 0 and d["pipes_waiting"] == 0,
        timeout=0.3,
        what="the dead sender to be forgotten",
    )
    # The path takes a new sender at once.
    url = f"http://127.0.0.1:{port}/api/v1/pipe/waiting?n=2&wait=1"
    again = await curl(reactor, "-T", "-", url, keep_text=True).ended
    assert b"[INFO] waiting for 2 receivers" in again.text, again
    assert b"already has a sender" not in again.text


@pytest_twisted.ensureDeferred
async def test_dead_waiting_sender_is_forgotten_at_once(
    reactor: Any, twistd: Any
) -> None:
    """
    The issue's third case: a waiting chunked sender that sent 64 KiB and is
    killed frees its path within 0.3 s (its upload is still being read).
    """
    server = await twistd()
    head = (
        b"PUT /api/v1/pipe/waiting?n=2 HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    body = b"%x\r\n" % (64 * 1024) + b"x" * 64 * 1024 + b"\r\n"
    await _dead_waiting_sender_is_forgotten(reactor, server, head, body)


@pytest_twisted.ensureDeferred
async def test_dead_waiting_deferred_sender_is_forgotten_at_once(
    reactor: Any, twistd: Any
) -> None:
    """
    A deferred sender hears nothing while it waits, so no write can find it
    dead; reading its (empty, held back by C{Expect}) upload does.
    """
    server = await twistd()
    head = (
        b"PUT /api/v1/pipe/waiting?n=2 HTTP/1.1\r\nHost: t\r\n"
        b"Content-Length: 100\r\nExpect: 100-continue\r\n"
        b"Txpipe-Sender-Response: deferred\r\n\r\n"
    )
    await _dead_waiting_sender_is_forgotten(reactor, server, head, b"")


@pytest_twisted.ensureDeferred
async def test_status_counts_a_settling_transfer_as_running(
    reactor: Any, twistd: Any, tmp_path: Path
) -> None:
    held = await held_transfer(reactor, twistd, tmp_path, "status")
    doc = await wait_for_status(reactor, held.port, settling, what="settling")
    assert doc["pipes_running"] == 1
    assert doc["receivers_connected"] == 1, "a receiver counts until acknowledged"
    await held.receiver.read_all(reactor, 2 * MiB)
    assert (await held.sender.ended).code == 0
    doc = await server_status(reactor, held.port)
    assert doc["pipes_settling"] == doc["pipes_running"] == 0
    held.receiver.close()


def test_position_and_duplicate_read_a_real_connection() -> None:
    """
    L{pipe._tcp} against a loopback connection whose peer does not read:
    the written count grows with each write, the acknowledged count lags,
    and a duplicate descriptor still answers after the socket is closed
    and the peer reset.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    peer.connect(listener.getsockname())
    sock, _ = listener.accept()
    sock.setblocking(False)
    written = 0
    try:
        while True:
            written += sock.send(b"x" * 65536)
    except BlockingIOError:
        pass
    position = _tcp.position(sock)
    assert position is not None
    acknowledged, total = position
    assert total == written
    assert 0 < acknowledged < written
    assert _tcp.unacknowledged(sock) == written - acknowledged
    copy = _tcp.duplicate(sock)
    assert copy is not None
    sock.close()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    assert _tcp.acknowledged(copy) == acknowledged
    assert _tcp.unacknowledged(sock) is None, "a closed socket cannot tell"
    copy.close()
    listener.close()


def test_unix_sockets_are_not_counted() -> None:
    left, right = socket.socketpair()
    assert _tcp.unacknowledged(left) is None
    assert _tcp.position(left) is None
    assert _tcp.duplicate(left) is None
    left.close()
    right.close()
