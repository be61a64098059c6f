"""
Packaging for txpipe (import package C{pipe}, twistd plugin C{pipe}).
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

_here = Path(__file__).parent
_version = re.search(
    r'^__version__ = "([^"]+)"$',
    (_here / "pipe" / "__init__.py").read_text(encoding="utf-8"),
    re.MULTILINE,
).group(1)

setup(
    name="txpipe",
    version=_version,
    description="Fan one HTTP upload out to N receivers (streaming Twisted server)",
    long_description=(_here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    # twisted.plugins is a namespace shared with Twisted: we ship only our
    # plugin module in it, never an __init__.py.
    packages=[*find_packages(include=["pipe", "pipe.*"]), "twisted.plugins"],
    package_data={"twisted.plugins": ["pipe_plugin.py"]},
    install_requires=[
        # Every lower bound is the oldest of what Ubuntu 22.04 LTS and
        # Debian 12 ship, so that a system's own packages satisfy it
        # (constraints-oldest.txt pins exactly these; docs/install.md).
        # No upper bound on Twisted: pip must never replace a site's newer
        # Twisted; CI tests the newest release on every run, and pipe._compat.internals
        # checks the internals txpipe relies on when the server starts.
        # [tls]: pyOpenSSL and service_identity, for ssl: listeners.
        "Twisted[tls]>=22.1.0",
        "zope.interface>=5.4.0",
        "attrs>=21.2.0",
        # --metrics-listen: the /metrics endpoint and its Twisted resource.
        "prometheus_client>=0.9.0",
        # pipe.client and txpipe send/recv.
        "treq>=22.1.0",
        "tqdm>=4.57.0",
        # --oidc-policy: verifying CI jobs' OIDC ID tokens (pipe._oidc).
        # 2.6.0 is Debian 12's python3-jwt; 2.10.0 matched iss partially
        # (GHSA-75c5-xw7c-p5pm).  [crypto]: RS256/ES256 (cryptography comes
        # with Twisted[tls] anyway).
        "PyJWT[crypto]>=2.6.0,!=2.10.0",
        # The policy file is TOML: tomllib from Python 3.11 on.  1.2.2 is
        # Ubuntu 22.04's python3-tomli.
        "tomli>=1.2.2; python_version < '3.11'",
    ],
    entry_points={"console_scripts": ["txpipe = pipe._cli.main:main"]},
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-twisted>=1.14",
            "hypothesis>=6.80",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
    ],
)
