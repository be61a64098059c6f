# -*- test-case-name: tests.test_cli -*-
"""
C{txpipe send} and C{txpipe recv}: L{pipe.client} with a progress bar
(tqdm, on stderr, only when stderr is a terminal and not C{-q}), a SHA-256
of the data at the end, and the exit statuses of L{pipe._cli}.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any, Optional

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from . import _cli
from .client import (
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
    """

    def __init__(self, quiet: bool, what: str) -> None:
        self._bar: Any = None
        self._what = what
        self._shown = not quiet and sys.stderr.isatty()

    def __call__(self, progress: Progress) -> None:
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


def _status(error: BaseException) -> int:
    if isinstance(error, WaitTimeout):
        return _cli.WAIT_TIMEOUT
    if isinstance(error, PipeRejected):
        return _cli.REJECTED
    if isinstance(error, TransferFailed):
        return _cli.FAILED
    return _cli.FAILED


async def _send(reactor: Any, args: argparse.Namespace) -> int:
    bar = _Bar(args.quiet, "send")
    try:
        source: Any = sys.stdin.buffer if args.file == "-" else args.file
        result = await send(
            args.url,
            source,
            reactor=reactor,
            progress=bar,
            content_type=args.content_type,
            deferred=args.deferred,
        )
    except OSError as error:
        bar.close()
        print(f"txpipe send: {error}", file=sys.stderr)
        return _cli.USAGE_ERROR
    except Exception as error:
        bar.close()
        print(f"txpipe send: {error}", file=sys.stderr)
        return _status(error)
    bar.close()
    print(result.summary, file=sys.stderr)
    print(f"sha256 {result.sha256}  {result.bytes} bytes", file=sys.stderr)
    return _cli.OK


async def _recv(reactor: Any, args: argparse.Namespace) -> int:
    bar = _Bar(args.quiet, "recv")
    sink: IO[bytes]
    opened: Optional[IO[bytes]] = None
    try:
        if args.output == "-":
            sink = sys.stdout.buffer
        else:
            sink = opened = open(args.output, "wb")
    except OSError as error:
        print(f"txpipe recv: {error}", file=sys.stderr)
        return _cli.USAGE_ERROR
    try:
        result = await receive(args.url, sink, reactor=reactor, progress=bar)
    except Exception as error:
        bar.close()
        print(f"txpipe recv: {error}", file=sys.stderr)
        return _status(error)
    finally:
        if opened is not None:
            opened.close()
        else:
            sink.flush()
    bar.close()
    print(f"sha256 {result.sha256}  {result.bytes} bytes", file=sys.stderr)
    if args.sha256 is not None and args.sha256.strip().lower() != result.sha256:
        print(
            f"txpipe recv: SHA-256 mismatch: expected {args.sha256.strip().lower()}",
            file=sys.stderr,
        )
        return _cli.DIGEST_MISMATCH
    return _cli.OK


def run_transfer(args: argparse.Namespace) -> int:
    """
    Run C{send} or C{recv} in a reactor and return the exit status.
    """
    status = [_cli.FAILED]
    command = _send if args.command == "send" else _recv

    async def main(reactor: Any) -> None:
        status[0] = await command(reactor, args)

    try:
        react(lambda reactor: ensureDeferred(main(reactor)))
    except SystemExit as exit:
        if exit.code not in (0, None):
            return _cli.FAILED
    return status[0]
