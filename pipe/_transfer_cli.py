# -*- test-case-name: tests.test_cli -*-
"""
C{txpipe send} and C{txpipe recv}: L{pipe.client} with a progress bar
(tqdm, on stderr, only when stderr is a terminal and not C{-q}), a SHA-256
of the data at the end, and the exit statuses of L{pipe._exit}.

Every error is one plain line on stderr, C{txpipe recv: WHAT HAPPENED (N
bytes received)}; C{-v} adds what Twisted reported underneath.  C{recv -o
FILE} writes to a temporary file beside FILE and renames it to FILE only
once the data is whole and, with C{--sha256}, verified.
"""

from __future__ import annotations

import argparse
import enum
import os
import secrets
import stat
import sys
import traceback
from typing import IO, Any, Optional, Tuple
from urllib.parse import urlsplit

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from ._exit import ExitStatus
from .client import (
    PipeError,
    PipeRejected,
    Progress,
    TransferFailed,
    WaitTimeout,
    receive,
    send,
)

__all__ = ["run_transfer"]


class _Bar:
    """
    A tqdm bar on stderr, or nothing when quiet or not on a terminal.

    @ivar bytes: the bytes moved so far, as the last progress said.
    """

    def __init__(self, quiet: bool, what: str) -> None:
        self._bar: Any = None
        self._what = what
        self._shown = not quiet and sys.stderr.isatty()
        self.bytes = 0

    def __call__(self, progress: Progress) -> None:
        self.bytes = progress.bytes
        if not self._shown:
            return
        if self._bar is None:
            from tqdm import tqdm  # type: ignore[import-untyped]

            self._bar = tqdm(
                total=progress.total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=self._what,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        bar = self._bar
        bar.update(progress.bytes - bar.n)
        if progress.n is not None and not progress.started:
            bar.set_postfix_str(f"waiting: {progress.receivers}/{progress.n} receivers")
        elif progress.started and progress.n is not None:
            bar.set_postfix_str(f"{progress.n} receivers")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _OutputState(enum.Enum):
    """
    The states of an L{_Output}: C{OPEN} (being written) goes to C{KEPT}
    (the data is at its name) or C{DISCARDED} (nothing new is); both final.
    """

    OPEN = "open"
    KEPT = "kept"
    DISCARDED = "discarded"


class _Output:
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
        self._state = _OutputState.OPEN

    @classmethod
    def open(cls, name: str) -> _Output:
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
        if self._state is not _OutputState.OPEN:
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
        self._state = _OutputState.KEPT

    def discard(self) -> None:
        """
        The data is not to be kept: remove the temporary file (standard
        output and other direct outputs keep what reached them).  Safe to
        call again, and after L{keep}.
        """
        if self._state is not _OutputState.OPEN:
            return
        self._state = _OutputState.DISCARDED
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


class _RunState(enum.Enum):
    """
    The states of a L{_Run}: C{RUNNING} goes to C{FINISHED} (the command
    returned its status) or C{INTERRUPTED} (the reactor began to shut down
    first: Ctrl-C or C{SIGTERM}), which goes to C{FINISHED} too.
    """

    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"


class _Run:
    """
    One C{send} or C{recv}: where it is, what it moved, and the one place
    its messages are written.

    @ivar status: the exit status, once finished (L{ExitStatus.FAILED}
        before).
    @ivar output: C{recv}'s output, once open.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.command: str = args.command
        self._verbose: bool = args.verbose
        self.bar = _Bar(args.quiet, args.command)
        self.state = _RunState.RUNNING
        self.status = ExitStatus.FAILED
        self.output: Optional[_Output] = None

    def interrupt(self) -> None:
        """
        The reactor is shutting down: what fails from now on, fails
        because of it.
        """
        if self.state is _RunState.RUNNING:
            self.state = _RunState.INTERRUPTED

    def finish(self, status: ExitStatus) -> None:
        self.status = status
        self.state = _RunState.FINISHED

    def usage(self, what: str) -> ExitStatus:
        """
        Report a command line that cannot work.
        """
        print(f"txpipe {self.command}: {what}", file=sys.stderr)
        return ExitStatus.USAGE_ERROR

    def fail(
        self,
        status: ExitStatus,
        what: str,
        error: Optional[BaseException] = None,
    ) -> ExitStatus:
        """
        Report a failure in one line, with the bytes moved (and with C{-v},
        what lies underneath); discard C{recv}'s output.
        """
        self.bar.close()
        if self.state is not _RunState.RUNNING:
            status, what = ExitStatus.FAILED, "interrupted"
        moved = "sent" if self.command == "send" else "received"
        fate = ""
        if self.output is not None:
            self.output.discard()
            fate = self.output.fate
        print(
            f"txpipe {self.command}: {what} ({self.bar.bytes} bytes {moved}{fate})",
            file=sys.stderr,
        )
        if self._verbose and error is not None:
            print(_underneath(error), file=sys.stderr)
        return status


def _server_words(reason: str) -> str:
    """
    A server's C{[ERROR]} line as words of a sentence.
    """
    if reason.startswith("[ERROR] "):
        reason = reason[len("[ERROR] ") :]
    if reason.startswith("failed: "):
        reason = "the transfer failed: " + reason[len("failed: ") :]
    return reason


def _explain(error: BaseException) -> Tuple[ExitStatus, str]:
    """
    The status and the plain sentence for what L{send} or L{receive}
    failed with.
    """
    if isinstance(error, WaitTimeout):
        words = _server_words(error.reason)
        return ExitStatus.WAIT_TIMEOUT, f"the pipe did not start in time: {words}"
    if isinstance(error, PipeRejected):
        words = _server_words(error.reason)
        return (
            ExitStatus.REJECTED,
            f"the server refused the request with HTTP {error.status}: {words}",
        )
    if isinstance(error, TransferFailed):
        return ExitStatus.FAILED, _server_words(error.reason)
    return ExitStatus.FAILED, f"failed unexpectedly: {type(error).__name__}: {error}"


def _underneath(error: BaseException) -> str:
    """
    What C{-v} adds: Twisted's failures, or the traceback.
    """
    if isinstance(error, PipeError) and error.details:
        return error.details
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return "".join(lines).rstrip()


def _url_problem(url: str) -> Optional[str]:
    """
    Why C{url} cannot be a pipe's URL, or L{None}.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # Raises ValueError for a port that is not a number.
    except ValueError as error:
        return f"URL {url!r} is malformed: {error}"
    if parts.scheme not in ("http", "https") or not host:
        return f"URL must be http(s)://HOST/..., got {url!r}"
    return None


async def _send(reactor: Any, args: argparse.Namespace, run: _Run) -> ExitStatus:
    source: IO[bytes]
    try:
        if args.file == "-":
            # Raw, not sys.stdin.buffer: each read returns what the pipe has.
            source = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
        else:
            source = open(args.file, "rb", buffering=0)
    except OSError as error:
        return run.usage(f"cannot read {args.file}: {error.strerror}")
    try:
        result = await send(
            args.url,
            source,
            reactor=reactor,
            progress=run.bar,
            content_type=args.content_type,
            deferred=args.deferred,
        )
    except Exception as error:
        return run.fail(*_explain(error), error)
    finally:
        source.close()
    run.bar.close()
    print(result.summary, file=sys.stderr)
    print(f"sha256 {result.sha256}  {result.bytes} bytes", file=sys.stderr)
    return ExitStatus.OK


async def _recv(reactor: Any, args: argparse.Namespace, run: _Run) -> ExitStatus:
    try:
        output = run.output = _Output.open(args.output)
    except OSError as error:
        return run.usage(f"cannot write {args.output}: {error.strerror}")
    try:
        result = await receive(args.url, output.file, reactor=reactor, progress=run.bar)
    except OSError as error:
        # Raised by the output's write.
        what = f"could not write to {output.name}: {error.strerror}"
        return run.fail(ExitStatus.FAILED, what, error)
    except Exception as error:
        return run.fail(*_explain(error), error)
    run.bar.close()
    print(f"sha256 {result.sha256}  {result.bytes} bytes", file=sys.stderr)
    expected = None if args.sha256 is None else args.sha256.strip().lower()
    if expected is not None and expected != result.sha256:
        what = f"SHA-256 mismatch: got {result.sha256}, expected {expected}"
        return run.fail(ExitStatus.DIGEST_MISMATCH, what)
    try:
        output.keep()
    except OSError as error:
        what = f"could not write to {output.name}: {error.strerror}"
        return run.fail(ExitStatus.FAILED, what, error)
    return ExitStatus.OK


def run_transfer(args: argparse.Namespace) -> ExitStatus:
    """
    Run C{send} or C{recv} in a reactor and return the exit status.

    Ctrl-C and C{SIGTERM} stop the reactor (Twisted's signal handlers);
    the connections it then closes fail the transfer, which is reported as
    interrupted.  C{recv}'s temporary file is removed however the run
    ends, short of C{SIGKILL}.
    """
    run = _Run(args)
    command = _send if args.command == "send" else _recv

    async def main(reactor: Any) -> None:
        reactor.addSystemEventTrigger("before", "shutdown", run.interrupt)
        problem = _url_problem(args.url)
        if problem is not None:
            run.finish(run.usage(problem))
            return
        try:
            status = await command(reactor, args, run)
        except Exception as error:
            status = run.fail(*_explain(error), error)
        run.finish(status)

    try:
        react(lambda reactor: ensureDeferred(main(reactor)))
    except SystemExit:
        pass
    finally:
        if run.state is not _RunState.FINISHED:
            run.finish(run.fail(ExitStatus.FAILED, "interrupted"))
        if run.output is not None:
            run.output.discard()
    return run.status
