"""
Waiting for a state, never for a time: in the reactor (L{wait_for},
L{wait_for_status}) and, for tests that run outside it, blocking
(L{wait_until}, L{answers}).
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any, Callable, Dict

from twisted.internet import defer, task


def wait_for(
    reactor: Any,
    condition: Callable[[], bool],
    timeout: float = 15.0,
    what: str = "condition",
) -> defer.Deferred[None]:
    """
    Poll C{condition} every 5 ms until it holds; fail after C{timeout}
    seconds.  This waits for a state, it does not sleep for a time.
    """
    deadline = reactor.seconds() + timeout

    @defer.inlineCallbacks
    def poll() -> Any:
        while not condition():
            if reactor.seconds() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            yield task.deferLater(reactor, 0.005, lambda: None)

    return poll()


async def server_status(reactor: Any, port: int) -> Dict[str, Any]:
    """
    The server's C{/api/v1/status} document.
    """
    import treq

    response = await treq.get(f"http://127.0.0.1:{port}/api/v1/status", reactor=reactor)
    document: Dict[str, Any] = await response.json()
    return document


async def wait_for_status(
    reactor: Any,
    port: int,
    condition: Callable[[Dict[str, Any]], bool],
    timeout: float = 15.0,
    what: str = "status",
) -> Dict[str, Any]:
    """
    Poll the server's status every 5 ms until C{condition} holds for it;
    fail after C{timeout} seconds.  Returns the document that satisfied it.
    """
    deadline = reactor.seconds() + timeout
    while True:
        document = await server_status(reactor, port)
        if condition(document):
            return document
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {document}")
        await task.deferLater(reactor, 0.005, lambda: None)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """
    Outside the reactor: poll C{check} every 50 ms until it holds; fail
    after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def answers(port: int, path: str = "/healthz") -> bool:
    """
    Whether a server on this loopback port answers C{path} with C{200}
    (blocking).
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
