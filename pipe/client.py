# -*- test-case-name: tests.test_client -*-
"""
A Python client for txpipe, on treq: send a stream to a pipe, receive one.

    from twisted.internet.defer import ensureDeferred
    from pipe.client import receive, send

    result = await send("https://pipe.example/api/v1/pipe/b7?n=3", "build.tar")
    print(result.summary)        # [INFO] done: bytes=... receivers=3/3 ...
    got = await receive("https://pipe.example/api/v1/pipe/b7?n=3", open("b.tar", "wb"))
    print(got.sha256)

Both stream: at most one chunk of the body is held in memory, whatever its
size.  A sender sends what its source has as soon as it has it (a slow
producer piped in is streamed, not batched); a receiver into an
C{IConsumer} is paused when its consumer pauses.  Both return Deferreds
(usable with C{await} in a coroutine run by
L{twisted.internet.defer.ensureDeferred}) and fail with a L{PipeError}:
L{PipeRejected} (the server refused the request: status and reason),
L{WaitTimeout} (the pipe did not start in time) or L{TransferFailed} (the
server could not be reached, or the transfer started and was aborted: a
receiver or the sender was lost, a stall, a truncated stream).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred, ensureDeferred

from pipe._client.errors import PipeError, PipeRejected, TransferFailed, WaitTimeout
from pipe._client.receive import stream_from
from pipe._client.send import stream_to
from pipe._client.source import CHUNK_SIZE as CHUNK_SIZE  # importable here, as before
from pipe._client.types import (
    Progress,
    ProgressCallback,
    ReceiveResult,
    SendResult,
    Sink,
    Source,
)

__all__ = [
    "PipeError",
    "PipeRejected",
    "Progress",
    "ReceiveResult",
    "SendResult",
    "TransferFailed",
    "WaitTimeout",
    "receive",
    "send",
]


def _given_or_global(reactor: Any) -> Any:
    """
    The reactor a caller passed, or else the global one, imported only now:
    importing this module installs no reactor, and the private modules
    behind it are always handed theirs.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        return global_reactor
    return reactor


def send(
    url: str,
    source: Source,
    *,
    reactor: Any = None,
    progress: Optional[ProgressCallback] = None,
    content_type: Optional[str] = None,
    deferred: bool = False,
    id_token: Optional[str] = None,
) -> Deferred[SendResult]:
    """
    Stream C{source} to the pipe at C{url} (with C{PUT}).

    @param source: a path, a binary file object (a file, a pipe,
        C{sys.stdin.buffer}) read in a thread of its own, each read sending
        what the source has at the time, or an C{IBodyProducer}.
    @param reactor: the reactor to run on; L{None} (the default) means the
        global reactor, imported when the call is made.
    @param progress: called with a L{Progress} after each chunk sent and
        each receiver count the server reports.
    @param content_type: the C{Content-Type} receivers get.
    @param deferred: ask for the server's answer only after the upload
        (C{Txpipe-Sender-Response: deferred}), for a proxy that stops
        forwarding the body once the response has begun; no receiver counts
        are reported then.
    @param id_token: an OIDC ID token (a CI job's), sent as C{Authorization:
        Bearer} to a server that takes them (C{--oidc-policy}).
    @return: fires with a L{SendResult} when every receiver got every
        byte; fails with L{PipeRejected}, L{WaitTimeout} or
        L{TransferFailed} (also when the server cannot be reached), or with
        C{OSError} when C{source} is a path that cannot be opened.
    """
    return ensureDeferred(
        stream_to(
            url,
            source,
            _given_or_global(reactor),
            progress,
            content_type,
            deferred,
            id_token,
        )
    )


def receive(
    url: str,
    sink: Sink,
    *,
    reactor: Any = None,
    progress: Optional[ProgressCallback] = None,
    id_token: Optional[str] = None,
    name: Optional[str] = None,
) -> Deferred[ReceiveResult]:
    """
    Stream the pipe at C{url} into C{sink} (with C{GET}).

    @param sink: a binary file object (C{write} is called with each chunk,
        in the reactor thread) or an C{IConsumer}.  An C{IConsumer} is
        given a push producer (C{registerProducer(producer, True)}) while
        the body flows: when it pauses, the connection is not read (at most
        one socket read more arrives), which holds the sender back; when it
        stops, the receive fails with L{TransferFailed}.  It is unregistered
        when the body ends, whole or not.
    @param reactor: the reactor to run on; L{None} (the default) means the
        global reactor, imported when the call is made.
    @param progress: called with a L{Progress} after each chunk.
    @param id_token: an OIDC ID token, sent as C{Authorization: Bearer}.
    @param name: this receiver's name in the sender's lines and the
        server's log (the C{Txpipe-Receiver} header: 1 to 64 printable
        ASCII characters, else the server answers 400); it never changes
        what is received.
    @return: fires with a L{ReceiveResult} once the whole stream arrived;
        fails with L{PipeRejected}, L{WaitTimeout} or L{TransferFailed} (a
        cut stream: what was written to C{sink} is incomplete; or the server
        could not be reached), or with what C{sink.write} raised.
    """
    return ensureDeferred(
        stream_from(url, sink, _given_or_global(reactor), progress, id_token, name)
    )
