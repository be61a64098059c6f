# -*- test-case-name: tests.test_forwarded -*-
"""
Who the client is behind a proxy that cannot send the PROXY protocol
(nginx's HTTP proxy, ingress-nginx): the C{X-Forwarded-For} header, believed
only from the peers C{--trusted-proxies} names.

The header lists the hops a request passed, the client first; each proxy
appends the address it got the request from.  Only the right end can be
believed: everything left of the first address that no trusted proxy wrote
is whatever the client sent.  So the client is the right-most hop that is
not a trusted proxy, as gunicorn's C{forwarded_allow_ips} and uvicorn's
C{--forwarded-allow-ips} have it.  A peer that is not trusted has its header
ignored, whatever it says.
"""

from __future__ import annotations

import ipaddress
from typing import Optional, Sequence, Tuple, Union

__all__ = ["Network", "forwarded_client", "parse_networks"]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def parse_networks(text: str) -> Tuple[Network, ...]:
    """
    The addresses and networks of C{text}, separated by commas
    (C{127.0.0.1,10.0.0.0/8,::1}); an empty C{text} names none.

    @raise ValueError: an item is neither an address nor a network (a
        network with host bits set, C{10.0.0.1/8}, is a typo and refused).
    """
    networks = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as error:
            raise ValueError(
                f"--trusted-proxies: {item!r} is not an address or network ({error})"
            ) from None
    return tuple(networks)


def _hop_address(text: str) -> Optional[_Address]:
    """
    The address C{text} names (an IPv4-mapped IPv6 address as IPv4), or
    L{None} if it names none.
    """
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _forwarded_hop(text: str) -> Optional[_Address]:
    """
    The address of one C{X-Forwarded-For} hop, as L{_hop_address}, or
    L{None} when it names none, or names an IPv6 zone id
    (C{fe80::1%eth0}): a zone means something on one host only, and what
    follows the C{%} is any text the sender chose, which would reach the
    logs and the per-address key.
    """
    address = _hop_address(text)
    if getattr(address, "scope_id", None) is not None:
        return None
    return address


def _trusted(address: _Address, networks: Sequence[Network]) -> bool:
    return any(address in network for network in networks)


def forwarded_client(
    peer: str, forwarded: Sequence[bytes], trusted: Sequence[Network]
) -> Optional[str]:
    """
    The client's host as the trusted proxies in front of us name it, or
    L{None} when the peer itself is the client.

    @param peer: the host of the connection's peer.
    @param forwarded: the raw values of the request's C{X-Forwarded-For}
        header lines, in order (several lines are one comma-separated
        list).
    @param trusted: the networks whose C{X-Forwarded-For} is believed.
    @return: L{None} if the peer is not trusted, or the header is absent or
        empty; else the right-most hop that is not trusted, or, when every
        hop is trusted, the left-most one.  Walking left stops at a hop
        that is not an address (the header is then believed only up to
        there, so the last trusted hop is the client: a client cannot get
        past the per-address limit by sending garbage); a hop with an IPv6
        zone id (C{fe80::1%eth0}) is not an address.
    """
    if not trusted or not forwarded:
        return None
    address = _hop_address(peer)
    if address is None or not _trusted(address, trusted):
        return None
    hops = [
        hop.strip()
        for line in forwarded
        for hop in line.decode("latin-1").split(",")
        if hop.strip()
    ]
    client: Optional[str] = None
    for hop in reversed(hops):
        hop_address = _forwarded_hop(hop)
        if hop_address is None:
            break
        client = str(hop_address)
        if not _trusted(hop_address, trusted):
            break
    return client
