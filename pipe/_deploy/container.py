# -*- test-case-name: tests.test_container_entry -*-
"""
The container image's entry point: C{twistd --nodaemon --pidfile= pipe
ARGS} in this process, with the exit status a container runtime expects.

C{twistd} ends a run stopped by C{SIGTERM} by raising that signal again, so
its status is 143 (-15) however well the drain went, and a runtime or an
orchestrator records every ordinary stop as a failure.  Here the stop
signals (C{SIGTERM}, C{SIGINT}) stop the reactor themselves, so that the
same drain runs (L{pipe.tap}: listeners close, waiting parties get 503,
running transfers get C{--drain-timeout}) and then:

    - 0: every running transfer ended on its own during the drain;
    - 128 + the signal (143 for C{SIGTERM}): the drain timeout had to abort
      transfers, as plain C{twistd} would have said;
    - 1: a listener could not listen (L{pipe.tap.ListenFailed}).

Run as C{python -m pipe._deploy.container [twistd pipe options]}.  Nothing here
reaches Twisted internals: the signal handlers are installed once the
reactor runs, over the reactor's own.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any, List, Optional

from twisted.logger import ILogObserver, Logger, globalLogPublisher
from zope.interface import implementer

__all__ = ["main"]

#: The signals that ask the server to drain and stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: The registry's log events that say a drain had to abort transfers.
_ABORT_FORMATS = ("drain timeout", "drain deadline")
_REGISTRY_NAMESPACE = "pipe._registry.Registry"

_log = Logger(namespace="pipe._container")


@implementer(ILogObserver)
class _DrainWatch:
    """
    A log observer that remembers whether the registry's drain aborted
    transfers (its C{drain timeout} or C{drain deadline} events).
    """

    def __init__(self) -> None:
        self.aborted = False

    def __call__(self, event: Any) -> None:
        if event.get("log_namespace") == _REGISTRY_NAMESPACE and str(
            event.get("log_format", "")
        ).startswith(_ABORT_FORMATS):
            self.aborted = True


class _Stop:
    """
    The stop signals' handler: the first one stops the reactor (which runs
    the drain); later ones are logged and ignored, as the drain already
    has its deadline.

    @ivar signal: the first stop signal received, or L{None}.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.signal: Optional[int] = None

    def install(self) -> None:
        """
        Replace the reactor's handlers for L{STOP_SIGNALS}; called once the
        reactor runs (it installs its own as it starts).
        """
        for number in STOP_SIGNALS:
            signal.signal(number, self._received)

    def _received(self, number: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(number).name
        if self.signal is not None:
            _log.info("received {signal} again: already draining", signal=name)
            return
        self.signal = number
        _log.info("received {signal}: draining, then stopping", signal=name)
        # A signal handler runs between two bytecodes of whatever the reactor
        # was doing: stop from the reactor's own loop, as Twisted does.
        self._reactor.callFromThread(self._reactor.stop)


def main(argv: Optional[List[str]] = None) -> int:
    """
    Run C{twistd --nodaemon --pidfile= pipe} with C{argv} (default:
    C{sys.argv[1:]}) in this process.

    @return: the exit status (see the module docstring).
    """
    from twisted.internet import reactor
    from twisted.scripts.twistd import run

    from pipe.tap import ListenFailed

    argv = sys.argv[1:] if argv is None else argv
    watch = _DrainWatch()
    globalLogPublisher.addObserver(watch)
    stop = _Stop(reactor)
    reactor.callWhenRunning(stop.install)
    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "pipe", *argv]
    try:
        run()
    except ListenFailed:
        # The reason is on stderr already.
        return 1
    finally:
        globalLogPublisher.removeObserver(watch)
    if stop.signal is not None and watch.aborted:
        return 128 + stop.signal
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
