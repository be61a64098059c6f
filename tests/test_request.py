"""
Flow control and body streaming on real L{StreamingChannel}s over
L{StringTransport}s: the sender's transport is paused while any receiver's
connection is paused, the body is never spooled, and early responses reach
the client.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, List, cast

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from pipe._http import channel as _channel
from pipe._http.channel import _ReadGate
from pipe._http.chunked import Pieces
from pipe._http.request import DISCARD_LIMIT, DISCARD_SECONDS
from pipe._transfer.fanout import HOLD_LIMIT
from pipe.server import PipeSite, Settings, make_site

from .helpers import Peer, chunk, get, put_head


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def site(clock: Clock) -> PipeSite:
    return make_site(clock)  # type: ignore[arg-type]


def test_read_gate_pauses_while_any_holder_holds() -> None:
    transport = StringTransport()
    gate = _ReadGate(transport)
    assert verifyObject(IPushProducer, gate)
    gate.hold("a")
    gate.pauseProducing()
    assert transport.producerState == "paused"
    gate.release("a")
    assert transport.producerState == "paused"
    gate.resumeProducing()
    assert transport.producerState == "producing"
    gate.release("never held")
    assert transport.producerState == "producing"


def test_sender_paused_while_any_receiver_paused(site: PipeSite) -> None:
    """
    The design card: the sender's transport is paused while any receiver's
    transport has asked its channel to pause, and resumed when none has.
    """
    r1, r2 = get(site), get(site)
    sender = Peer(site)
    sender.send(put_head(length=12))
    assert sender.transport.producerState == "producing"
    r1.channel.pauseProducing()
    assert sender.transport.producerState == "paused"
    r2.channel.pauseProducing()
    r1.channel.resumeProducing()
    assert sender.transport.producerState == "paused"
    r2.channel.resumeProducing()
    assert sender.transport.producerState == "producing"
    sender.send(b"hello world!")
    assert r1.body() == r2.body() == b"hello world!"
    assert b"Content-Length: 12" in r1.output()
    assert b"[INFO] done: bytes=12 receivers=2/2" in sender.body()
    assert len(site.pipes.rendezvous) == 0


def test_sender_first_is_read_while_waiting_and_early_bytes_are_kept(
    site: PipeSite,
) -> None:
    """
    A sender that connects first without C{Expect} sends body bytes with its
    headers; its upload is still read while it waits (up to the hold
    limit), so that its disconnect would be seen, and nothing read is lost.
    """
    sender = Peer(site)
    sender.send(put_head(length=0) + chunk(b"early bytes "))
    assert sender.transport.producerState == "producing"
    assert b"HTTP/1.1 200 OK" in sender.output()
    assert b"[INFO] waiting for 2 receivers (0 connected)" in sender.output()
    r1 = get(site)
    assert b"receiver connected (1 of 2)" in sender.output()
    r2 = get(site)
    assert sender.transport.producerState == "producing"
    sender.send(chunk(b"late") + chunk(b""))
    assert r1.body() == r2.body() == b"early bytes late"
    assert b"Transfer-Encoding: chunked" in r1.output()
    assert r1.output().endswith(b"0\r\n\r\n")


def test_channel_resuming_for_its_own_reasons_keeps_a_waiting_upload_paused(
    site: PipeSite,
) -> None:
    """
    The sender's own write buffer draining makes L{HTTPChannel} resume its
    transport; that must not resume an upload held for receivers.
    """
    sender = Peer(site)
    sender.send(put_head(length=HOLD_LIMIT + 100) + b"x" * HOLD_LIMIT)
    assert sender.transport.producerState == "paused", "held at the limit"
    sender.channel.pauseProducing()
    sender.channel.resumeProducing()
    assert sender.transport.producerState == "paused"


def test_idle_timeout_does_not_kill_a_waiting_or_paused_sender(clock: Clock) -> None:
    """
    Twisted's HTTP idle timeout (60 s) must not close a sender that waits
    for receivers or is held back by one (the pipe's own timeouts, off
    here, are what limit those).
    """
    site = make_site(
        clock,  # type: ignore[arg-type]
        Settings(wait_timeout=0, stall_timeout=0, idle_timeout=0, header_timeout=0),
    )
    site.timeOut = 60
    idle = Peer(site)
    sender = Peer(site)
    sender.send(put_head(length=100))
    clock.advance(3600)
    assert idle.transport.disconnecting, "an idle connection does time out"
    assert not sender.transport.disconnecting
    r1, r2 = get(site), get(site)
    r1.channel.pauseProducing()
    clock.advance(3600)
    assert not sender.transport.disconnecting
    assert not r2.transport.disconnecting


def test_100_continue_precedes_the_200(site: PipeSite) -> None:
    sender = Peer(site)
    sender.send(put_head(length=5, extra=b"Expect: 100-continue\r\n"))
    assert sender.output().startswith(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
    )


def test_rejected_sender_gets_no_100_continue(site: PipeSite) -> None:
    get(site, n=2)
    sender = Peer(site)
    sender.send(put_head(n=3, length=5, extra=b"Expect: 100-continue\r\n"))
    out = sender.output()
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"100 Continue" not in out


def test_rejected_sender_mid_upload_gets_its_status_then_a_bounded_discard(
    clock: Clock, site: PipeSite
) -> None:
    """
    A second sender is answered 409 while its body is arriving: the full
    response is written, then the body is read and dropped (so the client
    reads the status instead of a reset), and the connection closes after
    L{DISCARD_LIMIT} bytes.
    """
    first = Peer(site)
    first.send(put_head(length=10))
    second = Peer(site)
    second.send(put_head(length=10 * DISCARD_LIMIT) + b"x" * 1000)
    out = second.output()
    assert out.startswith(b"HTTP/1.1 409 Conflict\r\n")
    assert b"Connection: close" in out
    assert out.endswith(b"\r\n\r\n[ERROR] this path already has a sender\n")
    assert b"Content-Length: 39\r\n" in out
    assert second.transport.producerState == "producing"
    assert not second.transport.disconnecting
    second.send(b"x" * DISCARD_LIMIT)
    assert second.transport.disconnecting
    assert second.output() == out, "nothing more is written"
    # The first sender is undisturbed.
    assert not first.transport.disconnecting
    assert first.transport.producerState == "producing", "read while waiting"


def test_rejected_sender_is_closed_after_the_discard_time(
    clock: Clock, site: PipeSite
) -> None:
    get(site, n=1)
    sender = Peer(site)
    sender.send(put_head(n=2, length=100))
    assert sender.output().startswith(b"HTTP/1.1 400")
    clock.advance(DISCARD_SECONDS - 0.1)
    assert not sender.transport.disconnecting
    clock.advance(0.2)
    assert sender.transport.disconnecting


def test_rejected_sender_whose_body_ends_is_closed_cleanly(site: PipeSite) -> None:
    get(site, n=1)
    sender = Peer(site)
    sender.send(put_head(n=2, length=4) + b"abcd")
    assert sender.output().startswith(b"HTTP/1.1 400")
    assert sender.transport.disconnecting


def test_body_never_goes_to_a_content_file(
    site: PipeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Stock twisted.web spools bodies through C{_getContentFile} (a temporary
    file for large ones); streaming never calls it.
    """

    def refuse(length: Any) -> Any:
        raise AssertionError("a request body was spooled")

    monkeypatch.setattr("twisted.web.http._getContentFile", refuse)
    monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    r = get(site, n=1)
    sender = Peer(site)
    data = os.urandom(300_000)
    sender.send(put_head(n=1, length=len(data)))
    for i in range(0, len(data), 65536):
        sender.send(data[i : i + 65536])
    assert hashlib.sha256(r.body()).digest() == hashlib.sha256(data).digest()
    request = sender.channel.requests
    assert request == [], "the sender's request is done"


def test_sender_lost_mid_transfer_aborts_receivers_and_frees_the_path(
    site: PipeSite,
) -> None:
    r1, r2 = get(site), get(site)
    sender = Peer(site)
    sender.send(put_head(length=100) + b"x" * 10)
    sender.lose()
    assert r1.transport.disconnected and r2.transport.disconnected, "aborted"
    assert not r1.output().endswith(b"0\r\n\r\n")
    assert len(site.pipes.rendezvous) == 0


def test_receiver_lost_mid_transfer_others_continue_sender_fails(
    site: PipeSite,
) -> None:
    r1, r2 = get(site), get(site)
    sender = Peer(site)
    sender.send(put_head(length=0) + chunk(b"abc"))
    r1.channel.pauseProducing()
    assert sender.transport.producerState == "paused"
    r1.lose()
    assert sender.transport.producerState == "producing"
    sender.send(chunk(b"def") + chunk(b""))
    assert r2.body() == b"abcdef"
    body = sender.body()
    assert b"[INFO] receiver 1 (127.0.0.1:" in body
    assert b"[ERROR] failed: bytes=6 receivers=1/2" in body
    assert not sender.output().endswith(b"0\r\n\r\n"), "no terminating chunk"
    assert sender.transport.disconnecting
    assert len(site.pipes.rendezvous) == 0


def test_on_lost_is_told_of_a_loss_before_the_response_finished(
    site: PipeSite,
) -> None:
    waiting = get(site, n=1)
    request = waiting.channel.requests[-1]
    assert request._on_lost is not None, "the waiting party asked"
    assert len(site.pipes.rendezvous) == 1
    waiting.lose()
    assert len(site.pipes.rendezvous) == 0, "the party heard of it: path free"
    assert request._on_lost is None, "told once, then forgotten"

    reasons: List[Failure] = []
    receiver = get(site, n=1)
    request = receiver.channel.requests[-1]
    request.on_lost(reasons.append)
    lost = Failure(ConnectionLost("gone"))
    receiver.channel.connectionLost(lost)
    assert reasons == [lost]


def test_on_lost_is_not_told_once_the_response_finished(site: PipeSite) -> None:
    receiver = get(site, n=1)
    request = receiver.channel.requests[-1]
    reasons: List[Failure] = []
    request.on_lost(reasons.append)
    sender = Peer(site)
    sender.send(put_head(n=1, length=3) + b"abc")
    assert request.finished and receiver.body() == b"abc"
    receiver.lose()
    assert reasons == []


def test_a_failing_on_lost_is_logged_and_the_upload_still_ends(
    site: PipeSite,
) -> None:
    r1 = get(site, n=1)
    sender = Peer(site)
    sender.send(put_head(n=1, length=100) + b"x" * 10)

    def fail(reason: Failure) -> None:
        raise RuntimeError("broken")

    sender.channel.requests[-1].on_lost(fail)
    failures: List[Any] = []
    observer = cast(
        ILogObserver, lambda event: failures.append(event.get("log_failure"))
    )
    globalLogPublisher.addObserver(observer)
    try:
        sender.lose()
    finally:
        globalLogPublisher.removeObserver(observer)
    assert any(f is not None and f.check(RuntimeError) for f in failures)
    assert r1.transport.disconnected, "the cut upload still aborts the receiver"
    assert len(site.pipes.rendezvous) == 0


def test_all_receivers_lost_cuts_off_the_upload(site: PipeSite) -> None:
    r1 = get(site, n=1)
    sender = Peer(site)
    sender.send(put_head(n=1, length=1000) + b"x" * 10)
    r1.lose()
    assert sender.transport.producerState == "paused", "no more reading"
    assert sender.transport.disconnecting
    assert b"[ERROR] failed: bytes=10 receivers=0/1: every receiver disconnected" in (
        sender.output()
    )
    sender.send(b"y" * 100)  # bytes already read are dropped quietly
    assert len(site.pipes.rendezvous) == 0


def test_waiting_parties_that_disconnect_leave_no_state(site: PipeSite) -> None:
    peers: List[Peer] = [get(site, b"a", 3), get(site, b"a", 3)]
    sender = Peer(site)
    sender.send(put_head(b"b", 2, 10))
    peers.append(sender)
    assert len(site.pipes.rendezvous) == 2
    for peer in peers:
        peer.lose()
    assert len(site.pipes.rendezvous) == 0
    assert site.registry.party_count == 0


def test_empty_upload_reaches_every_receiver(site: PipeSite) -> None:
    r1 = get(site, n=1)
    sender = Peer(site)
    sender.send(
        b"PUT /api/v1/pipe/x?n=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    )
    assert b"Content-Length: 0" in r1.output()
    assert b"[INFO] done: bytes=0 receivers=1/1" in sender.body()
    assert sender.output().endswith(b"0\r\n\r\n")


def test_http10_receiver_of_chunked_upload_is_reset_on_sender_loss(
    site: PipeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    resets: List[Any] = []
    monkeypatch.setattr(_channel, "reset_connection", resets.append)
    receiver = Peer(site)
    receiver.send(b"GET /api/v1/pipe/x HTTP/1.0\r\n\r\n")
    sender = Peer(site)
    sender.send(put_head(n=1) + chunk(b"abc"))
    assert receiver.output().endswith(b"\r\n\r\nabc")
    sender.lose()
    assert resets == [receiver.transport]


def test_malformed_chunk_after_response_began_does_not_corrupt_it(
    site: PipeSite,
) -> None:
    get(site, n=1)
    sender = Peer(site)
    sender.send(put_head(n=1) + b"zz\r\n")
    assert b"HTTP/1.1 400" not in sender.output()
    assert sender.transport.disconnecting


def test_chunks_of_one_read_reach_receivers_as_one_chunk(site: PipeSite) -> None:
    """
    The chunks of a chunked upload that arrive in one read are relayed as
    one piece: each receiver gets one chunk (one write) per read, in order,
    including the pieces that complete the body.
    """
    r = get(site, n=1)
    sender = Peer(site)
    sender.send(put_head(n=1))
    r.transport.clear()
    sender.send(chunk(b"ab") + chunk(b"cde") + chunk(b"f"))
    assert r.output() == chunk(b"abcdef")
    r.transport.clear()
    sender.send(chunk(b"gh") + chunk(b"ij") + b"0\r\n\r\n")
    assert r.output() == chunk(b"ghij") + b"0\r\n\r\n"
    assert b"done: bytes=10 " in sender.output()


def test_chunks_of_one_read_reach_an_http10_receiver_as_they_are(
    site: PipeSite,
) -> None:
    r = Peer(site)
    r.send(b"GET /api/v1/pipe/x?n=1 HTTP/1.0\r\n\r\n")
    sender = Peer(site)
    sender.send(put_head(n=1))
    sender.send(chunk(b"ab") + chunk(b"cde") + chunk(b"f"))
    head, _, body = r.output().partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert body == b"abcdef"
    sender.send(chunk(b"gh") + b"0\r\n\r\n")
    assert r.output().endswith(b"\r\n\r\nabcdefgh")
    assert r.transport.disconnecting, "the close ends an HTTP/1.0 body"


def test_chunks_of_one_read_are_written_without_being_joined(
    site: PipeSite,
) -> None:
    """
    The pieces of one read go to the receiver's channel as slices of the
    read, framed as one chunk: no copy of the body on the way.
    """
    r = get(site, n=1)
    sender = Peer(site)
    sender.send(put_head(n=1))
    written: List[List[Any]] = []
    write_sequence = r.channel.writeSequence

    def spy(iovec: List[Any]) -> None:
        written.append(list(iovec))
        write_sequence(iovec)

    r.channel.writeSequence = spy  # type: ignore[method-assign]
    read = chunk(b"ab") + chunk(b"cde") + chunk(b"f")
    sender.send(read)
    assert len(written) == 1
    size, *pieces, end = written[0]
    assert (size, end) == (b"6\r\n", b"\r\n")
    assert [bytes(p) for p in pieces] == [b"ab", b"cde", b"f"]
    assert all(isinstance(p, memoryview) and p.obj is read for p in pieces)


def test_pieces_are_sized_and_joined_on_demand() -> None:
    data = b"abcdef"
    pieces = Pieces([memoryview(data)[:2], memoryview(data)[2:5], b"f"])
    assert len(pieces) == 6
    assert bytes(pieces) == b"abcdef"


def test_closed_fires_when_the_connection_is_lost(site: PipeSite) -> None:
    asked_before = Peer(site)
    closed = asked_before.channel.closed
    assert not closed.called
    asked_before.lose()
    assert closed.called
    asked_after = Peer(site)
    asked_after.lose()
    assert asked_after.channel.closed.called, "asked after the loss: at once"
