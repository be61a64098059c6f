# -*- test-case-name: tests.test_hardening -*-
"""
The registry: the server's table of parties, pipes and limits (the
rendezvous, the parties present, the statistics, the watchdogs shared by
running transfers, the signature guard), and the drain on shutdown.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Any, Dict, Iterable, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import Interface

from pipe import __version__
from pipe._compat.logger import pinned_logger
from pipe._settings import Settings
from pipe._transfer import messages as messages
from pipe._transfer.closed import ClosedPaths
from pipe._transfer.guard import Grant, Guard, Requirement, TokenGate
from pipe._transfer.outcome import Outcome
from pipe._transfer.refusal import Refusal
from pipe._transfer.rendezvous import Rendezvous, Stage
from pipe._transfer.statistics import Statistics
from pipe._transfer.watchdog import Watchdogs

__all__ = ["DRAIN_GRACE", "IParty", "Lifecycle", "Registry"]

#: The hard deadline of a drain is C{drain_timeout} plus this many seconds:
#: after it, shutdown goes on even if a party is somehow still present.
DRAIN_GRACE = 5.0


class Lifecycle(enum.Enum):
    """
    The server's life: C{SERVING}, then C{DRAINING} from the moment it is
    asked to stop (no new parties; waiting ones are sent away; running
    transfers get L{Settings.drain_timeout} to finish).
    """

    SERVING = "serving"
    DRAINING = "draining"


class IParty(Interface):
    """
    What the registry needs from a sender or receiver.
    """

    def is_waiting() -> bool:
        """Whether the party's transfer has not started."""

    def shut_down() -> None:
        """Send a waiting party away: the server is shutting down."""

    def abort_transfer(outcome: Outcome) -> None:
        """Abort the running transfer this party is in (senders do it)."""

    def transferred() -> Tuple[int, int]:
        """Bytes received and written so far by a running transfer's
        sender; (0, 0) for everyone else."""

    def awaiting_acks() -> bool:
        """Whether this is the sender of a transfer whose upload is complete
        and that waits for its receivers to acknowledge the last bytes."""


class Registry:
    """
    Everything the server knows beyond one request: the rendezvous of
    paths, the parties present (for the per-address limit and the drain),
    and the counters behind C{/api/v1/status}.

    @ivar rendezvous: the L{Rendezvous} of waiting and running paths.
    @ivar settings: the server's L{Settings}.
    @ivar lifecycle: see L{Lifecycle}.
    @ivar statistics: what the server counts (L{Statistics}): ended
        transfers, refusals, stalls, wait timeouts, waits and durations.
    @ivar watchdogs: the timeouts of running transfers, with the one timer
        that checks every running transfer's receivers for stalls.
    @ivar guard: the L{Guard} of signed URLs, or L{None} when signing is
        off (no keys).
    @ivar token_gate: the L{TokenGate} of OIDC tokens, or L{None} without
        an OIDC policy.
    @ivar closed_paths: the paths closed to late receivers after a quorum
        start (L{pipe._transfer.closed}).
    """

    #: Drain events (the namespace the image's entry point, and operators,
    #: watch for them).
    log = pinned_logger("pipe._registry.Registry")

    def __init__(self, reactor: IReactorTime, settings: Settings) -> None:
        self.reactor = reactor
        self.settings = settings
        self.rendezvous: Rendezvous[Any, Any] = Rendezvous(reactor)
        self.closed_paths = ClosedPaths(reactor, self.rendezvous)
        self.started_at = reactor.seconds()
        self.lifecycle = Lifecycle.SERVING
        self.statistics = Statistics()
        self.watchdogs = Watchdogs(
            settings.stall_timeout, settings.min_rate, settings.idle_timeout
        )
        self._parties: Dict[IParty, str] = {}
        self._per_host: Counter[str] = Counter()
        self._drained: Optional[Deferred[None]] = None
        self._drain_call: Optional[IDelayedCall] = None
        self.guard: Optional[Guard] = None
        if settings.keys:
            self.guard = Guard(
                settings.keys,
                Requirement(settings.require_signature),
                reactor,
                settings.max_ttl,
            )
        self.token_gate: Optional[TokenGate] = None
        if settings.oidc_policy is not None:
            from pipe._oidc.authority import Authority

            self.token_gate = TokenGate(Authority(settings.oidc_policy, reactor))

    # Admission and presence.

    def admit(self, path: bytes, host: str) -> None:
        """
        Check that a new party on C{path} from C{host} may be taken.

        @raise pipe._transfer.refusal.Refusal: (503) the server is draining, or a limit
            is reached.
        """
        settings = self.settings
        if self.lifecycle is Lifecycle.DRAINING:
            raise Refusal.unavailable(messages.shutting_down(), "shutting_down")
        if (
            self.rendezvous.stage(path) is None
            and len(self.rendezvous) >= settings.max_pipes
        ):
            raise Refusal.unavailable(
                messages.too_many_pipes(settings.max_pipes), "too_many_pipes"
            )
        limit = settings.max_connections_per_ip
        if limit and self._per_host[host] >= limit:
            raise Refusal.unavailable(
                messages.too_many_connections(host, limit), "too_many_connections"
            )

    def enter(self, party: IParty, host: str) -> None:
        """
        C{party} from C{host} is waiting or transferring.
        """
        self._parties[party] = host
        self._per_host[host] += 1

    def leave(self, party: IParty) -> None:
        """
        C{party} is done (however it ended).  Idempotent.
        """
        host = self._parties.pop(party, None)
        if host is None:
            return
        self._per_host[host] -= 1
        if not self._per_host[host]:
            del self._per_host[host]
        if self.lifecycle is Lifecycle.DRAINING and not self._parties:
            self._finish_drain()

    @property
    def party_count(self) -> int:
        """
        The number of parties waiting or transferring.
        """
        return len(self._parties)

    def spend(self, grants: Iterable[Optional[Grant]]) -> None:
        """
        A transfer started: the signed URLs of its parties are used up.
        """
        grants = list(grants)
        if self.guard is not None:
            self.guard.spend(grants)
        if self.token_gate is not None:
            self.token_gate.spend(grants)

    def close_to_late_receivers(self, path: bytes, until: float) -> None:
        """
        A transfer that started with a quorum ended on C{path}: refuse its
        late receivers until C{until} (see L{pipe._transfer.closed}).
        """
        if self.lifecycle is Lifecycle.DRAINING:
            self.rendezvous.release(path)
        else:
            self.closed_paths.close(path, until)

    # Drain.

    def drain(self) -> Deferred[None]:
        """
        Stop taking parties, send waiting ones away, give running transfers
        L{Settings.drain_timeout} seconds, then abort what is left.

        @return: fires when no party is left, or at the latest
            L{DRAIN_GRACE} seconds after the abort.
        """
        if self._drained is not None:
            return self._drained
        self.lifecycle = Lifecycle.DRAINING
        self._drained = Deferred()
        self.closed_paths.reopen_all()
        self.log.info(
            "draining: {parties} parties present, {running} transfers running",
            parties=self.party_count,
            running=self.rendezvous.count(Stage.RUNNING),
        )
        for party in list(self._parties):
            if party.is_waiting():
                party.shut_down()
        if not self._parties:
            self._finish_drain()
        else:
            self._drain_call = self.reactor.callLater(  # type: ignore[attr-defined]
                self.settings.drain_timeout, self._abort_running
            )
        return self._drained

    def _abort_running(self) -> None:
        self._drain_call = None
        self.log.info(
            "drain timeout: aborting {parties} parties", parties=self.party_count
        )
        for party in list(self._parties):
            try:
                party.abort_transfer(Outcome.DRAINED)
            except Exception:
                self.log.failure("aborting a party on drain failed")
        if self._parties:
            self._drain_call = self.reactor.callLater(  # type: ignore[attr-defined]
                DRAIN_GRACE, self._give_up
            )

    def _give_up(self) -> None:
        """
        The hard deadline of a drain: parties are still present after their
        transfers were aborted (which should not happen); stop waiting for
        them, so that shutdown always ends.
        """
        self._drain_call = None
        self.log.error(
            "drain deadline: {parties} parties still present {grace} s after"
            " their transfers were aborted; shutting down anyway",
            parties=self.party_count,
            grace=DRAIN_GRACE,
        )
        self._finish_drain()

    def _finish_drain(self) -> None:
        call, self._drain_call = self._drain_call, None
        if call is not None and call.active():
            call.cancel()
        drained = self._drained
        if drained is not None and not drained.called:
            self.log.info("drained")
            drained.callback(None)

    # Reporting.

    def live_bytes(self) -> Tuple[int, int]:
        """
        Upload bytes received and bytes written (summed over receivers) by
        every transfer, running ones included.
        """
        statistics = self.statistics
        received, written = statistics.bytes_received, statistics.bytes_written
        for party in self._parties:
            more_received, more_written = party.transferred()
            received += more_received
            written += more_written
        return received, written

    def awaiting_acks_count(self) -> int:
        """
        The number of running transfers that wait for their receivers'
        acknowledgement of the last bytes.
        """
        return sum(1 for party in self._parties if party.awaiting_acks())

    def status(self) -> Dict[str, Any]:
        """
        The C{/api/v1/status} document (no paths: a path is a credential).
        """
        rendezvous = self.rendezvous
        senders, receivers = rendezvous.totals()
        status: Dict[str, Any] = {
            "version": __version__,
            "uptime_seconds": round(self.reactor.seconds() - self.started_at, 3),
            "state": self.lifecycle.value,
            "pipes_waiting": rendezvous.count(Stage.WAITING),
            "pipes_running": rendezvous.count(Stage.RUNNING),
            "pipes_closed": rendezvous.count(Stage.CLOSED),
            "pipes_awaiting_acks": self.awaiting_acks_count(),
            "senders_connected": senders,
            "receivers_connected": receivers,
            "bytes_received": self.statistics.bytes_received,
            "bytes_written": self.statistics.bytes_written,
            "transfers": {
                outcome.value: count
                for outcome, count in self.statistics.transfers().items()
            },
        }
        return status
