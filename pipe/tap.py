# -*- test-case-name: tests.test_tap -*-
"""
C{twistd pipe}: options and service; and the same service for an
application of one's own (a C{.tac} file), L{pipe_service}.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, succeed
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from pipe import __version__
from pipe._compat.supported import TwistedMismatch

try:
    from pipe.server import PipeSite, make_site
except TwistedMismatch as mismatch:
    # One plain line for whoever runs twistd, not a traceback.
    raise SystemExit(f"twistd pipe: {mismatch}") from None
from pipe._http.proxy_protocol import listen_endpoint
from pipe._settings import Settings
from pipe._settings import options as setting_options
from pipe.signing import KeyFileError, load_keys

__all__ = ["ListenFailed", "Options", "makeService", "pipe_service"]

DEFAULT_LISTEN = "tcp:8080"

_log = Logger(namespace="pipe.tap")

#: The listen backlog given to C{tcp}, C{tcp6}, C{ssl} and C{unix} listeners
#: whose description does not set one.  Twisted's default is 50: when a
#: build matrix's runners connect at once, a full accept queue drops their
#: handshakes and each dropped client waits a second or more to retry.
DEFAULT_BACKLOG = 1024
_BACKLOG_TYPES = {"tcp", "tcp6", "ssl", "unix"}


def with_backlog(description: str) -> str:
    """
    C{description} with C{backlog=DEFAULT_BACKLOG} added if its endpoint
    type takes a backlog and it sets none (also behind the PROXY-protocol
    prefix: C{haproxy:tcp:8081}).
    """
    inner = description
    while inner.lower().startswith("haproxy:"):
        inner = inner[len("haproxy:") :]
    kind = inner.split(":", 1)[0].lower()
    if kind in _BACKLOG_TYPES and "backlog=" not in description:
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description


class Options(usage.Options):
    """
    The command line of C{twistd pipe}.
    """

    synopsis = "[--listen ENDPOINT]... [options]"
    longdesc = (
        "Fan one HTTP upload out to N receivers. Send with PUT or POST to "
        "/api/v1/pipe/<path>?n=N, receive with GET on the same URL."
    )

    # Generated from the fields of Settings (see pipe._settings), plus the
    # options that are not settings of their own.
    optFlags = [
        [option.name, None, option.help]
        for option in setting_options()
        if option.coerce is None
    ]

    # An empty default (no trusted proxies) is shown as none by its help
    # text, not as "[default: ()]".
    optParameters = [
        [
            option.name,
            None,
            None if option.default == () else option.default,
            option.help,
            option.coerce,
        ]
        for option in setting_options()
        if option.coerce is not None
    ] + [
        [
            "secret-file",
            None,
            None,
            "Turn signed URLs on: FILE holds one key per line (the first signs, "
            "all verify). Only its owner may read it (0600/0400), or, if root "
            "owns it, also its group (0640/0440, as Kubernetes mounts Secrets); "
            "never anyone else. "
            "Mint URLs with: txpipe sign.",
        ],
        [
            "oidc-policy",
            None,
            None,
            "Take CI jobs' OIDC ID tokens (Authorization: Bearer): FILE is the "
            "TOML policy of trusted issuers and of the rules that allow claims "
            "a scope and a path (docs/usage.md). Alone or beside --secret-file "
            "(a valid signature or a valid token admits). SIGHUP re-reads it.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["metrics-listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        self["listen"].append(endpoint)

    opt_listen.__doc__ = (
        "Listen on ENDPOINT, a Twisted server endpoint string: tcp:8080, "
        "tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=KEY:certKey=CERT, "
        "unix:/run/pipe.sock, systemd:domain=INET:index=0, and behind HAProxy "
        "with send-proxy-v2: haproxy:tcp:8081 (the PROXY protocol names the "
        "client). Repeatable; "
        "default: tcp:8080. tcp, tcp6, ssl and unix listeners get "
        f"backlog={DEFAULT_BACKLOG} unless the description sets a backlog."
    )

    def opt_metrics_listen(self, endpoint: str) -> None:
        self["metrics-listen"].append(endpoint)

    opt_metrics_listen.__doc__ = (
        "Serve Prometheus metrics at /metrics on ENDPOINT (an endpoint string "
        "as for --listen, e.g. tcp:9100:interface=127.0.0.1). Repeatable; "
        "default: no metrics listener."
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
        for option in setting_options():
            if option.coerce is not None:
                problem = option.check(self[option.name])
                if problem is not None:
                    raise usage.UsageError(problem)
        self["keys"] = ()
        if self["secret-file"] is not None:
            try:
                self["keys"] = tuple(load_keys(self["secret-file"]))
            except KeyFileError as error:
                # Not a UsageError: twistd before Twisted 26.10 exits with
                # status 0 after one, and a server that refuses to start
                # must fail for its supervisor.
                raise SystemExit(f"twistd pipe: {error}") from None
        elif self["require-signature"] != "all":
            raise usage.UsageError("--require-signature needs --secret-file")
        self["oidc_policy"] = None
        if self["oidc-policy"] is not None:
            from pipe._oidc.policy import PolicyError, load_policy

            try:
                self["oidc_policy"] = load_policy(self["oidc-policy"])
            except PolicyError as error:
                raise SystemExit(f"twistd pipe: --oidc-policy {error}") from None

    def settings(self) -> Settings:
        """
        The parsed options as L{Settings}.
        """
        values: Dict[str, Any] = {
            option.field: (
                bool(self[option.name])
                if option.coerce is None
                else option.default
                if self[option.name] is None
                else self[option.name]
            )
            for option in setting_options()
        }
        return Settings(
            keys=self.get("keys", ()), oidc_policy=self.get("oidc_policy"), **values
        )


class _Drain(Service):
    """
    On stop (twistd's SIGTERM), end keep-alive (idle connections close at
    once), drain the registry, then close the remaining connections once their
    finished responses are flushed: the stop waits for both.
    """

    def __init__(self, site: PipeSite) -> None:
        self._site = site

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        super().stopService()
        return self._site.drain()


class ListenFailed(Exception):
    """
    A listener could not listen: the server must not run without it.
    """


class _Listener(Service):
    """
    Listen on one endpoint while running; log the bound address.

    When the process is the server's own (C{owns_process}: C{twistd pipe},
    C{txpipe serve}), a server that cannot listen must not look healthy to
    its supervisor: as with L{twisted.application.strports.service}, a
    listen that fails at once (a port in use, a missing certificate) raises
    L{ListenFailed} from the start of the service, so C{twistd} exits with
    status 1 before the reactor runs; one that fails later stops the reactor
    and makes the process exit with status 1.  Either way the reason is
    written to standard error.

    Inside a host application (a C{.tac}'s L{pipe_service}, Buildbot's
    C{PipeService}), the process is the host's: a failure, at once or late,
    is logged as an error and fails L{listening} with L{ListenFailed} for
    the host to report, and neither raises from the start of the service
    nor ends the process.

    Listening happens in L{privilegedStartService}, before C{twistd} drops
    privileges (ports below 1024).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        description: str,
        factory: Any,
        owns_process: bool = False,
    ) -> None:
        self._reactor = reactor
        self._description = description
        self._factory = factory
        self._owns_process = owns_process
        # What listening() answers: None while undecided, then the port's
        # address or the failure; and the Deferreds waiting for it.
        self._outcome: Optional[Any] = None
        self._waiting: List[Deferred[None]] = []
        self._port: Optional[IListeningPort] = None
        self._starting: Optional[Deferred[Any]] = None
        self._synchronous: List[Failure] = []
        self._listening_now = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._starting is None:
            self._listen()

    def _listen(self) -> None:
        endpoint = listen_endpoint(self._reactor, with_backlog(self._description))
        self._listening_now = True
        try:
            self._starting = endpoint.listen(self._factory)
            self._starting.addCallbacks(self._listening, self._failed)
        finally:
            self._listening_now = False
        if self._synchronous and self._owns_process:
            reason = self._synchronous[0]
            raise ListenFailed(
                f"cannot listen on {self._description}: {reason.getErrorMessage()}"
            )

    def listening(self) -> Deferred[None]:
        """
        A new Deferred that fires with C{None} once this listener listens,
        or fails with L{ListenFailed} once it cannot (at once or late).
        """
        if isinstance(self._outcome, Failure):
            return fail(self._outcome)
        if self._outcome is not None:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def _decided(self, outcome: Any) -> None:
        """
        Remember C{outcome} (the bound address, or a L{ListenFailed}
        failure) and fire the Deferreds of L{listening} with it.
        """
        self._outcome = outcome
        waiting, self._waiting = self._waiting, []
        for each in waiting:
            if isinstance(outcome, Failure):
                each.errback(outcome)
            else:
                each.callback(None)

    def _listening(self, port: IListeningPort) -> None:
        self._port = port
        host = port.getHost()
        self._decided(host)
        self.log.info(
            "txpipe {version} listening on {address}",
            version=__version__,
            address=host,
            port=getattr(host, "port", None),
        )

    def _failed(self, reason: Failure) -> None:
        message = f"cannot listen on {self._description}: {reason.getErrorMessage()}"
        self.log.error(
            "cannot listen on {endpoint}: {reason}",
            endpoint=self._description,
            reason=reason.getErrorMessage(),
        )
        self._decided(Failure(ListenFailed(message)))
        if not self._owns_process:
            # The host's process: the host reports it (see listening).
            return
        _to_stderr(f"twistd pipe: {message}")
        if self._listening_now:
            self._synchronous.append(reason)
            return
        # Too late to refuse to start: stop, and exit with a failure status.
        reactor = self._reactor
        reactor.addSystemEventTrigger("after", "shutdown", _exit_failed)
        reactor.callWhenRunning(_stop, reactor)

    def stopService(self) -> Optional[Deferred[None]]:  # type: ignore[override]
        super().stopService()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()  # type: ignore[return-value]
        return None


def _to_stderr(line: str) -> None:
    """
    Write C{line} to the process's real standard error (twistd may have
    redirected C{sys.stderr} into the log).
    """
    stream = sys.__stderr__
    if stream is not None:
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass


def _stop(reactor: Any) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def _exit_failed() -> None:
    """
    End the process with status 1 once the reactor has shut down (twistd
    has no way to return a status of its own).
    """
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(1)


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    Build the C{twistd pipe} service: one listener per C{--listen}, and a
    drain on stop (listeners close; waiting parties get 503; running
    transfers get C{--drain-timeout} seconds).

    Without C{reactor} (as C{twistd} calls it), the process is the
    server's: a listener that cannot listen ends it with status 1.  With a
    C{reactor} (a host such as Buildbot's C{PipeService}), a listener that
    cannot listen is logged and fails the service's C{listening()}, and the
    host's process runs on (see L{pipe_service}).
    """
    if reactor is None:
        # twistd calls makeService(options) without a reactor; by then it
        # has installed the one it runs, so importing it here (never at
        # module level) picks that one.
        from twisted.internet import reactor as _reactor

        reactor = _reactor
        # This process is the server: what exists once it runs lives as long
        # as the process, so keep the cyclic garbage collector from walking
        # it again and again (fewer, shorter pauses under small transfers).
        reactor.callWhenRunning(gc.freeze)
        # Only then is the process the server's own, to end if a listener
        # fails; a host (Buildbot) passes its reactor, and its process is
        # left alone (see _Listener).
        return _service(
            options, reactor, make_site(reactor, options.settings()), owns_process=True
        )
    return _service(options, reactor, make_site(reactor, options.settings()))


def pipe_service(
    args: Sequence[str] = (),
    reactor: Any = None,
    *,
    root: Optional[IResource] = None,
    prefix: Optional[bytes] = None,
) -> IService:
    """
    The service of C{twistd pipe ARGS...}, for an application of one's own
    (a C{.tac} file run by C{twistd -y}): add it to the application with
    C{setServiceParent}.  It listens on every C{--listen} endpoint (and
    C{--metrics-listen}), and its stop drains as C{twistd pipe}'s does
    (L{pipe.server.PipeSite.drain}): listeners close, waiting parties get
    503, running transfers get C{--drain-timeout} seconds, then the
    remaining connections close.

    With C{root} and C{prefix}, its site serves the application's own
    resource tree with the pipe tree under the prefix, on the same
    listeners (see L{pipe.server.make_site}).

    Unlike C{twistd pipe}, it leaves the process's garbage collector alone,
    and a listener that cannot listen (a port in use at start, or an
    endpoint that fails later) never ends the process, which is the
    application's: the failure is logged as an error, the rest of the
    application runs on, and the service's C{listening()} (a Deferred that
    fires once every listener listens) fails with L{ListenFailed} for the
    application to act on.

    @param args: the options of C{twistd pipe}, as on its command line
        (C{["--listen", "tcp:8080", "--max-receivers", "100"]}).
    @param reactor: the reactor; by default the one installed (import this
        module and call this from the C{.tac}, never at import time of a
        module that must not pick a reactor).
    @param root: the application's own root resource.
    @param prefix: the path segments the pipe tree is mounted under.
    @raise twisted.python.usage.UsageError: C{args} is not a valid
        C{twistd pipe} command line.
    @raise SystemExit: C{--secret-file} cannot be used (as C{twistd pipe}).
    @raise ValueError: only one of C{root} and C{prefix} is given, or the
        prefix is not a plain path.
    """
    options = Options()
    options.parseOptions(list(args))
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    site = make_site(reactor, options.settings(), root=root, prefix=prefix)
    return _service(options, reactor, site)


class _Server(MultiService):
    """
    The service L{makeService} and L{pipe_service} return: the drain and the
    listeners.
    """

    def listening(self) -> Deferred[None]:
        """
        A Deferred that fires once every listener listens, or fails with the
        first L{ListenFailed} (for a host to report: a listener that fails
        does not end the host's process, see L{_Listener}).
        """
        waiting = [
            service.listening() for service in self if isinstance(service, _Listener)
        ]
        gathered = gatherResults(waiting, consumeErrors=True)
        return gathered.addCallbacks(_nothing, _first_failure)


def _nothing(result: object) -> None:
    return None


def _first_failure(failure: Failure) -> Failure:
    """
    The failure inside L{gatherResults}'s C{FirstError}.
    """
    first = failure.value
    assert isinstance(first, FirstError)
    return first.subFailure


def _service(
    options: Options, reactor: Any, site: PipeSite, owns_process: bool = False
) -> _Server:
    """
    The listeners of C{options} for C{site}, its metrics listeners, and its
    drain on stop, as one service.

    @param owns_process: the process is the server's own (C{twistd pipe}):
        a listener that fails ends it with status 1 (see L{_Listener}).
    """
    settings = site.registry.settings
    if settings.keys:
        _log.info(
            "signed URLs required ({required}); {count} keys verify",
            required=settings.require_signature,
            count=len(settings.keys),
        )
    elif settings.oidc_policy is None:
        _log.info("signed URLs off: anyone who can reach the server may join a pipe")
    service = _Server()
    _Drain(site).setServiceParent(service)
    gate = site.registry.token_gate
    if gate is not None:
        from pipe._oidc.service import PolicyService

        policy = settings.oidc_policy
        _log.info(
            "OIDC tokens taken: {issuers} issuers, {rules} rules ({file})",
            issuers=len(policy.issuers),
            rules=len(policy.rules),
            file=policy.source,
        )
        PolicyService(gate.authority, policy.source, reactor).setServiceParent(service)
    for description in options["listen"]:
        _Listener(reactor, description, site, owns_process).setServiceParent(service)
    if options["metrics-listen"]:
        from pipe._metrics import metrics_site

        metrics = metrics_site(site.registry, reactor)
        for description in options["metrics-listen"]:
            _Listener(reactor, description, metrics, owns_process).setServiceParent(
                service
            )
    return service
