"""
Timeouts, limits, drain, health and status, on real channels over
StringTransports with a L{Clock}: no real waiting.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict

import pytest
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pipe._http.request import DISCARD_SECONDS
from pipe._metrics import LiveCollector
from pipe._transfer.fanout import IFanoutListener, IOutlet
from pipe._transfer.outcome import Outcome
from pipe._transfer.parties import Receiver
from pipe._transfer.registry import DRAIN_GRACE, IParty
from pipe._transfer.rendezvous import ISenderParty
from pipe._transfer.watchdog import IWatched, IWatchedReceiver
from pipe.server import PipeSite, Settings, make_site

from .helpers import Peer, chunk, get, put_head


def site_with(clock: Clock, **settings: Any) -> PipeSite:
    return make_site(clock, Settings(**settings))  # type: ignore[arg-type]


def status_of(site: PipeSite) -> Any:
    peer = Peer(site)
    peer.send(b"GET /api/v1/status HTTP/1.1\r\nHost: t\r\n\r\n")
    return json.loads(peer.body())


@pytest.fixture
def clock() -> Clock:
    return Clock()


# Wait timeout.


def test_waiting_receiver_times_out_with_504_naming_who_is_missing(
    clock: Clock,
) -> None:
    site = site_with(clock, wait_timeout=600)
    r1 = get(site, n=3)
    clock.advance(300)
    r2 = get(site, n=3)
    clock.advance(300)
    out = r1.output()
    assert out.startswith(b"HTTP/1.1 504 Gateway Time-out\r\n")
    assert out.endswith(
        b"[ERROR] timed out after 600 s waiting: sender not connected,"
        b" 2 of 3 receivers connected\n"
    )
    assert r2.output() == b"", "r2 has waited only 300 s"
    clock.advance(300)
    assert b"1 of 3 receivers connected" in r2.output()
    assert len(site.registry.rendezvous) == 0
    assert site.registry.party_count == 0


def test_a_party_may_ask_for_a_shorter_wait_never_longer(clock: Clock) -> None:
    site = site_with(clock, wait_timeout=60)
    short = Peer(site)
    short.send(b"GET /api/v1/pipe/a?wait=5 HTTP/1.1\r\nHost: t\r\n\r\n")
    long = Peer(site)
    long.send(b"GET /api/v1/pipe/b?wait=3600 HTTP/1.1\r\nHost: t\r\n\r\n")
    clock.advance(5)
    assert b"504" in short.output().split(b"\r\n")[0]
    assert long.output() == b""
    clock.advance(55)
    assert b"timed out after 60 s" in long.output()


@pytest.mark.parametrize("wait", [b"0", b"-1", b"x", b"1.5", b"", b"1&wait=2"])
def test_bad_wait_is_400(clock: Clock, wait: bytes) -> None:
    site = site_with(clock)
    peer = Peer(site)
    peer.send(b"GET /api/v1/pipe/a?wait=" + wait + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert peer.output().startswith(b"HTTP/1.1 400")
    assert b"[ERROR] wait must be one whole number of seconds" in peer.output()


def test_waiting_sender_times_out_and_takes_the_pipe_with_it(clock: Clock) -> None:
    site = site_with(clock, wait_timeout=10)
    sender = Peer(site)
    sender.send(put_head(n=2) + chunk(b"data"))
    clock.advance(5)
    receiver = get(site, n=2)
    clock.advance(5)
    body = sender.output()
    assert body.rstrip().endswith(
        b"[ERROR] timed out after 10 s waiting: sender connected,"
        b" 1 of 2 receivers connected"
    )
    assert receiver.output().startswith(b"HTTP/1.1 504")
    assert b"the sender gave up after 10 s waiting: 1 of 2" in receiver.output()
    assert len(site.registry.rendezvous) == 0
    # The sender's upload is read and dropped for a moment so the line
    # reaches it, then the connection closes without a last chunk.
    assert not sender.transport.disconnecting
    clock.advance(DISCARD_SECONDS)
    assert sender.transport.disconnecting
    assert not sender.output().endswith(b"0\r\n\r\n")
    assert site.registry.statistics.transfers()[Outcome.WAIT_TIMEOUT] == 1


def test_started_transfer_has_no_wait_timeout(clock: Clock) -> None:
    site = site_with(clock, wait_timeout=10, stall_timeout=0, idle_timeout=0)
    r = get(site, n=1)
    sender = Peer(site)
    sender.send(put_head(n=1) + chunk(b"abc"))
    clock.advance(100)
    sender.send(chunk(b"def") + chunk(b""))
    assert r.body() == b"abcdef"
    assert b"[INFO] done:" in sender.body()


# Stall and idle timeouts.


def test_stalled_receiver_is_dropped_and_the_others_continue(clock: Clock) -> None:
    site = site_with(clock, stall_timeout=60, idle_timeout=0)
    slow, fast = get(site), get(site)
    sender = Peer(site)
    sender.send(put_head() + chunk(b"abc"))
    slow.channel.pauseProducing()
    assert sender.transport.producerState == "paused"
    clock.advance(59)
    assert not slow.transport.disconnected
    clock.pump([1] * 2)
    assert slow.transport.disconnected, "reset"
    assert sender.transport.producerState == "producing"
    assert b"[INFO] receiver 1 (127.0.0.1:" in sender.output()
    assert b"stalled" in sender.output()
    sender.send(chunk(b"def") + chunk(b""))
    assert fast.body() == b"abcdef"
    assert b"[ERROR] failed: bytes=6 receivers=1/2" in sender.body()
    assert site.registry.statistics.transfers()[Outcome.RECEIVER_STALLED] == 1


def test_receiver_paused_only_briefly_is_not_stalled(clock: Clock) -> None:
    site = site_with(clock, stall_timeout=10, idle_timeout=0)
    r = get(site, n=1)
    sender = Peer(site)
    sender.send(put_head(n=1) + chunk(b"abc"))
    for _ in range(5):
        r.channel.pauseProducing()
        clock.pump([1] * 8)
        r.channel.resumeProducing()
        clock.advance(1)
    assert not r.transport.disconnected
    sender.send(chunk(b""))
    assert b"[INFO] done:" in sender.body()


def test_idle_sender_aborts_the_transfer(clock: Clock) -> None:
    site = site_with(clock, idle_timeout=300, stall_timeout=0)
    r1, r2 = get(site), get(site)
    sender = Peer(site)
    sender.send(put_head() + chunk(b"abc"))
    clock.advance(299)
    sender.send(chunk(b"d"))
    clock.advance(299)
    assert not r1.transport.disconnected
    clock.advance(2)
    assert r1.transport.disconnected and r2.transport.disconnected
    assert (
        b"[ERROR] failed: bytes=4 receivers=0/2: the sender sent nothing for 300 s"
        in (sender.output())
    )
    assert len(site.registry.rendezvous) == 0
    assert site.registry.statistics.transfers()[Outcome.IDLE_TIMEOUT] == 1


def test_time_held_back_by_a_receiver_is_not_idle(clock: Clock) -> None:
    site = site_with(clock, idle_timeout=300, stall_timeout=0)
    r = get(site, n=1)
    sender = Peer(site)
    sender.send(put_head(n=1) + chunk(b"abc"))
    r.channel.pauseProducing()
    clock.advance(1000)
    r.channel.resumeProducing()
    clock.advance(299)
    assert not r.transport.disconnected
    sender.send(chunk(b""))
    assert b"[INFO] done:" in sender.body()


# Header timeout.


def test_slow_headers_are_cut_off(clock: Clock) -> None:
    site = site_with(clock, header_timeout=30)
    slow = Peer(site)
    slow.send(b"GET /api/v1/pipe/x HTTP/1.1\r\nHost: t\r\n")
    quick = get(site, n=1)
    clock.advance(30)
    assert slow.transport.disconnected
    assert not quick.transport.disconnected, "its headers were complete"
    assert len(site.registry.rendezvous) == 1


def test_header_timeout_restarts_for_the_next_request(clock: Clock) -> None:
    site = site_with(clock, header_timeout=30)
    peer = Peer(site)
    clock.advance(20)
    peer.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b"200 OK" in peer.output()
    clock.advance(20)
    assert not peer.transport.disconnected
    clock.advance(10)
    assert peer.transport.disconnected


def test_header_timer_is_not_created_per_request(clock: Clock) -> None:
    """
    A kept-alive connection keeps one header timer: headers that arrive in
    time leave it be, and when it fires early it waits for the rest of the
    current deadline.
    """
    site = site_with(clock, header_timeout=30)
    peer = Peer(site)
    first = clock.getDelayedCalls()
    assert len(first) == 1
    for _ in range(3):
        clock.advance(5)
        peer.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert peer.output().count(b"200 OK") == 3
    assert clock.getDelayedCalls() == first, "the same timer, not a new one"
    clock.advance(15)  # 30 s after connecting, 15 s after the last response
    assert not peer.transport.disconnected
    clock.advance(14.9)
    assert not peer.transport.disconnected
    clock.advance(0.1)
    assert peer.transport.disconnected


# Limits.


def test_max_pipes_is_503_with_retry_after(clock: Clock) -> None:
    site = site_with(clock, max_pipes=2)
    get(site, b"a", 2)
    get(site, b"b", 2)
    third = get(site, b"c", 2)
    out = third.output()
    assert out.startswith(b"HTTP/1.1 503")
    assert b"Retry-After: 5\r\n" in out
    assert b"[ERROR] too many pipes: 2 are waiting or running" in out
    # Joining a pipe that exists is not a new pipe.
    assert get(site, b"a", 2).output() == b""


def test_max_connections_per_ip(clock: Clock) -> None:
    site = site_with(clock, max_connections_per_ip=2)
    first = get(site, b"a", 3)
    get(site, b"a", 3)
    third = get(site, b"b", 1)
    assert third.output().startswith(b"HTTP/1.1 503")
    assert b"too many parties from 127.0.0.1: 2" in third.output()
    first.lose()
    assert get(site, b"b", 1).output() == b"", "a slot was freed"


# Drain, health and status.


def test_drain_sends_waiting_parties_away_and_lets_running_finish(
    clock: Clock,
) -> None:
    site = site_with(clock, drain_timeout=60, stall_timeout=0, idle_timeout=0)
    waiting_receiver = get(site, b"w", 2)
    waiting_sender = Peer(site)
    waiting_sender.send(put_head(b"s", 1) + chunk(b"x"))
    running_receiver = get(site, b"r", 1)
    sender = Peer(site)
    sender.send(put_head(b"r", 1) + chunk(b"abc"))

    drained = site.registry.drain()
    assert not drained.called
    assert waiting_receiver.output().startswith(b"HTTP/1.1 503")
    assert b"[ERROR] server shutting down" in waiting_receiver.output()
    assert b"[ERROR] server shutting down" in waiting_sender.output()

    health = Peer(site)
    health.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert health.output().startswith(b"HTTP/1.1 503")
    assert health.body() == b"draining\n"
    late = get(site, b"late", 1)
    assert late.output().startswith(b"HTTP/1.1 503")

    sender.send(chunk(b"def") + chunk(b""))
    assert running_receiver.body() == b"abcdef"
    assert b"[INFO] done:" in sender.body()
    assert drained.called


def test_drain_timeout_aborts_running_transfers(clock: Clock) -> None:
    site = site_with(clock, drain_timeout=60, stall_timeout=0, idle_timeout=0)
    receiver = get(site, b"r", 1)
    sender = Peer(site)
    sender.send(put_head(b"r", 1) + chunk(b"abc"))
    drained = site.registry.drain()
    clock.advance(59)
    assert not drained.called
    clock.advance(1)
    assert receiver.transport.disconnected, "reset, never a clean end"
    assert b"[ERROR] failed: bytes=3 receivers=0/1: server shutting down" in (
        sender.output()
    )
    assert drained.called
    assert site.registry.statistics.transfers()[Outcome.DRAINED] == 1


def test_drain_with_nothing_running_is_immediate(clock: Clock) -> None:
    site = site_with(clock)
    assert site.registry.drain().called


def test_status_counts_and_holds_no_paths(clock: Clock) -> None:
    site = site_with(clock)
    get(site, b"secret-path-1", 2)
    r = get(site, b"secret-path-2", 1)
    sender = Peer(site)
    sender.send(put_head(b"secret-path-2", 1, 5) + b"hello")
    assert r.body() == b"hello"
    doc = status_of(site)
    assert doc["pipes_waiting"] == 1
    assert doc["pipes_running"] == 0
    assert doc["receivers_connected"] == 1
    assert doc["senders_connected"] == 0
    assert doc["bytes_received"] == 5
    assert doc["bytes_written"] == 5
    assert doc["transfers"]["complete"] == 1
    assert set(doc["transfers"]) == {o.value for o in Outcome}
    assert doc["state"] == "serving"
    assert "secret" not in json.dumps(doc)


def test_healthz_ok(clock: Clock) -> None:
    peer = Peer(site_with(clock))
    peer.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert peer.output().startswith(b"HTTP/1.1 200 OK")
    assert peer.body() == b"ok\n"


# Logs.


def test_transfer_log_names_a_digest_not_the_path(clock: Clock, events: Any) -> None:
    site = site_with(clock)
    r = get(site, b"top-secret", 1)
    sender = Peer(site)
    sender.send(put_head(b"top-secret", 1, 2) + b"hi")
    assert r.body() == b"hi"
    ends = [
        e
        for e in events
        if e.get("outcome") == "complete" and e["log_namespace"] == "pipe.transfer"
    ]
    assert len(ends) == 1
    event = ends[0]
    assert event["pipe"] == hashlib.sha256(b"top-secret").hexdigest()[:12]
    assert "top-secret" not in repr(event)
    assert event["bytes"] == 2 and event["n"] == 1
    assert event["sender"].startswith("127.0.0.1:")
    text = formatEvent(event)
    assert text.startswith(
        f"transfer {event['pipe']} complete: 2 bytes to 1 of 1 receivers in "
    ), text
    assert text.endswith(f"; sender {event['sender']}, receivers {event['receivers']}")


def test_transfer_events_are_published_once_under_pipe_transfer(
    clock: Clock, events: Any
) -> None:
    """
    Every transfer event is published once, under C{pipe.transfer}, and no
    copy of it under any other namespace.
    """
    site = site_with(clock)
    r = get(site, b"p", 1)
    Peer(site).send(put_head(b"p", 1, 2) + b"hi")
    assert r.body() == b"hi"
    ends = [e for e in events if e.get("outcome") == "complete"]
    assert [e["log_namespace"] for e in ends] == ["pipe.transfer"]


def test_log_paths_option_logs_the_path(clock: Clock, events: Any) -> None:
    site = site_with(clock, log_paths=True)
    get(site, b"visible", 1)
    sender = Peer(site)
    sender.send(put_head(b"visible", 1, 1) + b"x")
    ends = [
        e
        for e in events
        if e.get("outcome") == "complete" and e["log_namespace"] == "pipe.transfer"
    ]
    assert ends[0]["pipe"] == "'visible'"


def test_rejections_are_logged_with_reason(clock: Clock, events: Any) -> None:
    site = site_with(clock)
    get(site, b"p", 2)
    get(site, b"p", 3)
    rejected = [e for e in events if e.get("code") == 400]
    assert rejected
    assert "does not match" in rejected[0]["reason"]


@pytest.mark.parametrize("empty", [False, True])
def test_transfer_finishing_inside_the_join_leaves_no_party(
    clock: Clock, empty: bool
) -> None:
    """
    A transfer can start and finish while the last party joins (a sender
    whose whole body is already held, or an empty upload): no party may stay
    counted (it would also block the drain forever).
    """
    site = site_with(clock)
    if empty:
        r = get(site, n=1)
        sender = Peer(site)
        sender.send(
            b"PUT /api/v1/pipe/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
        )
    else:
        sender = Peer(site)
        sender.send(put_head(n=1, length=5) + b"hello")
        r = get(site, n=1)
    assert b"[INFO] done:" in sender.body()
    assert r.body() == (b"" if empty else b"hello")
    assert site.registry.party_count == 0
    assert site.registry.drain().called


# The safety nets: a failed start, and the drain's hard deadline.


@implementer(IParty)
class _Stuck:
    """A party that never leaves, whatever it is told (a bug elsewhere)."""

    def is_waiting(self) -> bool:
        return False

    def shut_down(self) -> None:
        pass

    def abort_transfer(self, outcome: Outcome) -> None:
        pass

    def transferred(self) -> Any:
        return (0, 0)

    def awaiting_acks(self) -> bool:
        return False


@implementer(IParty)
class _AwaitingAcks(_Stuck):
    """The sender of a transfer that awaits its receivers' acknowledgement."""

    def transferred(self) -> Any:
        return (5, 15)

    def awaiting_acks(self) -> bool:
        return True


def test_status_and_metrics_have_only_their_names(clock: Clock) -> None:
    """
    The status document and the metrics carry each figure under its one
    name: no pre-release name (C{bytes_delivered}, C{pipes_settling},
    C{txpipe_delivered_bytes}, C{txpipe_pipes_settling}) is served, and the
    site has no C{relay}.
    """
    site = site_with(clock)
    registry = site.pipes.registry
    registry.enter(_AwaitingAcks(), "10.0.0.1")
    registry.statistics.transfer_ended(Outcome.COMPLETE, 2, 4, 0.1)
    doc = status_of(site)
    assert doc["pipes_awaiting_acks"] == 1
    assert doc["bytes_written"] == 4
    assert not {"bytes_delivered", "pipes_settling"} & set(doc)
    samples = {
        sample.name: sample.value
        for metric in LiveCollector(registry, clock, in_thread=False).collect()
        for sample in metric.samples
    }
    assert samples["txpipe_pipes_awaiting_acks"] == 1
    assert samples["txpipe_written_bytes_total"] == 4 + 15
    assert samples["txpipe_received_bytes_total"] == 2 + 5
    assert not {"txpipe_delivered_bytes_total", "txpipe_pipes_settling"} & set(samples)
    assert not hasattr(site, "relay") and not hasattr(site.pipes, "relay")


def test_parties_provide_their_interfaces(clock: Clock) -> None:
    """
    A sender and a receiver provide what the registry, the rendezvous and
    the fan-out need of them (L{IParty}, L{ISenderParty}, L{IOutlet},
    L{IFanoutListener}); so do the transfer and the fan-out's branches'
    watcher (L{IWatched}).
    """
    site = site_with(clock)
    receiver = get(site, b"p", 1)
    sender = Peer(site)
    sender.send(put_head(b"p", 1, 5))
    registry = site.pipes.registry
    parties = list(registry._parties)
    kinds: Dict[str, Any] = {type(party).__name__: party for party in parties}
    assert set(kinds) == {"Sender", "Receiver"}
    for party in parties:
        assert verifyObject(IParty, party)
    assert verifyObject(ISenderParty, kinds["Sender"])
    assert verifyObject(IOutlet, kinds["Receiver"])
    fanout = kinds["Sender"].fanout
    assert verifyObject(IWatched, fanout.watched)
    assert verifyObject(IWatchedReceiver, fanout.branches[0])
    assert verifyObject(IFanoutListener, fanout.listener)
    sender.send(b"hello")
    assert receiver.body() == b"hello"


def test_drain_events_are_published_once_under_their_namespace(
    clock: Clock, events: Any
) -> None:
    """
    The drain's events are published under C{pipe._registry.Registry} (the
    namespace the image's entry point and operators watch), once each.
    """
    site_with(clock).registry.drain()
    drain = [e for e in events if "drain" in str(e.get("log_format", ""))]
    assert drain and {e["log_namespace"] for e in drain} == {"pipe._registry.Registry"}
    assert [e["log_format"] for e in drain][-1] == "drained"


def test_log_namespaces_do_not_follow_a_module_that_moved() -> None:
    """
    The namespaces of txpipe's class loggers are what operators filter on:
    each is pinned, whatever folder its class now lives in.
    """
    from pipe._http.batch import WriteBatch
    from pipe._http.channel import StreamingChannel
    from pipe._http.request import StreamingRequest
    from pipe._transfer.registry import Registry
    from pipe._transfer.sender import Sender, StreamResponse
    from pipe._transfer.watchdog import Watchdogs

    assert {
        Registry.log.namespace,
        Sender.log.namespace,
        StreamResponse.log.namespace,
        Watchdogs.log.namespace,
        WriteBatch.log.namespace,
        StreamingRequest._log.namespace,
        StreamingChannel._log.namespace,
    } == {
        "pipe._registry.Registry",
        "pipe._sender.Sender",
        "pipe._sender.StreamResponse",
        "pipe._watchdog.Watchdogs",
        "pipe._batch.WriteBatch",
        "pipe._request.StreamingRequest",
        "pipe._timers.TimedChannel",
    }


def test_drain_has_a_hard_deadline_even_if_a_party_never_leaves(
    clock: Clock, events: Any
) -> None:
    site = site_with(clock, drain_timeout=60)
    site.registry.enter(_Stuck(), "10.0.0.1")
    drained = site.registry.drain()
    clock.advance(60)
    assert not drained.called
    clock.advance(DRAIN_GRACE)
    assert drained.called
    assert any("drain deadline" in str(e.get("log_format")) for e in events)


@pytest.mark.parametrize("where", ["open", "registerProducer"])
def test_an_error_starting_a_transfer_fails_it_and_frees_the_path(
    clock: Clock, events: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """
    Whatever raises while a transfer starts (here: opening a receiver's
    response, or registering its branch once the fan-out streams), the
    transfer fails as a whole, every party hears it, the path and the party
    counts are free, and the traceback is logged.
    """
    site = site_with(clock)

    def broken(*args: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(Receiver, where, broken)
    receivers = [get(site, b"p", 2), get(site, b"p", 2)]
    sender = Peer(site)
    sender.send(put_head(b"p", 2, length=3) + b"abc")
    assert b"[ERROR] failed: bytes=" in sender.output()
    assert b"an internal error in the server" in sender.output()
    assert not sender.output().endswith(b"0\r\n\r\n"), "an abnormal end"
    assert all(r.transport.disconnected for r in receivers), "reset"
    assert site.pipes.rendezvous.stage(b"p") is None
    assert site.registry.party_count == 0
    assert site.registry.statistics.transfers()[Outcome.SERVER_ERROR] == 1
    assert any("injected" in str(e.get("log_failure", "")) for e in events), (
        "the traceback is logged"
    )
    monkeypatch.undo()
    again = [get(site, b"p", 1)]
    sender = Peer(site)
    sender.send(put_head(b"p", 1, length=3) + b"xyz")
    assert again[0].body() == b"xyz"
    assert b"[INFO] done: bytes=3 receivers=1/1" in sender.output()
