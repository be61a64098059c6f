"""
Fixtures: a real pipe server listening on a loopback port.
"""

from __future__ import annotations

import socket
from typing import Any, Iterator, List, cast

import pytest
import pytest_twisted
from twisted.logger import ILogObserver, globalLogPublisher

from pipe.server import Settings, make_site

from .helpers import RunningServer


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


@pytest.fixture
def server(reactor: Any) -> Iterator[RunningServer]:
    site = make_site(reactor)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield RunningServer(site, port)
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def serve(reactor: Any) -> Iterator[Any]:
    """Start pipe servers with given settings on loopback ports."""
    ports: List[Any] = []

    def start(**settings: Any) -> RunningServer:
        site = make_site(reactor, Settings(**settings))
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        ports.append(port)
        return RunningServer(site, port)

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def events() -> Iterator[List[Any]]:
    """
    Every log event published while the test runs.
    """
    seen: List[Any] = []
    observer = cast(ILogObserver, seen.append)
    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port that something else listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()
