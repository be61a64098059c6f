# -*- test-case-name: tests.test_hardening -*-
"""
The one record of an ended transfer: its count in the statistics and its
one log event, under the transfer log namespace L{LOG_NAMESPACE}.

Both ends of a transfer record it here: L{pipe._transfer.transfer.Transfer} when a
started transfer ends, and L{pipe._transfer.sender.Sender} when a sender gives up
before its transfer started.  This module knows neither of them.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.logger import Logger

from pipe._transfer import messages as messages
from pipe._transfer.fanout import Fanout
from pipe._transfer.outcome import Outcome
from pipe._transfer.parties import path_for_log
from pipe._transfer.registry import Registry

__all__ = ["LOG_NAMESPACE", "log", "record_end"]

#: The namespace of transfer events (docs/usage.md tells operators to
#: filter on it).
LOG_NAMESPACE = "pipe.transfer"

#: The logger of transfer events.
log = Logger(namespace=LOG_NAMESPACE)


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
    never_joined: int = 0,
    lost: Sequence[str] = (),
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
    @param receivers: the receivers' addresses (each after its name, if
        it has one: C{runner-7 (10.1.4.22:51234)}).
    @param started: whether the transfer started (else C{seconds} is not
        observed as a duration).
    @param tokens: the parties' grants (L{pipe._transfer.guard.Grant}, or L{None});
        those admitted by an OIDC token are named in the event by issuer,
        rule and the claims the rule read (never the token).
    @param never_joined: how many of the C{n} receivers never joined (a
        quorum start).
    @param lost: the receivers that did not get every byte (as in
        C{receivers}; the event's field C{lost} is their list).
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
    never = f" ({never_joined} never joined)" if never_joined else ""
    line = (
        f"transfer {pipe} {outcome.value}: {received} bytes to {completed}"
        f" of {n} receivers{never} in {seconds:.3f} s ({rate:.1f} MB/s);"
        f" sender {sender}, receivers {addresses}"
    )
    if lost:
        line += "; lost " + ", ".join(lost)
    line += by_token
    log.info(
        "{line}",
        line=line,
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
        never_joined=never_joined,
        lost=lost,
    )
