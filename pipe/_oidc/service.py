# -*- test-case-name: tests.test_oidc_end_to_end -*-
"""
The OIDC policy's life in a running server: its issuers' keys are fetched
when the server starts, and C{SIGHUP} re-reads the policy file (a bad new
file keeps the policy in force, and the log says why).  Running transfers
are never touched: the policy is consulted when a request arrives.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Optional

from twisted.application.service import Service
from twisted.logger import Logger

from pipe._oidc.authority import Authority
from pipe._oidc.policy import PolicyError, load_policy

__all__ = ["PolicyService"]


class PolicyService(Service):
    """
    Starts the L{Authority}'s key fetches, and re-reads its policy file on
    C{SIGHUP} (or L{reload}).
    """

    log = Logger()

    def __init__(self, authority: Authority, path: str, reactor: Any) -> None:
        self._authority = authority
        self._policy_file = path
        self._reactor = reactor
        self._previous: Optional[Any] = None
        self._installed = False

    def startService(self) -> None:
        super().startService()
        self._authority.start()
        if threading.current_thread() is threading.main_thread() and hasattr(
            signal, "SIGHUP"
        ):
            self._previous = signal.signal(signal.SIGHUP, self._hangup)
            self._installed = True

    def stopService(self) -> None:  # type: ignore[override]
        super().stopService()
        if self._installed:
            signal.signal(signal.SIGHUP, self._previous)
            self._installed = False

    def _hangup(self, number: int, frame: Any) -> None:
        # A signal handler runs between two bytecodes of whatever the
        # reactor was doing: do the work from the reactor's loop instead.
        self._reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """
        Re-read the policy file and put it in force; if it is not a valid
        policy, keep the one in force and log why.

        @return: whether the new policy is in force.
        """
        try:
            policy = load_policy(self._policy_file)
        except PolicyError as error:
            self.log.error(
                "OIDC policy not re-read, the one in force stays: {problem}",
                problem=str(error),
            )
            return False
        self._authority.replace(policy)
        self.log.info(
            "OIDC policy {file} re-read: {issuers} issuers, {rules} rules",
            file=self._policy_file,
            issuers=len(policy.issuers),
            rules=len(policy.rules),
        )
        return True
