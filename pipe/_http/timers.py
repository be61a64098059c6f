# -*- test-case-name: tests.test_hardening -*-
"""
The channel's own timers: the header timeout, and the keep-alive timers
that start only once the last response is acknowledged.

L{Timers} is a mixin of L{pipe._http.channel.StreamingChannel}, in front of
L{pipe._http.acknowledging.Acknowledgements}: it closes a connection whose
client does not send its request line and headers within the site's
C{header_timeout} (slowloris), counted from the connection or from the end
of its previous response, and it starts the header and idle timers of a
keep-alive connection only once its last response is acknowledged (a
L{Linger}), so that no timer resets a response still in flight.  A peer
that stops acknowledging a finished response is closed
(L{STUCK_PEER_TIMEOUT}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.internet.tcp import Connection
from twisted.python.failure import Failure

from pipe._compat import internals as compat
from pipe._compat.logger import pinned_logger
from pipe._http.delivery import Linger

if TYPE_CHECKING:
    from pipe._http.acknowledging import Acknowledgements as _Channel
else:
    _Channel = object

__all__ = ["STUCK_PEER_TIMEOUT", "Timers"]

#: How long a peer may acknowledge nothing of a finished response, with
#: nobody else waiting for it, when the site has no header timeout.
STUCK_PEER_TIMEOUT = 60.0


class Timers(_Channel):
    """
    A mixin for an L{HTTPChannel} subclass with
    L{pipe._http.acknowledging.Acknowledgements} behind it: the header
    timeout and the keep-alive timers (see the module docstring).  Every
    timer runs on the site's clock and is cancelled when the connection is
    lost.
    """

    _log = pinned_logger("pipe._timers.TimedChannel")
    # When the request headers now awaited are due (None: none awaited), and
    # the timer that checks it; the timer is not cancelled when headers
    # arrive in time, only re-armed for the rest when it finds a later
    # deadline (a connection's requests would otherwise create and cancel
    # a timer each, twice).
    _headers_due: Optional[float] = None
    _header_check: Optional[IDelayedCall] = None
    # The abort of a stuck connection's graceful close.
    _stuck_abort: Optional[IDelayedCall] = None
    _keep_alive: Optional[Linger] = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._await_headers()

    def _await_headers(self) -> None:
        timeout = self._site.header_timeout
        if timeout and self._headers_due is None:
            self._headers_due = self.seconds() + timeout
            if self._header_check is None:
                self._header_check = self.callLater(timeout, self._check_headers)

    def _headers_done(self) -> None:
        self._headers_due = None

    def _check_headers(self) -> None:
        """
        The header timer fired: drop the connection if the headers it waits
        for are late, else wait for the rest of their time, if any.
        """
        self._header_check = None
        due = self._headers_due
        if due is None:
            return
        left = due - self.seconds()
        if left > 0:
            self._header_check = self.callLater(left, self._check_headers)
            return
        self._headers_due = None
        self._log.info(
            "closing {peer}: no complete request headers in time",
            peer=str(self.getPeer()),
        )
        # Armed only once everything written was acknowledged: an abort
        # loses nothing.
        self.abort()

    def requestDone(self, request: Any) -> None:
        """
        A response is complete.  On a keep-alive connection, the header and
        idle timers for the next request start only when the peer has
        acknowledged all of it (see L{Linger}).
        """
        connection = self.tcp_transport
        if connection is not None:
            connection.bufferSize = Connection.bufferSize
        # Twisted would restart its idle timeout now; next_request_timers does.
        compat.forget_idle_timeout(self)
        super().requestDone(request)
        if not self.persistent or self.transport is None:
            return
        if not self.after_held(self._await_next_request):
            self._await_next_request()

    def _await_next_request(self) -> None:
        """
        The last response is written: start the timers for the next request
        once it is acknowledged.
        """
        if self.transport is None or self.requests:
            return
        self._stop_keep_alive()
        if self._delivery is None and self.all_acknowledged():
            self.next_request_timers()
            return
        self._keep_alive = keep_alive = Linger(
            self, self._give_up_after(), self.next_request_timers, self._close_stuck
        )
        self.watch_delivery(keep_alive)
        self.check_delivery()
        if self._keep_alive is keep_alive:
            keep_alive.start()

    def _give_up_after(self) -> float:
        """
        How long a peer may acknowledge nothing of a finished response,
        with nobody else waiting for it, before it is taken to be stuck.
        """
        return float(self._site.header_timeout or STUCK_PEER_TIMEOUT)

    def next_request_timers(self) -> None:
        """
        Start the timers that wait for the next request (once the last
        response is acknowledged), unless one is already being handled.
        """
        self._keep_alive = None
        if self.transport is None or self.requests:
            return
        if self.timeOut:
            self.setTimeout(self.timeOut)
        self._await_headers()

    def _close_stuck(self) -> None:
        """
        Close a keep-alive connection whose peer stopped acknowledging its
        last response: gracefully, then, if even that never ends (Twisted
        cannot hand the rest to a peer that reads nothing), abort it after
        the same time again.
        """
        self._keep_alive = None
        self._log.info(
            "closing {peer}: it stopped taking its last response",
            peer=str(self.getPeer()),
        )
        self.loseConnection()
        if self._stuck_abort is None:
            self._stuck_abort = self.callLater(self._give_up_after(), self.abort)

    def abort(self) -> None:
        """
        Drop the connection now, without waiting for what is unsent
        (Twisted's C{abortConnection}; no reset is asked for, see
        L{pipe._http.channel.StreamingChannel.reset}): the end of a timeout, or
        of a shutdown's grace.  Nothing if it is gone.
        """
        transport = self.transport
        if transport is not None:
            transport.abortConnection()  # type: ignore[attr-defined]

    def _stop_keep_alive(self) -> None:
        keep_alive, self._keep_alive = self._keep_alive, None
        if keep_alive is not None:
            keep_alive.stop()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._headers_due = None
        for call in (self._header_check, self._stuck_abort):
            if call is not None and call.active():
                call.cancel()
        self._header_check = self._stuck_abort = None
        self._stop_keep_alive()
        super().connectionLost(reason)
