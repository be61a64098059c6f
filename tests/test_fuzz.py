"""
Hostile and broken input over real sockets: request smuggling gets 400, and
a property-based fuzzer (hypothesis) drives a real listening server with
generated requests while a well-formed transfer runs alongside.

For every generated exchange: no status from 500 up other than the
documented 503 and 504, no traceback or error logged, and no state left
once the client is gone; at the end the transfer alongside arrives
byte-identical.  C{TXPIPE_FUZZ_EXAMPLES} sets the number of examples
(default 120).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Set, Tuple

import pytest
import pytest_twisted
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipe.server import Settings, make_site

from .helpers import (
    LOOPBACK,
    RunningServer,
    dechunk,
    raw_http,
    start_pipe,
    twistd_pipe,
    wait_for,
)

EXAMPLES = int(os.environ.get("TXPIPE_FUZZ_EXAMPLES", "120"))
STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")

#: How long a client waits for more of the server's answer before it
#: hangs up (an early disconnect for requests that are still waiting).
QUIET = 0.1

#: How long to wait for an answer that is late: more than the server's
#: header timeout, after which it closes a connection it did not answer.
SLOW = 10.0


# Smuggling and framing, deterministic.

SMUGGLING = [
    # CL.TE
    b"POST /api/v1/pipe/s HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    # TE.CL
    b"POST /api/v1/pipe/s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
    # CL.CL, different and equal
    b"PUT /api/v1/pipe/s HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
    b"Content-Length: 4\r\n\r\nabcd",
    b"PUT /api/v1/pipe/s HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    b"PUT /api/v1/pipe/s HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
    # obfuscated Transfer-Encoding
    b"PUT /api/v1/pipe/s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n"
    b"\r\n3\r\nabc\r\n0\r\n\r\n",
    b"PUT /api/v1/pipe/s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n",
    b"PUT /api/v1/pipe/s HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\nabc",
    b"PUT /api/v1/pipe/s HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
]

#: Chunked uploads that go wrong inside the body.  The sender's 200 is out
#: before the body is read (it streams), so the answer is an aborted
#: transfer, not a 400.
MALFORMED_CHUNKS = [
    b"zz\r\nabc\r\n0\r\n\r\n",
    b"3\r\nabcdef\r\n0\r\n\r\n",
    b"3\r\nabc\r\n-1\r\n\r\n",
    b"3\r\nabc\r\n0\r\n\r\nGET /api/v1/status HTTP/1.1\r\nConnection: close\r\n\r\n",
]


@pytest.fixture
def fresh(reactor: Any) -> Iterator[RunningServer]:
    site = make_site(reactor, Settings(wait_timeout=5))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield RunningServer(site, port)
    pytest_twisted.blockon(port.stopListening())


@pytest.mark.parametrize("request_bytes", SMUGGLING)
@pytest_twisted.ensureDeferred
async def test_smuggling_and_bad_framing_get_400_and_a_closed_connection(
    reactor: Any, fresh: RunningServer, request_bytes: bytes
) -> None:
    answer = await raw_http(reactor, fresh.port.getHost().port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1, "nothing after the 400 is parsed"
    assert answer.endswith(b"\r\n\r\n[ERROR] malformed HTTP request\n")
    await wait_for(reactor, lambda: fresh.site.registry.party_count == 0)
    assert len(fresh.rendezvous) == 0


@pytest.mark.parametrize("body", MALFORMED_CHUNKS)
@pytest_twisted.ensureDeferred
async def test_malformed_chunked_upload_aborts_the_transfer(
    reactor: Any, fresh: RunningServer, body: bytes
) -> None:
    """
    A receiver of a malformed chunked upload never sees a clean end, and
    the sender's connection parses nothing after it.  (The last case is
    well formed, with a pipelined request after it: the control.)
    """
    port = fresh.port.getHost().port
    receiving = raw_http(
        reactor,
        port,
        b"GET /api/v1/pipe/c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    await wait_for(reactor, lambda: fresh.rendezvous.parties(b"c") == (False, 1))
    sender = await raw_http(
        reactor,
        port,
        b"PUT /api/v1/pipe/c HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + body,
    )
    received = await receiving
    head, _, data = received.partition(b"\r\n\r\n")
    if body.endswith(b"close\r\n\r\n"):
        assert dechunk(data) == b"abc"
        assert b"[INFO] done: bytes=3 receivers=1/1" in sender
        assert sender.count(b"HTTP/1.1 ") == 2
    else:
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert not data.endswith(b"0\r\n\r\n"), "a clean end of a broken upload"
        assert b"[INFO] done" not in sender
        assert sender.count(b"HTTP/1.1 ") == 1
    await wait_for(reactor, lambda: fresh.site.registry.party_count == 0)
    assert len(fresh.rendezvous) == 0


# The fuzzer.

_PREFIX = b"/api/v1/pipe/"

paths = st.one_of(
    st.builds(
        lambda tail: _PREFIX + b"fz" + tail,
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from(
                [b"%00", b"%ff%fe", b"/../x", b"\xc3\x28", b"\x00", b"a b", b"%"]
            ),
            st.just(b"x" * 10_000),
        ),
    ),
    st.sampled_from(
        [b"/", b"/healthz", b"/api/v1/status", b"/api", b"/api/v1/pipe", _PREFIX]
    ),
    st.binary(max_size=30),
    st.just(b"*"),
    st.just(b"http://elsewhere/api/v1/pipe/fz"),
)

queries = st.one_of(
    st.just(b""),
    st.lists(
        st.sampled_from(
            [
                b"n=1",
                b"n=2",
                b"n=0",
                b"n=-1",
                b"n=" + b"9" * 400,
                b"n=%31",
                b"n",
                b"wait=1",
                b"wait=99999999999999999999",
                b"expires=1&scope=send&sig=x",
                b"&&",
                b"%zz=%zz",
            ]
        ),
        max_size=4,
    ).map(lambda parts: b"?" + b"&".join(parts)),
)

methods = st.one_of(
    st.sampled_from(
        [b"GET", b"PUT", b"POST", b"OPTIONS", b"HEAD", b"DELETE", b"get", b"CONNECT"]
    ),
    st.binary(min_size=1, max_size=8),
)

versions = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"", b"http/1.1"]
)

headers = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"Host: t",
                b"Content-Length: 3",
                b"Content-Length: 0",
                b"Content-Length: 99999999999999999999999",
                b"Content-Length: -1",
                b"Content-Length: abc",
                b"Transfer-Encoding: chunked",
                b"Transfer-Encoding: gzip",
                b"Transfer-Encoding: identity",
                b"Expect: 100-continue",
                b"Expect: something-else",
                b"Connection: close",
                b"Connection: keep-alive",
                b"Content-Type: text/html",
                b"X-Piping: a",
                b"no colon here",
                b": empty name",
                b"X-Big: " + b"b" * 20_000,
                b" folded: continuation",
            ]
        ),
        st.builds(
            lambda name, value: name + b": " + value,
            st.binary(min_size=1, max_size=12),
            st.binary(max_size=40),
        ),
    ),
    max_size=6,
)

bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"3\r\nabc\r\n0\r\n\r\n",
            b"3\r\nabc\r\n",
            b"ffffffffffffffffffff\r\n",
            b"3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n",
            b"-1\r\n\r\n",
        ]
    ),
)


good_paths = st.builds(
    lambda tail: _PREFIX + b"fz" + tail,
    st.sampled_from(
        [
            b"a",
            b"b/c",
            b"%41",
            b"%ff%fe",
            b"%00",
            b"\xc3\x28",
            b"\xff",
            b"~x",
            b"a%2Fb",
            b"y" * 2000,
        ]
    ),
)


def mostly(draw: Any, good: Any, hostile: Any) -> Any:
    """Draw from C{good} three times in four, else from C{hostile}."""
    return draw(hostile) if draw(st.integers(0, 3)) == 3 else draw(good)


@st.composite
def requests(draw: Any) -> Tuple[bytes, Optional[int]]:
    """
    One request, nearly well formed: each part is hostile one time in four,
    so that generated requests reach every stage of the server, not only
    its parser.  Then maybe a pipelined second request, and maybe a cut
    (the client hangs up after that many bytes).
    """
    method = mostly(
        draw, st.sampled_from([b"GET", b"PUT", b"POST", b"GET", b"OPTIONS"]), methods
    )
    target = mostly(draw, good_paths, paths) + draw(queries)
    version = mostly(draw, st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]), versions)
    line = b" ".join(part for part in [method, target, version] if part)
    plain = st.lists(
        st.sampled_from(
            [
                b"Content-Type: text/plain",
                b"X-Piping: a",
                b"Expect: 100-continue",
                b"Connection: close",
                b"User-Agent: fuzz",
            ]
        ),
        max_size=3,
    )
    lines = [b"Host: t", *mostly(draw, plain, headers)]
    head = line + b"\r\n" + b"".join(h + b"\r\n" for h in lines) + b"\r\n"
    data = head + draw(bodies)
    if draw(st.booleans()):
        data += b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    cut = mostly(draw, st.none(), st.integers(min_value=0, max_value=len(data)))
    return data, cut


class Twistd:
    """
    C{twistd -n pipe} in a child process, driven with blocking sockets: the
    fuzzer's examples run outside the reactor.
    """

    def __init__(self, directory: Path) -> None:
        self.log = directory / "twistd.log"
        self.process, (self.port, *_), _ = start_pipe(
            twistd_pipe(
                LOOPBACK,
                "--header-timeout",
                "5",
                "--wait-timeout",
                "5",
                "--drain-timeout",
                "1",
                log=str(self.log),
            ),
            directory,
            log=self.log,
        )

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def status(self) -> Any:
        with self.connect() as sock:
            sock.sendall(b"GET /api/v1/status HTTP/1.0\r\n\r\n")
            answer = read_all(sock)
        return json.loads(answer.partition(b"\r\n\r\n")[2])

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return self.log.read_text()


def read_all(sock: socket.socket, quiet: Optional[float] = None) -> bytes:
    """
    What C{sock} receives until the peer closes, or (with C{quiet}) until it
    has sent nothing for that long.
    """
    out = bytearray()
    sock.settimeout(quiet if quiet is not None else 10)
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            if quiet is None:
                raise
            return bytes(out)
        except ConnectionResetError:
            return bytes(out)
        if not data:
            return bytes(out)
        out += data


def send_and_hang_up(server: Twistd, data: bytes, cut: Optional[int]) -> bytes:
    """
    Send C{data} (or its first C{cut} bytes), read the answer until the
    server closes or goes quiet, and hang up abruptly.
    """
    sock = server.connect()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            sock.sendall(data if cut is None else data[:cut])
        except OSError:
            return b""
        if cut is not None:
            return b""
        answer = read_all(sock, quiet=QUIET)
        if answer or is_waiting_party(server):
            return answer
        # Neither an answer nor a party: a slow answer is still an answer
        # (and a 5xx in it must be seen), so wait for it or for the close.
        return read_all(sock, quiet=SLOW)
    finally:
        sock.close()


def is_waiting_party(server: Twistd) -> bool:
    """
    Whether the server holds a party besides the transfer alongside (whose
    sender and receiver are always there): the example's request is then
    waiting for its pipe, and silence is its answer.
    """
    status = server.status()
    return bool(status["senders_connected"] + status["receivers_connected"] > 2)


class Alongside:
    """
    A well-formed transfer running next to the fuzzer: a chunked upload fed
    one chunk per example, to one receiver that reads as it goes.
    """

    PATH = b"alongside-0123456789abcdef"

    def __init__(self, server: Twistd) -> None:
        self.receiver = server.connect()
        self.receiver.sendall(
            b"GET /api/v1/pipe/%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            % self.PATH
        )
        self.sender = server.connect()
        self.sender.sendall(
            b"PUT /api/v1/pipe/%s HTTP/1.1\r\nHost: t\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % self.PATH
        )
        self.sent = hashlib.sha256()
        self.count = 0
        self.received = bytearray()

    def feed(self) -> None:
        chunk = os.urandom(1024)
        self.sent.update(chunk)
        self.count += len(chunk)
        self.sender.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.received += read_all(self.receiver, quiet=0.001)

    def finish(self) -> None:
        self.sender.sendall(b"0\r\n\r\n")
        self.received += read_all(self.receiver)
        progress = read_all(self.sender, quiet=2)
        head, _, body = bytes(self.received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        data = dechunk(body)
        assert len(data) == self.count
        assert hashlib.sha256(data).hexdigest() == self.sent.hexdigest()
        assert b"[INFO] done: bytes=%d receivers=1/1" % self.count in progress
        self.receiver.close()
        self.sender.close()


#: What a log must never hold.
TROUBLE = re.compile(r"Traceback|Unhandled|#(error|critical|warn)\]")


def test_generated_hostile_requests(tmp_path: Path) -> None:
    server = Twistd(tmp_path)
    try:
        alongside = Alongside(server)

        def settled() -> Any:
            deadline = time.monotonic() + 10
            while True:
                status = server.status()
                if (
                    status["senders_connected"] == 1
                    and status["receivers_connected"] == 1
                    and status["pipes_waiting"] + status["pipes_running"] == 1
                ):
                    return status
                assert time.monotonic() < deadline, status
                time.sleep(0.01)

        settled()
        seen: Set[int] = set()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[
                HealthCheck.function_scoped_fixture,
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
            ],
        )
        @given(requests())
        @example((b"OPTIONS /api/v1/pipe/fz HTTP/1.1\r\nHost: t\r\n\r\n", None))
        @example((b"GET /nowhere%00 HTTP/1.1\r\nHost: t\r\n\r\n", None))
        @example((b"GET /api/v1/pipe/" + b"z" * 1025 + b" HTTP/1.1\r\n\r\n", None))
        @example((b"PUT /api/v1/pipe/fz?n=2 HTTP/1.1\r\nContent-Length: 9\r\n\r\n", 40))
        def one(request: Tuple[bytes, Optional[int]]) -> None:
            data, cut = request
            answer = send_and_hang_up(server, data, cut)
            for code in STATUS.findall(answer):
                seen.add(int(code))
                assert int(code) < 500 or int(code) in (503, 504), (data[:300], answer)
            # The client is gone: nothing of it may remain, only the
            # transfer alongside (one sender, one receiver, one pipe).
            settled()
            alongside.feed()

        one()
        # The generator (with the explicit examples) reached every stage:
        # streaming, every 4xx of the resource and of the parser.
        assert {200, 204, 400, 404, 405, 414} <= seen, seen
        alongside.finish()
        status = server.status()
        assert status["pipes_waiting"] == status["pipes_running"] == 0
        assert status["transfers"]["complete"] >= 1
    finally:
        log = server.stop()
    troubles = [line for line in log.splitlines() if TROUBLE.search(line)]
    assert troubles == [], "\n".join(troubles[:20])
