# -*- test-case-name: tests.test_delivery -*-
"""
Waiting for a connection's peer to acknowledge what was written to it.

A response handed to the kernel is not delivered: the kernels on both sides
can hold megabytes of it.  A L{Delivery} waits, for one connection, until
the peer's TCP has acknowledged every byte written before each of its
L{IDeliveryWatcher}s began to watch (see L{pipe._http.tcp} for how the kernel is
asked), or until the connection ends first.  L{Linger} is the watcher a
channel itself uses to hold back what must wait for a delivery: the timers
of a keep-alive connection, and the full close of one that closes.

This module knows nothing about HTTP; the connection is the
L{IDeliveryConnection} its channel provides, a watcher an
L{IDeliveryWatcher}.
"""

from __future__ import annotations

import socket
from typing import Callable, Dict, Optional

from twisted.internet.interfaces import IDelayedCall
from zope.interface import implementer

from pipe._http import tcp as _tcp
from pipe._http.interfaces import IDeliveryConnection, IDeliveryWatcher, ILingerChannel

__all__ = [
    "DELIVERY_CHECK_FIRST",
    "DELIVERY_CHECK_MAX",
    "Delivery",
    "Linger",
]

#: How soon after a response ends its acknowledgement is checked again, and
#: the longest interval between checks while the peer's pace is unknown: the
#: interval doubles from the first to the second, so a receiver on loopback
#: is seen at once.
DELIVERY_CHECK_FIRST = 0.001
DELIVERY_CHECK_MAX = 0.25

#: Once the peer's pace is known, the next check comes when about half of
#: what is left should be acknowledged, but never later than this: a
#: receiver draining megabytes over a slow link costs a handful of checks,
#: and its end is seen within this long.
DELIVERY_CHECK_LONGEST = 2.0


class _Answers:
    """
    The watchers of one connection's delivery, and how each is answered:
    the half of a L{Delivery} that does not ask the kernel.

    @ivar watchers: each watcher, with the stream position its bytes end at
        (L{None} before its first check, or where positions are unknown).
    @ivar ended: set once no watcher is left to answer.
    """

    def __init__(self, connection: IDeliveryConnection) -> None:
        self._connection = connection
        self.watchers: Dict[IDeliveryWatcher, Optional[int]] = {}
        self.ended = False
        self._queue_only = False
        self._closed = False
        self._call: Optional[IDelayedCall] = None
        self._queue: Optional[socket.socket] = None

    def connection_lost(self, buffered: int, ours: bool = False) -> None:
        """
        The connection ended, with C{buffered} bytes still in Twisted's
        buffer.  If this side closed it, gracefully (C{ours}), the kernel
        goes on delivering what it holds, and so does the wait, through the
        duplicate descriptor (see L{_check_closed}).  Otherwise ask the
        kernel how far the peer got, and answer every watcher.  Without a
        duplicate (no descriptor was left) nothing proves delivery.
        """
        if self.ended:
            return
        if ours and not buffered and self._queue is not None:
            if all(target is not None for target in self.watchers.values()):
                self._closed = True
                return
        queue = self._queue
        acknowledged = _tcp.acknowledged(queue)
        unacknowledged: Optional[int] = None
        if acknowledged is None or self._queue_only:
            unacknowledged = _tcp.unacknowledged(queue)
        watchers = list(self.watchers.items())
        self.watchers.clear()
        self._end()
        for watcher, target in watchers:
            if acknowledged is not None and target is not None:
                missing = target - acknowledged
            elif unacknowledged is not None:
                missing = unacknowledged + buffered
            else:
                missing = 1
            if missing <= 0:
                watcher.delivered()
            else:
                watcher.undelivered(missing)

    def reset(self) -> None:
        """
        Fail the wait on purpose (the transfer resets the connection): no
        watcher is answered; the duplicate descriptor is closed with a reset
        of its own, since a reset is only sent when the last descriptor of
        the socket closes.
        """
        _tcp.reset_on_close(self._queue)
        self.watchers.clear()
        if not self.ended:
            self._end()

    def remove(self, watcher: IDeliveryWatcher) -> None:
        """
        C{watcher} stops watching; with none left, the wait ends.
        """
        self.watchers.pop(watcher, None)
        if not self.watchers and not self.ended:
            self._end()

    def _answer_all(self) -> None:
        """
        Tell every watcher that it is delivered, and end the wait.
        """
        answered = list(self.watchers)
        self.watchers.clear()
        self._end()
        for watcher in answered:
            watcher.delivered()

    def _answer_upto(self, acknowledged: int) -> None:
        """
        Tell every watcher whose bytes end at or before C{acknowledged}
        that it is delivered; end the wait when none is left.
        """
        answered = [
            w
            for w, target in self.watchers.items()
            if target is not None and target <= acknowledged
        ]
        if not answered:
            return
        for watcher in answered:
            del self.watchers[watcher]
        if not self.watchers:
            self._end()
        for watcher in answered:
            watcher.delivered()

    def _end(self) -> None:
        """
        Stop checking and close the duplicate descriptor (before calling
        out: a reset on purpose is only sent when the last descriptor of
        the socket closes).
        """
        self.ended = True
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        queue, self._queue = self._queue, None
        if queue is not None:
            queue.close()
        self._connection.delivery_ended(self)


class Delivery(_Answers):
    """
    The wait of one connection for its peer's acknowledgement, on behalf of
    its L{IDeliveryWatcher}s (see L{_Answers}).

    Each watcher waits for the bytes written before its first check: on
    Linux for the stream position they end at, so bytes written later (the
    next response on a keep-alive connection, a TLS C{close_notify}) never
    count against it; where only the send queue can be read, for the queue
    to be empty.  When nothing written is unacknowledged, every watcher is
    answered at once (one system call).  The first check is made by whoever
    wrote the last byte; later ones (one system call each) after intervals
    growing from L{DELIVERY_CHECK_FIRST} to L{DELIVERY_CHECK_MAX}, or, once
    the peer's pace is known, when about half of what is left should be
    acknowledged (at most L{DELIVERY_CHECK_LONGEST}), until no watcher is
    left.  While it waits it keeps a duplicate of the socket's descriptor,
    so that when the connection ends (the peer reset or closed it, or it
    was aborted) the kernel can still be asked how far the peer got.
    """

    def __init__(self, connection: IDeliveryConnection) -> None:
        super().__init__(connection)
        self._progress: Optional[int] = None
        self._checked_at = 0.0
        self._pace: Optional[float] = None
        self._unchecked = 0
        self._interval = DELIVERY_CHECK_FIRST

    def check(self) -> None:
        """
        Answer every watcher whose bytes are all acknowledged, and check
        again later for the rest.  Called directly while a later check is
        scheduled, it only checks for watchers that came since.
        """
        if self.ended:
            return
        if self._call is not None:
            if not self._unchecked:
                return  # just checked; the next check is scheduled
            self._call.cancel()
        self._call = None
        connection = self._connection
        if self._closed:
            progress = self._check_closed()
            if self.ended:
                return
        elif self._unchecked or self._queue_only:
            unacknowledged = connection.unacknowledged()
            if not unacknowledged:
                # Everything written is acknowledged (or cannot be known).
                self._answer_all()
                return
            progress = -unacknowledged
            if self._unchecked and not self._queue_only:
                position = connection.delivery_position()
                if position is None:
                    self._queue_only = True
                else:
                    progress, end = position
                    watchers = self.watchers
                    for watcher, target in list(watchers.items()):
                        if target is None:
                            watchers[watcher] = end
            self._unchecked = 0
        else:
            acknowledged = connection.acknowledged()
            if acknowledged is None:
                return  # the connection is going: connection_lost answers
            progress = acknowledged
        if not self._queue_only:
            self._answer_upto(progress)
            if self.ended:
                return
        if self._queue is None:
            self._queue = _tcp.duplicate(connection.tcp_socket)
        now = connection.seconds()
        if self._progress is None:
            delay = self._first_delay(progress)
        elif progress > self._progress:
            for watcher in list(self.watchers):
                if watcher in self.watchers:
                    watcher.delivery_progress()
            delay = self._paced(progress, now)
        else:
            delay = self._interval
        self._progress = progress
        self._checked_at = now
        if not self.ended:
            self._call = connection.callLater(delay, self._scheduled)
            self._interval = min(2 * max(self._interval, delay), DELIVERY_CHECK_MAX)

    def watch(self, watcher: IDeliveryWatcher, pace: Optional[float] = None) -> None:
        """
        Add C{watcher}; its bytes are those written before the next check.

        @param pace: how fast (bytes per second) the peer has been taking
            data, if known: the first check after this one then comes when
            about half of what is left should be in, rather than after the
            growing intervals (the peer's own close usually answers first).
        """
        self.watchers[watcher] = None
        self._unchecked += 1
        if pace:
            self._pace = max(self._pace or 0.0, pace)

    def _left(self, progress: int) -> int:
        """
        How many bytes the nearest watcher still waits for.
        """
        if self._queue_only:
            return -progress
        targets = [t for t in self.watchers.values() if t is not None]
        return min(targets) - progress if targets else 0

    def _first_delay(self, progress: int) -> float:
        """
        When the first check after the first one comes: after
        L{DELIVERY_CHECK_FIRST}, or, when the peer's pace is known, when
        about half of what is left should be acknowledged.
        """
        if not self._pace:
            return DELIVERY_CHECK_FIRST
        half = self._left(progress) / self._pace / 2
        return min(max(DELIVERY_CHECK_FIRST, half), DELIVERY_CHECK_LONGEST)

    def _scheduled(self) -> None:
        self._call = None
        self.check()

    def _paced(self, progress: int, now: float) -> float:
        """
        The peer acknowledged C{progress - self._progress} bytes since the
        last check: when should the next one come?  When about half of what
        the nearest watcher still waits for should be acknowledged at that
        pace (within L{DELIVERY_CHECK_FIRST} and L{DELIVERY_CHECK_LONGEST}).
        """
        assert self._progress is not None
        elapsed = now - self._checked_at
        if elapsed <= 0:
            return self._interval
        rate = (progress - self._progress) / elapsed
        half = self._left(progress) / rate / 2
        return min(max(DELIVERY_CHECK_FIRST, half), DELIVERY_CHECK_LONGEST)

    def _check_closed(self) -> int:
        """
        A check after this side closed the connection: only the duplicate
        descriptor is left.  A connection that is over (the peer reset it,
        or closed too) with bytes unacknowledged answers its watchers
        "undelivered".  Returns the progress measure, as L{check} uses it.
        """
        queue = self._queue
        if self._queue_only:
            left = _tcp.unacknowledged(queue)
            if not left:
                self._answer_all()
            return -(left or 0)
        state = _tcp.acknowledged_or_reset(queue)
        if state is None:
            self.connection_lost(0)
            return 0
        acknowledged, over = state
        self._answer_upto(acknowledged)
        if over and not self.ended:
            self._closed = False
            self.connection_lost(0)
        return acknowledged


@implementer(IDeliveryWatcher)
class Linger:
    """
    A channel's own L{IDeliveryWatcher}: it holds something back (the timers
    of a keep-alive connection, the full close of a closing one) until what
    was written is acknowledged, then calls C{done}.

    A peer that acknowledges nothing for C{limit} seconds while nobody else
    waits for the delivery is taken to be stuck: C{stuck} is called instead.
    While somebody else waits (a transfer, which has a stall timeout of its
    own), that one decides.  A connection that ends calls neither.  The
    limit's timer starts with L{start} (only when the first check did not
    answer at once); progress moves it on when it fires.
    """

    def __init__(
        self,
        channel: ILingerChannel,
        limit: float,
        done: Callable[[], None],
        stuck: Callable[[], None],
    ) -> None:
        self._channel = channel
        self._limit = limit
        self._done = done
        self._stuck = stuck
        self._call: Optional[IDelayedCall] = None
        self._progress_at = 0.0

    def start(self) -> None:
        """
        Start the stuck-peer timer.
        """
        self._progress_at = self._channel.seconds()
        self._call = self._channel.callLater(self._limit, self._no_progress)

    def stop(self) -> None:
        """
        Stop waiting, calling nothing.  Idempotent.
        """
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._channel.unwatch_delivery(self)

    def delivery_progress(self) -> None:
        self._progress_at = self._channel.seconds()

    def delivered(self) -> None:
        self.stop()
        self._done()

    def undelivered(self, unacknowledged: int) -> None:
        self.stop()

    def _no_progress(self) -> None:
        self._call = None
        quiet = self._channel.seconds() - self._progress_at
        if quiet < self._limit:
            self._call = self._channel.callLater(self._limit - quiet, self._no_progress)
            return
        if self._channel.other_watchers(self):
            self._call = self._channel.callLater(self._limit, self._no_progress)
            return
        self.stop()
        self._stuck()
