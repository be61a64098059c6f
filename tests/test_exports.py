"""
The public surface of the C{pipe} package is small and pinned here.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from zope.interface.verify import verifyClass, verifyObject

import pipe
import pipe.resource
import pipe.server
import pipe.signing
import pipe.tap
from pipe._http.channel import _ReadGate
from pipe._http.request import _UploadProducer
from pipe._transfer.fanout import Branch


def test_public_names() -> None:
    assert set(pipe.__all__) == {"__version__"}
    assert set(pipe.server.__all__) == {"make_site", "PipeSite", "Settings"}
    assert set(pipe.tap.__all__) == {
        "ListenFailed",
        "Options",
        "makeService",
        "pipe_service",
    }
    assert set(pipe.signing.__all__) == {
        "KeyFileError",
        "MIN_KEY_LENGTH",
        "Scope",
        "canonical",
        "load_keys",
        "sign_url",
        "signature",
    }
    assert set(pipe.resource.__all__) == {
        "PipeResource",
        "RootResource",
        "PIPE_PREFIX",
        "MAX_PATH_LENGTH",
    }


def test_import_has_no_side_effects() -> None:
    """
    Importing the package and its public modules installs no reactor.
    """
    code = (
        "import sys, pipe, pipe.server, pipe.resource, pipe.tap, pipe.signing;"
        "print('twisted.internet.reactor' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_producers_provide_ipushproducer() -> None:
    assert verifyClass(IPushProducer, Branch)
    assert verifyClass(IPushProducer, _UploadProducer)
    assert verifyObject(IPushProducer, _ReadGate(StringTransport()))
