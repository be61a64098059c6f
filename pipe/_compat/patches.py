# -*- test-case-name: tests.test_strict -*-
"""
What the installed Twisted lacks, applied to txpipe's classes: the one
module that knows whether L{pipe._compat.legacy} is there, and that applies
L{pipe._compat.header_values}.

With that folder deleted (Twisted's floor raised to 24.7.0), these apply
only the header-value checks of releases before 26.10.0.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional, TypeVar

from pipe._compat import header_values

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
    subclass that adds it (L{pipe._compat.legacy.channel}), and where it
    takes header values 26.10.0 refuses, one with
    L{pipe._compat.header_values.StrictHeaderValues} in front.
    """
    if _LEGACY is not None:
        cls = _LEGACY.channel(cls)
    if header_values.LAX_HEADER_VALUES:
        cls = type(  # type: ignore[assignment]
            cls.__name__,
            (header_values.StrictHeaderValues, cls),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
            },
        )
    return cls


def decoder_for_installed_twisted(cls: _T) -> _T:
    """
    Class decorator for a chunked decoder: C{cls}, or where the installed
    Twisted parses chunk-size lines laxly, a subclass that refuses what
    22.4.0 refuses (L{pipe._compat.legacy.decoder}).
    """
    return cls if _LEGACY is None else _LEGACY.decoder(cls)  # type: ignore[no-any-return]
