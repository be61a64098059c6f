# -*- test-case-name: tests.test_client -*-
"""
Reading a response body: into a callback, with an C{IConsumer} sink's
backpressure reaching the connection (L{BodyFlow}), and a refused
request's body turned into its error (L{refusal}).
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Optional

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import IResponse
from zope.interface import implementer

from pipe._client.errors import (
    PipeError,
    PipeRejected,
    TransferFailed,
    WaitTimeout,
    failures_in,
    tracebacks,
    what_broke,
)

__all__ = ["BodyFlow", "BodyProtocol", "FlowState", "read_all", "refusal"]


class FlowState(enum.Enum):
    """
    The states of a L{BodyFlow}.

    =============  ===================================  =====================
    state          meaning                              next
    =============  ===================================  =====================
    C{FLOWING}     the connection is read               C{PAUSED},
                                                        C{STOPPED}, C{ENDED}
    C{PAUSED}      the consumer paused: the connection  C{FLOWING},
                   is not read                          C{STOPPED}, C{ENDED}
    C{STOPPED}     the consumer stopped the transfer:   C{ENDED}
                   the connection is being closed
    C{ENDED}       the body ended (whole or not)        final
    =============  ===================================  =====================
    """

    FLOWING = "flowing"
    PAUSED = "paused"
    STOPPED = "stopped"
    ENDED = "ended"


@implementer(IPushProducer)
class BodyFlow:
    """
    A response body, as it arrives, as the push producer of an C{IConsumer}
    sink: pausing it stops reading the connection (and so, through TCP and
    the server's flow control, holds back the sender), resuming it reads
    again, stopping it closes the connection and fails the receive.

    The sink calls C{pauseProducing}, C{resumeProducing} and
    C{stopProducing}, from its C{write} or at any time; they are no-ops
    once the body ended.  See L{FlowState}.
    """

    def __init__(self, transport: Any) -> None:
        """
        @param transport: what Twisted gave the body's protocol: a proxy
            producer of the connection.
        """
        self._transport = transport
        self.state = FlowState.FLOWING

    def pauseProducing(self) -> None:
        if self.state is FlowState.FLOWING:
            self.state = FlowState.PAUSED
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self.state is FlowState.PAUSED:
            self.state = FlowState.FLOWING
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        if self.state in (FlowState.FLOWING, FlowState.PAUSED):
            self.state = FlowState.STOPPED
            self._transport.stopProducing()

    def keep_paused(self) -> None:
        """
        Pause the connection again if the sink had paused: Twisted resumes
        it unconditionally once the body has a protocol, after handing over
        what it had read already.
        """
        if self.state is FlowState.PAUSED:
            self._transport.pauseProducing()

    def end(self) -> None:
        self.state = FlowState.ENDED


class BodyProtocol(protocol.Protocol):
    """
    The Twisted protocol given to C{IResponse.deliverBody}: reads a
    response body into a callback; fires C{done} on a complete
    body, fails it on anything else (a cut stream is never a clean end,
    also when Twisted would call it only a potential data loss).  With an
    C{IConsumer} sink, registers a L{BodyFlow} with it as its producer for
    as long as the body flows.
    """

    def __init__(
        self, on_data: Callable[[bytes], None], sink: Optional[IConsumer] = None
    ) -> None:
        self._on_data = on_data
        self._sink = sink
        self.flow: Optional[BodyFlow] = None
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if self._sink is not None:
            self.flow = BodyFlow(self.transport)
            self._sink.registerProducer(self.flow, True)

    def dataReceived(self, data: bytes) -> None:
        stopped = self.flow is not None and self.flow.state is FlowState.STOPPED
        if stopped or self.done.called:
            # What Twisted had read before the connection closed, for a sink
            # that stopped or failed: it gets no more.
            return
        try:
            self._on_data(data)
        except BaseException:
            failure = Failure()
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            if not self.done.called:
                self.done.errback(failure)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        stopped = False
        if self.flow is not None and self._sink is not None:
            stopped = self.flow.state is FlowState.STOPPED
            self.flow.end()
            self._sink.unregisterProducer()
        if self.done.called:
            return
        if reason.check(ResponseDone) and not stopped:
            self.done.callback(None)
            return
        failures = failures_in(reason.value) if reason.value is not None else [reason]
        details = tracebacks(failures)
        why = "the consumer stopped it" if stopped else what_broke(failures)
        self.done.errback(TransferFailed(f"the stream was cut: {why}", details=details))


async def read_all(
    response: IResponse,
    on_data: Callable[[bytes], None],
    sink: Optional[IConsumer] = None,
) -> None:
    """
    Read C{response}'s body into C{on_data} (and, with an C{IConsumer}
    C{sink}, under its flow control, see L{BodyProtocol}).

    @raise TransferFailed: when the body did not arrive whole.
    """
    reader = BodyProtocol(on_data, sink)
    response.deliverBody(reader)
    if reader.flow is not None:
        reader.flow.keep_paused()
    await reader.done


async def refusal(response: IResponse) -> PipeError:
    """
    The error for a response that is not a C{200}.
    """
    body = bytearray()

    def keep(data: bytes) -> None:
        if len(body) < 4096:
            body.extend(data[: 4096 - len(body)])

    try:
        await read_all(response, keep)
    except Exception:
        pass  # A refusal cut short: its status and what arrived say enough.
    text = bytes(body).decode("utf-8", "replace")
    phrase = response.phrase.decode("latin-1", "replace")
    reason = text.strip().splitlines()
    line = reason[0] if reason else phrase
    details = f"HTTP {response.code} {phrase}\n{text}".rstrip()
    if response.code == 504:
        return WaitTimeout(line, details=details)
    return PipeRejected(response.code, line, details=details)
