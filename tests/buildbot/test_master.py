"""
The Buildbot recipe of docs/recipes.md, for real: C{docs/buildbot/master.cfg}
as it is shown there runs in a real Buildbot master (SQLite), with txpipe as
a service in the master's reactor and three real workers on 127.0.0.1.  One
forced build sends its artifact once, through signed single-use URLs, to
the three builds it triggers, one on each worker; every worker's copy is
checked byte for byte, and the sender's curl saw every receiver acknowledge
every byte.

The master and the workers are C{twistd --nodaemon} child processes, and
the OS picks every port.  txpipe's socket and the web server's (the REST
API this test forces and watches builds through) are bound here on port 0
and handed to the master as systemd does (C{LISTEN_FDS}, named C{www} and
C{pipe}): master.cfg needs txpipe's URL before it starts, and nothing races
for a port.  Buildbot's PB port for the workers cannot be handed over that
way (Buildbot listens on it with C{strports.listen}, which knows no systemd
endpoint), so the master listens on C{tcp:0} and the workers are created
once its log says which port it got.  Run by C{tox -e buildbot}.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from . import require_buildbot

require_buildbot()

import pytest_twisted  # noqa: E402
import treq  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.error import ProcessExitedAlready  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from twisted.web.client import (  # noqa: E402
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
)
from twisted.web.http_headers import Headers  # noqa: E402

from ..helpers import DONE, TWISTD, child_env, sha256_of, spawn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MASTER_CFG = ROOT / "docs" / "buildbot" / "master.cfg"

#: The workers master.cfg names, each receiving one build.
WORKERS = ("w1", "w2", "w3")
#: The size of the artifact master.cfg's build step makes.
ARTIFACT_SIZE = 8 * 1024 * 1024

#: The Buildbot and Buildbot worker command lines of this interpreter.
BUILDBOT = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'buildbot';"
    " from buildbot.scripts.runner import run; run()",
]
BUILDBOT_WORKER = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'buildbot-worker';"
    " from buildbot_worker.scripts.runner import run; run()",
]
#: C{twistd}, claiming the sockets it inherits as systemd's socket
#: activation would: C{LISTEN_PID} must be its own process ID, which only it
#: knows (and before Twisted's endpoints module reads it).
TWISTD_ACTIVATED = [
    sys.executable,
    "-c",
    "import os, sys; os.environ['LISTEN_PID'] = str(os.getpid());"
    " sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
]
TWISTD_ARGS = ["--nodaemon", "--no_save", "--pidfile=", "--python=buildbot.tac"]

#: The whole run: master and workers up, the builds done.
DEADLINE = 120.0


class Child(ProcessProtocol):
    """
    A long-running child process (a master or a worker) and its output.

    @ivar ended: fires with the exit code (or C{-signal}) when it ends.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.output = bytearray()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        self.ended.callback(code)

    def signal(self, name: str) -> None:
        if not self.ended.called and self.transport is not None:
            try:
                self.transport.signalProcess(name)
            except ProcessExitedAlready:
                pass


def listening_socket() -> socket.socket:
    """
    A socket listening on a port of 127.0.0.1 the OS picks, inheritable.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"({error})"
    return "\n".join(text.splitlines()[-lines:])


def processes_in(directory: Path) -> Dict[int, str]:
    """
    The processes whose working directory is in C{directory}: the master,
    the workers and the commands they run, all started by this test.
    """
    found: Dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cwd == str(directory) or cwd.startswith(str(directory) + os.sep):
            found[int(entry.name)] = command.decode(errors="replace")[:200]
    return found


class Site:
    """
    A master and its workers, as this test runs them.

    @ivar directory: where the master (C{master/}) and the workers
        (C{workers/NAME/}) live.
    @ivar api: the master's REST API, C{http://127.0.0.1:PORT/api/v2}.
    """

    def __init__(self, reactor: Any, directory: Path) -> None:
        self.reactor = reactor
        self.directory = directory
        self.master_dir = directory / "master"
        self.children: List[Child] = []
        self.passwords = {name: secrets.token_hex(16) for name in WORKERS}
        self.api = ""

    def worker_dir(self, name: str) -> Path:
        return self.directory / "workers" / name

    async def run(self, argv: List[str], cwd: Optional[Path] = None) -> None:
        """
        Run a command to completion; fail with its output if it fails.
        """
        result = await spawn(
            self.reactor, argv, keep_text=True, cwd=cwd, env=child_env()
        ).ended
        assert result.code == 0, (argv, result.text, result.stderr)

    async def create_master(self) -> None:
        """
        Create the master: its database, master.cfg, and its secrets (the
        workers' passwords and txpipe's key).
        """
        await self.run([*BUILDBOT, "create-master", "--quiet", str(self.master_dir)])
        shutil.copyfile(MASTER_CFG, self.master_dir / "master.cfg")
        vault = self.master_dir / "secrets"
        vault.mkdir(mode=0o700)
        for name, value in [*self.passwords.items(), ("txpipe", secrets.token_hex(32))]:
            path = vault / name
            path.write_text(value + "\n")
            path.chmod(0o600)

    def start_master(self, sockets: Dict[str, socket.socket]) -> None:
        """
        Start the master, its web server and txpipe on C{sockets} (by name:
        C{www}, C{pipe}), its PB port on one the OS picks.
        """
        names = list(sockets)
        env = child_env()
        env.update(
            LISTEN_FDS=str(len(names)),
            LISTEN_FDNAMES=":".join(names),
            BUILDBOT_PB_LISTEN="tcp:0:interface=127.0.0.1",
            BUILDBOT_WWW_LISTEN="systemd:domain=INET:name=www",
            TXPIPE_LISTEN="systemd:domain=INET:name=pipe",
            TXPIPE_URL=f"http://127.0.0.1:{sockets['pipe'].getsockname()[1]}",
        )
        fds: Dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        for index, name in enumerate(names):
            fds[3 + index] = sockets[name].fileno()
        self.spawn("master", TWISTD_ACTIVATED, self.master_dir, env, fds)

    async def pb_port(self, deadline: float) -> int:
        """
        The port the master's PB server listens on, from its log.
        """
        log = self.master_dir / "twistd.log"
        while True:
            self.check_alive()
            text = log.read_text(errors="replace") if log.exists() else ""
            match = re.search(r"PBServerFactory starting on (\d+)", text)
            if match:
                return int(match.group(1))
            if self.reactor.seconds() > deadline:
                raise AssertionError(
                    f"the master never listened for workers\n{self.logs()}"
                )
            await task.deferLater(self.reactor, 0.05, lambda: None)

    async def start_workers(self, pb_port: int) -> None:
        """
        Create the workers for the master's PB port, and start them.
        """
        (self.directory / "workers").mkdir()
        await defer.gatherResults(
            [
                defer.ensureDeferred(
                    self.run(
                        [
                            *BUILDBOT_WORKER,
                            "create-worker",
                            "--quiet",
                            str(self.worker_dir(name)),
                            f"127.0.0.1:{pb_port}",
                            name,
                            self.passwords[name],
                        ]
                    )
                )
                for name in WORKERS
            ],
            consumeErrors=True,
        )
        for name in WORKERS:
            self.spawn(name, TWISTD, self.worker_dir(name), child_env())

    def spawn(
        self,
        name: str,
        twistd: List[str],
        cwd: Path,
        env: Dict[str, str],
        fds: Optional[Dict[int, Any]] = None,
    ) -> None:
        child = Child(name)
        argv = [*twistd, *TWISTD_ARGS]
        self.reactor.spawnProcess(
            child,
            argv[0],
            argv,
            env=env,
            path=str(cwd),
            childFDs=fds or {0: "w", 1: "r", 2: "r"},
        )
        self.children.append(child)

    def check_alive(self) -> None:
        for child in self.children:
            if child.ended.called:
                raise AssertionError(
                    f"{child.name} ended early: {bytes(child.output)!r}\n{self.logs()}"
                )

    async def stop(self) -> None:
        """
        Stop the workers and the master (SIGTERM, as C{buildbot stop}
        does), kill what has not ended after 30 seconds, then kill and
        report any process still working in the test's directory.
        """
        for child in self.children:
            child.signal("TERM")
        deadline = self.reactor.seconds() + 30
        while not all(c.ended.called for c in self.children):
            if self.reactor.seconds() > deadline:
                for child in self.children:
                    child.signal("KILL")
                deadline = float("inf")
            await task.deferLater(self.reactor, 0.05, lambda: None)
        leaked = processes_in(self.directory)
        for pid in leaked:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not leaked, f"processes left running: {leaked}"

    def logs(self) -> str:
        parts = [f"--- master/twistd.log\n{tail(self.master_dir / 'twistd.log')}"]
        for name in WORKERS:
            log = self.worker_dir(name) / "twistd.log"
            parts.append(f"--- {name}/twistd.log\n{tail(log, 20)}")
        return "\n".join(parts)

    async def request(
        self, path: str, method: bytes = b"GET", body: Optional[Any] = None
    ) -> Tuple[int, bytes]:
        """
        The status and body of C{path} of the REST API (a C{body} is sent
        as JSON).  Before the master serves, the connection waits in the
        listening socket's backlog.

        A plain L{Agent} (treq's would ask for gzip), without keep-alive:
        this test checks what Buildbot serves, not how a client decodes it.
        """
        agent = Agent(self.reactor, pool=HTTPConnectionPool(self.reactor, False))
        producer = None
        headers = Headers()
        if body is not None:
            producer = FileBodyProducer(io.BytesIO(json.dumps(body).encode()))
            headers.addRawHeader(b"Content-Type", b"application/json")
        url = (self.api + path).encode()
        requesting = agent.request(method, url, headers, producer)
        requesting.addTimeout(10, self.reactor)
        response = await requesting
        data: bytes = await treq.content(response)
        return response.code, data

    async def get(self, path: str) -> Any:
        """
        A JSON document of the REST API.
        """
        code, data = await self.request(path)
        assert code == 200, (path, code, data[:300])
        return json.loads(data)

    async def poll(self, path: str, done: Any, what: str, deadline: float) -> Any:
        """
        Poll C{path} every 50 ms until C{done} holds for its document;
        fail when a process ends or at C{deadline}.
        """
        while True:
            self.check_alive()
            document = await self.get(path)
            if done(document):
                return document
            if self.reactor.seconds() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}: {document}\n{self.logs()}"
                )
            await task.deferLater(self.reactor, 0.05, lambda: None)


@pytest.fixture
def site(reactor: Any, tmp_path: Path) -> Iterator[Site]:
    site = Site(reactor, tmp_path)
    try:
        yield site
    finally:
        pytest_twisted.blockon(defer.ensureDeferred(site.stop()))
        print(site.logs())


@pytest_twisted.ensureDeferred
async def test_one_build_sends_an_artifact_to_builds_on_three_workers(
    reactor: Any, site: Site
) -> None:
    deadline = reactor.seconds() + DEADLINE
    await site.create_master()
    sockets = {name: listening_socket() for name in ("www", "pipe")}
    try:
        site.api = f"http://127.0.0.1:{sockets['www'].getsockname()[1]}/api/v2"
        site.start_master(sockets)
    finally:
        # The master has its own copies: when it ends, so do the ports.
        for sock in sockets.values():
            sock.close()
    await site.start_workers(await site.pb_port(deadline))

    await site.poll(
        "/workers",
        lambda doc: (
            sorted(w["name"] for w in doc["workers"] if w["connected_to"])
            == list(WORKERS)
        ),
        "the three workers to connect",
        deadline,
    )
    builders = {
        b["builderid"]: b["name"] for b in (await site.get("/builders"))["builders"]
    }
    workers = {
        w["workerid"]: w["name"] for w in (await site.get("/workers"))["workers"]
    }
    [send_id] = [i for i, name in builders.items() if name == "send"]

    code, forced = await site.request(
        "/forceschedulers/force",
        b"POST",
        {
            "jsonrpc": "2.0",
            "method": "force",
            "id": 1,
            "params": {"builderid": send_id},
        },
    )
    assert code == 200 and b'"result"' in forced, forced

    def finished(doc: Dict[str, Any]) -> bool:
        builds = doc["builds"]
        # A failed build may keep the others from starting (or finishing).
        over = len(builds) == 1 + len(WORKERS) or any(b["results"] for b in builds)
        return over and all(b["complete"] for b in builds)

    document = await site.poll(
        "/builds",
        finished,
        "the sending build and the three receiving builds to finish",
        deadline,
    )
    ran = {builders[b["builderid"]]: b for b in document["builds"]}
    failed = {name: b["state_string"] for name, b in ran.items() if b["results"] != 0}
    assert not failed, f"{failed}\n{site.logs()}"
    assert set(ran) == {"send", *(f"receive-{name}" for name in WORKERS)}, ran
    for name in WORKERS:
        assert workers[ran[f"receive-{name}"]["workerid"]] == name

    send = ran["send"]
    code, raw = await site.request(
        f"/builds/{send['buildid']}/steps/send/logs/stdio/raw"
    )
    assert code == 200, raw
    log = raw.decode()
    done = DONE.search(raw)
    assert done and done.groups() == (b"%d" % ARTIFACT_SIZE, b"3", b"3"), log
    # The steps put n and the quorum in the URL they signed; the signature
    # is kept out of the log.
    assert re.search(r"\?n=3&min=2&expires=\d+&scope=send&sig=<txpipe signature>", log)
    for name in WORKERS:
        receiving = ran[f"receive-{name}"]
        code, raw = await site.request(
            f"/builds/{receiving['buildid']}/steps/receive/logs/stdio/raw"
        )
        assert code == 200, raw
        # Each receiver named itself after its worker.
        assert f"Txpipe-Receiver: {name}" in raw.decode(), raw
    assert "sig=<txpipe signature>" in log
    assert not re.search(r"sig=[A-Za-z0-9_-]{43}", log), log

    sender = workers[send["workerid"]]
    artifact = site.worker_dir(sender) / "send" / "build" / "artifact.bin"
    assert artifact.stat().st_size == ARTIFACT_SIZE
    expected = sha256_of(artifact)
    for name in WORKERS:
        copy = site.worker_dir(name) / f"receive-{name}" / "build" / "artifact.bin"
        assert sha256_of(copy) == expected, name


def test_the_recipe_shows_the_master_cfg_this_test_runs() -> None:
    recipes = (ROOT / "docs" / "recipes.md").read_text()
    include = f"```{{literalinclude}} {MASTER_CFG.relative_to(ROOT / 'docs')}\n"
    assert include in recipes
