"""
Counting a server's Python work, for C{cost.py}: loaded into a server child
before it starts (L{install}), it counts, between a C{SIGUSR1} and a
C{SIGUSR2}, every Python function call, every bytecode executed (by
function) and every call into C (by name) in the server's main thread, the
reactor's, and writes the counts as JSON when the second signal arrives.

The counts are exact and repeatable, unlike CPU time on a shared machine:
they say how much work a transfer makes, not how fast the machine did it.
The tracing slows the server down by a large factor, which changes no
count (timers of seconds do not fire within a tiny transfer).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
from types import FrameType
from typing import Any, Counter, Optional


class _Counts:
    """
    What one tracing window counted, keyed by C{file:function} (Python) or
    by the C function's qualified name.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = collections.Counter()
        self.bytecodes: Counter[str] = collections.Counter()
        self.c_calls: Counter[str] = collections.Counter()
        self._names: dict[Any, str] = {}

    def _name(self, frame: FrameType) -> str:
        code = frame.f_code
        name = self._names.get(code)
        if name is None:
            filename = code.co_filename
            for marker in ("site-packages/", "lib/python"):
                if marker in filename:
                    filename = filename.split(marker, 1)[1]
                    break
            if filename.startswith("3."):  # lib/python3.X/...: the stdlib
                filename = "stdlib/" + filename.split("/", 1)[-1]
            self._names[code] = name = f"{filename}:{code.co_name}"
        return name

    def trace(self, frame: FrameType, event: str, arg: object) -> Optional[Any]:
        if event == "opcode":
            self.bytecodes[self._name(frame)] += 1
        elif event == "call":
            frame.f_trace_opcodes = True
            self.calls[self._name(frame)] += 1
        return self.trace

    def profile(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "c_call":
            self.c_calls[getattr(arg, "__qualname__", None) or repr(arg)] += 1

    def as_json(self) -> str:
        return json.dumps(
            {
                "calls": self.calls,
                "bytecodes": self.bytecodes,
                "c_calls": self.c_calls,
            }
        )


def install(out: str) -> None:
    """
    Count from the next C{SIGUSR1} to the next C{SIGUSR2}, then write the
    counts to the file C{out}.  Python runs signal handlers in the main
    thread, which is the reactor's in every server this is used with.
    """
    counts = _Counts()

    def start(signum: int, frame: Optional[FrameType]) -> None:
        sys.setprofile(counts.profile)
        sys.settrace(counts.trace)

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        sys.settrace(None)
        sys.setprofile(None)
        with open(out + ".part", "w") as f:
            f.write(counts.as_json())
        os.replace(out + ".part", out)  # whole, or not there

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
