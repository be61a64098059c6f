# -*- test-case-name: tests.test_hardening_end_to_end -*-
"""
Log observers for C{twistd --logger}.

    twistd --logger=pipe.logs.json_stdout -n pipe

writes every log event as one JSON object per line (Twisted's own
L{jsonFileLogObserver} format, with the named fields of each event), ready
for a log shipper.  The default text log stays readable.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver

__all__ = ["json_stdout"]


def json_stdout() -> ILogObserver:
    """
    A JSON-lines observer on standard output (for C{twistd --logger}).
    """
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
