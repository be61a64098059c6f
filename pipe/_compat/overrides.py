# -*- test-case-name: tests.test_compat -*-
"""
The public methods of Twisted's channel and request that txpipe's
subclasses override, listed in one place (L{OVERRIDDEN}), with the Twisted
release whose code an override copies where it is a copy rather than an
extension: a fix Twisted makes to its own method does not reach a copy.

L{pipe._compat.internals.check} refuses a Twisted that lacks one (an override of a
vanished method silently stops applying), and a test checks that every
override of txpipe's is listed.  The private hooks txpipe overrides, and
the methods of Twisted's private chunked decoder, are in
L{pipe._compat.internals.REQUIRED}.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import attr
from twisted.web import http, server

__all__ = ["OVERRIDDEN", "Override", "absent_overrides"]

_Channel = http.HTTPChannel
_Request = server.Request


@attr.s(auto_attribs=True, frozen=True)
class Override:
    """
    A public method of Twisted's that a txpipe subclass overrides.

    @ivar owner: the Twisted class whose method it is.
    @ivar name: the method.
    @ivar where: the txpipe classes that override it.
    @ivar copied_from: the Twisted release whose code the override copies
        (and so must follow), or L{None} when it extends Twisted's (calls
        it through C{super()}).
    """

    owner: type
    name: str
    where: str
    copied_from: Optional[str] = None


def _extended(owner: type, where: str, *names: str) -> List[Override]:
    return [Override(owner, name, where) for name in names]


#: Every public method of Twisted's that txpipe overrides (its private
#: hooks are in L{pipe._compat.internals.REQUIRED}).
OVERRIDDEN: Tuple[Override, ...] = (
    Override(
        _Channel,
        "writeHeaders",
        "_http.writes.WritingChannel: through writeSequence, with add_to_head's lines",
        copied_from="26.10.0 (which takes Headers; older releases pass pairs,"
        " which the copy also takes)",
    ),
    Override(
        _Channel,
        "lineReceived",
        "_compat.legacy.parsing.StrictChannel, on Twisted < 24.7.0",
        copied_from="24.7.0: its request-line check (_strict.valid_request_line)",
    ),
    Override(
        _Channel,
        "headerReceived",
        "_compat.legacy.parsing.StrictChannel, on Twisted < 24.7.0",
        copied_from="24.7.0: its header-name and Content-Length checks",
    ),
    *_extended(_Channel, "_http.writes.WritingChannel", "write", "writeSequence"),
    *_extended(
        _Channel,
        "_http.writes.WritingChannel, _http.timers.TimedChannel,"
        " _http.channel.StreamingChannel",
        "connectionMade",
    ),
    *_extended(
        _Channel,
        "_http.acknowledging.AcknowledgingChannel, _http.timers.TimedChannel,"
        " _http.channel.StreamingChannel",
        "connectionLost",
    ),
    *_extended(_Channel, "_http.timers.TimedChannel", "requestDone"),
    *_extended(_Channel, "_http.channel.StreamingChannel", "dataReceived"),
    *_extended(
        _Channel,
        "_compat.legacy.parsing.StrictChannel, on Twisted < 23.10.0",
        "allContentReceived",
        "rawDataReceived",
    ),
    *_extended(
        _Request,
        "_http.request.StreamingRequest",
        "gotLength",
        "requestReceived",
        "handleContentChunk",
        "connectionLost",
    ),
    *_extended(_Request, "_http.response.RespondingRequest", "write", "finish"),
)


def absent_overrides() -> List[Override]:
    """
    The overridden methods the installed Twisted lacks.
    """
    return [o for o in OVERRIDDEN if not callable(getattr(o.owner, o.name, None))]
