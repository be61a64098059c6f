# -*- test-case-name: tests.test_cli -*-
"""
The progress bar of C{txpipe send} and C{txpipe recv}.
"""

from __future__ import annotations

import sys
from typing import Any

from pipe.client import Progress

__all__ = ["ProgressBar"]


class ProgressBar:
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
