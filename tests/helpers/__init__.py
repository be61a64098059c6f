"""
Everything the tests share, in one place; no test module imports another.

  - L{processes}: curl and other child processes in the tests' reactor,
    the C{txpipe} command, payload files and their digests.
  - L{twistd}: C{twistd -n pipe} started on port 0 and asked for its port
    once (the one implementation lives in C{bench/_twistd.py}).
  - L{server}: a pipe server in the tests' own reactor.
  - L{waiting}: waiting for a state, never for a time.
  - L{wire}: raw HTTP/1.1 on loopback sockets.
  - L{channels}: clients of a real site over C{StringTransport}s.
  - L{programs}: HAProxy, nginx, Prometheus found, or the test skipped.
  - L{container}: the container runtime of the image tests (imported by
    those tests only: it is not re-exported here).

The names most tests use are re-exported here: C{from .helpers import curl}.
"""

from __future__ import annotations

from .channels import Peer, chunk, get, put_head
from .processes import (
    CURL,
    DONE,
    TXPIPE,
    Child,
    Curl,
    CurlResult,
    curl,
    ended,
    payload,
    run,
    sha256_of,
    spawn,
    txpipe,
)
from .server import KEY, RunningServer, application_resources
from .twistd import (
    LOOPBACK,
    TWISTD,
    ServerEnded,
    StopRecorder,
    TwistdServer,
    child_env,
    free_port,
    listening_ports,
    reported_port,
    start_pipe,
    start_twistd,
    twistd_pipe,
)
from .waiting import answers, server_status, wait_for, wait_for_status, wait_until
from .wire import (
    HeldReceiver,
    RawClient,
    RawReceiver,
    connect,
    dechunk,
    raw_http,
    split_responses,
)

__all__ = [
    "CURL",
    "DONE",
    "KEY",
    "LOOPBACK",
    "TWISTD",
    "TXPIPE",
    "Child",
    "Curl",
    "CurlResult",
    "HeldReceiver",
    "Peer",
    "RawClient",
    "RawReceiver",
    "RunningServer",
    "ServerEnded",
    "StopRecorder",
    "TwistdServer",
    "answers",
    "application_resources",
    "child_env",
    "chunk",
    "connect",
    "curl",
    "dechunk",
    "ended",
    "free_port",
    "get",
    "listening_ports",
    "payload",
    "put_head",
    "raw_http",
    "reported_port",
    "run",
    "server_status",
    "sha256_of",
    "spawn",
    "split_responses",
    "start_pipe",
    "start_twistd",
    "twistd_pipe",
    "txpipe",
    "wait_for",
    "wait_for_status",
    "wait_until",
]
