# -*- test-case-name: tests.test_quorum -*-
"""
Paths closed to the late receivers of a transfer that started with a
quorum, and the timers that reopen them.

When a transfer that started at its sender's wait deadline with fewer
than C{n} receivers ends, its path stays in the rendezvous as
L{pipe._transfer.rendezvous.Stage.CLOSED} (no party, no data; it counts
toward C{--max-pipes}) until the sender's wait has passed since the start:
the receivers it waited for may still come, and each gets 410 at once
instead of waiting as a new pipe's first receiver.  L{ClosedPaths} keeps
one timer of the server's reactor per closed path.
"""

from __future__ import annotations

from typing import Any, Dict

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pipe._transfer.rendezvous import Rendezvous

__all__ = ["ClosedPaths"]


class ClosedPaths:
    """
    The closed paths of one rendezvous, each with the timer that reopens
    it (part of the server's L{pipe._transfer.registry.Registry}).
    """

    def __init__(self, reactor: IReactorTime, rendezvous: Rendezvous[Any, Any]) -> None:
        self._reactor = reactor
        self._rendezvous = rendezvous
        self._calls: Dict[bytes, IDelayedCall] = {}

    def __len__(self) -> int:
        """
        The number of closed paths.
        """
        return len(self._calls)

    def close(self, path: bytes, until: float) -> None:
        """
        The quorum transfer on C{path} ended: refuse its late receivers
        until C{until} (its start plus its sender's wait); free the path at
        once if that has passed.
        """
        left = until - self._reactor.seconds()
        if left <= 0:
            self._rendezvous.release(path)
            return
        self._rendezvous.close(path, until)
        self._calls[path] = self._reactor.callLater(  # type: ignore[attr-defined]
            left, self._reopen, path
        )

    def _reopen(self, path: bytes) -> None:
        self._calls.pop(path, None)
        self._rendezvous.reopen(path)

    def reopen_all(self) -> None:
        """
        Forget every closed path now (the server stops).
        """
        for path, call in list(self._calls.items()):
            if call.active():
                call.cancel()
            self._reopen(path)
