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

from typing import Iterable, Optional, Tuple

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


def bad_min(values: Iterable[bytes], n: int) -> bytes:
    shown = ", ".join(show(v) for v in values)
    return error(f"min must be one integer from 1 to n={n}, got {shown}")


def bad_name(values: Iterable[bytes], maximum: int) -> bytes:
    shown = ", ".join(show(v) for v in values)
    return error(
        f"Txpipe-Receiver must be one name of 1 to {maximum} printable ASCII"
        f" characters, got {shown}"
    )


def min_mismatch(given: Optional[int], other: Optional[int], whose: str) -> bytes:
    """
    A C{min} that disagrees: C{whose} is C{sender} (a receiver's against
    its sender's) or C{receivers} (against the receivers already waiting).
    """
    mine = "no min" if given is None else f"min={given}"
    theirs = "no min" if other is None else f"min={other}"
    if whose == "sender":
        return error(
            f"{mine} does not match this path's sender, which gave {theirs}:"
            " only the sender sets the quorum"
        )
    return error(
        f"{mine} does not match {theirs} of the receivers already waiting on this path"
    )


def quorum_started(seconds: float, joined: int, n: int) -> bytes:
    return error(
        f"this pipe's transfer started {seconds:.0f} s ago with {joined} of {n}"
        " receivers; nothing is kept"
    )


def path_closed(seconds: float, joined: int, n: int, left: float) -> bytes:
    return error(
        f"this pipe's transfer started {seconds:.0f} s ago with {joined} of {n}"
        f" receivers; late receivers are refused on this path for {left:.0f} s"
        " more"
    )


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


def started_quorum(joined: int, n: int, seconds: float) -> bytes:
    return info(
        f"wait deadline after {seconds:g} s: transfer started to {joined} of {n}"
        f" receivers ({n - joined} never joined)"
    )


def receiver(index: int, name: Optional[str], address: str) -> str:
    """
    How the sender's lines name a receiver: by its name when it gave one
    (C{receiver runner-7 (10.1.4.22:51234)}), else by its number in
    arrival order (C{receiver 7 (10.1.4.22:51234)}).
    """
    return f"receiver {index if name is None else name} ({address})"


def receiver_lost(who: str, sent: int) -> bytes:
    return info(f"{who} disconnected after {size(sent)}")


def receiver_lost_unacknowledged(who: str, unacknowledged: int) -> bytes:
    return info(
        f"{who} disconnected before acknowledging the last {size(unacknowledged)}"
    )


def running(count: int, receivers: int, slowest: Optional[str], rate: float) -> bytes:
    """
    The periodic line of a running transfer: how much, to how many, and
    which receiver holds the others back (C{slowest}, taking C{rate} MB/s
    so far), if one does.
    """
    head = f"running: {size(count)} to {receivers} receivers; "
    if slowest is None:
        return info(head + "no receiver holds the others back")
    return info(head + f"held back by {slowest} at {rate:.1f} MB/s")


def megabytes_per_second(count: int, seconds: float) -> float:
    """
    The rate of a transfer of C{count} bytes in C{seconds} (0 for none),
    as the sender's last line and the transfer's log event give it.
    """
    return count / seconds / 1e6 if seconds > 0 else 0.0


def done(
    count: int,
    ok: int,
    n: int,
    seconds: float,
    joined: int,
    slowest: Optional[Tuple[str, float]] = None,
) -> bytes:
    """
    A success's last line; after a quorum start C{joined} is less than
    C{n}; C{slowest} names the slowest of several receivers, and its rate
    (MB/s).
    """
    rate = megabytes_per_second(count, seconds)
    never = "" if joined == n else f" ({n - joined} never joined)"
    line = (
        f"done: bytes={count} receivers={ok}/{n}{never} in {seconds:.1f} s"
        f" ({rate:.1f} MB/s)"
    )
    if slowest is not None:
        line += f"; slowest: {slowest[0]} at {slowest[1]:.1f} MB/s"
    return info(line)


def failed(
    count: int, ok: int, n: int, why: str, joined: Optional[int] = None
) -> bytes:
    never = "" if joined is None or joined == n else f" ({n - joined} never joined)"
    return error(f"failed: bytes={count} receivers={ok}/{n}{never}: {why}")


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


def receiver_stalled(who: str, sent: int, seconds: float) -> bytes:
    return info(
        f"{who} stalled (took too little for {seconds:g} s)"
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
