"""
Tests for L{pipe._compat.internals}: the Twisted internals txpipe relies on are all
named there, and a Twisted that lacks one is refused at import.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Set

import pytest
from twisted.web import http

import twisted
from pipe._compat import internals as _compat
from pipe._compat.internals import REQUIRED, Internal, TwistedMismatch, check, missing

COMPAT = Path(_compat.__file__).parent
PIPE = COMPAT.parent
TWISTED = Path(twisted.__file__).parent

#: Twisted source files whose private names txpipe could reach.
TWISTED_SOURCES = [
    "web/http.py",
    "web/server.py",
    "internet/abstract.py",
    "internet/tcp.py",
    "internet/_newtls.py",
    "protocols/tls.py",
    "protocols/policies.py",
]

#: txpipe's own private names that Twisted happens to use too.
OWN = {
    "_channel",
    "_clock",
    "_closed",
    "_connection",
    "_factory",
    "_log",
    "_port",
    "_producer",
    "_reactor",
    "_request",
    "_scheduled",
    "_site",
    "_state",
}


def private_names(text: str) -> Set[str]:
    attributes = re.findall(r"\.(_[A-Za-z]\w*)", text)
    definitions = re.findall(r"def (_[A-Za-z]\w*)", text)
    return set(attributes) | set(definitions)


def test_the_installed_twisted_has_every_internal() -> None:
    assert missing() == []
    check()


def test_only_compat_names_twisted_private_names() -> None:
    """
    No module outside L{pipe._compat} uses (reads, sets or overrides) a
    private name of Twisted's, and each one a module of L{pipe._compat} uses
    is declared in L{REQUIRED}, so that L{check} covers it.
    """
    twisted_names: Set[str] = set()
    for source in TWISTED_SOURCES:
        twisted_names |= private_names((TWISTED / source).read_text())
    named = {}
    for module in sorted(PIPE.rglob("*.py")):
        if COMPAT in module.parents:
            continue
        used = private_names(module.read_text()) & twisted_names - OWN
        if used:
            named[str(module.relative_to(PIPE))] = sorted(used)
    assert named == {}, (
        "reach Twisted's internals through pipe/_compat/ (or, if these are "
        "txpipe's own names, list them in this test's OWN)"
    )
    used = set()
    for module in COMPAT.rglob("*.py"):
        used |= private_names(module.read_text()) & twisted_names - OWN
    declared = {internal.name for internal in REQUIRED}
    assert used - declared == set(), "declare these in REQUIRED"


def test_only_compat_imports_twisted_private_names() -> None:
    """
    No other module imports a private name or module of Twisted's.
    """
    imports = []
    for module in sorted(PIPE.rglob("*.py")):
        if COMPAT in module.parents:
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "twisted"
            ):
                names = [node.module or "", *(alias.name for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(part.startswith("_") for n in names for part in n.split(".")):
                imports.append((str(module.relative_to(PIPE)), names))
    assert [i for i in imports if i[1][0].startswith("twisted")] == []


class Renamed(http.HTTPChannel):
    """An HTTPChannel of a Twisted that renamed a hook and some state."""


Renamed._send100Continue = None  # type: ignore[assignment]


def test_a_missing_internal_fails_loudly_naming_it() -> None:
    required = [
        Internal(Renamed, "_send100Continue", True, "_channel: no 100 Continue"),
        Internal(Renamed, "_command", False, "_channel: the method"),
        Internal(Renamed, "_no_such_state", False, "_channel: something"),
    ]
    assert [i.name for i in missing(required)] == [
        "_send100Continue",
        "_no_such_state",
    ]
    with pytest.raises(TwistedMismatch) as failed:
        check(required)
    message = str(failed.value)
    assert message.startswith(
        f"txpipe cannot run on Twisted {twisted.__version__}: it lacks\n"
    )
    assert (
        "  tests.test_compat.Renamed._send100Continue (overridden by"
        " _channel: no 100 Continue)\n" in message
    )
    assert "Renamed._no_such_state (used by _channel: something)" in message
    assert "_command" not in message


def test_a_twisted_older_than_the_range_is_named_in_one_line() -> None:
    """
    L{check_version} refuses a Twisted older than the oldest supported,
    naming the range and the installed release.
    """
    from pipe._compat.supported import OLDEST_TWISTED, check_version

    check_version(OLDEST_TWISTED)
    check_version((99, 1, 0))
    with pytest.raises(TwistedMismatch) as caught:
        check_version((21, 7, 0))
    assert str(caught.value) == (
        "txpipe needs Twisted 22.1.0 or newer (tested up to 26.10.0); "
        "this is Twisted 21.7.0"
    )


def test_twistd_pipe_on_an_old_twisted_says_one_line() -> None:
    """
    C{twistd pipe} on a Twisted older than the range exits with status 1
    and one plain line on standard error, no traceback.  (The installed
    Twisted is made to report 21.7.0 before twistd starts.)
    """
    import subprocess
    import sys

    from .helpers import child_env

    program = (
        "import sys, twisted\n"
        "from incremental import Version\n"
        "twisted.version = Version('Twisted', 21, 7, 0)\n"
        "sys.argv = ['twistd', '--nodaemon', '--pidfile=', 'pipe']\n"
        "from twisted.scripts.twistd import run\n"
        "run()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        env=child_env(),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == b""
    assert done.stderr == (
        b"twistd pipe: txpipe needs Twisted 22.1.0 or newer (tested up to "
        b"26.10.0); this is Twisted 21.7.0\n"
    )


def test_every_override_of_twisted_is_listed() -> None:
    """
    Every method of Twisted's channel, request and chunked decoder that a
    txpipe subclass defines is listed: a public one in
    L{pipe._compat.internals.OVERRIDDEN} (with the Twisted release it copies, if it
    is a copy), a private hook in L{REQUIRED}.
    """
    from twisted.web import server

    from pipe._compat.legacy.parsing import StrictChannel
    from pipe._http.acknowledging import AcknowledgingChannel
    from pipe._http.channel import StreamingChannel
    from pipe._http.chunked import ChunkedDecoder
    from pipe._http.request import StreamingRequest
    from pipe._http.response import RespondingRequest
    from pipe._http.timers import TimedChannel
    from pipe._http.writes import WritingChannel

    ours = [
        (StrictChannel, http.HTTPChannel),
        (WritingChannel, http.HTTPChannel),
        (AcknowledgingChannel, http.HTTPChannel),
        (TimedChannel, http.HTTPChannel),
        (StreamingChannel, http.HTTPChannel),
        (RespondingRequest, server.Request),
        (StreamingRequest, server.Request),
        (ChunkedDecoder, _compat.ChunkedTransferDecoder),
    ]
    listed = {(o.owner, o.name) for o in _compat.OVERRIDDEN}
    listed |= {(i.owner, i.name) for i in REQUIRED if i.hook}
    unlisted = [
        f"{cls.__name__}.{name}"
        for cls, twisted_class in ours
        for name, value in vars(cls).items()
        if not name.startswith("__")
        and callable(value)
        and callable(getattr(twisted_class, name, None))
        and (twisted_class, name) not in listed
    ]
    assert unlisted == []
    copies = {o.name for o in _compat.OVERRIDDEN if o.copied_from}
    assert "writeHeaders" in copies


def test_each_listed_override_is_where_it_says() -> None:
    """
    Each class L{pipe._compat.internals.OVERRIDDEN} names as overriding a method does
    define it (a conditional one, on an older Twisted only, may not).
    """
    import importlib

    wrong = []
    for override in _compat.OVERRIDDEN:
        if "on Twisted <" in override.where:
            continue
        for module, name in re.findall(r"(_\w+\.\w+)\.(\w+)", override.where):
            cls = getattr(importlib.import_module(f"pipe.{module}"), name)
            if override.name not in vars(cls):
                wrong.append(f"{name}.{override.name}")
    assert wrong == []
