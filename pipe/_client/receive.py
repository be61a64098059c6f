# -*- test-case-name: tests.test_client -*-
"""
A receive: stream a pipe into a sink with C{GET}, counting and hashing
what arrives.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Union

import treq
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IConsumer
from twisted.web.client import ResponseFailed
from twisted.web.iweb import UNKNOWN_LENGTH

from pipe._client.body import read_all, refusal
from pipe._client.errors import TransferFailed, ended_early, unreachable
from pipe._client.types import Progress, ProgressCallback, ReceiveResult, Sink

__all__ = ["stream_from"]


async def stream_from(
    url: str,
    sink: Sink,
    reactor: Any,
    progress: Optional[ProgressCallback],
    id_token: Optional[str] = None,
    name: Optional[str] = None,
) -> ReceiveResult:
    """
    L{pipe.client.receive} on the given C{reactor}.
    """
    headers: Dict[Union[bytes, str], List[Union[bytes, str]]] = {}
    if id_token:
        headers[b"Authorization"] = [b"Bearer " + id_token.encode("ascii")]
    if name is not None:
        headers[b"Txpipe-Receiver"] = [name.encode("utf-8")]
    try:
        response = await treq.get(
            url,
            headers=headers or None,
            reactor=reactor,
            unbuffered=True,
            persistent=False,
        )
    except (ConnectError, DNSLookupError) as error:
        raise unreachable(url, error) from None
    except ResponseFailed as error:
        what = "the connection ended before the response"
        raise ended_early(what, error) from None
    if response.code != 200:
        raise await refusal(response)
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
    await read_all(response, on_data, consumer)  # type: ignore[arg-type]
    if total is not None and count != total:
        raise TransferFailed(f"the stream ended after {count} of {total} bytes")
    types = response.headers.getRawHeaders("content-type")
    return ReceiveResult(count, digest.hexdigest(), types[0] if types else None)
