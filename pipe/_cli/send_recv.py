# -*- test-case-name: tests.test_cli -*-
"""
C{txpipe send} and C{txpipe recv}: L{pipe.client} with a progress bar
(L{pipe._cli.progress}: tqdm, on stderr, only when stderr is a terminal and
not C{-q}), a SHA-256 of the data at the end, and the exit statuses of
L{pipe._cli.exit}.  This is where C{send} and C{recv} run the global reactor
(C{react}), and hand it to L{pipe.client}.

Every error is one plain line on stderr, C{txpipe recv: WHAT HAPPENED (N
bytes received)}; C{-v} adds what Twisted reported underneath.  C{recv -o
FILE} writes to a temporary file beside FILE and renames it to FILE only
once the data is whole and, with C{--sha256}, verified
(L{pipe._cli.output}).
"""

from __future__ import annotations

import argparse
import enum
import sys
import traceback
from typing import IO, Any, Optional, Tuple
from urllib.parse import urlsplit

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from pipe._cli.exit import ExitStatus
from pipe._cli.output import Output
from pipe._cli.progress import ProgressBar
from pipe._client.id_token import IdTokenError, id_token, parse_source
from pipe.client import (
    PipeError,
    PipeRejected,
    TransferFailed,
    WaitTimeout,
    receive,
    send,
)

__all__ = ["run_transfer"]


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
        self.bar = ProgressBar(args.quiet, args.command)
        self.state = _RunState.RUNNING
        self.status = ExitStatus.FAILED
        self.output: Optional[Output] = None

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
    if isinstance(error, IdTokenError):
        return ExitStatus.USAGE_ERROR, str(error)
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


async def _id_token(args: argparse.Namespace, reactor: Any) -> Optional[str]:
    """
    The token of C{--id-token SOURCE}, if given (see L{pipe._client.id_token}).

    @raise pipe._client.id_token.IdTokenError: it cannot be had.
    """
    if args.id_token is None:
        return None
    return await id_token(parse_source(args.id_token), reactor)


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
            id_token=await _id_token(args, reactor),
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
        output = run.output = Output.open(args.output)
    except OSError as error:
        return run.usage(f"cannot write {args.output}: {error.strerror}")
    try:
        result = await receive(
            args.url,
            output.file,
            reactor=reactor,
            progress=run.bar,
            id_token=await _id_token(args, reactor),
            name=args.name,
        )
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
