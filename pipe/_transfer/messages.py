# -*- test-case-name: tests.test_resource -*-
"""
Every C{[ERROR]} and C{[INFO]} line txpipe writes to an HTTP client, built
in one place.

Errors are one line starting C{[ERROR] }; progress lines start C{[INFO] }.
(Other bodies, the landing page, C{/healthz}'s C{ok} and the status JSON,
are written by their resources; the 400 of a request the channel cannot
parse is L{pipe._http.channel}'s, the one line the connection layer writes.)
All lines end with C{\\n} and are ASCII: client-supplied values are shown
escaped and cut, never raw.
"""

from __future__ import annotations

from typing import Iterable

from pipe._http.mount import PIPE_PREFIX
from pipe._http.shown import show

__all__ = ["error", "info", "show"]


def error(text: str) -> bytes:
    """
    The one-line body of an error response.
    """
    return b"[ERROR] " + text.encode("ascii", "backslashreplace") + b"\n"


def info(text: str) -> bytes:
    """
    One progress line of a sender's response.
    """
    return b"[INFO] " + text.encode("ascii", "backslashreplace") + b"\n"


def size(count: int) -> str:
    """
    A byte count for people (C{120.0 MiB}).
    """
    amount = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


# Request errors.


def bad_n(values: Iterable[bytes], maximum: int) -> bytes:
    shown = ", ".join(show(v) for v in values)
    return error(f"n must be one integer from 1 to {maximum}, got {shown}")


def path_empty(prefix: bytes = PIPE_PREFIX) -> bytes:
    return error(f"the pipe path is empty: use {prefix.decode('ascii')}<path>")


def path_too_long(length: int, maximum: int) -> bytes:
    return error(f"the pipe path is {length} bytes long, at most {maximum} are allowed")


def path_control(byte: int) -> bytes:
    return error(f"the pipe path contains the control byte 0x{byte:02x}")


def method_not_allowed(method: bytes) -> bytes:
    return error(
        f"method {show(method)} is not allowed: GET receives, PUT or POST sends"
    )


def not_found(prefix: bytes = PIPE_PREFIX) -> bytes:
    # Never echo the path: a mistyped pipe URL is still a credential.
    return error(f"not found: pipes are at {prefix.decode('ascii')}<path>")


def count_mismatch(given: int, waiting: int) -> bytes:
    return error(
        f"n={given} does not match n={waiting} of the parties already waiting"
        " on this path"
    )


def sender_taken() -> bytes:
    return error("this path already has a sender")


def receivers_full(n: int) -> bytes:
    return error(f"this path already has its {n} receivers (n={n})")


def transfer_running() -> bytes:
    return error("a transfer is already running on this path")


# The sender's progress.


def waiting(n: int, connected: int) -> bytes:
    noun = "receiver" if n == 1 else "receivers"
    return info(f"waiting for {n} {noun} ({connected} connected)")


def receiver_joined(connected: int, n: int) -> bytes:
    return info(f"receiver connected ({connected} of {n})")


def receiver_left(connected: int, n: int) -> bytes:
    return info(f"a waiting receiver left ({connected} of {n})")


def started(n: int) -> bytes:
    noun = "receiver" if n == 1 else "receivers"
    return info(f"transfer started to {n} {noun}")


def receiver_lost(index: int, address: str, sent: int) -> bytes:
    return info(f"receiver {index} ({address}) disconnected after {size(sent)}")


def receiver_lost_unacknowledged(
    index: int, address: str, unacknowledged: int
) -> bytes:
    return info(
        f"receiver {index} ({address}) disconnected before acknowledging"
        f" the last {size(unacknowledged)}"
    )


def megabytes_per_second(count: int, seconds: float) -> float:
    """
    The rate of a transfer of C{count} bytes in C{seconds} (0 for none),
    as the sender's last line and the transfer's log event give it.
    """
    return count / seconds / 1e6 if seconds > 0 else 0.0


def done(count: int, ok: int, n: int, seconds: float) -> bytes:
    rate = megabytes_per_second(count, seconds)
    return info(
        f"done: bytes={count} receivers={ok}/{n} in {seconds:.1f} s ({rate:.1f} MB/s)"
    )


def failed(count: int, ok: int, n: int, why: str) -> bytes:
    return error(f"failed: bytes={count} receivers={ok}/{n}: {why}")


# The metrics listener.


def metrics_not_found() -> bytes:
    return error("not found: metrics are at /metrics")


# Limits, timeouts and shutdown.


def shutting_down() -> bytes:
    return error("server shutting down")


def too_many_pipes(limit: int) -> bytes:
    return error(f"too many pipes: {limit} are waiting or running; try again later")


def too_many_connections(host: str, limit: int) -> bytes:
    return error(
        f"too many parties from {host}: {limit} are waiting or transferring;"
        " try again later"
    )


def bad_wait(values: Iterable[bytes]) -> bytes:
    shown = ", ".join(show(v) for v in values)
    return error(f"wait must be one whole number of seconds from 1, got {shown}")


def bad_sender_response(values: Iterable[bytes]) -> bytes:
    shown = ", ".join(show(v) for v in values)
    return error(f"Txpipe-Sender-Response must be one of stream, deferred; got {shown}")


def _presence(has_sender: bool, receivers: int, n: int) -> str:
    sender = "sender connected" if has_sender else "sender not connected"
    return f"{sender}, {receivers} of {n} receivers connected"


def wait_timed_out(seconds: float, has_sender: bool, receivers: int, n: int) -> bytes:
    return error(
        f"timed out after {seconds:g} s waiting: " + _presence(has_sender, receivers, n)
    )


def sender_wait_timed_out(seconds: float, receivers: int, n: int) -> bytes:
    return error(
        f"the sender gave up after {seconds:g} s waiting:"
        f" {receivers} of {n} receivers connected"
    )


def receiver_stalled(index: int, address: str, sent: int, seconds: float) -> bytes:
    return info(
        f"receiver {index} ({address}) stalled (took too little for {seconds:g} s)"
        f" and was dropped after {size(sent)}"
    )


# OIDC tokens (never echo a token or the policy).


def token_refused(detail: str) -> bytes:
    return error(f"token refused: {detail}")


# Signed URLs (never echo a signature or a path).


def signature_required() -> bytes:
    return error(
        "signature required: this server takes only signed URLs"
        " (expires, scope and sig; see txpipe sign)"
    )


def signature_malformed(what: str) -> bytes:
    return error(f"signature malformed: {what}")


def signature_mismatch() -> bytes:
    return error(
        "signature invalid: it does not match this URL's path, n, scope and"
        " expiry under any key of this server"
    )


def signature_scope(signed: str, used: str) -> bytes:
    return error(f"signature scope: this URL is signed to {signed}, not to {used}")


def signature_expired(seconds: float) -> bytes:
    return error(f"signature expired {seconds:.0f} s ago")


def signature_lifetime(seconds: float, limit: float) -> bytes:
    return error(
        f"signature lifetime: this URL stays valid for {seconds:.0f} s more,"
        f" longer than this server allows ({limit:g} s; see --max-ttl)"
    )


def signature_used() -> bytes:
    return error(
        "signed URL already used: a transfer with it has started; sign a new one"
    )
