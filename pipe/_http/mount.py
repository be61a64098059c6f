# -*- test-case-name: tests.test_mount -*-
"""
Where the pipe tree sits in its site, and so which requests stream.

A site from L{pipe.server.make_site} serves the pipe tree alone, at its
root: every request streams (see L{pipe._http.request}).  Or it serves an
application's own resource tree with the pipe tree mounted under a prefix
(C{/ci/api/v1/pipe/<path>}, C{/ci/healthz}, ...): then only the requests
under the prefix stream, and every other request is twisted.web's own (its
body spooled to C{request.content}, its form and query parsed into
C{request.args}, an automatic C{100 Continue}).

L{Mount} decides which, from the raw request path, once per request, when
its headers are in (L{pipe._http.request.StreamingRequest.gotLength} asks
L{streams}), and moves a streaming request past the prefix before the pipe
tree is traversed (L{Mount.enter}).
"""

from __future__ import annotations

import re
from typing import Any, List

import attr
from twisted.web.http import HTTPChannel

from pipe._compat import internals as compat

__all__ = ["PIPE_PREFIX", "ROOT", "Mount", "mount_at", "streams"]

#: The URL path prefix of every pipe, below the pipe tree's mount.
PIPE_PREFIX = b"/api/v1/pipe/"

#: The bytes a prefix segment may hold: URL-safe, nothing percent-encoded,
#: so that the raw path and Twisted's decoded segments agree.
_SEGMENT = re.compile(rb"[A-Za-z0-9._~-]+")


@attr.s(auto_attribs=True, frozen=True, slots=True)
class Mount:
    """
    Where the pipe tree sits in its site.

    @ivar path: the raw URL path of the pipe tree: C{b""} at the site's
        root, else C{b"/"} and the prefix's segments (C{b"/ci"}).
    """

    path: bytes

    @property
    def segments(self) -> List[bytes]:
        """
        The path segments of the prefix (none at the root).
        """
        return self.path[1:].split(b"/") if self.path else []

    @property
    def pipe_prefix(self) -> bytes:
        """
        The raw path prefix of every pipe, C{/ci/api/v1/pipe/} under a
        mount.
        """
        return self.path + PIPE_PREFIX

    def holds(self, uri: bytes) -> bool:
        """
        Whether the request for C{uri} (its raw request target, the query
        included) is in the pipe tree.  Bytes are compared as sent: a
        percent-encoded prefix (C{/c%69/...}) is not the prefix.
        """
        mount = self.path
        if not mount:
            return True
        path = uri.partition(b"?")[0]
        return path == mount or path.startswith(mount + b"/")

    def enter(self, request: Any) -> None:
        """
        Move the prefix's segments of C{request} (one in the tree, past
        Twisted's C{process}) from C{postpath} to C{prepath}, so that the
        pipe tree is traversed from its own root.
        """
        count = len(self.segments)
        request.prepath.extend(request.postpath[:count])
        del request.postpath[:count]


#: The pipe tree alone, at the site's root: every request streams.
ROOT = Mount(b"")


def mount_at(prefix: bytes) -> Mount:
    """
    The L{Mount} under C{prefix}.

    @param prefix: one or more path segments (C{b"ci"}, C{b"tools/pipes"});
        slashes around it are ignored.
    @raise ValueError: C{prefix} is empty, is not bytes, has a segment that
        is empty, C{.}, C{..} or holds a byte other than letters, digits and
        C{.-_~}, or contains C{api/v1/pipe} (which would make a pipe URL's
        path, and so its signature, ambiguous).
    """
    if not isinstance(prefix, bytes):
        raise ValueError(f"the prefix must be bytes, got {prefix!r}")
    segments = prefix.strip(b"/").split(b"/")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in (b".", b".."):
            raise ValueError(
                "the prefix must be path segments of letters, digits and"
                f" '.-_~', got {prefix!r}"
            )
    path = b"/" + b"/".join(segments)
    if PIPE_PREFIX in path + b"/":
        raise ValueError(f"the prefix must not contain api/v1/pipe, got {prefix!r}")
    return Mount(path)


def streams(channel: HTTPChannel) -> bool:
    """
    Whether the request whose headers C{channel} has just parsed streams:
    whether it is in the pipe tree of the channel's site (its C{mount},
    see L{pipe._http.interfaces.IPipeSite}).
    """
    mount = channel.site.mount  # type: ignore[attr-defined]
    if mount is ROOT:
        return True
    return bool(mount.holds(compat.request_line(channel)[1]))
