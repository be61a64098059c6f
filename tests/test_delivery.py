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
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pipe._http import tcp as _tcp
from pipe._http.delivery import (
    DELIVERY_CHECK_LONGEST,
    DELIVERY_CHECK_MAX,
    Delivery,
    Linger,
)
from pipe._http.interfaces import IDeliveryConnection, IDeliveryWatcher, ILingerChannel

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
    return bool(doc["pipes_awaiting_acks"] == 1)


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


@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
@pytest_twisted.ensureDeferred
async def test_receiver_that_dies_before_acknowledging_fails_the_sender(
    reactor: Any, twistd: Any, tmp_path: Path, version: bytes
) -> None:
    """
    The server has written everything (its kernel holds most of it) and the
    receiver dies.  Over HTTP/1.0 the server has also closed the connection
    already (gracefully): the reset is seen through the descriptor it kept.
    """
    held = await held_transfer(reactor, twistd, tmp_path, "dies", version=version)
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
    # Read to the end (past the body: the body can never be longer).  The
    # reset closes the connection at the server's next turn; a receiver
    # that reads fast enough may take every byte the kernels hold first
    # (then it has the whole body, intact), but never a clean end.
    await held.receiver.read_all(reactor, 2 * MiB + 1)
    assert held.receiver.was_reset, "a dropped receiver never sees a clean end"
    if len(held.receiver.body) == 2 * MiB:
        digest = hashlib.sha256(held.receiver.body).hexdigest()
        assert digest == sha256_of(held.data)
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
    A close-delimited (HTTP/1.0) response: the connection is closed
    gracefully after the last byte (the receiver reads to its end while the
    kernel still holds most of it), and the sender is done only once the
    receiver has everything: the server keeps counting after its close.
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
    assert doc["pipes_awaiting_acks"] == doc["pipes_running"] == 0
    held.receiver.close()


def test_position_and_duplicate_read_a_real_connection() -> None:
    """
    L{pipe._http.tcp} against a loopback connection whose peer does not read:
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
    assert _tcp._position_in_steps(sock) == position, "both ways agree"
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
    """
    A Unix socket's send queue empties when the peer reads, or dies: it
    says nothing about delivery, and the channel never asks it.
    """
    from pipe._http.writes import tcp_socket_of as _tcp_socket

    class Transport:
        def __init__(self, sock: socket.socket) -> None:
            self.socket = sock

    left, right = socket.socketpair()
    assert not _tcp.is_tcp(left)
    assert _tcp_socket(Transport(left)) is None
    tcp = socket.socket()
    assert _tcp.is_tcp(tcp)
    assert _tcp_socket(Transport(tcp)) is tcp
    for sock in (left, right, tcp):
        sock.close()


# The wait itself, on a fake connection and a Clock.


class Clocked:
    """A fake channel's clock."""

    def __init__(self) -> None:
        self.clock = Clock()

    def callLater(self, delay: float, f: Any, *args: Any) -> Any:
        return self.clock.callLater(delay, f, *args)

    def seconds(self) -> float:
        return self.clock.seconds()


@implementer(IDeliveryConnection)
class FakeConnection(Clocked):
    """
    A connection whose kernel counts the test sets: C{written} bytes
    handed to it, C{acked} of them acknowledged (L{None}: positions
    unknown, only the queue can be read).
    """

    tcp_socket = None

    def __init__(self, positions: bool = True) -> None:
        super().__init__()
        self.written = 0
        self.acked = 0
        self.positions = positions
        self.ended: List[Delivery] = []

    def unacknowledged(self) -> Optional[int]:
        return self.written - self.acked

    def delivery_position(self) -> Optional[Tuple[int, int]]:
        return (self.acked, self.written) if self.positions else None

    def acknowledged(self) -> Optional[int]:
        return self.acked if self.positions else None

    def delivery_ended(self, delivery: Delivery) -> None:
        self.ended.append(delivery)


def waiting(written: int = 100, positions: bool = True) -> Any:
    """
    A fake connection with C{written} bytes unacknowledged, and a delivery
    with one watcher, checked once.
    """
    connection = FakeConnection(positions)
    delivery = Delivery(connection)
    watcher = Watcher()
    connection.written = written
    delivery.watch(watcher)
    delivery.check()
    return connection, delivery, watcher


@implementer(IDeliveryWatcher)
class Watcher:
    def __init__(self) -> None:
        self.heard: List[str] = []

    def delivery_progress(self) -> None:
        self.heard.append("progress")

    def delivered(self) -> None:
        self.heard.append("delivered")

    def undelivered(self, unacknowledged: int) -> None:
        self.heard.append(f"undelivered {unacknowledged}")


def test_everything_acknowledged_answers_at_once() -> None:
    connection = FakeConnection()
    connection.written = connection.acked = 100
    delivery = Delivery(connection)
    watcher = Watcher()
    delivery.watch(watcher)
    delivery.check()
    assert watcher.heard == ["delivered"]
    assert connection.ended == [delivery]
    assert not connection.clock.getDelayedCalls(), "no timer left"


def test_each_watcher_waits_only_for_the_bytes_before_its_first_check() -> None:
    """
    Bytes written after a watcher's first check (the next response, a TLS
    close_notify) never hold it back.
    """
    connection = FakeConnection()
    delivery = Delivery(connection)
    first, second = Watcher(), Watcher()
    connection.written = 1000
    delivery.watch(first)
    delivery.check()
    connection.written = 1500
    delivery.watch(second)
    delivery.check()
    connection.acked = 1000
    connection.clock.advance(DELIVERY_CHECK_MAX)
    assert first.heard == ["delivered"]
    assert "delivered" not in second.heard
    connection.acked = 1500
    connection.clock.advance(DELIVERY_CHECK_MAX)
    assert second.heard[-1] == "delivered"
    assert connection.ended == [delivery]


def test_checks_back_off_until_progress_then_follow_the_pace() -> None:
    """
    Without progress the checks back off (1 ms doubling to 250 ms); once
    the peer's pace is known, the next check comes when about half of what
    is left should be in, at most 2 s later: a slow receiver costs a few
    checks, a fast one is seen soon.
    """
    connection, _, watcher = waiting(100_000)

    def next_delay() -> float:
        (call,) = connection.clock.getDelayedCalls()
        return round(call.getTime() - connection.clock.seconds(), 4)

    delays = []
    for _ in range(10):
        delays.append(next_delay())
        connection.clock.advance(delays[-1])
    assert delays == [
        0.001,
        0.002,
        0.004,
        0.008,
        0.016,
        0.032,
        0.064,
        0.128,
        0.25,
        0.25,
    ]
    # 20,000 bytes in 250 ms: 80 kB/s, 80,000 left: 1 s, check in 0.5 s.
    connection.acked = 20_000
    connection.clock.advance(next_delay())
    assert watcher.heard == ["progress"]
    assert next_delay() == 0.5
    # A crawl: 1 byte in 0.5 s would take days; the next check is 2 s away.
    connection.acked = 20_001
    connection.clock.advance(next_delay())
    assert next_delay() == DELIVERY_CHECK_LONGEST
    connection.acked = 100_000
    connection.clock.advance(next_delay())
    assert watcher.heard == ["progress", "progress", "delivered"]
    assert not connection.clock.getDelayedCalls()


def test_where_only_the_queue_can_be_read_it_must_drain() -> None:
    connection, _, watcher = waiting(positions=False)
    connection.acked = 60
    connection.clock.advance(DELIVERY_CHECK_MAX)
    assert watcher.heard == ["progress"]
    connection.acked = 100
    connection.clock.advance(DELIVERY_CHECK_MAX)
    assert watcher.heard == ["progress", "delivered"]


def test_a_connection_lost_without_a_descriptor_proves_nothing() -> None:
    connection, delivery, watcher = waiting()
    delivery.connection_lost(0)
    assert watcher.heard == ["undelivered 1"]
    assert not connection.clock.getDelayedCalls()


def test_removing_the_last_watcher_ends_the_wait() -> None:
    connection, delivery, watcher = waiting()
    delivery.remove(watcher)
    assert connection.ended == [delivery]
    assert not connection.clock.getDelayedCalls()
    assert watcher.heard == []


@implementer(ILingerChannel)
class Channel(Clocked):
    """What a Linger needs, with a switch for other watchers."""

    def __init__(self) -> None:
        super().__init__()
        self.others = False
        self.unwatched: List[Any] = []

    def unwatch_delivery(self, watcher: Any) -> None:
        self.unwatched.append(watcher)

    def other_watchers(self, watcher: Any) -> bool:
        return self.others


def test_linger_is_done_on_delivery_and_stuck_without_progress() -> None:
    channel = Channel()
    done: List[str] = []

    def linger() -> Linger:
        return Linger(
            channel,  # type: ignore[arg-type]
            3,
            lambda: done.append("done"),
            lambda: done.append("stuck"),
        )

    first = linger()
    first.start()
    channel.clock.advance(2)
    first.delivery_progress()
    channel.clock.advance(2)
    assert done == [], "progress 2 s ago"
    first.delivered()
    assert done == ["done"]
    assert not channel.clock.getDelayedCalls()

    unstarted = linger()
    unstarted.delivered()
    assert done == ["done", "done"], "answered at once: no timer was needed"

    stuck = linger()
    stuck.start()
    channel.others = True
    channel.clock.advance(3)
    assert done == ["done", "done"], "a transfer waits for it too: it decides"
    channel.others = False
    channel.clock.advance(3)
    assert done == ["done", "done", "stuck"]
    assert stuck in channel.unwatched


def test_fakes_provide_what_they_stand_in_for() -> None:
    """
    The fake connection, watcher and channel above provide the interfaces
    of the real ones (checked on those in L{tests.test_interfaces}).
    """
    assert verifyObject(IDeliveryConnection, FakeConnection())
    assert verifyObject(IDeliveryWatcher, Watcher())
    assert verifyObject(ILingerChannel, Channel())
