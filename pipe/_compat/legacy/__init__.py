# -*- test-case-name: tests.test_strict -*-
"""
Everything txpipe does only for Twisted releases older than 24.7.0.

Twisted fixed its HTTP/1.1 server over the releases from 22.1.0 (the
oldest txpipe runs on: Ubuntu 22.04 LTS's) to 24.7.0, and changed how a
request hands its response headers to the channel.  This folder makes an
older Twisted answer as 24.7.0 does: L{detect} finds, from the installed
Twisted's behaviour, which fixes it lacks; L{channel} puts
L{pipe._compat.legacy.parsing.StrictParsing} in front of a channel class
and L{decoder} the chunk-size check of L{pipe._compat.legacy.chunks} in
front of a chunked decoder, each only where it adds something.  On
Twisted 24.7.0 and newer both return the class they are given.

Nothing outside L{pipe._compat} names this folder: L{pipe._compat.patches}
applies it when it is there.  Raising Twisted's floor to 24.7.0 is deleting
this folder and the floor in C{setup.py}; L{pipe._compat.supported} then
says 24.7.0.
"""

from __future__ import annotations

from typing import Tuple, TypeVar

from twisted.web import http

from pipe._compat.internals import Internal, Use, check, hook, override, state
from pipe._compat.legacy import detect
from pipe._compat.legacy.chunks import strict_chunk_sizes
from pipe._compat.legacy.parsing import StrictParsing

__all__ = ["NAMES", "OLDEST_TWISTED", "channel", "decoder", "patched"]

#: The oldest Twisted txpipe runs on with this folder.
OLDEST_TWISTED = (22, 1, 0)

_T = TypeVar("_T", bound=type)

#: Where the installed Twisted lacks a fix (see L{detect}).
patched = (
    detect.LAX_REQUEST_LINE
    or detect.LAX_CONTENT_LENGTH
    or detect.EAGER_PIPELINING
    or detect.LATE_PIPELINE_BUFFER
    or detect.PAIRS_TO_WRITE_HEADERS
)


def channel(cls: _T) -> _T:
    """
    C{cls} (an C{HTTPChannel} subclass), or, where the installed Twisted
    lacks a fix, a subclass of the same name with L{StrictParsing} in front.
    """
    if not patched:
        return cls
    return type(  # type: ignore[return-value]
        cls.__name__,
        (StrictParsing, cls),
        {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
        },
    )


def decoder(cls: _T) -> _T:
    """
    C{cls} (a chunked decoder), or, where the installed Twisted parses
    chunk-size lines laxly, a subclass that refuses what 22.4.0 refuses.
    """
    if not detect.LAX_CHUNK_SIZE:
        return cls
    return strict_chunk_sizes(cls)  # type: ignore[no-any-return]


_Channel = http.HTTPChannel

#: The Twisted names only this folder relies on (the rest are
#: L{pipe._compat.internals.TWISTED_NAMES}); checked when it is imported.
NAMES: Tuple[Internal, ...] = (
    *override(
        _Channel,
        "_compat.legacy.parsing.StrictParsing, on Twisted < 24.7.0",
        "lineReceived",
        "headerReceived",
    ),
    *override(
        _Channel,
        "_compat.legacy.parsing.StrictParsing, on Twisted < 23.10.0",
        "allContentReceived",
        "rawDataReceived",
    ),
    Internal(
        _Channel,
        "writeHeaders",
        Use.OVERRIDE,
        "_compat.legacy.parsing.StrictParsing, on Twisted < 24.7.0: the pairs"
        " an older Request.write passes, as Headers",
    ),
    hook(
        _Channel,
        "_finishRequestBody",
        "_compat.legacy.parsing: what follows a body is kept before the request"
        " is handled (Twisted < 24.7.0; a copy of Twisted 24.7.0's)",
    ),
    state(
        _Channel,
        "_handlingRequest",
        "_compat.legacy.parsing: whether a request is being answered"
        " (Twisted < 23.10.0)",
    ),
    state(
        _Channel,
        "_dataBuffer",
        "_compat.legacy: what is read meanwhile, kept for later (Twisted <"
        " 23.10.0); whether it is kept before a request is handled (detect)",
    ),
)

check(NAMES)
