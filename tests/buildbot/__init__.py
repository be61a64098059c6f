"""
txpipe inside a real Buildbot master (C{tox -e buildbot}).

These tests need Buildbot, which txpipe does not depend on: each module
calls L{require_buildbot} first, so that it is skipped where Buildbot cannot
be imported (the normal suite), and fails instead when the environment
variable C{TXPIPE_REQUIRE_BUILDBOT} is C{1} (CI, where a skip would hide a
broken install).
"""

from __future__ import annotations

import importlib
import os

import pytest

#: What the tests import: the master, its web server (the REST API the
#: end-to-end test forces and watches builds through) and the worker.
BUILDBOT_MODULES = ("buildbot", "buildbot_www", "buildbot_worker")


def require_buildbot() -> None:
    """
    Skip the calling test module when a module of L{BUILDBOT_MODULES} cannot
    be imported, or raise its C{ImportError} under
    C{TXPIPE_REQUIRE_BUILDBOT=1}.
    """
    for name in BUILDBOT_MODULES:
        if os.environ.get("TXPIPE_REQUIRE_BUILDBOT") == "1":
            importlib.import_module(name)
        else:
            pytest.importorskip(
                name, reason=f"{name} is not installed (tox -e buildbot)"
            )
