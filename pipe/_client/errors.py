# -*- test-case-name: tests.test_client -*-
"""
The errors of L{pipe.client}, and plain words for what Twisted reports
underneath them.
"""

from __future__ import annotations

from typing import List, Optional, Sequence
from urllib.parse import urlsplit

from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

__all__ = [
    "PipeError",
    "PipeRejected",
    "TransferFailed",
    "WaitTimeout",
    "ended_early",
    "failures_in",
    "tracebacks",
    "unreachable",
    "what_broke",
]


class PipeError(Exception):
    """
    Base of the errors of L{pipe.client.send} and L{pipe.client.receive}.

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


def failures_in(error: BaseException) -> List[Failure]:
    """
    The low-level failures inside one of Twisted's wrapper exceptions
    (C{ResponseFailed} and its kin), or the error itself.
    """
    reasons: Optional[Sequence[Failure]] = getattr(error, "reasons", None)
    return list(reasons) if reasons else [Failure(error)]


def tracebacks(failures: Sequence[Failure]) -> str:
    return "\n".join(failure.getTraceback().rstrip() for failure in failures)


def what_broke(failures: Sequence[Failure]) -> str:
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


def ended_early(what: str, error: BaseException) -> TransferFailed:
    """
    The error for a request whose connection ended before its response:
    C{what} happened, and why, in plain words.
    """
    failures = failures_in(error)
    return TransferFailed(
        f"{what}: {what_broke(failures)}", details=tracebacks(failures)
    )


def unreachable(url: str, error: Exception) -> TransferFailed:
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
        details=tracebacks([Failure(error)]),
    )
