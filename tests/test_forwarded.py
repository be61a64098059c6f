"""
C{--trusted-proxies}: X-Forwarded-For names the client only when a trusted
proxy sent it; the right-most untrusted hop is the client.  Pure parsing,
then real requests on real channels over StringTransports, observed where
an operator sees the client: the transfer log and the per-address limit.
"""

from __future__ import annotations

import ipaddress
from typing import Any, List, Optional, Sequence

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.python import usage

from pipe._http.forwarded import forwarded_client, parse_networks
from pipe.server import PipeSite, Settings, make_site
from pipe.tap import Options

from .helpers import Peer, put_head, raw_http, wait_for

TRUSTED = parse_networks("10.0.0.0/8,::1")


def test_parse_networks_takes_addresses_and_networks() -> None:
    assert parse_networks(" 127.0.0.1, 10.0.0.0/8,,fd00::/8 ") == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert parse_networks("") == ()


@pytest.mark.parametrize("text", ["10.0.0.1/8", "proxy.example", "10.0.0.0/33"])
def test_a_bad_network_is_a_usage_error(text: str) -> None:
    with pytest.raises(usage.UsageError, match="trusted-proxies"):
        Options().parseOptions(["--trusted-proxies", text])


def test_the_option_reaches_the_settings() -> None:
    options = Options()
    options.parseOptions(["--trusted-proxies", "127.0.0.1,10.0.0.0/8"])
    assert options.settings().trusted_proxies == parse_networks("127.0.0.1,10.0.0.0/8")
    assert Settings().trusted_proxies == ()


@pytest.mark.parametrize(
    "peer, header, expected",
    [
        # A trusted peer's header names the client.
        ("10.0.0.5", [b"203.0.113.7"], "203.0.113.7"),
        # An untrusted peer's header is ignored, whatever it says.
        ("192.0.2.1", [b"203.0.113.7"], None),
        ("192.0.2.1", [b"10.0.0.9"], None),
        # The right-most hop that is not trusted is the client; what the
        # client wrote to its left is not believed.
        ("10.0.0.5", [b"198.51.100.1, 203.0.113.7, 10.0.0.9"], "203.0.113.7"),
        ("10.0.0.5", [b"198.51.100.1", b"203.0.113.7,10.0.0.9"], "203.0.113.7"),
        # All hops trusted: the left-most.
        ("10.0.0.5", [b"10.1.1.1, 10.0.0.9"], "10.1.1.1"),
        # Malformed: believed up to there (a client cannot hide behind it).
        ("10.0.0.5", [b"garbage"], None),
        ("10.0.0.5", [b"203.0.113.7, garbage, 10.0.0.9"], "10.0.0.9"),
        ("10.0.0.5", [b"198.51.100.1:1234"], None),
        ("10.0.0.5", [b"\xff\xfe"], None),
        # An IPv6 zone id is any text: not an address.
        ("10.0.0.5", [b"fe80::1%evil\x1b[31mX"], None),
        ("10.0.0.5", [b"203.0.113.7, fe80::1%eth0"], None),
        ("10.0.0.5", [b"fe80::1%eth0, 10.0.0.9"], "10.0.0.9"),
        ("10.0.0.5", [b"", b" , "], None),
        ("10.0.0.5", [], None),
        # IPv6 peers and hops; an IPv4-mapped peer is its IPv4 address.
        ("::1", [b"2001:db8::7"], "2001:db8::7"),
        ("::ffff:10.0.0.5", [b"203.0.113.7"], "203.0.113.7"),
        ("::ffff:10.0.0.5", [b"::ffff:203.0.113.7"], "203.0.113.7"),
    ],
)
def test_forwarded_client(
    peer: str, header: List[bytes], expected: Optional[str]
) -> None:
    assert forwarded_client(peer, header, TRUSTED) == expected


def test_no_trusted_proxies_believes_nothing() -> None:
    assert forwarded_client("10.0.0.5", [b"203.0.113.7"], ()) is None


# Real requests.


class ProxiedPeer(Peer):
    """A client connection from C{host}, as a proxy's would be."""

    def __init__(self, site: PipeSite, host: str) -> None:
        self.channel = site.buildProtocol(None)
        kind = IPv6Address if ":" in host else IPv4Address
        self.transport = StringTransport(
            peerAddress=kind("TCP", host, next(self._ports))  # type: ignore[arg-type]
        )
        self.channel.makeConnection(self.transport)


def site_trusting(networks: str, **settings: Any) -> PipeSite:
    return make_site(
        Clock(),  # type: ignore[arg-type]
        Settings(trusted_proxies=parse_networks(networks), **settings),
    )


def forwarded(values: Sequence[bytes]) -> bytes:
    return b"".join(b"X-Forwarded-For: " + value + b"\r\n" for value in values)


def receive(site: PipeSite, peer: str, values: Sequence[bytes], path: bytes) -> Peer:
    party = ProxiedPeer(site, peer)
    party.send(
        b"GET /api/v1/pipe/"
        + path
        + b"?n=1 HTTP/1.1\r\nHost: t\r\n"
        + forwarded(values)
        + b"\r\n"
    )
    return party


def transfer_log(
    site: PipeSite, events: List[Any], peer: str, values: Sequence[bytes]
) -> Any:
    """Run one transfer, both parties from C{peer}; its log event."""
    path = b"p%d" % len(events)
    receiver = receive(site, peer, values, path)
    sender = ProxiedPeer(site, peer)
    sender.send(put_head(path, 1, 2, forwarded(values)) + b"hi")
    assert receiver.body() == b"hi"
    (event,) = [
        e
        for e in events
        if e.get("outcome") == "complete" and e["log_namespace"] == "pipe.transfer"
    ]
    events.clear()
    return event


def test_transfer_log_names_the_forwarded_client(events: List[Any]) -> None:
    site = site_trusting("10.0.0.0/8")
    event = transfer_log(site, events, "10.0.0.5", [b"198.51.100.1, 203.0.113.7"])
    assert event["sender"] == "203.0.113.7"
    assert event["receivers"] == "203.0.113.7"
    event = transfer_log(site, events, "10.0.0.5", [b"2001:db8::7"])
    assert event["sender"] == "[2001:db8::7]"


def test_an_untrusted_peer_is_its_own_client(events: List[Any]) -> None:
    site = site_trusting("10.0.0.0/8")
    event = transfer_log(site, events, "192.0.2.1", [b"203.0.113.7"])
    assert event["sender"].startswith("192.0.2.1:")
    assert event["receivers"].startswith("192.0.2.1:")


def test_a_malformed_header_leaves_the_proxy_as_the_client(events: List[Any]) -> None:
    site = site_trusting("10.0.0.0/8")
    event = transfer_log(site, events, "10.0.0.5", [b"not an address"])
    assert event["sender"].startswith("10.0.0.5:")


def test_off_by_default(events: List[Any]) -> None:
    site = make_site(Clock())  # type: ignore[arg-type]
    event = transfer_log(site, events, "10.0.0.5", [b"203.0.113.7"])
    assert event["sender"].startswith("10.0.0.5:")


def test_per_address_limit_counts_forwarded_clients() -> None:
    """
    Behind a trusted proxy the limit holds each client to its own count:
    one client at its limit is refused, another through the same proxy is
    not; an untrusted peer cannot pick its key with the header.
    """
    site = site_trusting("10.0.0.0/8", max_connections_per_ip=1)
    assert receive(site, "10.0.0.5", [b"203.0.113.7"], b"a").output() == b""
    refused = receive(site, "10.0.0.5", [b"203.0.113.7"], b"b").output()
    assert refused.startswith(b"HTTP/1.1 503")
    assert b"too many parties from 203.0.113.7: 1" in refused
    assert receive(site, "10.0.0.5", [b"203.0.113.8"], b"c").output() == b""
    assert receive(site, "192.0.2.1", [b"203.0.113.9"], b"d").output() == b""
    spoofed = receive(site, "192.0.2.1", [b"203.0.113.10"], b"e").output()
    assert b"too many parties from 192.0.2.1: 1" in spoofed


@pytest_twisted.ensureDeferred
async def test_a_zone_id_in_a_hop_is_not_a_client_on_a_real_port(
    reactor: Any, serve: Any, events: List[Any]
) -> None:
    """
    C{fe80::1%evil<ESC>[31mX} from a trusted proxy names no client: the
    proxy is the client, in the transfer log and the per-address limit,
    and nothing of the zone reaches the log.
    """
    server = serve(trusted_proxies=parse_networks("127.0.0.0/8"))
    number = server.port.getHost().port
    header = b"X-Forwarded-For: fe80::1%evil\x1b[31mX\r\n"
    receiving = raw_http(
        reactor,
        number,
        b"GET /api/v1/pipe/z?n=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        + header
        + b"\r\n",
    )
    await wait_for(
        reactor, lambda: server.site.pipes.rendezvous.parties(b"z") == (False, 1)
    )
    await raw_http(
        reactor,
        number,
        b"PUT /api/v1/pipe/z?n=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        + header
        + b"Content-Length: 2\r\n\r\nhi",
    )
    await receiving
    (event,) = [
        e
        for e in events
        if e.get("outcome") == "complete" and e["log_namespace"] == "pipe.transfer"
    ]
    assert event["sender"].startswith("127.0.0.1:")
    assert event["receivers"].startswith("127.0.0.1:")
    assert not any("evil" in formatEvent(e) for e in events)
