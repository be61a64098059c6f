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
from zope.interface import Interface

from pipe._transfer import messages as messages

__all__ = [
    "CountMismatch",
    "ISenderParty",
    "Match",
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
    One sender and exactly C{n} receivers on a path, which is now
    L{Stage.RUNNING}: the parties of a transfer, which whoever joined last
    starts (see L{pipe._transfer.transfer.Transfer}).
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
      - C{RUNNING}: one sender and C{n} receivers are transferring; nobody
        else may join.  L{Rendezvous.release} ends it.

    A path with no party left is removed, so there is no "empty" stage.
    """

    WAITING = "waiting"
    RUNNING = "running"


class _Meeting(Generic[S, R]):
    """
    The parties on one path.

    @ivar n: the number of receivers every party on this path asked for.
    @ivar sender: the sender, once it has come.
    @ivar receivers: the receivers, in arrival order.
    @ivar stage: see L{Stage}.
    """

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

    def __init__(self) -> None:
        self._meetings: Dict[bytes, _Meeting[S, R]] = {}

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

    def _meeting_for(self, path: bytes, n: int) -> _Meeting[S, R]:
        meeting = self._meetings.get(path)
        if meeting is None:
            return _Meeting(n)
        if meeting.stage is Stage.RUNNING:
            raise TransferRunning()
        if meeting.n != n:
            raise CountMismatch(meeting.n, n)
        return meeting

    def join_sender(self, path: bytes, n: int, sender: S) -> Optional[Match[S, R]]:
        """
        Add the sender of C{path}.

        @return: the L{Match} if the path is now complete, else L{None}.

        @raise TransferRunning: a transfer runs on C{path}.
        @raise CountMismatch: the waiting parties asked for another C{n}.
        @raise SenderTaken: C{path} already has a sender.
        """
        meeting = self._meeting_for(path, n)
        if meeting.sender is not None:
            raise SenderTaken()
        meeting.sender = sender
        self._meetings[path] = meeting
        return self._match(path, meeting)

    def join_receiver(self, path: bytes, n: int, receiver: R) -> Optional[Match[S, R]]:
        """
        Add a receiver of C{path}.

        @return: the L{Match} if the path is now complete, else L{None}.

        @raise TransferRunning: a transfer runs on C{path}.
        @raise CountMismatch: the waiting parties asked for another C{n}.
        @raise ReceiversFull: C{path} already has C{n} receivers.
        """
        meeting = self._meeting_for(path, n)
        if len(meeting.receivers) >= meeting.n:
            raise ReceiversFull(meeting.n)
        meeting.receivers.append(receiver)
        self._meetings[path] = meeting
        return self._match(path, meeting)

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

    def release(self, path: bytes) -> None:
        """
        The transfer on C{path} has ended, however it ended: free the path.

        @raise RuntimeError: C{path} has no running transfer.
        """
        meeting = self._meetings.get(path)
        if meeting is None or meeting.stage is not Stage.RUNNING:
            raise RuntimeError(f"release of a path that is not running: {meeting}")
        del self._meetings[path]
