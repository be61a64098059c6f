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

import pytest
import pytest_twisted
from twisted.logger import formatEvent

from pipe._http.channel import StreamingChannel
from pipe._http.proxy_protocol import listen_endpoint, v1_problem
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
    endpoint = listen_endpoint(reactor, "haproxy:tcp:0:interface=127.0.0.1")
    port: Any = await endpoint.listen(site)
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


HOSTILE_V1 = [
    (
        b"PROXY TCP4 1.2.3.4\nFORGED\x1b[31m 127.0.0.1 1111 80",
        "not one of its protocol",
    ),
    (b"PROXY TCP4 not-an-ip 127.0.0.1 1111 80", "not one of its protocol"),
    (b"PROXY TCP4 \xff\xfe 127.0.0.1 1111 80", "not one of its protocol"),
    (b"PROXY TCP4 1.2.3.4 127.0.0.1 http 80", "not a number up to 65535"),
    (b"PROXY TCP4 1.2.3.4 127.0.0.1 1111 65536", "not a number up to 65535"),
    (b"PROXY TCP4 ::1 127.0.0.1 1111 80", "not one of its protocol"),
    (b"PROXY TCP6 fe80::1%evil\x1b[31mX ::1 1111 80", "zone id"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1111 80", "zone id"),
    (b"PROXY TCP4 1.2.3.4 127.0.0.1 1111 80 extra", "not six fields"),
    (b"PROXY UDP4 1.2.3.4 127.0.0.1 1111 80", "other than TCP4, TCP6 or UNKNOWN"),
]


@pytest.mark.parametrize("line, reason", HOSTILE_V1)
@pytest_twisted.ensureDeferred
async def test_a_hostile_proxy_v1_line_is_refused_with_one_escaped_log_line(
    reactor: Any, events: List[Any], line: bytes, reason: str
) -> None:
    """
    A v1 line whose addresses C{ipaddress} does not parse (or that name a
    zone id), whose ports are not numbers, or that is otherwise malformed
    closes the connection, unanswered, with one log line saying why, the
    line escaped: no raw control byte, no forged line, no "Unhandled
    Error" from Twisted's parser, and the next client is served.
    """
    assert v1_problem(line) is not None
    site = make_site(reactor)
    endpoint = listen_endpoint(reactor, "haproxy:tcp:0:interface=127.0.0.1")
    port: Any = await endpoint.listen(site)
    number = port.getHost().port
    try:
        answer = await raw_http(
            reactor,
            number,
            line + b"\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
            timeout=5,
        )
        served = await raw_http(
            reactor,
            number,
            proxy_v1("192.0.2.30", 40003)
            + b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            timeout=5,
        )
    finally:
        await port.stopListening()
    assert answer == b""
    assert served.startswith(b"HTTP/1.1 200 ")
    assert not [e for e in events if "log_failure" in e], [
        formatEvent(e) for e in events if "log_failure" in e
    ]
    refusals = [
        formatEvent(e) for e in events if e.get("log_namespace") == "pipe.proxy"
    ]
    assert len(refusals) == 1, refusals
    (text,) = refusals
    assert "refused a connection from 127.0.0.1:" in text
    assert reason in text
    assert text.isprintable(), text
    assert "\x1b" not in text and "\n" not in text


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.1 127.0.0.1 1 65535",
        b"PROXY TCP6 2001:db8::1 ::1 40000 8080",
        b"PROXY UNKNOWN",
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535",
    ],
)
def test_well_formed_proxy_v1_lines_pass(line: bytes) -> None:
    assert v1_problem(line) is None


@pytest_twisted.ensureDeferred
async def test_a_v1_line_without_an_end_is_refused(
    reactor: Any, events: List[Any]
) -> None:
    site = make_site(reactor)
    endpoint = listen_endpoint(reactor, "haproxy:tcp:0:interface=127.0.0.1")
    port: Any = await endpoint.listen(site)
    try:
        answer = await raw_http(
            reactor, port.getHost().port, b"PROXY TCP4 " + b"1" * 200, timeout=5
        )
    finally:
        await port.stopListening()
    assert answer == b""
    [text] = [formatEvent(e) for e in events if e.get("log_namespace") == "pipe.proxy"]
    assert "no CRLF within 107 bytes" in text
