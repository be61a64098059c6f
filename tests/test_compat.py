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
from pipe._compat import legacy
from pipe._compat.internals import (
    TWISTED_NAMES,
    Internal,
    TwistedMismatch,
    Use,
    check,
    missing,
)

#: Every name of Twisted's txpipe relies on, older releases' included.
REQUIRED = TWISTED_NAMES + legacy.NAMES

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
    is declared in L{TWISTED_NAMES} or L{legacy.NAMES}, so that L{check}
    covers it.
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
        Internal(Renamed, "_send100Continue", Use.HOOK, "_channel: no 100 Continue"),
        Internal(Renamed, "_command", Use.STATE, "_channel: the method"),
        Internal(Renamed, "_no_such_state", Use.STATE, "_channel: something"),
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
        "  tests.test_compat.Renamed._send100Continue (hooked by"
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
    txpipe class defines is in the one table of names txpipe relies on
    (with the Twisted release it copies, if it is a copy).
    """
    from twisted.web import server

    from pipe._compat.header_values import StrictHeaderValues
    from pipe._compat.legacy.parsing import StrictParsing
    from pipe._http.acknowledging import Acknowledgements
    from pipe._http.channel import StreamingChannel
    from pipe._http.chunked import ChunkedDecoder
    from pipe._http.request import StreamingRequest
    from pipe._http.response import RespondingRequest
    from pipe._http.timers import Timers
    from pipe._http.writes import WritePath

    ours = [
        (StrictParsing, http.HTTPChannel),
        (StrictHeaderValues, http.HTTPChannel),
        (WritePath, http.HTTPChannel),
        (Acknowledgements, http.HTTPChannel),
        (Timers, http.HTTPChannel),
        *((cls, http.HTTPChannel) for cls in StreamingChannel.__mro__[:2]),
        (RespondingRequest, server.Request),
        (StreamingRequest, server.Request),
        (ChunkedDecoder, _compat.ChunkedTransferDecoder),
    ]
    listed = {(i.owner, i.name) for i in REQUIRED if i.overridden}
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
    copies = {i.name for i in TWISTED_NAMES if i.copied_from}
    assert "writeHeaders" in copies


def test_each_listed_override_is_where_it_says() -> None:
    """
    Each class the table names as overriding a method does define it (a
    conditional one, on an older Twisted only, may not).
    """
    import importlib

    wrong = []
    for internal in REQUIRED:
        if internal.use is not Use.OVERRIDE or "on Twisted <" in internal.why:
            continue
        for module, name in re.findall(r"(_\w+\.\w+)\.(\w+)", internal.why):
            cls = getattr(importlib.import_module(f"pipe.{module}"), name)
            # (On an older Twisted the channel is a subclass of the same
            # name with the legacy parsing in front: look behind it too.)
            if not any(
                internal.name in vars(c) for c in cls.__mro__ if c.__name__ == name
            ):
                wrong.append(f"{name}.{internal.name}")
    assert wrong == []


def test_old_twisted_support_is_one_removable_folder(tmp_path: Path) -> None:
    """
    Deleting C{pipe/_compat/legacy/} leaves a package that runs on Twisted
    24.7.0 and newer, with no trace of the folder in its channel, and that
    says in one line that it needs 24.7.0 on an older one.
    """
    import shutil
    import subprocess
    import sys

    from .helpers import child_env

    copy = tmp_path / "pipe"
    shutil.copytree(PIPE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(copy / "_compat" / "legacy")
    program = (
        "from pipe._compat.supported import OLDEST_TWISTED, twisted_version\n"
        "print(OLDEST_TWISTED)\n"
        "if twisted_version() >= (24, 7, 0):\n"
        "    import pipe.tap\n"
        "    from pipe._http.channel import StreamingChannel as C\n"
        "    print([c.__module__ for c in C.__mro__ if 'pipe' in c.__module__])\n"
        "else:\n"
        "    from pipe._compat.supported import check_version\n"
        "    check_version()\n"
    )
    env = child_env()
    env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        capture_output=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "(24, 7, 0)"
    from pipe._compat.header_values import LAX_HEADER_VALUES
    from pipe._compat.supported import twisted_version

    if twisted_version() >= (24, 7, 0):
        assert done.returncode == 0, done.stderr
        assert lines[1] == str(
            # (the class made with the header-value checks in front, where
            # this Twisted takes values 26.10 refuses)
            ["pipe._http.channel", "pipe._compat.header_values"] * LAX_HEADER_VALUES
            + [
                "pipe._http.channel",
                "pipe._http.timers",
                "pipe._http.acknowledging",
                "pipe._http.writes",
            ]
        )
    else:
        assert done.returncode == 1
        assert b"txpipe needs Twisted 24.7.0 or newer" in done.stderr
