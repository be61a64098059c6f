"""
L{pipe.buildbot.PipeService} in Buildbot's own service manager, in this
process: it starts and stops with the master, a reconfig with the same
arguments leaves the listener alone, changed arguments replace it, bad
arguments are configuration errors, and the URLs it signs work on the
server it runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, List, cast

import pytest

from . import require_buildbot

require_buildbot()

import pytest_twisted  # noqa: E402
from buildbot.config import ConfigErrors  # type: ignore[import]  # noqa: E402
from buildbot.process.properties import (  # type: ignore[import]  # noqa: E402
    Interpolate,
    Properties,
)
from buildbot.util.service import (  # type: ignore[import]  # noqa: E402
    BuildbotServiceManager,
    MasterService,
)
from twisted.internet import defer  # noqa: E402
from twisted.logger import ILogObserver, globalLogPublisher  # noqa: E402

from pipe.buildbot import PipeService  # noqa: E402

from ..helpers import DONE, curl, payload, sha256_of  # noqa: E402

LISTEN = "tcp:0:interface=127.0.0.1"


class Master(MasterService):
    """
    The part of a Buildbot master that C{c['services']} lives in: the real
    service manager, the reactor, and a database that only numbers objects.
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        self.db = SimpleNamespace(
            state=SimpleNamespace(getObjectId=lambda name, kind: defer.succeed(1))
        )
        self.manager = BuildbotServiceManager()
        self.manager.setServiceParent(self)

    def reconfig(self, *services: Any) -> defer.Deferred[Any]:
        """
        What C{buildbot reconfig} does to C{c['services']}.
        """
        return cast(
            "defer.Deferred[Any]",
            self.manager.reconfigServiceWithBuildbotConfig(
                SimpleNamespace(services=list(services))
            ),
        )


@pytest.fixture
def listening() -> Iterator[List[int]]:
    """
    The ports txpipe listeners report, in order.
    """
    ports: List[int] = []

    def observe(event: Any) -> None:
        if event.get("log_format", "").startswith("txpipe {version} listening on"):
            ports.append(event["port"])

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    yield ports
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def master(reactor: Any) -> Iterator[Master]:
    master = Master(reactor)
    yield master
    if master.running:
        pytest_twisted.blockon(master.stopService())


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "txpipe.key"
    path.write_bytes(os.urandom(32).hex().encode() + b"\n")
    path.chmod(0o600)
    return path


async def serving(master: Master, listening: List[int]) -> int:
    """
    Start C{master} with a L{PipeService} on C{LISTEN}; the port it got.
    """
    await master.startService()
    await master.reconfig(PipeService(args=["--listen", LISTEN]))
    [port] = listening
    return port


async def answers(reactor: Any, port: int) -> bool:
    """
    Whether a txpipe server answers its status page on C{port}.
    """
    result = await curl(
        reactor, "-o", "/dev/null", f"http://127.0.0.1:{port}/api/v1/status"
    ).ended
    return result.code == 0


@pytest_twisted.ensureDeferred
async def test_starts_and_stops_with_the_master(
    reactor: Any, master: Master, listening: List[int]
) -> None:
    await master.reconfig(PipeService(args=["--listen", LISTEN]))
    assert listening == [], "listened before the master started"
    await master.startService()
    [port] = listening
    assert await answers(reactor, port)

    await master.stopService()
    assert not await answers(reactor, port)


@pytest_twisted.ensureDeferred
async def test_reconfig_with_the_same_args_keeps_the_listener(
    reactor: Any, master: Master, listening: List[int]
) -> None:
    port = await serving(master, listening)
    await master.reconfig(PipeService(args=["--listen", LISTEN]))
    await master.reconfig(PipeService(args=("--listen", LISTEN)))
    assert listening == [port]
    assert await answers(reactor, port)


@pytest_twisted.ensureDeferred
async def test_reconfig_with_changed_args_replaces_the_server(
    reactor: Any, master: Master, listening: List[int]
) -> None:

    async def replaced(old: int, args: List[str]) -> int:
        """Reconfigure with C{args}: the old server is gone, a new one answers."""
        await master.reconfig(PipeService(args=args))
        new = listening[-1]
        assert not await answers(reactor, old)
        assert await answers(reactor, new)
        return new

    first = await serving(master, listening)
    changed = await replaced(first, ["--listen", LISTEN, "--max-pipes", "5"])
    # And back (Buildbot alone would compare with the first arguments).
    back = await replaced(changed, ["--listen", LISTEN])

    # Removed from master.cfg: stopped.
    await master.reconfig()
    assert not await answers(reactor, back)


@pytest_twisted.ensureDeferred
async def test_a_failed_listen_fails_the_reconfig_and_leaves_no_server(
    reactor: Any, master: Master, listening: List[int]
) -> None:
    from twisted.internet.protocol import Factory, Protocol

    from pipe.tap import ListenFailed

    other = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    taken = f"tcp:{other.getHost().port}:interface=127.0.0.1"
    port = await serving(master, listening)
    try:
        with pytest.raises(ListenFailed, match="cannot listen on tcp:"):
            await master.reconfig(
                PipeService(args=["--listen", LISTEN, "--listen", taken])
            )
    finally:
        await other.stopListening()
    assert not await answers(reactor, port)
    assert list(master.manager.namedServices["txpipe"]) == []

    # A working configuration brings it back.
    await master.reconfig(PipeService(args=["--listen", LISTEN]))
    assert await answers(reactor, listening[-1])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--no-such-option"], "option --no-such-option not recognized"),
        (["--max-pipes", "0"], "max-pipes"),
        (["--secret-file", "/nonexistent/key"], "cannot read secret file"),
        ("--listen tcp:8080", "must be a list of arguments"),
    ],
)
def test_bad_args_are_configuration_errors(args: Any, message: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        PipeService(args=args)
    assert any(message in error for error in caught.value.errors), caught.value.errors


def test_an_open_secret_file_is_a_configuration_error(secret_file: Path) -> None:
    secret_file.chmod(0o644)
    with pytest.raises(ConfigErrors, match="chmod 600"):
        PipeService(args=["--secret-file", str(secret_file)])


def properties_of(master: Master) -> Any:
    properties = Properties()
    properties.master = master
    return properties


@pytest_twisted.ensureDeferred
async def test_signed_urls_work_on_the_server_the_service_runs(
    reactor: Any,
    master: Master,
    listening: List[int],
    secret_file: Path,
    tmp_path: Path,
) -> None:
    """
    A transfer with the send and receive URLs the service signs (the URL
    itself a renderable, as in master.cfg) reaches both receivers; the
    signature is registered as a secret, so step logs show a placeholder.
    """
    service = PipeService(args=["--listen", LISTEN, "--secret-file", str(secret_file)])
    await master.startService()
    await master.reconfig(service)
    [port] = listening
    url = Interpolate(f"http://127.0.0.1:{port}/api/v1/pipe/%(prop:build)s?n=2")
    properties = properties_of(master)
    properties.setProperty("build", "b-1", "test")
    receive = await properties.render(service.signed_url(url, "receive", ttl=60))
    send = await properties.render(service.signed_url(url, "send", ttl=60))
    assert "scope=receive" in receive and "scope=send" in send
    signature = send.rpartition("sig=")[2]
    assert properties.cleanupTextFromSecrets(f"curl '{send}'") == (
        f"curl '{send.replace(signature, '<txpipe signature>')}'"
    )

    data = payload(tmp_path, 1024 * 1024)
    receivers = [curl(reactor, "-f", receive) for _ in range(2)]
    sent = await curl(reactor, "-f", "-T", str(data), send, keep_text=True).ended
    match = DONE.search(sent.text)
    assert match and match.groups() == (b"1048576", b"2", b"2"), sent
    for receiver in receivers:
        result = await receiver.ended
        assert result.code == 0 and result.digest == sha256_of(data), result


@pytest_twisted.ensureDeferred
async def test_signing_needs_a_running_service_with_keys(
    reactor: Any, master: Master
) -> None:
    await master.startService()
    unsigned = PipeService(args=["--listen", LISTEN], name="plain")
    await master.reconfig(unsigned)
    url = "http://127.0.0.1:1/api/v1/pipe/x?n=1"
    properties = properties_of(master)
    with pytest.raises(RuntimeError, match="no PipeService named 'plain' with"):
        await properties.render(unsigned.signed_url(url, "send", ttl=60))
    with pytest.raises(RuntimeError, match="no PipeService named 'other'"):
        await properties.render(PipeService(name="other").signed_url(url, "send", 60))


def test_public_names() -> None:
    import pipe.buildbot

    assert set(pipe.buildbot.__all__) == {
        "PipeService",
        "ReceiveArtifact",
        "SendArtifact",
    }


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_at_master_start_fails_the_start_not_the_process(
    reactor: Any, master: Master
) -> None:
    """
    At the master's start, a txpipe port in use fails the service's start
    with L{pipe.tap.ListenFailed} (Buildbot reports it); the reactor, and
    so the master's process, runs on.
    """
    from twisted.internet.defer import FirstError
    from twisted.internet.protocol import Factory, Protocol

    from pipe.tap import ListenFailed

    other = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    taken = f"tcp:{other.getHost().port}:interface=127.0.0.1"
    try:
        await master.reconfig(PipeService(args=["--listen", taken]))
        # Buildbot wraps a child's failure in FirstError, once per level.
        with pytest.raises(FirstError) as caught:
            await master.startService()
    finally:
        await other.stopListening()
    reason: Any = caught.value
    while isinstance(reason, FirstError):
        reason = reason.subFailure.value
    assert isinstance(reason, ListenFailed)
    assert str(reason).startswith(f"cannot listen on {taken}: ")
    assert reactor.running
    assert list(master.manager.namedServices["txpipe"]) == []


@pytest_twisted.ensureDeferred
async def test_a_listener_failing_late_fails_the_reconfig_not_the_process(
    reactor: Any,
    master: Master,
    listening: List[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    An endpoint that fails only after the reactor has turned (none of
    Twisted's do; a plugin's may): the reconfig fails with
    L{pipe.tap.ListenFailed}, and the master's reactor runs on.
    """
    import pipe.tap
    from pipe.tap import ListenFailed

    class LateFailure:
        def listen(self, factory: Any) -> defer.Deferred[Any]:
            failing: defer.Deferred[Any] = defer.Deferred()
            reactor.callLater(0, failing.errback, OSError("gone"))
            return failing

    port = await serving(master, listening)
    real = pipe.tap.listen_endpoint
    monkeypatch.setattr(
        pipe.tap,
        "listen_endpoint",
        lambda r, d: LateFailure() if d.startswith("late:") else real(r, d),
    )
    with pytest.raises(ListenFailed, match="cannot listen on late:1: gone"):
        await master.reconfig(
            PipeService(args=["--listen", LISTEN, "--listen", "late:1"])
        )
    assert reactor.running
    assert not await answers(reactor, port)
    assert list(master.manager.namedServices["txpipe"]) == []
