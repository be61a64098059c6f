# -*- test-case-name: tests.test_strict -*-
"""
What the installed Twisted lacks, applied to txpipe's classes: the one
module that knows whether L{pipe._compat.legacy} is there.

With that folder deleted (Twisted's floor raised to 24.7.0), every
function here returns the class it is given.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional, TypeVar

__all__ = ["channel_for_installed_twisted", "decoder_for_installed_twisted"]

_T = TypeVar("_T", bound=type)


def _legacy() -> Optional[ModuleType]:
    try:
        return importlib.import_module("pipe._compat.legacy")
    except ModuleNotFoundError as error:
        if error.name != "pipe._compat.legacy":
            raise
        return None


_LEGACY = _legacy()


def channel_for_installed_twisted(cls: _T) -> _T:
    """
    Class decorator for an C{HTTPChannel} subclass: C{cls}, or where the
    installed Twisted lacks a fix of 24.7.0's or an older release's, a
    subclass that adds it (L{pipe._compat.legacy.channel}).
    """
    return cls if _LEGACY is None else _LEGACY.channel(cls)  # type: ignore[no-any-return]


def decoder_for_installed_twisted(cls: _T) -> _T:
    """
    Class decorator for a chunked decoder: C{cls}, or where the installed
    Twisted parses chunk-size lines laxly, a subclass that refuses what
    22.4.0 refuses (L{pipe._compat.legacy.decoder}).
    """
    return cls if _LEGACY is None else _LEGACY.decoder(cls)  # type: ignore[no-any-return]
