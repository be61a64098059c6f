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

import enum
import hashlib
import os
import queue
import re
import stat
import threading
from typing import IO, Any, Callable, List, Optional, Sequence, Union
from urllib.parse import urlsplit

import attr
import treq
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
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

#: The most bytes read from a source at once when sending; a read returns
#: what the source has, up to this.
CHUNK_SIZE = 256 * 1024

_DONE = re.compile(rb"^\[INFO\] done: bytes=(\d+) receivers=(\d+)/(\d+)")
_WAITING = re.compile(rb"^\[INFO\] waiting for (\d+) receivers? \((\d+) connected\)")
_CONNECTED = re.compile(
    rb"^\[INFO\] (?:a waiting )?receivers? (?:connected|left) \((\d+) of (\d+)\)"
)


class PipeError(Exception):
    """
    Base of the errors of L{send} and L{receive}.

    @ivar reason: the server's one-line reason, or what went wrong, in one
        plain sentence.
    @ivar details: what Twisted reported underneath (failures and their
        tracebacks, the whole response), for a person debugging; empty when
        there is nothing more to say.
    """

    def __init__(self, reason: str, *, details: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


class PipeRejected(PipeError):
    """
    The server refused the request (a 4xx or 5xx status).

    @ivar status: the HTTP status.
    """

    def __init__(self, status: int, reason: str, *, details: str = "") -> None:
        super().__init__(f"{status}: {reason}", details=details)
        self.status = status
        self.reason = reason


class WaitTimeout(PipeError):
    """
    The pipe did not start before the wait ran out (504, or the sender's
    wait timeout line).
    """


class TransferFailed(PipeError):
    """
    The transfer did not complete: the server could not be reached, the
    sender's response ended with an C{[ERROR]} line or abnormally, or a
    receiver's stream was cut.
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


# Plain words for what Twisted reports.


def _failures(error: BaseException) -> List[Failure]:
    """
    The low-level failures inside one of Twisted's wrapper exceptions
    (C{ResponseFailed} and its kin), or the error itself.
    """
    reasons: Optional[Sequence[Failure]] = getattr(error, "reasons", None)
    return list(reasons) if reasons else [Failure(error)]


def _details(failures: Sequence[Failure]) -> str:
    return "\n".join(failure.getTraceback().rstrip() for failure in failures)


def _what_broke(failures: Sequence[Failure]) -> str:
    """
    One plain clause for why a connection ended early.
    """
    for failure in failures:
        if failure.check(ConnectError, ResponseFailed, DNSLookupError):
            continue
        if isinstance(failure.value, OSError):
            # Raised by the source or the sink, not by the network.
            return f"reading the source failed: {failure.value}"
    return "the connection closed before the end of the data"


def _unreachable(url: str, error: Exception) -> TransferFailed:
    """
    The error for a connection that could not be made.
    """
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"{parts.hostname}:{port}"
    if isinstance(error, DNSLookupError):
        why = "the host name is unknown"
    elif isinstance(error, ConnectionRefusedError):
        why = "the connection was refused"
    elif isinstance(error, ConnectTimeout):
        why = "the connection timed out"
    else:
        why = "the connection failed"
    return TransferFailed(
        f"could not connect to {where}: {why}",
        details=_details([Failure(error)]),
    )


# Sending.


class _ReadingState(enum.Enum):
    """
    The states of a L{_FileProducer}.

    ================  ===========================  ===========================
    state             meaning                      next
    ================  ===========================  ===========================
    C{INITIAL}        not started                  C{READING} (started)
    C{READING}        a read runs in the reader    C{HANDING} (a chunk),
                      thread                       C{READING_PAUSED},
                                                   C{DONE} (end of the
                                                   source), C{FAILED},
                                                   C{STOPPED}
    C{READING_PAUSED} a read runs; the consumer    C{PAUSED} (a chunk),
                      paused us                    C{READING}, C{DONE},
                                                   C{FAILED}, C{STOPPED}
    C{HANDING}        a chunk is being written to  C{READING} (the next
                      the consumer                 read), C{PAUSED},
                                                   C{STOPPED}
    C{PAUSED}         no read runs until resumed   C{READING}, C{STOPPED}
    C{DONE}           the source ended; the        final
                      producing Deferred fired
    C{FAILED}         a read raised; the           final
                      producing Deferred failed
    C{STOPPED}        the consumer stopped us; the final
                      producing Deferred never
                      fires
    ================  ===========================  ===========================
    """

    INITIAL = "initial"
    READING = "reading"
    READING_PAUSED = "reading, paused"
    HANDING = "handing a chunk over"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"


_FINAL = frozenset({_ReadingState.DONE, _ReadingState.FAILED, _ReadingState.STOPPED})


class _ReaderThread:
    """
    Reads a source one chunk per request, in a daemon thread of its own,
    and hands each result to the reactor thread.

    Not the reactor's thread pool: a read of a pipe that never produces
    more blocks for ever, and the pool's threads are joined at reactor
    shutdown, so such a read would keep the process from exiting after a
    refusal or a Ctrl-C.  A daemon thread left blocked does not.

    @ivar _read: reads at most C{CHUNK_SIZE} bytes, returning what the
        source has (C{read1} of a buffered file, C{read} of a raw one),
        C{b""} at its end.
    """

    def __init__(
        self,
        reactor: Any,
        read: Callable[[int], bytes],
        deliver: Callable[[Union[bytes, Failure]], None],
        close: Optional[Callable[[], None]],
    ) -> None:
        self._reactor = reactor
        self._read = read
        self._deliver = deliver
        self._close = close
        self._requests: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="txpipe source reader", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        """
        Read one chunk; its bytes (or the failure) reach C{deliver} in the
        reactor thread.
        """
        self._requests.put(True)

    def finish(self) -> None:
        """
        Read no more: the thread ends once a read in progress returns,
        closing the source if it owns it.
        """
        if self._thread.is_alive():
            self._requests.put(False)
        elif self._close is not None:
            self._close()

    def _run(self) -> None:
        try:
            while self._requests.get():
                result: Union[bytes, Failure]
                try:
                    result = self._read(CHUNK_SIZE)
                except BaseException:
                    result = Failure()
                self._reactor.callFromThread(self._deliver, result)
        finally:
            if self._close is not None:
                self._close()


@implementer(IBodyProducer, IPushProducer)
class _FileProducer:
    """
    An C{IBodyProducer} over a file object (a file, a pipe, standard
    input), one chunk in memory at a time.  Each read returns what the
    source has, so a slow producer's output is sent as it comes rather
    than once a whole chunk has gathered.  See L{_ReadingState}.

    Twisted's HTTP client calls C{pauseProducing} and C{resumeProducing}
    (possibly from within C{consumer.write}, which is why the state is set
    before every write) and C{stopProducing} when the request is abandoned
    (a refusal, a lost connection); after that nothing is written and the
    Deferred of C{startProducing} never fires, as C{IBodyProducer} asks.
    """

    def __init__(
        self,
        reactor: Any,
        file: IO[bytes],
        on_chunk: Callable[[bytes], None],
        owned: bool = False,
    ) -> None:
        """
        @param owned: close C{file} when done with it (it was opened here).
        """
        self._on_chunk = on_chunk
        self.length: Any = UNKNOWN_LENGTH
        try:
            info = os.fstat(file.fileno())
            if stat.S_ISREG(info.st_mode):
                self.length = info.st_size - file.tell()
        except (OSError, ValueError, AttributeError):
            pass
        self._state = _ReadingState.INITIAL
        self._consumer: Optional[IConsumer] = None
        self._finished: Deferred[None] = Deferred()
        read: Callable[[int], bytes] = getattr(file, "read1", file.read)
        self._reader = _ReaderThread(
            reactor, read, self._arrived, file.close if owned else None
        )

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        if self._state is not _ReadingState.INITIAL:
            raise RuntimeError(f"startProducing while {self._state.value}")
        self._consumer = consumer
        self._state = _ReadingState.READING
        self._reader.start()
        self._reader.request()
        return self._finished

    def release(self) -> None:
        """
        The request is over (however it ended): let the reader thread go.
        """
        self._reader.finish()

    def _arrived(self, result: Union[bytes, Failure]) -> None:
        state = self._state
        if state is _ReadingState.STOPPED:
            return
        if state not in (_ReadingState.READING, _ReadingState.READING_PAUSED):
            raise RuntimeError(f"a chunk arrived while {state.value}")
        if isinstance(result, Failure):
            self._state = _ReadingState.FAILED
            self._finished.errback(result)
            return
        if not result:
            self._state = _ReadingState.DONE
            self._finished.callback(None)
            return
        paused = state is _ReadingState.READING_PAUSED
        self._state = _ReadingState.PAUSED if paused else _ReadingState.HANDING
        assert self._consumer is not None
        self._on_chunk(result)
        self._consumer.write(result)
        if self._state is _ReadingState.HANDING:
            self._state = _ReadingState.READING
            self._reader.request()

    def pauseProducing(self) -> None:
        state = self._state
        if state is _ReadingState.READING:
            self._state = _ReadingState.READING_PAUSED
        elif state is _ReadingState.HANDING:
            self._state = _ReadingState.PAUSED
        elif state is _ReadingState.INITIAL:
            raise RuntimeError("pauseProducing before startProducing")

    def resumeProducing(self) -> None:
        state = self._state
        if state is _ReadingState.READING_PAUSED:
            self._state = _ReadingState.READING
        elif state is _ReadingState.PAUSED:
            self._state = _ReadingState.READING
            self._reader.request()
        elif state is _ReadingState.INITIAL:
            raise RuntimeError("resumeProducing before startProducing")

    def stopProducing(self) -> None:
        if self._state not in _FINAL:
            self._state = _ReadingState.STOPPED
        self._reader.finish()


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

    def release(self) -> None:
        """
        Nothing to let go: the caller's producer is the caller's.
        """


# Receiving.


class _FlowState(enum.Enum):
    """
    The states of a L{_BodyFlow}.

    =============  ===================================  =====================
    state          meaning                              next
    =============  ===================================  =====================
    C{FLOWING}     the connection is read               C{PAUSED},
                                                        C{STOPPED}, C{ENDED}
    C{PAUSED}      the consumer paused: the connection  C{FLOWING},
                   is not read                          C{STOPPED}, C{ENDED}
    C{STOPPED}     the consumer stopped the transfer:   C{ENDED}
                   the connection is being closed
    C{ENDED}       the body ended (whole or not)        final
    =============  ===================================  =====================
    """

    FLOWING = "flowing"
    PAUSED = "paused"
    STOPPED = "stopped"
    ENDED = "ended"


@implementer(IPushProducer)
class _BodyFlow:
    """
    A response body's delivery as the push producer of an C{IConsumer}
    sink: pausing it stops reading the connection (and so, through TCP and
    the server's flow control, holds back the sender), resuming it reads
    again, stopping it closes the connection and fails the receive.

    The sink calls C{pauseProducing}, C{resumeProducing} and
    C{stopProducing}, from its C{write} or at any time; they are no-ops
    once the body ended.  See L{_FlowState}.
    """

    def __init__(self, transport: Any) -> None:
        """
        @param transport: what Twisted gave the body's protocol: a proxy
            producer of the connection.
        """
        self._transport = transport
        self.state = _FlowState.FLOWING

    def pauseProducing(self) -> None:
        if self.state is _FlowState.FLOWING:
            self.state = _FlowState.PAUSED
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self.state is _FlowState.PAUSED:
            self.state = _FlowState.FLOWING
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        if self.state in (_FlowState.FLOWING, _FlowState.PAUSED):
            self.state = _FlowState.STOPPED
            self._transport.stopProducing()

    def keep_paused(self) -> None:
        """
        Pause the connection again if the sink had paused: Twisted resumes
        it unconditionally once the body has a protocol, after handing over
        what it had read already.
        """
        if self.state is _FlowState.PAUSED:
            self._transport.pauseProducing()

    def end(self) -> None:
        self.state = _FlowState.ENDED


class _BodyReader(Protocol):
    """
    Reads a response body into a callback; fires C{done} on a complete
    body, fails it on anything else (a cut stream is never a clean end,
    also when Twisted would call it only a potential data loss).  With an
    C{IConsumer} sink, registers a L{_BodyFlow} with it as its producer for
    as long as the body flows.
    """

    def __init__(
        self, on_data: Callable[[bytes], None], sink: Optional[IConsumer] = None
    ) -> None:
        self._on_data = on_data
        self._sink = sink
        self.flow: Optional[_BodyFlow] = None
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if self._sink is not None:
            self.flow = _BodyFlow(self.transport)
            self._sink.registerProducer(self.flow, True)

    def dataReceived(self, data: bytes) -> None:
        stopped = self.flow is not None and self.flow.state is _FlowState.STOPPED
        if stopped or self.done.called:
            # What Twisted had read before the connection closed, for a sink
            # that stopped or failed: it gets no more.
            return
        try:
            self._on_data(data)
        except BaseException:
            failure = Failure()
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            if not self.done.called:
                self.done.errback(failure)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        stopped = False
        if self.flow is not None and self._sink is not None:
            stopped = self.flow.state is _FlowState.STOPPED
            self.flow.end()
            self._sink.unregisterProducer()
        if self.done.called:
            return
        if reason.check(ResponseDone) and not stopped:
            self.done.callback(None)
            return
        failures = _failures(reason.value) if reason.value is not None else [reason]
        details = _details(failures)
        why = "the consumer stopped it" if stopped else _what_broke(failures)
        self.done.errback(TransferFailed(f"the stream was cut: {why}", details=details))


async def _read_all(
    response: IResponse,
    on_data: Callable[[bytes], None],
    sink: Optional[IConsumer] = None,
) -> None:
    reader = _BodyReader(on_data, sink)
    response.deliverBody(reader)
    if reader.flow is not None:
        reader.flow.keep_paused()
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
    text = bytes(body).decode("utf-8", "replace")
    phrase = response.phrase.decode("latin-1", "replace")
    reason = text.strip().splitlines()
    line = reason[0] if reason else phrase
    details = f"HTTP {response.code} {phrase}\n{text}".rstrip()
    if response.code == 504:
        return WaitTimeout(line, details=details)
    return PipeRejected(response.code, line, details=details)


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
        C{sys.stdin.buffer}) read in a thread of its own, each read sending
        what the source has at the time, or an C{IBodyProducer}.
    @param progress: called with a L{Progress} after each chunk sent and
        each receiver count the server reports.
    @param content_type: the C{Content-Type} receivers get.
    @param deferred: ask for the server's answer only after the upload
        (C{Txpipe-Sender-Response: deferred}), for a proxy that stops
        forwarding the body once the response has begun; no receiver counts
        are reported then.
    @return: fires with a L{SendResult} when every receiver got every
        byte; fails with L{PipeRejected}, L{WaitTimeout} or
        L{TransferFailed} (also when the server cannot be reached), or with
        C{OSError} when C{source} is a path that cannot be opened.
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
        details = "\n".join(
            ["the server's response:", *text, failure.details if failure else ""]
        ).rstrip()
        if "timed out" in reason or "gave up" in reason:
            raise WaitTimeout(reason, details=details)
        raise TransferFailed(reason, details=details)


async def _send(
    url: str,
    source: Source,
    reactor: Any,
    progress: Optional[ProgressCallback],
    content_type: Optional[str],
    deferred: bool,
) -> SendResult:
    state = _SendState(progress)
    producer: Union[_CountingProducer, _FileProducer]
    if IBodyProducer.providedBy(source):
        producer = _CountingProducer(source, state.chunk_sent)  # type: ignore[arg-type]
    elif isinstance(source, (str, os.PathLike)):
        # Unbuffered: each read is one system call, returning what is there.
        opened = open(source, "rb", buffering=0)
        producer = _FileProducer(reactor, opened, state.chunk_sent, owned=True)
    else:
        producer = _FileProducer(reactor, source, state.chunk_sent)  # type: ignore[arg-type]
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
        except (ConnectError, DNSLookupError) as error:
            raise _unreachable(url, error) from None
        except (
            ResponseFailed,
            RequestTransmissionFailed,
            RequestGenerationFailed,
        ) as error:
            # The server cut the upload off (a transfer that failed, or a
            # refusal in mid-upload) before its answer could be read, or
            # reading the source failed.
            failures = _failures(error)
            raise TransferFailed(
                f"the transfer ended early: {_what_broke(failures)}",
                details=_details(failures),
            ) from None
        if response.code != 200:
            raise await _refusal(response)
        failure: Optional[PipeError] = None
        try:
            await _read_all(response, state.response_data)
        except TransferFailed as error:
            failure = error
        return state.outcome(failure)
    finally:
        producer.release()


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
        in the reactor thread) or an C{IConsumer}.  An C{IConsumer} is
        given a push producer (C{registerProducer(producer, True)}) while
        the body flows: when it pauses, the connection is not read (at most
        one socket read more arrives), which holds the sender back; when it
        stops, the receive fails with L{TransferFailed}.  It is unregistered
        when the body ends, whole or not.
    @param progress: called with a L{Progress} after each chunk.
    @return: fires with a L{ReceiveResult} once the whole stream arrived;
        fails with L{PipeRejected}, L{WaitTimeout} or L{TransferFailed} (a
        cut stream: what was written to C{sink} is incomplete; or the server
        could not be reached), or with what C{sink.write} raised.
    """
    return ensureDeferred(_receive(url, sink, _reactor(reactor), progress))


async def _receive(
    url: str, sink: Sink, reactor: Any, progress: Optional[ProgressCallback]
) -> ReceiveResult:
    try:
        response = await treq.get(
            url, reactor=reactor, unbuffered=True, persistent=False
        )
    except (ConnectError, DNSLookupError) as error:
        raise _unreachable(url, error) from None
    except ResponseFailed as error:
        failures = _failures(error)
        raise TransferFailed(
            f"the connection ended before the response: {_what_broke(failures)}",
            details=_details(failures),
        ) from None
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

    consumer = sink if IConsumer.providedBy(sink) else None
    await _read_all(response, on_data, consumer)  # type: ignore[arg-type]
    if total is not None and count != total:
        raise TransferFailed(f"the stream ended after {count} of {total} bytes")
    types = response.headers.getRawHeaders("content-type")
    return ReceiveResult(count, digest.hexdigest(), types[0] if types else None)
