# -*- test-case-name: tests.test_tap -*-
"""
C{twistd pipe}: options and service.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage

from . import __version__
from .server import make_site

__all__ = ["Options", "makeService"]

DEFAULT_LISTEN = "tcp:8080"


class Options(usage.Options):
    """
    The command line of C{twistd pipe}.
    """

    synopsis = "[--listen ENDPOINT]... [--max-receivers N]"
    longdesc = (
        "Fan one HTTP upload out to N receivers. Send with PUT or POST to "
        "/api/v1/pipe/<path>?n=N, receive with GET on the same URL."
    )

    optParameters = [
        [
            "max-receivers",
            None,
            1000,
            "Largest number of receivers (n) one pipe may ask for.",
            int,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        self["listen"].append(endpoint)

    opt_listen.__doc__ = (
        "Listen on ENDPOINT, a Twisted server endpoint string: tcp:8080, "
        "tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=KEY:certKey=CERT, "
        "unix:/run/pipe.sock, systemd:domain=INET:index=0. Repeatable; "
        "default: tcp:8080."
    )

    def opt_version(self) -> None:
        """
        Print the txpipe version and exit.
        """
        print(f"txpipe {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if not 1 <= self["max-receivers"] <= 1_000_000:
            raise usage.UsageError("--max-receivers must be from 1 to 1000000")


class _Listener(Service):
    """
    Listen on one endpoint while running; log the bound address.
    """

    log = Logger()

    def __init__(self, reactor: Any, description: str, factory: Any) -> None:
        self._reactor = reactor
        self._description = description
        self._factory = factory
        self._port: Optional[IListeningPort] = None
        self._starting: Optional[Deferred[Any]] = None

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(self._reactor, self._description)
        self._starting = endpoint.listen(self._factory)
        self._starting.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self._port = port
        self.log.info(
            "txpipe {version} listening on {address}",
            version=__version__,
            address=port.getHost(),
        )

    def _failed(self, reason: Any) -> None:
        self.log.failure(
            "cannot listen on {endpoint}", reason, endpoint=self._description
        )
        self._reactor.stop()

    def stopService(self) -> Optional[Deferred[None]]:  # type: ignore[override]
        super().stopService()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()  # type: ignore[return-value]
        return None


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    Build the C{twistd pipe} service: one listener per C{--listen}.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    site = make_site(reactor, max_receivers=options["max-receivers"])
    service = MultiService()
    for description in options["listen"]:
        _Listener(reactor, description, site).setServiceParent(service)
    return service


def _listen_options(argv: List[str]) -> Options:  # used by tests
    options = Options()
    options.parseOptions(argv)
    return options
