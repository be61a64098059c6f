"""
The image tests run only from C{tox -e container}, which sets
C{TXPIPE_CONTAINER_TESTS=1}; elsewhere they are skipped at once.  Without a
container runtime they are skipped too, unless C{TXPIPE_REQUIRE_CONTAINER=1}
(CI), where that is a failure.

C{TXPIPE_CONTAINER_BASE} names a base image to build from (for instance
C{python:3.12-slim-bookworm} where a registry is reachable); without it the
base is Debian with python3 and venv, made with debootstrap and cached in
C{TXPIPE_CONTAINER_CACHE}.  C{TXPIPE_CONTAINER_IMAGE} names an image built
already, to test instead of building one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator, List

import pytest

from ..helpers import container as _runtime
from ..helpers.container import Container, Runtime, RuntimeUnavailable, say

ENABLED = os.environ.get("TXPIPE_CONTAINER_TESTS") == "1"
REQUIRED = os.environ.get("TXPIPE_REQUIRE_CONTAINER") == "1"


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="image tests run from tox -e container")
    for item in items:
        if "needs_runtime" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_runtime: runs a container (tox -e container only)"
    )


@pytest.fixture(scope="session")
def runtime(pytestconfig: pytest.Config) -> Runtime:
    _runtime.reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    try:
        found = Runtime.find()
    except RuntimeUnavailable as reason:
        if REQUIRED:
            pytest.fail(
                f"TXPIPE_REQUIRE_CONTAINER=1 but no container runtime: {reason}"
            )
        pytest.skip(f"no container runtime: {reason}")
    return found


@pytest.fixture(scope="session")
def image(runtime: Runtime) -> Iterator[str]:
    """
    The image built from the repository's Dockerfile; its size is printed.
    """
    prebuilt = os.environ.get("TXPIPE_CONTAINER_IMAGE")
    if prebuilt:
        # An image built already (while working on the tests themselves).
        runtime.probe(prebuilt)
        yield prebuilt
        return
    cache = Path(
        os.environ.get("TXPIPE_CONTAINER_CACHE")
        or Path(tempfile.gettempdir()) / "txpipe-container-cache"
    )
    base = os.environ.get("TXPIPE_CONTAINER_BASE")
    try:
        if not base:
            base = runtime.debian_base(cache)
    except RuntimeUnavailable as reason:
        if REQUIRED:
            pytest.fail(f"TXPIPE_REQUIRE_CONTAINER=1 but {reason}")
        pytest.skip(str(reason))
    runtime.probe(base)
    tag = f"localhost/txpipe-test:{os.getpid()}"
    with tempfile.TemporaryDirectory() as work:
        runtime.build(base, tag, Path(work))
    try:
        info = runtime.inspect(tag)
        base_size = int(runtime.inspect(base)["Size"])
        size = int(info["Size"])
        say(
            f"image size: {size / 1e6:.1f} MB ({(size - base_size) / 1e6:.1f} MB"
            f" over the base's {base_size / 1e6:.1f} MB)"
        )
        yield tag
    finally:
        runtime.remove_image(tag)


@pytest.fixture
def containers(runtime: Runtime) -> Iterator[List[Container]]:
    """
    Containers a test started; each is removed (its output printed if the
    test failed) when the test ends.
    """
    started: List[Container] = []
    yield started
    for container in started:
        # Captured: pytest shows it when the test failed.
        print(f"--- output of {container.name}:\n{container.logs()}")
        container.remove()
