# -*- test-case-name: tests.test_client -*-
"""
What a send reads from: a file object read in a thread of its own, one
chunk in memory at a time (L{FileProducer}), or the caller's
C{IBodyProducer}, counted and hashed on the way (L{CountingProducer}).
"""

from __future__ import annotations

import enum
import os
import queue
import stat
import threading
from typing import IO, Any, Callable, Dict, Optional, Union

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

__all__ = ["CHUNK_SIZE", "CountingProducer", "FileProducer"]

#: The most bytes read from a source at once when sending; a read returns
#: what the source has, up to this.
CHUNK_SIZE = 256 * 1024


class ReadingState(enum.Enum):
    """
    The states of a L{FileProducer}.

    ================  ===========================  ===========================
    state             meaning                      next
    ================  ===========================  ===========================
    C{INITIAL}        not started                  C{READING} (started)
    C{READING}        a read runs in the reader    C{HANDING} (a chunk),
                      thread                       C{READING_PAUSED},
                                                   C{DONE} (end of the
                                                   source), C{FAILED},
                                                   C{STOPPED}
    C{READING_PAUSED} a read runs; the consumer    C{PAUSED} (a chunk),
                      paused us                    C{READING}, C{DONE},
                                                   C{FAILED}, C{STOPPED}
    C{HANDING}        a chunk is being written to  C{READING} (the next
                      the consumer                 read), C{PAUSED},
                                                   C{STOPPED}
    C{PAUSED}         no read runs until resumed   C{READING}, C{STOPPED}
    C{DONE}           the source ended; the        final
                      producing Deferred fired
    C{FAILED}         a read raised; the           final
                      producing Deferred failed
    C{STOPPED}        the consumer stopped us; the final
                      producing Deferred never
                      fires
    ================  ===========================  ===========================
    """

    INITIAL = "initial"
    READING = "reading"
    READING_PAUSED = "reading, paused"
    HANDING = "handing a chunk over"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"


#: What pausing does in each state where it does anything.
_ON_PAUSE = {
    ReadingState.READING: ReadingState.READING_PAUSED,
    ReadingState.HANDING: ReadingState.PAUSED,
}

#: What resuming does in each state where it does anything (from C{PAUSED},
#: the next read is also asked for).
_ON_RESUME = {
    ReadingState.READING_PAUSED: ReadingState.READING,
    ReadingState.PAUSED: ReadingState.READING,
}


_FINAL = frozenset({ReadingState.DONE, ReadingState.FAILED, ReadingState.STOPPED})


class ReaderThread:
    """
    Reads a source one chunk per request, in a daemon thread of its own,
    and hands each result to the reactor thread.

    Not the reactor's thread pool: a read of a pipe that never produces
    more blocks for ever, and the pool's threads are joined at reactor
    shutdown, so such a read would keep the process from exiting after a
    refusal or a Ctrl-C.  A daemon thread left blocked does not.

    @ivar _read: reads at most C{CHUNK_SIZE} bytes, returning what the
        source has (C{read1} of a buffered file, C{read} of a raw one),
        C{b""} at its end.
    """

    def __init__(
        self,
        reactor: Any,
        read: Callable[[int], bytes],
        on_read: Callable[[Union[bytes, Failure]], None],
        close: Optional[Callable[[], None]],
    ) -> None:
        self._reactor = reactor
        self._read = read
        self._on_read = on_read
        self._close = close
        self._requests: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="txpipe source reader", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        """
        Read one chunk; its bytes (or the failure) reach C{on_read} in the
        reactor thread.
        """
        self._requests.put(True)

    def finish(self) -> None:
        """
        Read no more: the thread ends once a read in progress returns,
        closing the source if it owns it.
        """
        if self._thread.is_alive():
            self._requests.put(False)
        elif self._close is not None:
            self._close()

    def _run(self) -> None:
        try:
            while self._requests.get():
                result: Union[bytes, Failure]
                try:
                    result = self._read(CHUNK_SIZE)
                except BaseException:
                    result = Failure()
                self._reactor.callFromThread(self._on_read, result)
        finally:
            if self._close is not None:
                self._close()


@implementer(IBodyProducer, IPushProducer)
class FileProducer:
    """
    An C{IBodyProducer} over a file object (a file, a pipe, standard
    input), one chunk in memory at a time.  Each read returns what the
    source has, so a slow producer's output is sent as it comes rather
    than once a whole chunk has gathered.  See L{ReadingState}.

    Twisted's HTTP client calls C{pauseProducing} and C{resumeProducing}
    (possibly from within C{consumer.write}, which is why the state is set
    before every write) and C{stopProducing} when the request is abandoned
    (a refusal, a lost connection); after that nothing is written and the
    Deferred of C{startProducing} never fires, as C{IBodyProducer} asks.
    """

    def __init__(
        self,
        reactor: Any,
        file: IO[bytes],
        on_chunk: Callable[[bytes], None],
        owned: bool = False,
    ) -> None:
        """
        @param owned: close C{file} when done with it (it was opened here).
        """
        self._on_chunk = on_chunk
        self.length: Any = UNKNOWN_LENGTH
        try:
            info = os.fstat(file.fileno())
            if stat.S_ISREG(info.st_mode):
                self.length = info.st_size - file.tell()
        except (OSError, ValueError, AttributeError):
            pass
        self._state = ReadingState.INITIAL
        self._consumer: Optional[IConsumer] = None
        self._finished: Deferred[None] = Deferred()
        read: Callable[[int], bytes] = getattr(file, "read1", file.read)
        self._reader = ReaderThread(
            reactor, read, self._arrived, file.close if owned else None
        )

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        if self._state is not ReadingState.INITIAL:
            raise RuntimeError(f"startProducing while {self._state.value}")
        self._consumer = consumer
        self._state = ReadingState.READING
        self._reader.start()
        self._reader.request()
        return self._finished

    def release(self) -> None:
        """
        The request is over (however it ended): let the reader thread go.
        """
        self._reader.finish()

    def _arrived(self, result: Union[bytes, Failure]) -> None:
        state = self._state
        if state is ReadingState.STOPPED:
            return
        if state not in (ReadingState.READING, ReadingState.READING_PAUSED):
            raise RuntimeError(f"a chunk arrived while {state.value}")
        if isinstance(result, Failure):
            self._state = ReadingState.FAILED
            self._finished.errback(result)
            return
        if not result:
            self._state = ReadingState.DONE
            self._finished.callback(None)
            return
        paused = state is ReadingState.READING_PAUSED
        self._state = ReadingState.PAUSED if paused else ReadingState.HANDING
        assert self._consumer is not None
        self._on_chunk(result)
        self._consumer.write(result)
        if self._state is ReadingState.HANDING:
            self._state = ReadingState.READING
            self._reader.request()

    def pauseProducing(self) -> None:
        self._move(_ON_PAUSE, "pauseProducing")

    def resumeProducing(self) -> None:
        if self._move(_ON_RESUME, "resumeProducing") is ReadingState.PAUSED:
            self._reader.request()

    def _move(self, moves: Dict[ReadingState, ReadingState], call: str) -> ReadingState:
        """
        Take the transition of C{moves} from the current state, if any (a
        pause or resume in any other state changes nothing), and return the
        state it was in.

        @raise RuntimeError: before L{startProducing}.
        """
        state = self._state
        if state is ReadingState.INITIAL:
            raise RuntimeError(f"{call} before startProducing")
        self._state = moves.get(state, state)
        return state

    def stopProducing(self) -> None:
        if self._state not in _FINAL:
            self._state = ReadingState.STOPPED
        self._reader.finish()


@implementer(IBodyProducer)
class CountingProducer:
    """
    Wraps a caller's C{IBodyProducer} to count and hash what it writes.
    """

    def __init__(
        self, producer: IBodyProducer, on_chunk: Callable[[bytes], None]
    ) -> None:
        self._producer = producer
        self._on_chunk = on_chunk
        self.length = producer.length

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        on_chunk = self._on_chunk

        @implementer(IConsumer)
        class Counting:
            def registerProducer(self, producer: Any, streaming: bool) -> None:
                consumer.registerProducer(producer, streaming)

            def unregisterProducer(self) -> None:
                consumer.unregisterProducer()

            def write(self, data: bytes) -> None:
                on_chunk(data)
                consumer.write(data)

        return self._producer.startProducing(Counting())  # type: ignore[return-value]

    def pauseProducing(self) -> None:
        self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._producer.stopProducing()

    def release(self) -> None:
        """
        Nothing to let go: the caller's producer is the caller's.
        """
