"""
The programs of docs/usage.md, run as a user runs them: the mixed site as a
Python script, the C{.tac} under C{twistd -n -y}, each with the installed
package, in a child process.  The code is read out of the page (between
its C{<!-- example: NAME -->} and C{<!-- end example -->} markers), so the
page and what is tested cannot drift apart; the one change made to it is
its listening port, for a free loopback one.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet import task

from .helpers import (
    DONE,
    TWISTD,
    TwistdServer,
    application_resources,
    child_env,
    curl,
    payload,
    sha256_of,
)

USAGE = Path(__file__).resolve().parent.parent / "docs" / "usage.md"

_EXAMPLE = re.compile(
    r"<!-- example: (?P<name>[\w.]+) -->\n```python\n(?P<code>.*?)```\n"
    r"<!-- end example -->",
    re.S,
)


def example(name: str) -> str:
    """
    The code of the example C{name} in docs/usage.md.
    """
    found = {m["name"]: m["code"] for m in _EXAMPLE.finditer(USAGE.read_text())}
    assert name in found, f"no example {name!r} in {USAGE}: {sorted(found)}"
    return found[name]


def on_a_free_port(code: str, listen: str, free: str) -> str:
    """
    C{code} listening on C{free} instead of C{listen}, which it must name
    exactly once.
    """
    assert code.count(listen) == 1, f"{listen!r} must appear once"
    return code.replace(listen, free)


def public(directory: Path) -> bytes:
    """
    The C{public} directory the examples serve, with one file.
    """
    (directory / "public").mkdir()
    text = b"static hello\n"
    (directory / "public" / "hello.txt").write_bytes(text)
    return text


async def waiting_pipes(reactor: Any, base: str, count: int) -> None:
    """
    Poll C{/ci/api/v1/status} every 5 ms until C{count} pipes wait; fail
    after 15 seconds.
    """
    deadline = reactor.seconds() + 15
    while True:
        response = await treq.get(f"{base}/ci/api/v1/status", reactor=reactor)
        status = await response.json()
        if status["pipes_waiting"] == count:
            return
        assert reactor.seconds() < deadline, f"timed out: {status}"
        await task.deferLater(reactor, 0.005, lambda: None)


async def transfer_and_drain(
    reactor: Any, server: TwistdServer, tmp_path: Path, with_form: bool
) -> None:
    """
    Against a running example: the static file, the form (if the example
    has one), a three-receiver transfer under C{/ci/}, then C{SIGTERM} with
    a receiver waiting: it gets C{503} and the process ends cleanly.
    """
    base = f"http://127.0.0.1:{await server.listening}"
    text = (tmp_path / "public" / "hello.txt").read_bytes()
    await application_resources(reactor, base, text, with_form)

    data = payload(tmp_path, 2 * 1024 * 1024 + 1)
    url = f"{base}/ci/api/v1/pipe/example/out.bin?n=3"
    receivers = [curl(reactor, "-fsS", url) for _ in range(3)]
    sender = await curl(reactor, "-fsS", "-T", str(data), url, keep_text=True).ended
    results = [await r.ended for r in receivers]
    assert sender.code == 0, sender
    assert DONE.search(sender.text), sender
    assert [(r.code, r.digest) for r in results] == [(0, sha256_of(data))] * 3

    late_url = f"{base}/ci/api/v1/pipe/example/late"
    waiting = curl(
        reactor,
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        late_url,
        keep_text=True,
    )
    await waiting_pipes(reactor, base, 1)
    server.stop()
    late = await waiting.ended
    assert late.text == b"503", late
    assert await server.ended == 0, bytes(server.output)


@pytest_twisted.ensureDeferred
async def test_the_mixed_site_example_runs(reactor: Any, tmp_path: Path) -> None:
    code = on_a_free_port(
        example("mixed_site.py"),
        "reactor.listenTCP(8080, site)",
        'reactor.listenTCP(0, site, interface="127.0.0.1")',
    )
    script = tmp_path / "mixed_site.py"
    script.write_text(code)
    public(tmp_path)
    server = TwistdServer()
    reactor.spawnProcess(
        server,
        sys.executable,
        [sys.executable, str(script)],
        env=child_env(),
        path=str(tmp_path),
    )
    await transfer_and_drain(reactor, server, tmp_path, with_form=True)


@pytest_twisted.ensureDeferred
async def test_the_tac_example_runs_under_twistd(reactor: Any, tmp_path: Path) -> None:
    code = on_a_free_port(
        example("ci.tac"), '"tcp:8080"', '"tcp:0:interface=127.0.0.1"'
    )
    tac = tmp_path / "ci.tac"
    tac.write_text(code)
    public(tmp_path)
    server = TwistdServer()
    argv = [*TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "-y", str(tac)]
    reactor.spawnProcess(
        server, sys.executable, argv, env=child_env(), path=str(tmp_path)
    )
    await transfer_and_drain(reactor, server, tmp_path, with_form=False)
    assert b"txpipe " in server.output and b"hourly check" in server.output
