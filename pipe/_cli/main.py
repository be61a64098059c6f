# -*- test-case-name: tests.test_cli -*-
"""
The C{txpipe} command (console script, also C{python -m pipe}):

    txpipe send URL [FILE|-]           stream FILE (default: stdin) to a pipe
    txpipe recv URL [-o FILE|-]        stream a pipe to FILE (default: stdout)
    txpipe sign --secret-file FILE --scope send|receive --ttl SECONDS
                [--max-ttl SECONDS] URL
    txpipe serve [OPTIONS]             the server: twistd -n pipe [OPTIONS]

The exit statuses are L{pipe._cli.exit.ExitStatus}: 0 success; 2 usage error
(also an unusable secret file or a URL that is not a pipe URL); 3 refused by
the server (4xx/5xx); 4 transfer failed (the server unreachable, the
connection or the stream cut, interrupted); 5 wait timeout; 6 SHA-256
mismatch (C{recv --sha256}).  C{txpipe serve} exits 1 when it cannot listen.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from pipe import __version__
from pipe._cli.exit import ExitStatus
from pipe._settings import Settings
from pipe.signing import KeyFileError, Scope, load_keys, sign_url

__all__ = ["main"]

_DEFAULT_MAX_TTL = Settings().max_ttl


#: The help of C{send} and C{recv}'s C{--id-token}.
ID_TOKEN_HELP = (
    "send this CI job's OIDC ID token (Authorization: Bearer) to a server "
    "with --oidc-policy: github:AUDIENCE (GitHub Actions, with permissions: "
    "id-token: write), env:NAME (GitLab CI id_tokens, Buildkite, CircleCI) "
    "or file:PATH"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="txpipe",
        description="txpipe: fan one upload out to N receivers.",
        epilog="Exit status: 0 ok, 2 usage, 3 refused by the server, 4 transfer "
        "failed (also: server unreachable, interrupted), 5 wait timeout, "
        "6 SHA-256 mismatch; serve: 1 cannot listen.",
    )
    parser.add_argument("--version", action="version", version=f"txpipe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    send = commands.add_parser(
        "send",
        help="stream a file or standard input to a pipe",
        description="Stream FILE (or standard input) to the pipe at URL; print "
        "the server's summary and the SHA-256 of what was sent on stderr.",
    )
    send.add_argument("url", metavar="URL")
    send.add_argument("file", metavar="FILE", nargs="?", default="-")
    send.add_argument("--content-type", metavar="TYPE", help="what receivers get")
    send.add_argument(
        "--deferred",
        action="store_true",
        help="have the server answer only after the upload (behind a proxy "
        "such as nginx that stops forwarding it once the response begins)",
    )
    send.add_argument("--id-token", metavar="SOURCE", help=ID_TOKEN_HELP)
    _output_flags(send)

    recv = commands.add_parser(
        "recv",
        help="stream a pipe to a file or standard output",
        description="Stream the pipe at URL to FILE (or standard output); print "
        "the SHA-256 of what was received on stderr.  FILE is written through "
        "a temporary file beside it, renamed to FILE only once the data is "
        "whole (and verified, with --sha256).",
    )
    recv.add_argument("url", metavar="URL")
    recv.add_argument("-o", "--output", metavar="FILE", default="-")
    recv.add_argument(
        "--sha256",
        metavar="HEX",
        help="fail (status 6) unless the data has this digest",
    )
    recv.add_argument("--id-token", metavar="SOURCE", help=ID_TOKEN_HELP)
    recv.add_argument(
        "--name",
        metavar="NAME",
        help="this receiver's name in the sender's lines and the server's log "
        "(header Txpipe-Receiver; 1 to 64 printable ASCII characters), such as "
        "the CI job's name",
    )
    _output_flags(recv)

    sign = commands.add_parser(
        "sign",
        help="print a pipe URL signed for one transfer",
        description=(
            "Print URL with expires, scope and sig added: valid for one "
            "transfer (all n receivers share one receive URL) until it "
            "expires. The signature covers the scope, the path, n (absent: "
            "1), the expiry and min when the URL has one; not the host, the "
            "scheme or wait."
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
        "--max-ttl",
        type=float,
        default=_DEFAULT_MAX_TTL,
        metavar="SECONDS",
        help="refuse a --ttl longer than this: the servers' --max-ttl "
        "(default %(default)g, theirs too; 0: no limit)",
    )
    sign.add_argument(
        "url",
        metavar="URL",
        help="http(s)://HOST/api/v1/pipe/<path>?n=N, or under a mount:"
        " http(s)://HOST/PREFIX/api/v1/pipe/<path>?n=N",
    )

    commands.add_parser(
        "serve",
        help="run the server (twistd -n pipe)",
        description="Run the server in the foreground, as twistd -n pipe with "
        "the same options (txpipe serve --help lists them).",
        add_help=False,
    )
    return parser


def _sign(args: argparse.Namespace) -> int:
    if args.max_ttl < 0:
        print("txpipe sign: --max-ttl must be 0 or more seconds", file=sys.stderr)
        return ExitStatus.USAGE_ERROR
    if args.max_ttl and args.ttl > args.max_ttl:
        print(
            f"txpipe sign: --ttl {args.ttl:g} s is longer than the servers allow"
            f" (--max-ttl {args.max_ttl:g} s): they would refuse the URL with"
            " 403 signature lifetime",
            file=sys.stderr,
        )
        return ExitStatus.USAGE_ERROR
    try:
        keys = load_keys(args.secret_file)
        signed = sign_url(args.url, keys[0], args.scope, args.ttl)
    except (KeyFileError, ValueError) as error:
        print(f"txpipe sign: {error}", file=sys.stderr)
        return ExitStatus.USAGE_ERROR
    print(signed)
    return ExitStatus.OK


def _serve(options: List[str]) -> int:
    """
    Run C{twistd --nodaemon --pidfile= pipe OPTIONS} in this process.
    """
    from twisted.scripts.twistd import run

    from pipe.tap import ListenFailed

    sys.argv = ["txpipe serve", "--nodaemon", "--pidfile=", "pipe", *options]
    try:
        run()
    except ListenFailed:
        # The reason is on stderr already.
        return ExitStatus.SERVER_FAILED
    return ExitStatus.OK


def main(argv: Optional[List[str]] = None) -> int:
    """
    Run C{txpipe} with C{argv} (default: C{sys.argv[1:]}).

    @return: the exit status.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "sign":
        return _sign(args)
    from pipe._cli.send_recv import run_transfer

    return run_transfer(args)


def _output_flags(command: argparse.ArgumentParser) -> None:
    """The progress and error-detail flags C{send} and C{recv} share."""
    command.add_argument("-q", "--quiet", action="store_true", help="no progress")
    command.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="on an error, also print what lies underneath (Twisted's failures)",
    )
