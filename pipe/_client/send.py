# -*- test-case-name: tests.test_client -*-
"""
A send: stream a source to a pipe with C{PUT}, follow the server's progress
lines, and make its result or error of the response.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, List, Optional, Union

import treq
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.web.client import (
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer

from pipe._client.body import read_all, refusal
from pipe._client.errors import (
    PipeError,
    TransferFailed,
    WaitTimeout,
    ended_early,
    unreachable,
)
from pipe._client.source import CountingProducer, FileProducer
from pipe._client.types import Progress, ProgressCallback, SendResult, Source

__all__ = ["stream_to"]

_DONE = re.compile(rb"^\[INFO\] done: bytes=(\d+) receivers=(\d+)/(\d+)")
_WAITING = re.compile(rb"^\[INFO\] waiting for (\d+) receivers? \((\d+) connected\)")
_CONNECTED = re.compile(
    rb"^\[INFO\] (?:a waiting )?receivers? (?:connected|left) \((\d+) of (\d+)\)"
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


async def stream_to(
    url: str,
    source: Source,
    reactor: Any,
    progress: Optional[ProgressCallback],
    content_type: Optional[str],
    deferred: bool,
    id_token: Optional[str] = None,
) -> SendResult:
    """
    L{pipe.client.send} on the given C{reactor}.
    """
    state = _SendState(progress)
    producer: Union[CountingProducer, FileProducer]
    if IBodyProducer.providedBy(source):
        producer = CountingProducer(source, state.chunk_sent)  # type: ignore[arg-type]
    elif isinstance(source, (str, os.PathLike)):
        # Unbuffered: each read is one system call, returning what is there.
        opened = open(source, "rb", buffering=0)
        producer = FileProducer(reactor, opened, state.chunk_sent, owned=True)
    else:
        producer = FileProducer(reactor, source, state.chunk_sent)  # type: ignore[arg-type]
    state.total = None if producer.length is UNKNOWN_LENGTH else producer.length
    headers = Headers()
    if content_type:
        headers.setRawHeaders("Content-Type", [content_type])
    if deferred:
        headers.setRawHeaders("Txpipe-Sender-Response", ["deferred"])
    if id_token:
        headers.setRawHeaders("Authorization", [f"Bearer {id_token}"])
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
            raise unreachable(url, error) from None
        except (
            ResponseFailed,
            RequestTransmissionFailed,
            RequestGenerationFailed,
        ) as error:
            # The server cut the upload off (a transfer that failed, or a
            # refusal in mid-upload) before its answer could be read, or
            # reading the source failed.
            raise ended_early("the transfer ended early", error) from None
        if response.code != 200:
            raise await refusal(response)
        failure: Optional[PipeError] = None
        try:
            await read_all(response, state.response_data)
        except TransferFailed as error:
            failure = error
        return state.outcome(failure)
    finally:
        producer.release()
