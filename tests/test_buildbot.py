"""
L{pipe.buildbot} is optional: txpipe does not depend on Buildbot, nothing
else in L{pipe} imports the module, and without Buildbot importing it says
what is missing.  (With Buildbot, C{tests/buildbot/} covers what it does.)
"""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )


def test_nothing_else_in_pipe_imports_it() -> None:
    """
    Every other module of the package, and the twistd plugin, import
    without loading C{pipe.buildbot} or Buildbot.
    """
    code = (
        "import importlib, pkgutil, sys, pipe\n"
        "names = [m.name for m in pkgutil.walk_packages(pipe.__path__, 'pipe.')]\n"
        "assert 'pipe._http.channel' in names, names\n"
        "for name in names:\n"
        "    if name not in ('pipe.buildbot', 'pipe.__main__'):\n"
        "        importlib.import_module(name)\n"
        "import twisted.plugins.pipe_plugin\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'buildbot'"
        " or m == 'pipe.buildbot'))\n"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_buildbot_the_import_error_says_what_to_install() -> None:
    result = run("import sys; sys.modules['buildbot'] = None; import pipe.buildbot")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: pipe.buildbot runs txpipe inside a Buildbot")
    assert "txpipe does not depend on" in last and "pip install buildbot" in last
