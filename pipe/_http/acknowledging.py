# -*- test-case-name: tests.test_delivery -*-
"""
The channel's side of delivery: what its peer has acknowledged, and who
waits for it.

L{Acknowledgements} is a mixin of L{pipe._http.channel.StreamingChannel},
behind L{pipe._http.timers.Timers} and in front of
L{pipe._http.writes.WritePath}: it reads, through the TCP socket the write
path found (also under TLS), how much of what was written its peer's TCP
has acknowledged, and keeps the L{Delivery} that answers whoever waits for
that (L{IConnection.watch_delivery}).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Optional, Tuple

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from pipe._http import tcp as _tcp
from pipe._http.delivery import Delivery
from pipe._http.interfaces import IDeliveryConnection, IDeliveryWatcher, ILingerChannel

if TYPE_CHECKING:
    from pipe._http.writes import WritePath as _Channel
else:
    _Channel = object

__all__ = ["Acknowledgements"]


@implementer(IDeliveryConnection, ILingerChannel)
class Acknowledgements(_Channel):
    """
    A mixin for an L{HTTPChannel} subclass with L{pipe._http.writes.WritePath}
    behind it: the channel can tell when its peer has acknowledged what was
    written to it (see the module docstring).

    Watchers are told by L{check_delivery} (which the writer calls once
    everything is written), by the checks the L{Delivery} schedules on the
    site's clock, and when the connection is lost; any answer may come
    before the call that caused it returns.

    @ivar _delivery: the wait for the peer's acknowledgement while anybody
        waits (L{None}: nobody).
    """

    _delivery: Optional[Delivery] = None

    @property
    def tcp_socket(self) -> Optional[socket.socket]:
        """
        The TCP socket under this connection (also under TLS), or L{None}.
        """
        return self._tcp

    def seconds(self) -> float:
        """
        The time now, on the site's clock.
        """
        return float(self._site.reactor.seconds())

    def unacknowledged(self) -> Optional[int]:
        """
        Bytes written to this connection that the peer's TCP has not
        acknowledged: what Twisted still buffers plus the kernel's send
        queue; L{None} when that cannot be known (see L{pipe._http.tcp}).
        """
        kernel = _tcp.unacknowledged(self._tcp)
        if kernel is None:
            return None
        return kernel + (self.unsent() or 0)

    def all_acknowledged(self) -> bool:
        """
        Whether the peer has acknowledged everything written (also where
        that cannot be known).  One system call.
        """
        return not self.unacknowledged()

    def acknowledged(self) -> Optional[int]:
        """
        Bytes the peer has acknowledged since the connection began (L{None}
        where the platform cannot tell).
        """
        return _tcp.acknowledged(self._tcp)

    def delivery_position(self) -> Optional[Tuple[int, int]]:
        """
        Where this connection's byte stream stands: C{(acknowledged, end)},
        the bytes its peer has acknowledged and the position of the last
        byte written so far (handed to the kernel, or still in Twisted's
        buffer); L{None} where the platform cannot tell (see
        L{pipe._http.tcp.position}).
        """
        position = _tcp.position(self._tcp)
        if position is None:
            return None
        acknowledged, written = position
        buffered = self.unsent() or 0
        return acknowledged, written + buffered

    def watch_delivery(
        self, watcher: IDeliveryWatcher, pace: Optional[float] = None
    ) -> None:
        """
        Tell C{watcher} when the peer has acknowledged every byte written
        to this connection (by the next L{check_delivery}), or when the
        connection ends first (see L{IDeliveryWatcher}).

        @param pace: how fast the peer has been taking data (bytes per
            second), if known (see L{Delivery.watch}).
        """
        delivery = self._delivery
        if delivery is None:
            self._delivery = delivery = Delivery(self)
        delivery.watch(watcher, pace)

    def unwatch_delivery(self, watcher: IDeliveryWatcher) -> None:
        """
        C{watcher} no longer wants an answer.  Idempotent.
        """
        delivery = self._delivery
        if delivery is not None:
            delivery.remove(watcher)

    def other_watchers(self, watcher: IDeliveryWatcher) -> bool:
        """
        Whether anybody but C{watcher} waits for this connection's delivery.
        """
        delivery = self._delivery
        return delivery is not None and any(w is not watcher for w in delivery.watchers)

    def check_delivery(self) -> None:
        """
        Check now whether everything written was acknowledged (once held
        writes are sent, if any); may answer the watchers before it returns.
        """
        if self.after_held(self.check_delivery):
            return
        delivery = self._delivery
        if delivery is not None:
            delivery.check()

    def delivery_ended(self, delivery: Delivery) -> None:
        """
        Called by L{Delivery} when it has answered every watcher or lost
        them all.
        """
        if self._delivery is delivery:
            self._delivery = None

    def _reset_delivery(self) -> None:
        """
        The connection is reset on purpose: fail the wait, answering
        nobody.
        """
        delivery = self._delivery
        if delivery is not None:
            # The duplicate descriptor goes with a reset of its own, or the
            # connection's would not be sent.
            delivery.reset()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        delivery = self._delivery
        if delivery is not None:
            # Closed by this side, gracefully (a close after the response):
            # the kernel goes on delivering, and the wait with it.
            ours = reason.check(ConnectionDone) is not None and bool(
                getattr(self.transport, "disconnecting", False)
            )
            delivery.connection_lost(self.unsent() or 0, ours)
        super().connectionLost(reason)
