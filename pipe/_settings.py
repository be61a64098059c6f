# -*- test-case-name: tests.test_tap -*-
"""
The server's tunables, with their defaults, in one record.
"""

from __future__ import annotations

from typing import Tuple

import attr

__all__ = ["Settings"]


@attr.s(auto_attribs=True, frozen=True, kw_only=True)
class Settings:
    """
    Everything C{twistd pipe} lets an operator tune.  Durations are seconds;
    0 disables a timeout or limit where noted.

    @ivar max_receivers: the largest C{n} a pipe may ask for.
    @ivar wait_timeout: how long a party may wait for its pipe to start;
        a party may ask for less with C{?wait=SECONDS}.
    @ivar stall_timeout: a receiver that takes no bytes for this long while
        data waits for it is dropped (0: never).
    @ivar min_rate: bytes per second; a receiver slower than this over a
        stall window, while data waits for it, is dropped too (0: off).
    @ivar idle_timeout: a running transfer whose sender delivers nothing for
        this long (while not held back by the server) is aborted (0: never).
    @ivar header_timeout: a client must finish its request line and headers
        within this long (0: no limit).
    @ivar max_pipes: pipes waiting or running at once.
    @ivar max_connections_per_ip: parties waiting or transferring from one
        peer address (0: unlimited).
    @ivar drain_timeout: on shutdown, how long running transfers may go on.
    @ivar log_paths: log raw pipe paths instead of their digests.
    @ivar keys: the keys of C{--secret-file} (the first signs, all verify);
        empty: signing is off and anyone may join any pipe.
    @ivar require_signature: with keys, C{"all"} parties or only
        C{"send"}ers must present a signed URL.
    @ivar max_ttl: the longest a signed URL may still be valid for when it
        is presented (0: no limit).
    """

    max_receivers: int = 1000
    wait_timeout: float = 600.0
    stall_timeout: float = 60.0
    min_rate: int = 0
    idle_timeout: float = 300.0
    header_timeout: float = 30.0
    max_pipes: int = 10_000
    max_connections_per_ip: int = 0
    drain_timeout: float = 60.0
    log_paths: bool = False
    keys: Tuple[bytes, ...] = attr.ib(default=(), repr=False)
    require_signature: str = attr.ib(
        default="all", validator=attr.validators.in_(("all", "send"))
    )
    max_ttl: float = 86400.0
