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
    # Twisted 26.4, the oldest Twisted allowed, needs 3.9.12 or later.
    python_requires=">=3.9.12",
    # twisted.plugins is a namespace shared with Twisted: we ship only our
    # plugin module in it, never an __init__.py.
    packages=[*find_packages(include=["pipe", "pipe.*"]), "twisted.plugins"],
    package_data={"twisted.plugins": ["pipe_plugin.py"]},
    install_requires=[
        # The streaming request factory (pipe/_request.py) relies on
        # HTTPChannel internals; this is the range the test suite proves.
        # [tls]: pyOpenSSL and service_identity, for ssl: listeners.
        "Twisted[tls]>=26.4.0,<27",
        "zope.interface>=5",
        "attrs>=22.2",
        # --metrics-listen: the /metrics endpoint and its Twisted resource.
        "prometheus_client>=0.17",
        # pipe.client and txpipe send/recv.
        "treq>=23.11",
        "tqdm>=4.60",
    ],
    entry_points={"console_scripts": ["txpipe = pipe._cli:main"]},
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
