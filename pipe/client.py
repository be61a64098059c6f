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
size.  Both return Deferreds (usable with C{await} in a coroutine run by
L{twisted.internet.defer.ensureDeferred}) and fail with a L{PipeError}:
L{PipeRejected} (the server refused the request: status and reason),
L{WaitTimeout} (the pipe did not start in time) or L{TransferFailed} (the
transfer started and was aborted: a receiver or the sender was lost, a
stall, a truncated stream).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from typing import IO, Any, Callable, List, Optional, Union

import attr
import treq
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from zope.interface import implementer

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

#: Bytes read from a file per chunk when sending.
CHUNK_SIZE = 256 * 1024

_DONE = re.compile(rb"^\[INFO\] done: bytes=(\d+) receivers=(\d+)/(\d+)")
_WAITING = re.compile(rb"^\[INFO\] waiting for (\d+) receivers? \((\d+) connected\)")
_CONNECTED = re.compile(
    rb"^\[INFO\] (?:a waiting )?receivers? (?:connected|left) \((\d+) of (\d+)\)"
)


class PipeError(Exception):
    """
    Base of the errors of L{send} and L{receive}.

    @ivar reason: the server's one-line reason, or what went wrong.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PipeRejected(PipeError):
    """
    The server refused the request (a 4xx or 5xx status).

    @ivar status: the HTTP status.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class WaitTimeout(PipeError):
    """
    The pipe did not start before the wait ran out (504, or the sender's
    wait timeout line).
    """


class TransferFailed(PipeError):
    """
    The transfer started and did not complete: the sender's response ended
    with an C{[ERROR]} line or abnormally, or a receiver's stream was cut.
    """


@attr.s(auto_attribs=True, frozen=True)
class Progress:
    """
    Where a transfer is, for a progress callback.

    @ivar bytes: body bytes sent or received so far.
    @ivar total: the body's length when known, else L{None}.
    @ivar receivers: receivers connected, as the sender last heard
        (L{None} for a receiver, or before the server said).
    @ivar n: the pipe's receiver count (L{None} until the server said).
    @ivar started: whether the transfer has started.
    """

    bytes: int
    total: Optional[int]
    receivers: Optional[int] = None
    n: Optional[int] = None
    started: bool = False


@attr.s(auto_attribs=True, frozen=True)
class SendResult:
    """
    A completed send.

    @ivar bytes: the bytes the server received, by its summary.
    @ivar receivers: how many receivers got every byte (all n).
    @ivar sha256: hex SHA-256 of what was sent.
    @ivar summary: the server's last line, C{[INFO] done: ...}.
    @ivar lines: every progress line of the server's response.
    """

    bytes: int
    receivers: int
    sha256: str
    summary: str
    lines: List[str]


@attr.s(auto_attribs=True, frozen=True)
class ReceiveResult:
    """
    A completed receive.

    @ivar bytes: the bytes received.
    @ivar sha256: their hex SHA-256.
    @ivar content_type: the response's C{Content-Type}.
    """

    bytes: int
    sha256: str
    content_type: Optional[str]


ProgressCallback = Callable[[Progress], None]
Source = Union[str, "os.PathLike[str]", IO[bytes], IBodyProducer]
Sink = Union[IO[bytes], IConsumer]


def _reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        return global_reactor
    return reactor


@implementer(IBodyProducer, IPushProducer)
class _FileProducer:
    """
    An C{IBodyProducer} over a file object (a file, a pipe, standard
    input), read chunk by chunk in the reactor's thread pool so that a
    slow pipe never blocks the reactor; one chunk at a time in memory.
    """

    def __init__(
        self, reactor: Any, file: IO[bytes], on_chunk: Callable[[bytes], None]
    ) -> None:
        self._reactor = reactor
        self._file = file
        self._on_chunk = on_chunk
        self.length: Any = UNKNOWN_LENGTH
        try:
            info = os.fstat(file.fileno())
            if stat.S_ISREG(info.st_mode):
                self.length = info.st_size - file.tell()
        except (OSError, ValueError, AttributeError):
            pass
        self._paused: Optional[Deferred[None]] = None
        self._stopped = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        return ensureDeferred(self._produce(consumer))

    async def _produce(self, consumer: IConsumer) -> None:
        pool = self._reactor.getThreadPool()
        while not self._stopped:
            chunk = await deferToThreadPool(
                self._reactor, pool, self._file.read, CHUNK_SIZE
            )
            if not chunk or self._stopped:
                return
            self._on_chunk(chunk)
            consumer.write(chunk)
            if self._paused is not None:
                await self._paused

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self._stopped = True
        self.resumeProducing()


@implementer(IBodyProducer)
class _CountingProducer:
    """
    Wraps a caller's C{IBodyProducer} to count and hash what it writes.
    """

    def __init__(
        self, producer: IBodyProducer, on_chunk: Callable[[bytes], None]
    ) -> None:
        self._producer = producer
        self._on_chunk = on_chunk
        self.length = producer.length

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        on_chunk = self._on_chunk

        @implementer(IConsumer)
        class Counting:
            def registerProducer(self, producer: Any, streaming: bool) -> None:
                consumer.registerProducer(producer, streaming)

            def unregisterProducer(self) -> None:
                consumer.unregisterProducer()

            def write(self, data: bytes) -> None:
                on_chunk(data)
                consumer.write(data)

        return self._producer.startProducing(Counting())  # type: ignore[return-value]

    def pauseProducing(self) -> None:
        self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._producer.stopProducing()


class _BodyReader(Protocol):
    """
    Reads a response body into a callback; fires C{done} on a complete
    body, fails it on anything else (a cut stream is never a clean end,
    also when Twisted would call it only a potential data loss).
    """

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        try:
            self._on_data(data)
        except BaseException:
            failure = Failure()
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            if not self.done.called:
                self.done.errback(failure)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(None)
        else:
            self.done.errback(
                TransferFailed(f"the stream was cut: {reason.getErrorMessage()}")
            )


def _connection_lost(error: Exception) -> str:
    """
    What a failed request says, without Twisted's reprs.
    """
    reasons = getattr(error, "reasons", None) or [Failure(error)]
    said = "; ".join(reason.getErrorMessage() for reason in reasons)
    return f"the connection ended before the transfer completed ({said})"


async def _read_all(response: IResponse, on_data: Callable[[bytes], None]) -> None:
    reader = _BodyReader(on_data)
    response.deliverBody(reader)
    await reader.done


async def _refusal(response: IResponse) -> PipeError:
    """
    The error for a response that is not a C{200}.
    """
    body = bytearray()

    def keep(data: bytes) -> None:
        if len(body) < 4096:
            body.extend(data[: 4096 - len(body)])

    try:
        await _read_all(response, keep)
    except Exception:
        pass
    reason = bytes(body).decode("utf-8", "replace").strip().splitlines()
    line = reason[0] if reason else response.phrase.decode("latin-1", "replace")
    if response.code == 504:
        return WaitTimeout(line)
    return PipeRejected(response.code, line)


def send(
    url: str,
    source: Source,
    *,
    reactor: Any = None,
    progress: Optional[ProgressCallback] = None,
    content_type: Optional[str] = None,
    deferred: bool = False,
) -> Deferred[SendResult]:
    """
    Stream C{source} to the pipe at C{url} (with C{PUT}).

    @param source: a path, a binary file object (a file, a pipe,
        C{sys.stdin.buffer}) read in chunks in the reactor's thread pool,
        or an C{IBodyProducer}.
    @param progress: called with a L{Progress} after each chunk sent and
        each receiver count the server reports.
    @param content_type: the C{Content-Type} receivers get.
    @param deferred: ask for the server's answer only after the upload
        (C{Txpipe-Sender-Response: deferred}), for a proxy that stops
        forwarding the body once the response has begun; no receiver counts
        are reported then.
    @return: fires with a L{SendResult} when every receiver got every
        byte; fails with L{PipeRejected}, L{WaitTimeout} or
        L{TransferFailed}.
    """
    return ensureDeferred(
        _send(url, source, _reactor(reactor), progress, content_type, deferred)
    )


class _SendState:
    """
    What a send knows so far, for its progress callback.
    """

    def __init__(self, progress: Optional[ProgressCallback]) -> None:
        self._progress = progress
        self.digest = hashlib.sha256()
        self.sent = 0
        self.total: Optional[int] = None
        self.receivers: Optional[int] = None
        self.n: Optional[int] = None
        self.started = False
        self.lines: List[bytes] = []
        self._pending = bytearray()

    def report(self) -> None:
        if self._progress is not None:
            self._progress(
                Progress(self.sent, self.total, self.receivers, self.n, self.started)
            )

    def chunk_sent(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.sent += len(chunk)
        self.report()

    def response_data(self, data: bytes) -> None:
        self._pending.extend(data)
        while b"\n" in self._pending:
            line, _, rest = bytes(self._pending).partition(b"\n")
            self._pending[:] = rest
            self.lines.append(line)
            waiting = _WAITING.match(line)
            connected = _CONNECTED.match(line)
            if waiting:
                self.n, self.receivers = int(waiting[1]), int(waiting[2])
            elif connected:
                self.receivers, self.n = int(connected[1]), int(connected[2])
            elif line.startswith(b"[INFO] transfer started"):
                self.started = True
            else:
                continue
            self.report()

    def outcome(self, failure: Optional[PipeError]) -> SendResult:
        """
        The result of a response that ended, or the error it means.
        """
        if self._pending:
            self.lines.append(bytes(self._pending))
        text = [line.decode("utf-8", "replace") for line in self.lines]
        done = _DONE.match(self.lines[-1]) if self.lines else None
        if done and failure is None:
            return SendResult(
                bytes=int(done[1]),
                receivers=int(done[2]),
                sha256=self.digest.hexdigest(),
                summary=text[-1],
                lines=text,
            )
        errors = [line for line in text if line.startswith("[ERROR]")]
        if errors:
            reason = errors[-1]
        elif failure is not None:
            reason = failure.reason
        else:
            reason = text[-1] if text else "the response ended without a summary"
        if "timed out" in reason or "gave up" in reason:
            raise WaitTimeout(reason)
        raise TransferFailed(reason)


async def _send(
    url: str,
    source: Source,
    reactor: Any,
    progress: Optional[ProgressCallback],
    content_type: Optional[str],
    deferred: bool,
) -> SendResult:
    state = _SendState(progress)
    opened: Optional[IO[bytes]] = None
    producer: Any
    if IBodyProducer.providedBy(source):
        producer = _CountingProducer(source, state.chunk_sent)  # type: ignore[arg-type]
    else:
        if isinstance(source, (str, os.PathLike)):
            opened = open(source, "rb")
            file: IO[bytes] = opened
        else:
            file = source  # type: ignore[assignment]
        producer = _FileProducer(reactor, file, state.chunk_sent)
    state.total = None if producer.length is UNKNOWN_LENGTH else producer.length
    headers = Headers()
    if content_type:
        headers.setRawHeaders("Content-Type", [content_type])
    if deferred:
        headers.setRawHeaders("Txpipe-Sender-Response", ["deferred"])
    try:
        try:
            response = await treq.request(
                "PUT",
                url,
                data=producer,
                headers=headers,
                reactor=reactor,
                unbuffered=True,
                persistent=False,
            )
        except (
            ResponseFailed,
            RequestTransmissionFailed,
            RequestGenerationFailed,
        ) as error:
            # The server cut the upload off (a transfer that failed, or a
            # refusal in mid-upload) before its answer could be read.
            raise TransferFailed(_connection_lost(error)) from None
        if response.code != 200:
            raise await _refusal(response)
        failure: Optional[PipeError] = None
        try:
            await _read_all(response, state.response_data)
        except TransferFailed as error:
            failure = error
        return state.outcome(failure)
    finally:
        if opened is not None:
            opened.close()


def receive(
    url: str,
    sink: Sink,
    *,
    reactor: Any = None,
    progress: Optional[ProgressCallback] = None,
) -> Deferred[ReceiveResult]:
    """
    Stream the pipe at C{url} into C{sink} (with C{GET}).

    @param sink: a binary file object (C{write} is called with each chunk,
        in the reactor thread) or an C{IConsumer}.
    @param progress: called with a L{Progress} after each chunk.
    @return: fires with a L{ReceiveResult} once the whole stream arrived;
        fails with L{PipeRejected}, L{WaitTimeout} or L{TransferFailed} (a
        cut stream: what was written to C{sink} is incomplete).
    """
    return ensureDeferred(_receive(url, sink, _reactor(reactor), progress))


async def _receive(
    url: str, sink: Sink, reactor: Any, progress: Optional[ProgressCallback]
) -> ReceiveResult:
    try:
        response = await treq.get(
            url, reactor=reactor, unbuffered=True, persistent=False
        )
    except ResponseFailed as error:
        raise TransferFailed(_connection_lost(error)) from None
    if response.code != 200:
        raise await _refusal(response)
    total = None if response.length is UNKNOWN_LENGTH else int(response.length)
    digest = hashlib.sha256()
    count = 0
    write = sink.write

    def on_data(data: bytes) -> None:
        nonlocal count
        digest.update(data)
        count += len(data)
        write(data)
        if progress is not None:
            progress(Progress(count, total, started=True))

    await _read_all(response, on_data)
    if total is not None and count != total:
        raise TransferFailed(f"got {count} of {total} bytes")
    types = response.headers.getRawHeaders("content-type")
    return ReceiveResult(count, digest.hexdigest(), types[0] if types else None)
