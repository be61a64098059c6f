"""
System programs that an integration test drives (HAProxy, nginx,
Prometheus): found on the PATH or where Debian installs them, and skipped
when missing, unless CI asked for them.
"""

from __future__ import annotations

import os
import shutil
from typing import List, Optional, Sequence, Tuple

import pytest


def installed_or_skip(
    names: Sequence[str],
    also_in: Sequence[str],
    required_by: str,
    env: str,
    reason: str,
) -> Tuple[List[Optional[str]], pytest.MarkDecorator]:
    """
    Find each of C{names} on the C{PATH}, then in C{also_in}.

    @param required_by: the environment variable that makes a missing
        program an error (C{.ci/run} sets it), not a skip.
    @param env: the tox environment that runs these tests, for the error.
    @param reason: the skip's reason.
    @return: each program's path (L{None} where missing), and the
        C{pytestmark} that skips the module when one is missing.
    @raise RuntimeError: a program is missing and C{required_by} is set.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), *also_in])
    found = [shutil.which(name, path=search) for name in names]
    missing = not all(found)
    if missing and os.environ.get(required_by):
        raise RuntimeError(f"tox -e {env} needs {' and '.join(names)} on the PATH")
    return found, pytest.mark.skipif(missing, reason=reason)
