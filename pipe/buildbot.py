# -*- test-case-name: tests.buildbot.test_service,tests.buildbot.test_steps -*-
"""
txpipe inside a Buildbot master: a service for C{c['services']}, a
renderable that signs pipe URLs with the key that service loaded, and the
steps that send and receive an artifact through it (or any txpipe server).

Buildbot is not a dependency of txpipe: this module needs it installed
(C{pip install buildbot}) and nothing else in L{pipe} imports it.  In
C{master.cfg}::

    from pipe.buildbot import PipeService, ReceiveArtifact, SendArtifact

    pipe = PipeService(args=["--listen", "tcp:8080", "--secret-file", "txpipe.key"])
    c["services"] = [pipe]

    # the steps: they add n (and a quorum, min) to the URL, then sign it
    # when they start; each receiver names itself after its worker
    url = util.Interpolate("http://ci.example:8080/api/v1/pipe/%(prop:artifact)s")
    send.addStep(SendArtifact("artifact.bin", url, n=3, min=2, signed_by=pipe))
    receive.addStep(ReceiveArtifact("artifact.bin", url, n=3, min=2, signed_by=pipe))

    # or, in a step of your own: a signed, single-use URL, minted when the
    # step starts
    signed = pipe.signed_url(util.Interpolate(...), "receive", ttl=900)

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
    from buildbot.process import buildstep, logobserver  # type: ignore[import]
    from buildbot.process.properties import Property  # type: ignore[import]
    from buildbot.process.results import FAILURE, SUCCESS  # type: ignore[import]
    from buildbot.util.service import BuildbotService  # type: ignore[import]
except ImportError as error:  # pragma: no cover (depends on the environment)
    raise ImportError(
        "pipe.buildbot runs txpipe inside a Buildbot master and needs Buildbot,"
        " which txpipe does not depend on: pip install buildbot"
        f" ({error})"
    ) from error

import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import attr
from twisted.application.service import IService
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from pipe.signing import Scope, sign_url
from pipe.tap import Options, makeService

__all__ = ["PipeService", "ReceiveArtifact", "SendArtifact"]

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

        A new server that cannot listen (at once, or before its endpoints
        answer) raises L{pipe.tap.ListenFailed}, and the master reports the
        reconfig as failed; no server runs then until a reconfig with
        working C{args}.  A listener that fails later still is logged as an
        error; it never ends the master's process (see L{pipe.tap}).
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
            # starts the child at once; otherwise the child starts with this
            # service (see startService).
            yield defer.maybeDeferred(self.addService, server)
            if self.running:
                yield server.listening()  # type: ignore[attr-defined]
        except BaseException:
            yield defer.maybeDeferred(self.removeService, server)
            server.parent = None
            raise
        self._running = _Running(wanted, server, tuple(options["keys"]))
        self.log.info(
            "txpipe service {name} set up: {args}", name=self.name, args=wanted
        )

    @defer.inlineCallbacks
    def startService(self) -> Generator[defer.Deferred[Any], Any, None]:
        """
        Start with the master: configure, start the server, and wait until
        it listens.  One that cannot listen fails the start with
        L{pipe.tap.ListenFailed} and is removed (the master reports it).
        """
        yield super().startService()
        if self._running is None:
            return
        try:
            yield self._running.server.listening()  # type: ignore[attr-defined]
        except BaseException:
            yield self._stop_server()
            raise

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


#: Seconds a URL the steps sign stays valid from the start of its step.
DEFAULT_TTL = 900.0

#: The request header a receiver names itself with (shown by the sender).
RECEIVER_HEADER = "Txpipe-Receiver"

#: A receiver's name unless the step gives one: its worker's.
_WORKER_NAME = Property("workername")

#: The sender's closing line on success (see L{pipe._transfer.messages}).
_DONE = re.compile(r"^\[INFO\] done: .*?\breceivers=(\d+)/(\d+)", re.M)


@implementer(IRenderable)
@attr.s(auto_attribs=True, frozen=True)
class _PipeURL:
    """
    A pipe URL with C{n} and C{min} set in its query, rendered when its step
    starts (before any signing, which covers them).

    @ivar url: the pipe URL, a string or a renderable.
    @ivar n: the number of receivers, or C{None} to leave the URL's.
    @ivar min: the quorum, or C{None} to leave the URL's.
    """

    url: Any
    n: Optional[int]
    min: Optional[int]

    @defer.inlineCallbacks
    def getRenderingFor(
        self, properties: Any
    ) -> Generator[defer.Deferred[Any], Any, str]:
        url = yield properties.render(self.url)
        return _with_query(url, n=self.n, min=self.min)


def _with_query(url: str, **values: Optional[int]) -> str:
    """
    C{url} with each parameter of C{values} that is not C{None} set (an
    earlier value replaced, the others kept in order).

        >>> _with_query("http://h/api/v1/pipe/a?wait=60", n=3, min=2)
        'http://h/api/v1/pipe/a?wait=60&n=3&min=2'
    """
    parts = urlsplit(url)
    wanted = {name: value for name, value in values.items() if value is not None}
    kept = [
        part
        for part in (parts.query.split("&") if parts.query else [])
        if part.partition("=")[0] not in wanted
    ]
    kept += [f"{name}={value}" for name, value in wanted.items()]
    return urlunsplit(parts._replace(query="&".join(kept)))


def _query_number(url: str, name: str, default: Optional[int]) -> Optional[int]:
    """
    The integer C{name} of C{url}'s query, or C{default} (also when it is
    not a number: the server refuses the URL then, and says why).
    """
    for key, value in parse_qsl(urlsplit(url).query):
        if key == name:
            return int(value) if value.isdigit() else default
    return default


class _ArtifactStep(buildstep.ShellMixin, buildstep.BuildStep):
    """
    What L{SendArtifact} and L{ReceiveArtifact} share: the URL, with C{n} and
    C{min} set and signed by a L{PipeService} when asked, rendered when the
    step starts; one curl on the worker.
    """

    renderables = ["url"]
    _scope: str

    def __init__(
        self,
        path: Any,
        url: Any,
        n: Optional[int] = None,
        min: Optional[int] = None,
        signed_by: Optional[PipeService] = None,
        ttl: float = DEFAULT_TTL,
        **kwargs: Any,
    ) -> None:
        kwargs = self.setupShellMixin(kwargs)
        super().__init__(**kwargs)
        for label, value in (("n", n), ("min", min)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                _buildbot_config.error(
                    f"txpipe: {type(self).__name__}'s {label} must be a whole"
                    f" number from 1, got {value!r}"
                )
        if n is not None and min is not None and min > n:
            _buildbot_config.error(
                f"txpipe: {type(self).__name__}'s min ({min}) is more than n ({n})"
            )
        self.path = path
        url = url if n is None and min is None else _PipeURL(url, n, min)
        if signed_by is not None:
            url = signed_by.signed_url(url, self._scope, ttl)
        self.url = url

    @defer.inlineCallbacks
    def _curl(self, *args: Any) -> Generator[defer.Deferred[Any], Any, Any]:
        """
        Run C{curl -sS ARGS... URL} on the worker; the finished command.
        """
        command = yield self.makeRemoteShellCommand(
            command=["curl", "-sS", *args, self.url]
        )
        yield self.runCommand(command)
        return command


class SendArtifact(_ArtifactStep):
    """
    Send the file C{path} on the worker to the pipe C{url} (C{curl -T}).

    The step succeeds only on txpipe's closing C{[INFO] done: ...
    receivers=R/N} line with every one of the C{n} receivers (or, with a
    quorum C{min}, at least C{min} of them, every one that joined having
    acknowledged every byte): curl's exit status says the upload went out,
    the line says the receivers have it.  The server's progress lines are
    the step's log.

    @param path: the file to send, relative to the build's directory
        (a string or a renderable).
    @param url: the pipe URL (C{http(s)://HOST/api/v1/pipe/PATH}), a string
        or a renderable; C{n} and C{min} are taken from it when not given.
    @param n: the number of receivers; set in the URL's query.
    @param min: the quorum (txpipe starts with this many receivers at its
        wait deadline); set in the URL's query, which a server without
        quorums ignores (it then waits for all C{n}).
    @param signed_by: a L{PipeService} with C{--secret-file}: the URL (with
        C{n} and C{min}) is signed for sending when the step starts, valid
        for C{ttl} seconds.  Without it the URL is used as given (unsigned,
        or signed elsewhere: leave C{n} and C{min} out then, the signature
        covers the URL's own).
    @param ttl: seconds a URL signed by C{signed_by} stays valid.
    @param kwargs: the options of a Buildbot shell step (C{workdir}, C{env},
        C{haltOnFailure}, C{timeout}...).
    """

    name = "send"
    _scope = "send"

    def __init__(self, path: Any, url: Any, **kwargs: Any) -> None:
        super().__init__(path, url, **kwargs)
        self._output = logobserver.BufferLogObserver()
        self.addLogObserver("stdio", self._output)

    @defer.inlineCallbacks
    def run(self) -> Generator[defer.Deferred[Any], Any, int]:
        # txpipe's lines reach the log as they come (-N), a refusal's
        # [ERROR] line too (--fail-with-body).
        command = yield self._curl("--fail-with-body", "-N", "-T", self.path)
        result, self.descriptionDone = _sent(
            self._output.getStdout(),
            _query_number(self.url, "n", 1) or 1,
            _query_number(self.url, "min", None),
            command.didFail(),
        )
        return result


def _sent(
    output: str, n: int, quorum: Optional[int], failed: bool = False
) -> Tuple[int, str]:
    """
    The outcome of a send from what txpipe wrote to the sender: success
    only when curl did not fail and the closing line is C{[INFO] done:
    ... receivers=R/N} with C{N} the URL's C{n} and C{R} all C{n}, or at
    least C{quorum} (a quorum start: every receiver that joined
    acknowledged every byte).

    @param output: the sender's standard output (txpipe's lines).
    @param n: the URL's C{n}.
    @param quorum: the URL's C{min}, or C{None}.
    @param failed: curl failed (an HTTP error, or the connection broke).
    @return: a Buildbot result and the step's summary.
    """
    # Only the closing line counts: a progress line cannot pass for it.
    lines = output.strip().splitlines()
    done = _DONE.match(lines[-1]) if lines else None
    if failed or done is None:
        return FAILURE, "not sent"
    joined, total = int(done.group(1)), int(done.group(2))
    summary = f"sent to {joined} of {total} receivers"
    if total != n or joined < (quorum or n):
        return FAILURE, summary
    return SUCCESS, summary


class ReceiveArtifact(_ArtifactStep):
    """
    Receive the pipe C{url} into the file C{path} on the worker (C{curl
    -o}), naming this receiver to the sender (the C{Txpipe-Receiver}
    header: the sender's progress and failure lines say which receiver).

    The step fails with curl: when the server refuses the URL (its
    C{[ERROR]} line is in the log), or the transfer breaks.  Check the
    file's digest in a step of its own (as C{docs/buildbot/master.cfg}
    does).

    @param path: the file to write, relative to the build's directory.
    @param url: as for L{SendArtifact}, and the same C{n} and C{min} (the
        server refuses a receiver whose C{min} differs from the sender's).
    @param receiver: this receiver's name for the sender's lines, at most
        64 printable characters (a string or a renderable); by default the
        worker's name; C{None} sends none.  (A server without names
        ignores the header.)
    @param kwargs: C{n}, C{min}, C{signed_by}, C{ttl} as for
        L{SendArtifact} (signed for receiving), and the options of a
        Buildbot shell step.
    """

    name = "receive"
    _scope = "receive"
    renderables = ["url", "receiver"]

    def __init__(
        self, path: Any, url: Any, receiver: Any = _WORKER_NAME, **kwargs: Any
    ) -> None:
        super().__init__(path, url, **kwargs)
        self.receiver = receiver

    @defer.inlineCallbacks
    def run(self) -> Generator[defer.Deferred[Any], Any, int]:
        named = (
            [] if not self.receiver else ["-H", f"{RECEIVER_HEADER}: {self.receiver}"]
        )
        # -f: a refusal's [ERROR] line must not become the file.
        command = yield self._curl("-f", *named, "-o", self.path)
        if command.didFail():
            self.descriptionDone = "not received"
            return FAILURE
        self.descriptionDone = "received"
        return SUCCESS
