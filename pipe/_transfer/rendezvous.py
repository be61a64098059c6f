# -*- test-case-name: tests.test_rendezvous -*-
"""
Matching one sender with exactly C{n} receivers on a path.

This module knows nothing about connections or HTTP: parties are opaque
objects, except that a sender provides L{ISenderParty}.  A party the path
refuses gets a L{Rejected}, which carries the reason and its message; the
resource decides the answer's status (L{pipe.resource.refusal_for}).
"""

from __future__ import annotations

import enum
from typing import Dict, Generic, List, Optional, Tuple, TypeVar

import attr
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface

from pipe._transfer import messages as messages

__all__ = [
    "CountMismatch",
    "ISenderParty",
    "Match",
    "MinMismatch",
    "PathClosed",
    "QuorumStarted",
    "ReceiversFull",
    "Rejected",
    "Rendezvous",
    "SenderTaken",
    "TransferRunning",
]


class Rejected(Exception):
    """
    A party may not join a path; subclasses say why.

    @ivar reason: the reason's slug (a metric label, and the name of its
        message in L{pipe._transfer.messages}).
    @ivar body: the one-line C{[ERROR]} message.
    """

    def __init__(self, reason: str, body: bytes) -> None:
        super().__init__(reason, body)
        self.reason = reason
        self.body = body


class CountMismatch(Rejected):
    """
    The party's C{n} differs from the C{n} of the parties already waiting.

    @ivar waiting: the C{n} of the parties already on the path.
    @ivar given: the C{n} the new party asked for.
    """

    def __init__(self, waiting: int, given: int) -> None:
        super().__init__("count_mismatch", messages.count_mismatch(given, waiting))
        self.waiting = waiting
        self.given = given


class MinMismatch(Rejected):
    """
    The party's C{min} differs from the quorum of its path: a receiver's
    from its sender's (or, before the sender came, from the C{min} of the
    receivers already waiting), a sender's from the C{min} the receivers
    already waiting gave.  Only the sender's C{min} is ever a quorum.
    """

    def __init__(self, given: Optional[int], other: Optional[int], whose: str) -> None:
        super().__init__("min_mismatch", messages.min_mismatch(given, other, whose))
        self.given = given
        self.other = other


class QuorumStarted(Rejected):
    """
    A receiver arrived after its path's transfer started with a quorum
    (fewer than C{n} receivers): it is too late, and nothing is kept for
    it.

    @ivar joined: the receivers the transfer started with.
    @ivar n: the receivers the pipe asked for.
    """

    def __init__(self, seconds: float, joined: int, n: int) -> None:
        super().__init__("quorum_started", messages.quorum_started(seconds, joined, n))
        self.joined = joined
        self.n = n


class PathClosed(Rejected):
    """
    A sender arrived on a path closed to the late receivers of a transfer
    that started with a quorum (L{Stage.CLOSED}).
    """

    def __init__(self, seconds: float, joined: int, n: int, left: float) -> None:
        super().__init__("path_closed", messages.path_closed(seconds, joined, n, left))


class SenderTaken(Rejected):
    """
    The path already has a sender.
    """

    def __init__(self) -> None:
        super().__init__("sender_taken", messages.sender_taken())


class ReceiversFull(Rejected):
    """
    The path already has its C{n} receivers.

    @ivar n: the number of receivers of the path.
    """

    def __init__(self, n: int) -> None:
        super().__init__("receivers_full", messages.receivers_full(n))
        self.n = n


class TransferRunning(Rejected):
    """
    A transfer is running on the path.
    """

    def __init__(self) -> None:
        super().__init__("transfer_running", messages.transfer_running())


class ISenderParty(Interface):
    """
    What the rendezvous needs from a sender.
    """

    def receivers_changed(connected: int, n: int) -> None:
        """
        The number of waiting receivers changed (while the sender waits).
        """


S = TypeVar("S", bound=ISenderParty)
R = TypeVar("R")


@attr.s(auto_attribs=True, frozen=True)
class Match(Generic[S, R]):
    """
    One sender and exactly C{n} receivers on a path (or, at the sender's
    wait deadline, at least its quorum: L{Rendezvous.start_quorum}), which
    is now L{Stage.RUNNING}: the parties of a transfer, which whoever
    joined last (or the sender's deadline) starts (see
    L{pipe._transfer.transfer.Transfer}).
    """

    path: bytes
    n: int
    sender: S
    receivers: Tuple[R, ...]


class Stage(enum.Enum):
    """
    The stage of one path.

      - C{WAITING}: parties are gathering; the path has at most one sender
        and at most C{n} receivers, never both complete.
      - C{RUNNING}: one sender and C{n} receivers (or, started at the
        sender's wait deadline, its quorum: at least C{min}) are
        transferring; nobody else may join (a late receiver of a quorum
        start: L{QuorumStarted}).  L{Rendezvous.release} ends it; for a
        quorum start, L{Rendezvous.close} may instead close it.
      - C{CLOSED}: a transfer that started with a quorum ran here and
        ended; the path holds no party and no data, and refuses late
        receivers (L{QuorumStarted}, 410) and senders (L{PathClosed}) until
        L{Rendezvous.reopen}, which its owner calls once the sender's wait
        has passed since the start.  It counts as a pipe (C{--max-pipes}).

    =========  ==============================  =====================
    stage      how it is entered               next
    =========  ==============================  =====================
    WAITING    the first party joins           RUNNING (a match or
                                               L{Rendezvous.start_quorum}),
                                               removed (nobody left)
    RUNNING    a match                         removed (release),
                                               CLOSED (close: quorum
                                               starts only)
    CLOSED     L{Rendezvous.close}             removed (reopen)
    =========  ==============================  =====================

    A path with no party left is removed, so there is no "empty" stage.
    """

    WAITING = "waiting"
    RUNNING = "running"
    CLOSED = "closed"


class _Meeting(Generic[S, R]):
    """
    The parties on one path.

    @ivar n: the number of receivers every party on this path asked for.
    @ivar sender: the sender, once it has come.
    @ivar receivers: the receivers, in arrival order.
    @ivar stage: see L{Stage}.
    @ivar minimum: the sender's C{min}, once it has come (L{None}: none).
    @ivar stated: the C{min} each waiting receiver gave (only those that
        gave one), checked against the sender's when it comes.
    @ivar joined: how many receivers a quorum start began with (L{None}:
        not a quorum start).
    @ivar started_at: when a quorum start began.
    @ivar closes_at: when a L{Stage.CLOSED} path reopens.
    """

    # What only a quorum needs stays at the class's defaults (no cost to a
    # pipe without one); a mapping is made by the first receiver that
    # states a min.
    minimum: Optional[int] = None
    stated: Optional[Dict[R, int]] = None
    joined: Optional[int] = None
    started_at = 0.0
    closes_at = 0.0

    def __init__(self, n: int) -> None:
        self.n = n
        self.sender: Optional[S] = None
        self.receivers: List[R] = []
        self.stage = Stage.WAITING

    def is_empty(self) -> bool:
        return self.sender is None and not self.receivers


class Rendezvous(Generic[S, R]):
    """
    The table of paths with waiting or transferring parties (one part of
    the server's L{pipe._transfer.registry.Registry}).

    Parties arrive in any order.  The join that brings one sender and
    exactly C{n} receivers together returns their L{Match} (the path is
    then running) and starts nothing itself: the caller starts the
    transfer.  A waiting party that leaves is forgotten at
    once.  A running path stays taken until L{release}.
    """

    def __init__(self, clock: Optional[IReactorTime] = None) -> None:
        """
        @param clock: what says how long ago a quorum start was, in the
            messages to late parties (L{None}: they say 0 s).
        """
        self._meetings: Dict[bytes, _Meeting[S, R]] = {}
        self._clock = clock

    def _now(self) -> float:
        return 0.0 if self._clock is None else self._clock.seconds()

    def __len__(self) -> int:
        """
        The number of paths with a waiting or running party.
        """
        return len(self._meetings)

    def stage(self, path: bytes) -> Optional[Stage]:
        """
        The stage of C{path}, or L{None} when nobody is on it.
        """
        meeting = self._meetings.get(path)
        return None if meeting is None else meeting.stage

    def parties(self, path: bytes) -> Tuple[bool, int]:
        """
        Whether C{path} has a sender, and how many receivers it has.
        """
        meeting = self._meetings.get(path)
        if meeting is None:
            return (False, 0)
        return (meeting.sender is not None, len(meeting.receivers))

    def totals(self) -> Tuple[int, int]:
        """
        The numbers of senders and of receivers on all paths.
        """
        senders = receivers = 0
        for meeting in self._meetings.values():
            senders += meeting.sender is not None
            receivers += len(meeting.receivers)
        return senders, receivers

    def count(self, stage: Stage) -> int:
        """
        The number of paths in C{stage}.
        """
        return sum(1 for m in self._meetings.values() if m.stage is stage)

    def _meeting_for(self, path: bytes, n: int, sender: bool) -> _Meeting[S, R]:
        meeting = self._meetings.get(path)
        if meeting is None:
            return _Meeting(n)
        if meeting.stage is not Stage.WAITING:
            _refuse_late(meeting, sender, self._now())
        if meeting.n != n:
            raise CountMismatch(meeting.n, n)
        return meeting

    def join_sender(
        self, path: bytes, n: int, sender: S, minimum: Optional[int] = None
    ) -> Optional[Match[S, R]]:
        """
        Add the sender of C{path}, with its quorum C{minimum} (C{min}, if
        given).

        @return: the L{Match} if the path is now complete, else L{None}.

        @raise TransferRunning: a transfer runs on C{path}.
        @raise PathClosed: C{path} is closed after a quorum start.
        @raise CountMismatch: the waiting parties asked for another C{n}.
        @raise MinMismatch: a waiting receiver gave another C{min}.
        @raise SenderTaken: C{path} already has a sender.
        """
        meeting = self._meeting_for(path, n, True)
        if meeting.sender is not None:
            raise SenderTaken()
        if meeting.stated:
            for stated in meeting.stated.values():
                if stated != minimum:
                    raise MinMismatch(minimum, stated, "receivers")
            meeting.stated = None
        meeting.sender = sender
        meeting.minimum = minimum
        self._meetings[path] = meeting
        return self._match(path, meeting)

    def join_receiver(
        self, path: bytes, n: int, receiver: R, minimum: Optional[int] = None
    ) -> Optional[Match[S, R]]:
        """
        Add a receiver of C{path}; a C{minimum} (C{min}) it gives must be
        its sender's (or, before the sender came, that of the receivers
        waiting), and never sets the quorum.

        @return: the L{Match} if the path is now complete, else L{None}.

        @raise TransferRunning: a transfer runs on C{path}.
        @raise QuorumStarted: a transfer started on C{path} with a quorum.
        @raise CountMismatch: the waiting parties asked for another C{n}.
        @raise MinMismatch: C{minimum} is not the sender's (or the waiting
            receivers').
        @raise ReceiversFull: C{path} already has C{n} receivers.
        """
        meeting = self._meeting_for(path, n, False)
        if minimum is not None:
            if meeting.sender is not None:
                if minimum != meeting.minimum:
                    raise MinMismatch(minimum, meeting.minimum, "sender")
            elif meeting.stated:
                for stated in meeting.stated.values():
                    if stated != minimum:
                        raise MinMismatch(minimum, stated, "receivers")
        if len(meeting.receivers) >= meeting.n:
            raise ReceiversFull(meeting.n)
        meeting.receivers.append(receiver)
        if minimum is not None and meeting.sender is None:
            if meeting.stated is None:
                meeting.stated = {}
            meeting.stated[receiver] = minimum
        self._meetings[path] = meeting
        return self._match(path, meeting)

    def start_quorum(self, path: bytes) -> Optional[Match[S, R]]:
        """
        The sender's wait deadline came: if its path is waiting with at
        least its quorum of receivers, mark it running and return their
        L{Match} (which the caller starts); else L{None} (no quorum given,
        or too few receivers: the caller times the sender out as before).
        """
        meeting = self._meetings.get(path)
        if (
            meeting is None
            or meeting.stage is not Stage.WAITING
            or meeting.sender is None
            or meeting.minimum is None
            or len(meeting.receivers) < meeting.minimum
        ):
            return None
        meeting.stage = Stage.RUNNING
        meeting.joined = len(meeting.receivers)
        meeting.started_at = self._now()
        return Match(path, meeting.n, meeting.sender, tuple(meeting.receivers))

    def _match(self, path: bytes, meeting: _Meeting[S, R]) -> Optional[Match[S, R]]:
        """
        If the meeting is complete, mark it running and return its match;
        else tell the sender, if any, how many receivers it has.  State is
        consistent before calling out.
        """
        sender = meeting.sender
        if sender is None:
            return None
        if len(meeting.receivers) == meeting.n:
            meeting.stage = Stage.RUNNING
            return Match(path, meeting.n, sender, tuple(meeting.receivers))
        sender.receivers_changed(len(meeting.receivers), meeting.n)
        return None

    def leave(self, path: bytes, party: object) -> bool:
        """
        Forget a waiting party (it disconnected or gave up).

        @return: C{True} if C{party} was waiting on C{path} and is now
            forgotten; C{False} if it was not waiting there (for example
            because its transfer has started).
        """
        meeting = self._meetings.get(path)
        if meeting is None or meeting.stage is not Stage.WAITING:
            return False
        if meeting.sender is party:
            meeting.sender = None
        elif party in meeting.receivers:
            meeting.receivers.remove(party)
            if meeting.stated:
                meeting.stated.pop(party, None)  # type: ignore[call-overload]
        else:
            return False
        if meeting.is_empty():
            del self._meetings[path]
        elif meeting.sender is not None:
            # One party fewer: never complete, the sender only hears it.
            self._match(path, meeting)
        return True

    def abandon(self, path: bytes) -> List[R]:
        """
        Give up a waiting path (its sender timed out or left for good):
        forget every party on it.

        @return: the receivers that were waiting on it.
        @raise RuntimeError: C{path} is not waiting.
        """
        meeting = self._meetings.get(path)
        if meeting is None or meeting.stage is not Stage.WAITING:
            raise RuntimeError(f"abandon of a path that is not waiting: {meeting}")
        del self._meetings[path]
        return meeting.receivers

    def close(self, path: bytes, until: float) -> None:
        """
        The transfer on C{path}, started with a quorum, has ended: keep the
        path, with no party and no data, to refuse its late receivers until
        C{until} (when the owner calls L{reopen}).

        @raise RuntimeError: C{path} has no running quorum transfer.
        """
        meeting = self._meetings.get(path)
        if meeting is None or meeting.stage is not Stage.RUNNING or not meeting.joined:
            raise RuntimeError(f"close of a path that is no running quorum: {meeting}")
        meeting.stage = Stage.CLOSED
        meeting.sender = None
        meeting.receivers = []
        meeting.closes_at = until

    def reopen(self, path: bytes) -> None:
        """
        Forget a L{Stage.CLOSED} path: late receivers are new receivers
        again.  Does nothing for a path in another stage (or none).
        """
        meeting = self._meetings.get(path)
        if meeting is not None and meeting.stage is Stage.CLOSED:
            del self._meetings[path]

    def release(self, path: bytes) -> None:
        """
        The transfer on C{path} has ended, however it ended: free the path.

        @raise RuntimeError: C{path} has no running transfer.
        """
        meeting = self._meetings.get(path)
        if meeting is None or meeting.stage is not Stage.RUNNING:
            raise RuntimeError(f"release of a path that is not running: {meeting}")
        del self._meetings[path]


def _refuse_late(meeting: _Meeting[S, R], sender: bool, now: float) -> None:
    """
    Refuse a party on a running or closed path: a receiver after a quorum
    start gets L{QuorumStarted}, a sender on a closed path L{PathClosed},
    anyone else L{TransferRunning}.
    """
    joined = meeting.joined
    if joined is None:
        raise TransferRunning()
    ago = now - meeting.started_at
    if not sender:
        raise QuorumStarted(ago, joined, meeting.n)
    if meeting.stage is Stage.CLOSED:
        raise PathClosed(ago, joined, meeting.n, meeting.closes_at - now)
    raise TransferRunning()
