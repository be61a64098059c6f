# -*- test-case-name: tests.test_signing -*-
"""
The C{txpipe} command (console script, also C{python -m pipe}).

    txpipe sign --secret-file FILE --scope send|receive --ttl SECONDS URL

prints URL signed for one transfer (see L{pipe.signing}).  Exit status: 0,
or 2 for a usage error, an unusable secret file or a URL that is not a pipe
URL, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import __version__
from .signing import KeyFileError, Scope, load_keys, sign_url

__all__ = ["main"]

USAGE_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="txpipe", description="Tools for txpipe, the fan-out pipe server."
    )
    parser.add_argument("--version", action="version", version=f"txpipe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    sign = commands.add_parser(
        "sign",
        help="print a pipe URL signed for one transfer",
        description=(
            "Print URL with expires, scope and sig added: valid for one "
            "transfer (all n receivers share one receive URL) until it "
            "expires. The signature covers the scope, the path, n (absent: "
            "1) and the expiry; not the host, the scheme or wait."
        ),
    )
    sign.add_argument(
        "--secret-file",
        required=True,
        metavar="FILE",
        help="the server's key file (its first key signs)",
    )
    sign.add_argument(
        "--scope",
        required=True,
        choices=[scope.value for scope in Scope],
        help="send (PUT/POST) or receive (GET)",
    )
    sign.add_argument(
        "--ttl",
        required=True,
        type=float,
        metavar="SECONDS",
        help="seconds the URL stays valid",
    )
    sign.add_argument(
        "url", metavar="URL", help="http(s)://HOST/api/v1/pipe/<path>?n=N"
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """
    Run C{txpipe} with C{argv} (default: C{sys.argv[1:]}).

    @return: the exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        keys = load_keys(args.secret_file)
        signed = sign_url(args.url, keys[0], args.scope, args.ttl)
    except (KeyFileError, ValueError) as error:
        print(f"txpipe sign: {error}", file=sys.stderr)
        return USAGE_ERROR
    print(signed)
    return 0
