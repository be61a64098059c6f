"""
Say loudly which Pythons of the tox matrix are missing (C{tox -e
interpreters}, run last by plain C{tox}): tox skips their environments with
one quiet C{SKIP} line, and a green run would hide that they were never
tested.  Exit status 0 either way (C{.ci/run} makes tox itself fail on a
missing interpreter).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import Optional

VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


def found(version: str) -> Optional[str]:
    """
    The full version of the C{pythonX.Y} on PATH, if it runs (a pyenv shim
    for a version that is not selected is on PATH, but fails).
    """
    if shutil.which(f"python{version}") is None:
        return None
    try:
        ran = subprocess.run(
            [f"python{version}", "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return ran.stdout.strip() if ran.returncode == 0 else None


def main() -> int:
    missing = []
    for version in VERSIONS:
        name = f"py{version.replace('.', '')}"
        full = found(version)
        if full is None:
            missing.append(version)
            print(
                f"!!! {name}: python{version} does not run from PATH:"
                " NOT TESTED (tox skipped it)",
                flush=True,
            )
        else:
            print(f"    {name}: Python {full}", flush=True)
    if missing:
        print(
            "!!! To test every Python, put them all on PATH, e.g. with pyenv:"
            " pyenv global 3.13 3.12 3.11 3.10 3.9",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
