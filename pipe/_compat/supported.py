# -*- test-case-name: tests.test_compat -*-
"""
The Twisted releases txpipe supports, checked before anything relies on
one: importing this module touches nothing of Twisted's but its version,
so C{twistd pipe} can say in one line why it cannot start.
"""

from __future__ import annotations

from importlib import util
from typing import Optional, Tuple

__all__ = [
    "NEWEST_TESTED_TWISTED",
    "OLDEST_TWISTED",
    "SUPPORTED",
    "TwistedMismatch",
    "check_version",
    "twisted_version",
]


class TwistedMismatch(ImportError):
    """
    The installed Twisted is older than L{OLDEST_TWISTED}, or lacks
    internals txpipe relies on (see L{pipe._compat.internals.REQUIRED}); the message
    says so in plain words.
    """


#: The oldest Twisted txpipe runs on: Ubuntu 22.04 LTS's, and the oldest
#: Buildbot 4 accepts, as long as L{pipe._compat.legacy} (what releases
#: older than 24.7.0 lack) is there; 24.7.0 once that folder is deleted.
#: C{setup.py} says the same; CI tests it, Debian 12's 22.4.0, 24.3.0
#: (Ubuntu 24.04 LTS) and the newest release.
OLDEST_TWISTED = (
    (22, 1, 0) if util.find_spec("pipe._compat.legacy") is not None else (24, 7, 0)
)

#: The newest Twisted release CI has run the whole suite on.  A newer one
#: is used as long as it has every internal txpipe relies on (CI installs
#: the newest release on every run).
NEWEST_TESTED_TWISTED = (26, 10, 0)


def _show(version: Tuple[int, ...]) -> str:
    return ".".join(map(str, version))


#: The supported range, in words, for messages.
SUPPORTED = (
    f"Twisted {_show(OLDEST_TWISTED)} or newer "
    f"(tested up to {_show(NEWEST_TESTED_TWISTED)})"
)


def twisted_version() -> Tuple[int, int, int]:
    """
    The installed Twisted's release as C{(year, month, micro)}.
    """
    from twisted import version

    # A development checkout's major is the string "NEXT": newer than any.
    major = version.major if isinstance(version.major, int) else 9999
    return (major, version.minor, version.micro)


def check_version(version: Optional[Tuple[int, int, int]] = None) -> None:
    """
    Raise L{TwistedMismatch} with one line naming the supported range if
    the installed Twisted (or C{version}) is older than L{OLDEST_TWISTED}.
    """
    if version is None:
        version = twisted_version()
    if tuple(version) < OLDEST_TWISTED:
        raise TwistedMismatch(
            f"txpipe needs {SUPPORTED}; this is Twisted {_show(version)}"
        )
