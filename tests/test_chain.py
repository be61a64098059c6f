"""
Chaining pipes (docs/scaling.md, "Across regions"): the relay script of the
documentation, run by bash with real curl processes, between two pipes of a
real listening server.  What it must guarantee: the bytes arrive intact
through the chain, and when the first pipe fails, the second pipe's
receivers see a failure, never a clean end of a truncated stream.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer

from .helpers import RunningServer, curl, payload, sha256_of, spawn, wait_for

DOCS = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"


def relay_script() -> str:
    """The relay script, exactly as docs/scaling.md gives it."""
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"```sh\n(# relay\.sh.*?)```", text, re.S)
    assert match, "docs/scaling.md lost its relay script"
    return match.group(1)


def relay(reactor: Any, tmp_path: Path, first: str, second: str) -> Any:
    script = tmp_path / "relay.sh"
    script.write_text(relay_script())
    return spawn(reactor, ["/bin/sh", str(script), first, second], cwd=tmp_path)


@pytest_twisted.ensureDeferred
async def test_relay_carries_every_byte(
    reactor: Any, server: RunningServer, tmp_path: Path
) -> None:
    data = payload(tmp_path, 8 * 1024 * 1024)
    home, remote = server.url("home", "n=2"), server.url("remote", "n=2")
    local = curl(reactor, home)
    far = [curl(reactor, remote), curl(reactor, remote)]
    chain = relay(reactor, tmp_path, home, remote)
    await wait_for(reactor, lambda: server.parties("home") == (False, 2))
    sender = curl(reactor, "-fsS", "-T", str(data), home, keep_text=True)
    results = await defer.gatherResults([local.ended, *(r.ended for r in far)])
    assert [r.code for r in results] == [0, 0, 0]
    assert {r.digest for r in results} == {sha256_of(data)}
    assert (await sender.ended).code == 0
    assert (await chain.ended).code == 0
    assert len(server.rendezvous) == 0


@pytest_twisted.ensureDeferred
async def test_a_failed_first_pipe_fails_the_second(
    reactor: Any, server: RunningServer, tmp_path: Path
) -> None:
    """
    The first pipe's sender dies mid-upload: the relay must not end the
    second pipe's upload cleanly, so its receivers fail.
    """
    data = payload(tmp_path, 48 * 1024 * 1024)
    home, remote = server.url("home2", "n=1"), server.url("remote2", "n=2")
    far = [curl(reactor, remote), curl(reactor, remote)]
    chain = relay(reactor, tmp_path, home, remote)
    await wait_for(reactor, lambda: server.parties("home2") == (False, 1))
    sender = curl(reactor, "--limit-rate", "4M", "-T", str(data), home)
    await wait_for(reactor, lambda: server.parties("remote2") == (True, 2))
    await wait_for(
        reactor,
        lambda: server.site.registry.live_bytes()[1] > 4 * 1024 * 1024,
        what="bytes through the chain",
    )
    sender.kill()
    results = await defer.gatherResults([r.ended for r in far])
    assert all(r.code != 0 for r in results), results
    assert all(r.size < data.stat().st_size for r in results)
    assert (await chain.ended).code != 0
    await wait_for(reactor, lambda: len(server.rendezvous) == 0, what="cleanup")
