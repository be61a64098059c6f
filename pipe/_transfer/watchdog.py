# -*- test-case-name: tests.test_fanout -*-
"""
The watchdog policy of running transfers: when a receiver counts as
stalled, when an upload counts as idle, and the one periodic timer that
checks every fan-out of a site.

A fan-out (L{pipe._transfer.fanout.Fanout}) moves the bytes and reports what it
sees; this module decides what is too slow, and tells the fan-out which
receiver to drop.  It knows no fan-out: a watched transfer provides
L{IWatched}, each of its receivers L{IWatchedReceiver} (with a
L{Progress}), and an upload's idle timer is an L{IdleTimer}.

Two watchdogs run during a transfer: a receiver that takes no bytes for the
stall timeout while data waits for it (or, with a minimum rate, takes them
too slowly), or that acknowledges nothing for the stall timeout while the
transfer awaits acknowledgements, is dropped; and an upload that sends
nothing for the idle timeout while the fan-out wants data aborts the
transfer.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from zope.interface import Attribute, Interface

from pipe._compat.logger import pinned_logger

__all__ = [
    "REPORT_INTERVAL",
    "IWatched",
    "IWatchedReceiver",
    "IdleTimer",
    "Progress",
    "Watchdogs",
    "holding_back",
]

#: Seconds between two reports of a running transfer to its sender (the
#: first once it has run this long; see L{IWatched.report}).
REPORT_INTERVAL = 5.0


class IWatchedReceiver(Interface):
    """
    One receiver of a watched transfer, as the stall check sees it.
    """

    progress = Attribute("What the stall check knows of it (L{Progress}).")
    sent = Attribute("Bytes written to it so far.")

    def is_written() -> bool:
        """Whether its response is finished (the transfer awaits its
        acknowledgement)."""

    def is_paused() -> bool:
        """Whether its connection has paused the upload."""

    def pending() -> Optional[int]:
        """Bytes written that its connection has not taken (once written:
        not acknowledged), or L{None} when the connection cannot tell."""


class IWatched(Interface):
    """
    A running transfer that the stall check visits.
    """

    clock = Attribute("The transfer's L{IReactorTime}.")

    def watched_receivers() -> Iterable[IWatchedReceiver]:
        """The receivers still running, in order (a snapshot)."""

    def is_watched(receiver: IWatchedReceiver) -> bool:
        """Whether C{receiver} is still running (an earlier drop can end
        others)."""

    def drop_stalled(receiver: IWatchedReceiver) -> bool:
        """Drop C{receiver} as stalled; return whether the transfer still
        runs."""

    def report() -> None:
        """Called after each periodic check: the transfer notes which
        receiver holds it back (L{holding_back}), and, once it has run
        another L{REPORT_INTERVAL} seconds, tells its sender how it goes
        (nothing of it runs per body piece)."""


class Progress:
    """
    What the stall watchdog knows of one receiver.

    @ivar taken: bytes the receiver's connection had taken when last seen.
    @ivar progress_at: when C{taken} last grew, or nothing was waiting; once
        the response is written, when the connection last acknowledged
        more.
    @ivar window_at: when the current minimum-rate window began.
    @ivar window_taken: C{taken} when it began.
    @ivar left: once the response is written, what the connection had not
        acknowledged at the last stall check.
    """

    __slots__ = ("left", "progress_at", "taken", "window_at", "window_taken")

    def __init__(self, now: float) -> None:
        self.taken = 0
        self.progress_at = self.window_at = now
        self.window_taken = 0
        self.left: Optional[int] = None


class Watchdogs:
    """
    The timeouts of running transfers (0 disables one), shared by every
    fan-out of a site, the stall policy, and the one periodic timer that
    checks all of their receivers for stalls: a timer per transfer would be
    created and cancelled for every small pipe, where a stall check never
    fires.

    The check runs every C{min(1, stall_timeout / 4)} seconds while any
    transfer is watched, on the clock of the transfer that started it (all
    fan-outs of a site share the site's clock); a stall is seen within that
    period of its timeout, whatever the phase of the transfer's start.

    @ivar stall_timeout: seconds a receiver may take no bytes while data
        waits for it.
    @ivar min_rate: bytes per second below which a receiver with data
        waiting counts as stalled over a stall window.
    @ivar idle_timeout: seconds the upload may send nothing while the
        fan-out wants data.
    """

    log = pinned_logger("pipe._watchdog.Watchdogs")

    def __init__(
        self, stall_timeout: float = 0, min_rate: int = 0, idle_timeout: float = 0
    ) -> None:
        self.stall_timeout = stall_timeout
        self.min_rate = min_rate
        self.idle_timeout = idle_timeout
        self._watched: Dict[IWatched, None] = {}
        self._sweep: Optional[LoopingCall] = None

    def watch(self, watched: IWatched) -> None:
        """
        Check C{watched}'s receivers for stalls until L{unwatch}, if stalls
        are checked at all.
        """
        if not self.stall_timeout:
            return
        self._watched[watched] = None
        if self._sweep is None:
            self._sweep = sweep = LoopingCall(self._check_all)
            sweep.clock = watched.clock
            sweep.start(min(1.0, self.stall_timeout / 4), now=False)

    def unwatch(self, watched: IWatched) -> None:
        """
        Stop checking C{watched}.  Idempotent.  The timer stops at its next
        tick if nothing is left to check.
        """
        self._watched.pop(watched, None)

    def _check_all(self) -> None:
        for watched in tuple(self._watched):
            if watched not in self._watched:
                continue
            try:
                self.check(watched)
                if watched in self._watched:
                    watched.report()
            except Exception:
                self.log.failure("stall check failed")
        if not self._watched:
            sweep, self._sweep = self._sweep, None
            if sweep is not None:
                sweep.stop()

    def check(self, watched: IWatched) -> None:
        """
        Drop every receiver of C{watched} that has stalled: while its
        response is written, see L{stalled_taking}; once written, see
        L{stalled_acknowledging}.  Runs while the upload is paused, too:
        that is when a stalled receiver holds everybody back.
        """
        now = watched.clock.seconds()
        for receiver in watched.watched_receivers():
            if not watched.is_watched(receiver):
                continue
            if receiver.is_written():
                stalled = self.stalled_acknowledging(
                    receiver.progress, now, receiver.pending
                )
            else:
                stalled = self.stalled_taking(
                    receiver.progress,
                    now,
                    receiver.sent,
                    receiver.pending(),
                    receiver.is_paused(),
                )
            if stalled and not watched.drop_stalled(receiver):
                return

    def stalled_taking(
        self,
        progress: Progress,
        now: float,
        sent: int,
        pending: Optional[int],
        paused: bool,
    ) -> bool:
        """
        Whether a receiver whose response is still being written has taken
        no bytes for the stall timeout while data waited for it, or (with a
        minimum rate) took fewer than C{min_rate} bytes per second over the
        last stall window while data waited.

        @param sent: bytes written to the receiver so far.
        @param pending: bytes written that its connection has not taken, or
            L{None} when the connection cannot tell.
        @param paused: whether its connection paused the fan-out.
        """
        if pending is None:
            # The connection cannot say: a paused receiver has data
            # waiting, and only a resume shows progress.
            pending = 1 if paused else 0
            taken = progress.taken if pending else sent
        else:
            taken = sent - pending
        if taken > progress.taken or not pending:
            progress.taken = taken
            progress.progress_at = now
        stall = self.stall_timeout
        stalled = now - progress.progress_at >= stall
        min_rate = self.min_rate
        if not stalled and min_rate and now - progress.window_at >= stall:
            rate = (taken - progress.window_taken) / (now - progress.window_at)
            stalled = bool(pending) and rate < min_rate
            progress.window_at, progress.window_taken = now, taken
        return stalled

    def stalled_acknowledging(
        self,
        progress: Progress,
        now: float,
        pending: Callable[[], Optional[int]],
    ) -> bool:
        """
        Whether a receiver whose response is written has acknowledged
        nothing for the stall timeout.  When no progress was reported for
        half of it, C{pending} (what the connection has not acknowledged,
        L{None} if it cannot tell) is asked.
        """
        stall = self.stall_timeout
        if now - progress.progress_at >= stall / 2:
            # No progress reported lately: ask the connection.
            left = pending()
            if left is not None and (progress.left is None or left < progress.left):
                progress.progress_at = now
            progress.left = left
        return now - progress.progress_at >= stall


def holding_back(receivers: Iterable[IWatchedReceiver]) -> Optional[IWatchedReceiver]:
    """
    The receiver that holds a transfer back now: of the C{receivers} whose
    connection pauses the upload, the one that had taken the fewest bytes
    at the last stall check (L{Progress.taken}: nothing more is asked of
    the connections).  L{None} when none pauses the upload.
    """
    slowest: Optional[IWatchedReceiver] = None
    for receiver in receivers:
        if receiver.is_paused() and (
            slowest is None or receiver.progress.taken < slowest.progress.taken
        ):
            slowest = receiver
    return slowest


class IdleTimer:
    """
    The idle watchdog of one upload: calls C{expired} once the upload has
    gave nothing for the idle timeout of C{watchdogs} while the fan-out
    wanted data.

    @param wanting_since: when the upload last gave data, or L{None}
        while the fan-out does not want any (it is paused or over).
    """

    def __init__(
        self,
        clock: IReactorTime,
        watchdogs: Watchdogs,
        wanting_since: Callable[[], Optional[float]],
        expired: Callable[[], None],
    ) -> None:
        self._clock = clock
        self._watchdogs = watchdogs
        self._wanting_since = wanting_since
        self._expired = expired
        self._call: Optional[IDelayedCall] = None

    def arm(self) -> None:
        """
        The fan-out wants data: start the timer, unless it runs (or idle
        timeouts are off).
        """
        timeout = self._watchdogs.idle_timeout
        if timeout and self._call is None:
            self._call = self._clock.callLater(timeout, self._fire)  # type: ignore[attr-defined]

    def disarm(self) -> None:
        """
        The fan-out wants no data (paused or over): stop the timer.
        """
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _fire(self) -> None:
        self._call = None
        since = self._wanting_since()
        if since is None:
            return
        remaining = self._watchdogs.idle_timeout - (self._clock.seconds() - since)
        if remaining > 0:
            self._call = self._clock.callLater(remaining, self._fire)  # type: ignore[attr-defined]
            return
        self._expired()
