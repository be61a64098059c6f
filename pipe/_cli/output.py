# -*- test-case-name: tests.test_cli -*-
"""
Where C{txpipe recv} writes: FILE only ever holds whole, verified data.
"""

from __future__ import annotations

import enum
import os
import secrets
import stat
import sys
from typing import IO, Optional

__all__ = ["Output"]


class OutputState(enum.Enum):
    """
    The states of an L{Output}: C{OPEN} (being written) goes to C{KEPT}
    (the data is at its name) or C{DISCARDED} (nothing new is); both final.
    """

    OPEN = "open"
    KEPT = "kept"
    DISCARDED = "discarded"


class Output:
    """
    Where C{recv} writes.  A regular FILE (or one that does not exist yet)
    is written through a temporary file beside it, C{.FILE.RANDOM.part},
    renamed over FILE by L{keep} and removed by L{discard}, so that FILE
    only ever holds whole, verified data.  Standard output and other
    files (a device, a FIFO) are written directly: what reached them
    stays.

    @ivar file: what to write to.
    @ivar name: the name given on the command line.
    """

    def __init__(
        self,
        file: IO[bytes],
        name: str,
        existed: bool,
        part: Optional[str] = None,
        final: Optional[str] = None,
    ) -> None:
        """
        @param existed: whether C{name} existed before.
        @param part: the temporary file's path, or L{None} for a direct
            output.
        @param final: the path C{part} is renamed to.
        """
        self.file = file
        self.name = name
        self._existed = existed
        self._part = part
        self._final = final
        self._state = OutputState.OPEN

    @classmethod
    def open(cls, name: str) -> Output:
        """
        Open the output for C{name} (C{-}: standard output).

        @raise OSError: when it cannot be created.
        """
        if name == "-":
            return cls(sys.stdout.buffer, name, existed=True)
        final = os.path.realpath(name)
        try:
            info: Optional[os.stat_result] = os.stat(final)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISREG(info.st_mode):
            return cls(open(final, "wb"), name, existed=True)
        mode = 0o666 if info is None else stat.S_IMODE(info.st_mode)
        directory, base = os.path.split(final)
        while True:
            part = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.part")
            try:
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                continue
            break
        return cls(os.fdopen(fd, "wb"), name, info is not None, part, final)

    @property
    def fate(self) -> str:
        """
        What became of the output's name after a failure, for the message.
        """
        if self._part is None:
            return ""
        return f"; {self.name} {'left as it was' if self._existed else 'not created'}"

    def keep(self) -> None:
        """
        The data is whole and verified: flush it to disk and put it at its
        name.

        @raise OSError: when that fails (the output is then discarded).
        """
        if self._state is not OutputState.OPEN:
            raise RuntimeError(f"keep() of an output {self._state.value}")
        try:
            self.file.flush()
            if self._part is not None and self._final is not None:
                os.fsync(self.file.fileno())
                self.file.close()
                os.replace(self._part, self._final)
            elif self.file is not sys.stdout.buffer:
                self.file.close()
        except OSError:
            self.discard()
            raise
        self._state = OutputState.KEPT

    def discard(self) -> None:
        """
        The data is not to be kept: remove the temporary file (standard
        output and other direct outputs keep what reached them).  Safe to
        call again, and after L{keep}.
        """
        if self._state is not OutputState.OPEN:
            return
        self._state = OutputState.DISCARDED
        try:
            if self.file is sys.stdout.buffer:
                self.file.flush()
            else:
                self.file.close()
        except OSError:
            pass  # The write that failed was reported; nothing more to do.
        if self._part is not None:
            try:
                os.unlink(self._part)
            except FileNotFoundError:
                pass
