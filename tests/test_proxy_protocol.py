"""
A pipe behind a C{haproxy:} listener (the PROXY protocol, as HAProxy's
C{send-proxy-v2} speaks it): on a real loopback port, the parties are the
clients the header names, in the transfer log too; the channel still finds
its TCP socket through Twisted's wrapper (direct writes, TCP_INFO), so the
sender's final line, which waits for the receiver's TCP to acknowledge
every byte, arrives; a connection without the header is closed.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any, List

import pytest_twisted
from twisted.internet.endpoints import serverFromString

from pipe._http.channel import StreamingChannel
from pipe._http.writes import tcp_connection
from pipe.server import make_site

from .helpers import raw_http, split_responses, wait_for


def proxy_v1(source: str, port: int) -> bytes:
    return b"PROXY TCP4 %s 127.0.0.1 %d 8080\r\n" % (source.encode(), port)


def proxy_v2(source: str, port: int) -> bytes:
    """A PROXY protocol v2 header (PROXY command, TCP over IPv4)."""
    addresses = bytes(map(int, source.split("."))) + bytes([127, 0, 0, 1])
    body = addresses + struct.pack("!HH", port, 8080)
    return b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11" + struct.pack("!H", len(body)) + body


@pytest_twisted.ensureDeferred
async def test_a_transfer_through_a_haproxy_listener(
    reactor: Any, events: List[Any]
) -> None:
    site = make_site(reactor)
    channels: List[StreamingChannel] = []
    opened = site.channel_opened

    def record(channel: StreamingChannel) -> None:
        channels.append(channel)
        opened(channel)

    site.channel_opened = record  # type: ignore[method-assign]
    endpoint = serverFromString(reactor, "haproxy:tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(site)
    number = port.getHost().port
    data = os.urandom(1024 * 1024)
    try:
        receiving = raw_http(
            reactor,
            number,
            proxy_v1("192.0.2.10", 40000)
            + b"GET /api/v1/pipe/p?n=1 HTTP/1.1\r\nHost: t\r\n"
            + b"Connection: close\r\n\r\n",
        )
        await wait_for(
            reactor, lambda: site.pipes.rendezvous.parties(b"p") == (False, 1)
        )
        sent = await raw_http(
            reactor,
            number,
            proxy_v2("192.0.2.20", 40001)
            + b"PUT /api/v1/pipe/p?n=1 HTTP/1.1\r\nHost: t\r\n"
            + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(data)
            + data,
        )
        received = await receiving
        # Without the header: closed, nothing answered.
        assert await raw_http(reactor, number, b"GET /healthz HTTP/1.1\r\n\r\n") == b""
    finally:
        await port.stopListening()
    [(status, _, body)] = split_responses(received)
    assert status.startswith(b"HTTP/1.1 200")
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert b"[INFO] done: bytes=%d receivers=1/1" % len(data) in sent
    # The channels saw the socket under the wrapper: direct writes and the
    # acknowledgement checks (TCP_INFO) work as on a plain listener.
    assert len(channels) >= 2
    for channel in channels[:2]:
        assert tcp_connection(channel.transport) is not None
        assert channel.tcp_socket is not None
        assert channel._socket is not None  # the direct write path
    (event,) = [
        e
        for e in events
        if e.get("outcome") == "complete" and e["log_namespace"] == "pipe.transfer"
    ]
    assert event["sender"] == "192.0.2.20:40001"
    assert event["receivers"] == "192.0.2.10:40000"
