# -*- test-case-name: tests.buildbot.test_service -*-
"""
txpipe inside a Buildbot master: a service for C{c['services']} and a
renderable that signs pipe URLs with the key that service loaded.

Buildbot is not a dependency of txpipe: this module needs it installed
(C{pip install buildbot}) and nothing else in L{pipe} imports it.  In
C{master.cfg}::

    from pipe.buildbot import PipeService

    pipe = PipeService(args=["--listen", "tcp:8080", "--secret-file", "txpipe.key"])
    c["services"] = [pipe]

    # in a step: a signed, single-use URL, minted when the step starts
    url = pipe.signed_url(util.Interpolate(...), "receive", ttl=900)

C{args} are the options of C{twistd pipe} (see L{pipe.tap.Options}); the
service is L{pipe.tap.makeService} run on the master's reactor, so it starts
and stops with the master, and a stop drains running transfers as
C{twistd pipe} does.  A reconfig (C{buildbot reconfig}) with the same
C{args} leaves the running server alone; changed C{args} drain and stop it
and start a new one.  The secret file is read when the server starts: after
rotating keys, restart the master or change C{args}.
"""

from __future__ import annotations

from typing import Any, Generator, Optional, Sequence, Tuple

try:
    from buildbot import config as _buildbot_config  # type: ignore[import]
    from buildbot.interfaces import IRenderable  # type: ignore[import]
    from buildbot.util.service import BuildbotService  # type: ignore[import]
except ImportError as error:  # pragma: no cover (depends on the environment)
    raise ImportError(
        "pipe.buildbot runs txpipe inside a Buildbot master and needs Buildbot,"
        " which txpipe does not depend on: pip install buildbot"
        f" ({error})"
    ) from error

import attr
from twisted.application.service import IService
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from pipe.signing import Scope, sign_url
from pipe.tap import Options, makeService

__all__ = ["PipeService"]

#: The name of the service when C{master.cfg} gives none.
DEFAULT_NAME = "txpipe"


def parse_args(args: Sequence[str]) -> Options:
    """
    C{args} parsed as the command line of C{twistd pipe}.

    @raise usage.UsageError: an option is unknown or its value is invalid,
        or the secret file cannot be used.
    """
    options = Options()
    try:
        options.parseOptions(list(args))
    except SystemExit as error:
        # Options exits on an unusable secret file, so that twistd fails
        # for its supervisor; in a master it is one more option error.
        raise usage.UsageError(str(error.code)) from None
    return options


@attr.s(auto_attribs=True, frozen=True)
class _Running:
    """
    The server a L{PipeService} runs, with what it was made from.

    @ivar args: its C{twistd pipe} arguments.
    @ivar server: the service L{pipe.tap.makeService} built from them.
    @ivar keys: its signing keys (empty without C{--secret-file}).
    """

    args: Tuple[str, ...]
    server: IService
    keys: Tuple[bytes, ...]


class PipeService(BuildbotService):
    """
    The txpipe server as a Buildbot service.

    Who calls what: the master's service manager constructs it while loading
    C{master.cfg} (L{checkConfig} runs then, and a bad option is a
    configuration error of the master), starts it with the master (the
    first L{reconfigService}), calls L{reconfigService} again on every
    reconfig whose arguments differ from the running ones, and stops it with
    the master (the server drains: waiting parties get 503 and running
    transfers get C{--drain-timeout} seconds).
    """

    log = Logger()

    name = DEFAULT_NAME

    def __init__(self, args: Sequence[str] = (), name: str = DEFAULT_NAME) -> None:
        # A tuple, so that a list and a tuple of the same arguments compare
        # equal on reconfig; a string is left for checkConfig to refuse.
        wanted = args if isinstance(args, str) else tuple(args)
        super().__init__(args=wanted, name=name)
        self._wanted = wanted
        self._running: Optional[_Running] = None

    @property
    def keys(self) -> Tuple[bytes, ...]:
        """
        The signing keys of the running server: empty when it runs without
        C{--secret-file}, or does not run.
        """
        return () if self._running is None else self._running.keys

    def checkConfig(self, args: Sequence[str] = ()) -> None:
        """
        Refuse C{args} that C{twistd pipe} would refuse, as a configuration
        error of the master (so C{buildbot checkconfig} reports it, and a
        reconfig with it keeps the running configuration).
        """
        if isinstance(args, str):
            _buildbot_config.error(
                f"txpipe: args must be a list of arguments, not the string {args!r}"
            )
            return
        try:
            parse_args(args)
        except usage.UsageError as error:
            _buildbot_config.error(f"txpipe: {error}")

    def reconfigServiceWithSibling(self, sibling: PipeService) -> defer.Deferred[None]:
        """
        Reconfigure to the arguments of C{sibling}, this service's entry in
        the new C{master.cfg}.

        Buildbot's own version compares C{sibling} with the arguments this
        instance was I{constructed} with, so after a change from A to B, a
        change back to A would be skipped; L{reconfigService} compares with
        the arguments the server runs with instead.
        """
        self.configured = True
        return self.reconfigService(args=sibling._wanted)

    @defer.inlineCallbacks
    def reconfigService(
        self, args: Sequence[str] = ()
    ) -> Generator[defer.Deferred[Any], Any, None]:
        """
        Run the server with C{args}: nothing to do if it already runs with
        them; otherwise drain and stop the running one, then start a new one
        on the master's reactor.

        A new server that cannot listen raises L{pipe.tap.ListenFailed}, and
        the master reports the reconfig (or its start) as failed; no server
        runs then until a reconfig with working C{args}.
        """
        wanted = tuple(args)
        if self._running is not None and self._running.args == wanted:
            return
        options = parse_args(wanted)
        yield self._stop_server()
        server = makeService(options, self.master.reactor)
        server.parent = self
        try:
            # When this service runs (a reconfig), Buildbot's addService
            # starts the child at once, and raises if it cannot listen;
            # otherwise the child starts with this service.
            yield defer.maybeDeferred(self.addService, server)
        except BaseException:
            yield defer.maybeDeferred(self.removeService, server)
            server.parent = None
            raise
        self._running = _Running(wanted, server, tuple(options["keys"]))
        self.log.info(
            "txpipe service {name} set up: {args}", name=self.name, args=wanted
        )

    @defer.inlineCallbacks
    def _stop_server(self) -> Generator[defer.Deferred[Any], Any, None]:
        """
        Stop the running server, if any, and wait for its drain.
        """
        running, self._running = self._running, None
        if running is not None:
            # removeService stops a running child and returns its stop.
            yield defer.maybeDeferred(self.removeService, running.server)
            running.server.parent = None

    def signed_url(self, url: Any, scope: str, ttl: float) -> _SignedURL:
        """
        A renderable for steps and properties: C{url} (a string or a
        renderable such as C{util.Interpolate}) signed for C{scope}
        (C{"send"} or C{"receive"}) with the first key of this service's
        running server, valid for C{ttl} seconds from the moment it is
        rendered (when its step starts).

        In step logs and summaries, the signature shows as
        C{<txpipe signature>}.
        """
        return _SignedURL(service=self.name, url=url, scope=Scope(scope).value, ttl=ttl)


@implementer(IRenderable)
@attr.s(auto_attribs=True, frozen=True)
class _SignedURL:
    """
    A pipe URL signed when it is rendered, by the running L{PipeService}
    named C{service} (see L{PipeService.signed_url}).

    @ivar service: the name of the L{PipeService} whose keys sign.
    @ivar url: the pipe URL to sign, a string or a renderable.
    @ivar scope: C{"send"} or C{"receive"}.
    @ivar ttl: seconds the signed URL stays valid after rendering.
    """

    service: str
    url: Any
    scope: str
    ttl: float

    @defer.inlineCallbacks
    def getRenderingFor(
        self, properties: Any
    ) -> Generator[defer.Deferred[Any], Any, str]:
        """
        Render C{url}, and sign it with the running service's first key at
        the master reactor's current time.

        @raise RuntimeError: no such L{PipeService} runs on this master, or
            it runs without C{--secret-file}.
        """
        url = yield properties.render(self.url)
        master = properties.master
        running = _running_service(master, self.service)
        if running is None or not running.keys:
            raise RuntimeError(
                f"cannot sign a txpipe URL: no PipeService named {self.service!r}"
                " with --secret-file runs on this master"
            )
        signed = sign_url(
            url, running.keys[0], self.scope, self.ttl, now=master.reactor.seconds()
        )
        # Keep the signature out of step logs and summaries.
        properties.useSecret(signed.rpartition("sig=")[2], "txpipe signature")
        return signed


def _running_service(master: Any, name: str) -> Optional[PipeService]:
    """
    The L{PipeService} called C{name} among C{master}'s C{c['services']}.
    """
    manager = master.namedServices.get("services") if master is not None else None
    found = manager.namedServices.get(name) if manager is not None else None
    return found if isinstance(found, PipeService) else None
