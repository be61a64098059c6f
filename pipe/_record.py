# -*- test-case-name: tests.test_hardening -*-
"""
The one record of an ended transfer: its count in the statistics and its
one log event, under the transfer log namespace L{LOG_NAMESPACE}.

Both ends of a transfer record it here: L{pipe._transfer.Transfer} when a
started transfer ends, and L{pipe._sender.Sender} when a sender gives up
before its transfer started.  This module knows neither of them.

For one release, every transfer event is also published under the old
namespace L{LEGACY_NAMESPACE} (see L{pipe._renamed_log}).
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.logger import Logger

from . import _messages as messages
from ._fanout import Fanout
from ._outcome import Outcome
from ._parties import path_for_log
from ._registry import Registry
from ._renamed_log import renamed_logger

__all__ = ["LEGACY_NAMESPACE", "LOG_NAMESPACE", "record_end", "transfer_logger"]

#: The namespace of transfer events (docs/usage.md tells operators to
#: filter on it).
LOG_NAMESPACE = "pipe.transfer"

#: The namespace transfer events had before (the name of a class that no
#: longer exists); a copy of each is published under it until the next
#: release.
LEGACY_NAMESPACE = "pipe._parties.Sender"


def transfer_logger() -> Logger:
    """
    A logger of transfer events (L{LOG_NAMESPACE}, copied under
    L{LEGACY_NAMESPACE}), for module level: as a class attribute a
    L{Logger} takes the class's name as its namespace.
    """
    return renamed_logger(LOG_NAMESPACE, LEGACY_NAMESPACE)


log = transfer_logger()


def record_end(
    registry: Registry,
    fanout: Fanout,
    path: bytes,
    n: int,
    outcome: Outcome,
    written: int,
    seconds: float,
    sender: str,
    receivers: Sequence[str],
    started: bool = True,
    tokens: Sequence[Any] = (),
) -> None:
    """
    Count an ended transfer and write its one log event.

    The event's text is formatted here, once, with an f-string: a log
    observer formats the event's C{log_format}, C{"{line}"}, at the cost of
    one field instead of ten (twisted.logger's formatter is pure Python).
    Every value is also a field of its own, for JSON logs.

    @param fanout: the sender's fan-out (bytes received, receivers
        complete).
    @param written: bytes written to receivers, summed over receivers.
    @param sender: the sender's address.
    @param receivers: the receivers' addresses.
    @param started: whether the transfer started (else C{seconds} is not
        observed as a duration).
    @param tokens: the parties' grants (L{pipe._guard.Grant}, or L{None});
        those admitted by an OIDC token are named in the event by issuer,
        rule and the claims the rule read (never the token).
    """
    received, completed = fanout.received, fanout.completed
    registry.statistics.transfer_ended(
        outcome, received, written, seconds if started else None
    )
    pipe = path_for_log(path, registry)
    rate = messages.megabytes_per_second(received, seconds)
    addresses = ", ".join(receivers)
    admitted = [g.admission.for_log() for g in tokens if g and g.admission]
    by_token = "".join(
        f"; token of {a['issuer']} by {a['rule']!r} {a['claims']}" for a in admitted
    )
    log.info(
        "{line}",
        line=(
            f"transfer {pipe} {outcome.value}: {received} bytes to {completed}"
            f" of {n} receivers in {seconds:.3f} s ({rate:.1f} MB/s);"
            f" sender {sender}, receivers {addresses}{by_token}"
        ),
        tokens=admitted,
        pipe=pipe,
        outcome=outcome.value,
        bytes=received,
        completed=completed,
        n=n,
        seconds=seconds,
        rate=rate,
        sender=sender,
        receivers=addresses,
    )
