# -*- test-case-name: tests.test_interfaces -*-
"""
The contracts of the connection layer.

One object owns a connection's bytes: its channel
(L{pipe._http.channel.StreamingChannel}), as twisted.web's C{HTTPChannel} owns
its transport.  It reads them (and pauses reading), writes the head and
body of each response, watches their acknowledgement, resets and closes
the connection.  Everybody else asks it through the interfaces below,
never through its attributes:

  - L{IConnection}: what a request (L{pipe._http.request}) and a party
    (L{pipe._transfer.parties}) ask of their connection;
  - L{IDeliveryConnection} and L{ILingerChannel}: what the delivery wait
    (L{pipe._http.delivery}) needs from it;
  - L{IDeliveryWatcher}: who waits for a connection's delivery;
  - L{IPipeSite}: what the channel needs from its site
    (L{pipe.server.PipeSite}).

Twisted's own contract between a request and its channel (C{write},
C{writeSequence}, C{persistent}, C{callLater}, C{loseConnection}, a
request's C{channel.site}) stays Twisted's and is not repeated here.

This module imports nothing of txpipe's.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

from twisted.internet.interfaces import IDelayedCall
from zope.interface import Attribute, Interface

__all__ = [
    "IConnection",
    "IDeliveryConnection",
    "IDeliveryWatcher",
    "ILingerChannel",
    "IPipeSite",
]


class IDeliveryWatcher(Interface):
    """
    Who waits for a connection's peer to acknowledge what was written to
    it (see L{IConnection.watch_delivery}).  Each watcher hears
    L{delivery_progress} any number of times, then exactly one of
    L{delivered} and L{undelivered}, unless it stops watching first.  Any
    of them may be called before C{check_delivery} returns.
    """

    def delivery_progress() -> None:
        """
        The peer acknowledged more bytes; some are still unacknowledged.
        """

    def delivered() -> None:
        """
        The peer's TCP acknowledged every byte written before the first
        check of this watch (or the platform cannot tell).
        """

    def undelivered(unacknowledged: int) -> None:
        """
        The connection ended with C{unacknowledged} bytes the peer never
        acknowledged.
        """


class IConnection(Interface):
    """
    A connection, as its requests and parties ask for its bytes to be read,
    written, watched, reset and closed.  Provided by the channel, which
    owns them.
    """

    site = Attribute("The IPipeSite whose port accepted the connection.")
    persistent = Attribute(
        "Whether the connection is kept for another request (Twisted's"
        " HTTPChannel contract: a request sets it False to close after its"
        " response)."
    )

    def write(data: bytes) -> None:
        """
        Write response data (Twisted's contract between a request and its
        channel).
        """

    def writeSequence(iovec: Sequence[Any]) -> None:
        """
        Write response data, scatter/gather (Twisted's contract).
        """

    def callLater(delay: float, f: Callable[..., Any], *args: Any) -> IDelayedCall:
        """
        Call C{f} after C{delay} seconds on the site's clock.
        """

    def pause_reading(holder: object) -> None:
        """
        Stop reading from the connection on behalf of C{holder} (an
        upload's consumer applying backpressure).  Reading stays paused
        while any holder holds it, and while the channel pauses it for its
        own reasons.  Idempotent per holder.
        """

    def resume_reading(holder: object) -> None:
        """
        Drop C{holder}'s pause; reading resumes if no pause is left.
        """

    def set_read_size(size: int) -> None:
        """
        Read the current request's upload C{size} bytes at a time from now
        on, until the request is done (see L{pipe._http.window}); where the
        transport decides its own reads (TLS), nothing changes.
        """

    def flush_after_read(request: Any) -> None:
        """
        C{request} holds body pieces of the current read: call its
        C{flush_body()} once the read is parsed (at most once per read).
        """

    def add_to_head(lines: bytes) -> None:
        """
        Write C{lines} (encoded header lines) after the headers of the next
        response head written on this connection, and only that one.
        """

    def unsent() -> Optional[int]:
        """
        Bytes written to the connection that have not been handed to the
        kernel yet (held by a write batch, or buffered by the transport);
        L{None} where the transport cannot tell and no batch holds any.
        """

    def unacknowledged() -> Optional[int]:
        """
        Bytes written to the connection that the peer's TCP has not
        acknowledged (L{None}: cannot be known).
        """

    def watch_delivery(watcher: IDeliveryWatcher, pace: Optional[float] = None) -> None:
        """
        Tell C{watcher} when the peer has acknowledged every byte written
        so far, or when the connection ends first.

        @param pace: how fast the peer has been taking data (bytes per
            second), if known.
        """

    def unwatch_delivery(watcher: IDeliveryWatcher) -> None:
        """
        C{watcher} no longer wants an answer.  Idempotent.
        """

    def check_delivery() -> None:
        """
        Check now whether everything written was acknowledged; may answer
        the watchers before it returns.
        """

    def close() -> None:
        """
        Stop reading for good and close the connection gracefully: what was
        written is sent first, then a FIN.
        """

    def reset() -> None:
        """
        Reset the connection (TCP reset, C{SO_LINGER} 0): what is unsent is
        dropped, no client can mistake the end for a clean one.  The one
        way any party resets a connection, at any point of its life (also
        after its last response ended, while its delivery is watched).
        """


class IDeliveryConnection(Interface):
    """
    What a L{pipe._http.delivery.Delivery} needs from its connection.
    """

    tcp_socket = Attribute("The TCP socket under the connection, or None.")

    def unacknowledged() -> Optional[int]:
        """
        Bytes written and not yet acknowledged (L{None}: unknowable).
        """

    def delivery_position() -> Optional[Tuple[int, int]]:
        """
        C{(acknowledged, end)} of the byte stream (L{None}: unknowable).
        """

    def acknowledged() -> Optional[int]:
        """
        Bytes acknowledged since the connection began (L{None}:
        unknowable).
        """

    def callLater(delay: float, f: Callable[..., Any], *args: Any) -> IDelayedCall:
        """
        Schedule C{f} on the connection's clock.
        """

    def seconds() -> float:
        """
        The time now, on the connection's clock.
        """

    def delivery_ended(delivery: Any) -> None:
        """
        C{delivery} has answered every watcher or lost them all.
        """


class ILingerChannel(Interface):
    """
    What a L{pipe._http.delivery.Linger} needs from its channel.
    """

    def callLater(delay: float, f: Callable[..., Any], *args: Any) -> IDelayedCall:
        """
        Schedule C{f} on the channel's clock.
        """

    def seconds() -> float:
        """
        The time now, on the channel's clock.
        """

    def unwatch_delivery(watcher: IDeliveryWatcher) -> None:
        """
        Stop C{watcher}'s watch.
        """

    def other_watchers(watcher: IDeliveryWatcher) -> bool:
        """
        Whether anybody but C{watcher} waits for the delivery.
        """


class IPipeSite(Interface):
    """
    What a channel needs from its site (as C{site}, set by the site when
    it builds the channel).
    """

    reactor = Attribute("The reactor whose clock drives every timeout.")
    header_timeout = Attribute(
        "Seconds a client has to send its request line and headers (0: no limit)."
    )
    mount = Attribute(
        "Where the pipe tree sits in the site (a pipe._http.mount.Mount): which"
        " requests stream."
    )
    trusted_proxies = Attribute("The networks whose X-Forwarded-For names the client.")
    write_batch = Attribute(
        "The pipe._http.batch.WriteBatch the site's channels hold writes in while"
        " they handle a read."
    )

    def channel_opened(channel: Any) -> None:
        """
        C{channel}, one of the site's, is connected.
        """

    def channel_closed(channel: Any) -> None:
        """
        C{channel}, one of the site's, is disconnected.
        """
