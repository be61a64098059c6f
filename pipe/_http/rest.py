# -*- test-case-name: tests.test_channel -*-
"""
The unsent rest of a direct write, kept without a copy.

L{pipe._http.writes.WritePath} sends a response write straight to the
socket when the transport has nothing buffered.  When the socket does not
take all of it, the rest used to go to Twisted's transport, which copies
it (once into C{bytes}, once more when it joins its buffer) for every
receiver whose socket was full: a pipe of C{n} receivers could hold C{n}
copies of one read.  A L{Rest} keeps the rest as views of the write's own
buffers (the read shared by every receiver), pauses the connection's
producer as the transport does when its buffer is full, and sends the rest
itself, with one C{sendmsg} per time the socket is writable, before
anything the transport buffered after it; then it hands the connection
back to the transport's own write path, which resumes the producer and
closes the connection if it is closing.  So what a pipe holds is the read
its receivers share, whatever their number.

It relies on the public attributes of Twisted's file-descriptor transports
(C{producer}, C{streamingProducer}, C{producerPaused}, C{startWriting},
C{doWrite}) and on the reactor calling the transport's C{doWrite} when
the socket is writable.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, List, Optional, Sequence, Union

from twisted.internet import main
from twisted.internet.interfaces import IPushProducer
from twisted.internet.tcp import Connection

from pipe._compat import internals as compat

__all__ = ["Buffer", "Rest", "unsent"]

#: A piece of response data: bytes, or a C{memoryview} slice of a read.
Buffer = Union[bytes, memoryview]


def unsent(iovec: Sequence[Buffer], sent: int) -> List[Buffer]:
    """
    The pieces of C{iovec} left after its first C{sent} bytes; a piece sent
    in part is a view of the rest of it, not a copy.
    """
    rest: List[Buffer] = []
    for piece in iovec:
        if sent >= len(piece):
            sent -= len(piece)
        else:
            rest.append(memoryview(piece)[sent:] if sent else piece)
            sent = 0
    return rest


class Rest:
    """
    The rest of one write that the socket of C{connection} did not take,
    sent when it can be (see the module docstring).  Made only when a
    socket is full; C{done} is called once the rest is sent (or the
    connection failed), before the transport's own write path runs.

    @ivar pieces: what is left to send, in order.
    """

    def __init__(
        self,
        connection: Connection,
        sock: socket.socket,
        pieces: List[Buffer],
        done: Callable[[], None],
    ) -> None:
        self.pieces = pieces
        self._connection = connection
        self._socket = sock
        self._done = done
        # Sent first when the socket is writable: the reactor calls the
        # connection's doWrite, this one while it is set.
        connection.doWrite = self.write_rest  # type: ignore[method-assign]
        connection.startWriting()
        # A streaming producer (the channel): as the transport does when
        # its buffer is full.
        producer: Optional[IPushProducer] = connection.producer  # type: ignore[assignment]
        self._paused = bool(
            producer is not None
            and connection.streamingProducer
            and not connection.producerPaused
        )
        if producer is not None and self._paused:
            connection.producerPaused = True
            producer.pauseProducing()

    def __len__(self) -> int:
        return sum(map(len, self.pieces))

    def write_rest(self) -> Optional[Any]:
        """
        The connection's C{doWrite} while a rest is left: send what the
        socket takes; when all of it is sent, resume the producer unless
        the transport buffered more meanwhile, and go on with the
        transport's own C{doWrite}.
        """
        connection = self._connection
        try:
            sent = self._socket.sendmsg(self.pieces)
        except BlockingIOError:
            return None
        except OSError:
            self._forget()
            return main.CONNECTION_LOST
        self.pieces = unsent(self.pieces, sent)
        if self.pieces:
            return None
        self._forget()
        producer: Optional[IPushProducer] = connection.producer  # type: ignore[assignment]
        if (
            self._paused
            and producer is not None
            and connection.producerPaused
            and not compat.buffered(connection)
        ):
            # Else the transport resumes it when its buffer is empty.
            connection.producerPaused = False
            producer.resumeProducing()
        return connection.doWrite()

    def _forget(self) -> None:
        """The connection's own write path again; the writer forgets us."""
        self.pieces = []
        self._connection.__dict__.pop("doWrite", None)
        self._done()
