# -*- test-case-name: tests.test_cli -*-
"""
The exit statuses of the C{txpipe} command, in one place: L{pipe._cli.main}
(C{sign}, C{serve}) and L{pipe._cli.send_recv} (C{send}, C{recv}) both return
these, and docs/client.md's table lists them.
"""

from __future__ import annotations

import enum

__all__ = ["ExitStatus"]


class ExitStatus(enum.IntEnum):
    """
    What a C{txpipe} process reports to its caller.

    @cvar OK: the command did what was asked: every receiver got every byte
        (C{send}), the whole stream arrived and matched C{--sha256} (C{recv}),
        a URL was signed (C{sign}), the server stopped cleanly (C{serve}).
    @cvar SERVER_FAILED: C{txpipe serve} could not listen.
    @cvar USAGE_ERROR: the command line cannot work as given: bad arguments,
        a URL that is not C{http(s)://HOST/...}, a FILE to send that cannot
        be opened, an output that cannot be created, an unusable secret file
        or a URL that is not a pipe URL (C{sign}).  Also argparse's own
        status for bad arguments.
    @cvar REJECTED: the server refused the request (a 4xx or 5xx other than
        504), with its C{[ERROR]} line.
    @cvar FAILED: the transfer failed: the server could not be reached (an
        unknown host, a refused connection), the connection broke, a receiver
        or the sender was lost or stalled, the stream was cut, reading the
        input or writing the output failed in mid-transfer, or the command
        was interrupted (Ctrl-C, C{SIGTERM}).
    @cvar WAIT_TIMEOUT: the pipe did not start in time (504, or the sender's
        wait timeout line).
    @cvar DIGEST_MISMATCH: C{recv --sha256}: the stream arrived whole but its
        SHA-256 differs.
    """

    OK = 0
    SERVER_FAILED = 1
    USAGE_ERROR = 2
    REJECTED = 3
    FAILED = 4
    WAIT_TIMEOUT = 5
    DIGEST_MISMATCH = 6
