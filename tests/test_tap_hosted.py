"""
Tests for txpipe inside a host application (a C{.tac}'s
L{pipe.tap.pipe_service}, a host passing its reactor to
L{pipe.tap.makeService}): a listener that cannot listen, at once or late,
is reported to the host and never ends the host's process.  (Only
C{twistd pipe} and C{txpipe serve} exit with status 1: C{tests/test_tap.py}.)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, cast

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure

from pipe.tap import ListenFailed, Options, _Listener, makeService, pipe_service

from .helpers import (
    DONE,
    TWISTD,
    StopRecorder,
    child_env,
    curl,
    payload,
    sha256_of,
    wait_for,
)
from .helpers.twistd import TwistdServer


def test_a_hosted_listener_failing_late_is_logged_and_ends_nothing() -> None:
    """
    A listener of a host's service whose endpoint fails once the reactor
    runs logs the error and fails its C{listening()} with L{ListenFailed};
    it neither stops the reactor nor schedules the process's exit.
    """
    fake = StopRecorder()
    events: List[Dict[str, Any]] = []
    listener = _Listener(fake, "tcp:1", object())
    listener.log = Logger(observer=cast(ILogObserver, events.append))
    waiting = listener.listening()
    listener._failed(Failure(OSError("address in use")))
    assert fake.triggers == [] and fake.when_running == []
    failures: List[Failure] = []
    waiting.addErrback(failures.append)
    assert failures and failures[0].check(ListenFailed)
    assert str(failures[0].value) == "cannot listen on tcp:1: address in use"
    assert [event["log_level"].name for event in events] == ["error"]
    # Asked again, later: the same answer.
    later: List[Failure] = []
    listener.listening().addErrback(later.append)
    assert later and later[0].check(ListenFailed)


def test_a_service_built_with_the_hosts_reactor_is_hosted() -> None:
    """
    L{makeService} given a reactor (Buildbot's C{PipeService}) builds
    listeners that leave the process alone; without one (C{twistd pipe}),
    they own it: C{tests/test_tap.py}'s C{twistd} and C{txpipe serve} on a
    port in use exit with status 1.
    """
    options = Options()
    options.parseOptions(["--listen", "tcp:0", "--metrics-listen", "tcp:0"])
    hosted = makeService(options, reactor=Clock())
    listeners = [s for s in hosted if isinstance(s, _Listener)]  # type: ignore[attr-defined]
    assert [listener._owns_process for listener in listeners] == [False, False]


@pytest_twisted.ensureDeferred
async def test_pipe_service_on_a_port_in_use_reports_and_serves_on(
    reactor: Any, taken_port: int
) -> None:
    """
    A port in use at start: starting the service does not raise (the
    application's other services start), its other listener serves, and
    C{listening()} fails with L{ListenFailed} naming the endpoint.
    """
    taken = f"tcp:{taken_port}:interface=127.0.0.1"
    service = pipe_service(
        ["--listen", "tcp:0:interface=127.0.0.1", "--listen", taken], reactor
    )
    service.privilegedStartService()
    service.startService()
    try:
        with pytest.raises(ListenFailed, match=f"cannot listen on {taken}: "):
            await service.listening()  # type: ignore[attr-defined]
        free = next(s for s in service if isinstance(s, _Listener))  # type: ignore[attr-defined]
        await free.listening()
        assert free._port is not None
        assert reactor.running
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_pipe_service_listening_fires_once_every_listener_listens(
    reactor: Any,
) -> None:
    service = pipe_service(["--listen", "tcp:0:interface=127.0.0.1"], reactor)
    service.startService()
    try:
        assert await service.listening() is None  # type: ignore[attr-defined]
    finally:
        await service.stopService()


TAC = """
from twisted.application import service, strports
from twisted.web.server import Site
from twisted.web.static import Data

from pipe.tap import pipe_service

application = service.Application("host")
# The host's own service, which must outlive txpipe's failure.
strports.service(
    "tcp:0:interface=127.0.0.1", Site(Data(b"host", "text/plain"))
).setServiceParent(application)
pipe_service(
    ["--listen", "tcp:0:interface=127.0.0.1", "--listen", "TAKEN"]
).setServiceParent(application)
"""


@pytest_twisted.ensureDeferred
async def test_a_tac_whose_pipe_port_is_in_use_keeps_running(
    reactor: Any, tmp_path: Path, taken_port: int
) -> None:
    """
    C{twistd -y} of a C{.tac} whose txpipe service cannot listen on one of
    its ports: the failure is in the log, the process keeps running, the
    other listener serves a real transfer, and SIGTERM stops it cleanly.
    """
    tac = tmp_path / "host.tac"
    tac.write_text(TAC.replace("TAKEN", f"tcp:{taken_port}:interface=127.0.0.1"))
    server = TwistdServer()
    argv = [*TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "-y", str(tac)]
    reactor.spawnProcess(
        server, sys.executable, argv, env=child_env(), path=str(tmp_path)
    )
    port = await server.listening
    await wait_for(reactor, lambda: b"cannot listen on" in server.output)
    assert f"cannot listen on tcp:{taken_port}".encode() in server.output
    data = payload(tmp_path, 65536)
    url = f"http://127.0.0.1:{port}/api/v1/pipe/hosted?n=1"
    receiving = curl(reactor, url)
    sending = curl(reactor, "-T", str(data), url, keep_text=True)
    sent, received = await defer.gatherResults([sending.ended, receiving.ended])
    assert DONE.search(sent.text), sent
    assert received.digest == sha256_of(data)
    assert not server.ended.called
    assert await server.stop() == 0
