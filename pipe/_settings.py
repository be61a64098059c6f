# -*- test-case-name: tests.test_tap -*-
"""
The server's tunables in one record, each defined once: its default, its
command-line option, its unit, its valid range and its help text live on
its field of L{Settings}.  C{twistd pipe}'s options (L{pipe.tap.Options})
are generated from them, and a test checks docs/usage.md's options table
against them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Tuple

import attr

from pipe._http.forwarded import Network, parse_networks

__all__ = ["Option", "Settings", "options"]


@attr.s(auto_attribs=True, frozen=True, kw_only=True)
class Option:
    """
    How one field of L{Settings} appears on the command line.

    @ivar name: the long option, without C{--}.
    @ivar help: one paragraph for C{--help}.
    @ivar metavar: what the value is (a unit), for C{--help} and the docs.
    @ivar coerce: turns the argument into the field's value (L{None}: a
        flag, which is C{True} when given).
    @ivar minimum: the least value allowed, if any.
    @ivar maximum: the greatest value allowed, if any.
    @ivar choices: the values allowed, if the value is one of a few words.
    @ivar field: the L{Settings} field (filled in by L{options}).
    @ivar default: its default (filled in by L{options}).
    """

    name: str
    help: str
    metavar: str = ""
    coerce: Optional[Callable[[str], Any]] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Tuple[str, ...] = ()
    field: str = ""
    default: Any = None

    def check(self, value: Any) -> Optional[str]:
        """
        Why C{value} is not allowed, or L{None} if it is.
        """
        if self.choices and value not in self.choices:
            return f"--{self.name} must be {' or '.join(self.choices)}"
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and not low <= value <= high:
            return f"--{self.name} must be from {_plain(low)} to {_plain(high)}"
        if low == 0 and value < 0:
            return f"--{self.name} must not be negative"
        if low is not None and value < low:
            return f"--{self.name} must be at least {_plain(low)}"
        return None


def _plain(number: float) -> str:
    """
    C{number} as a person writes it: C{1000000}, C{0.5}.
    """
    return str(int(number)) if float(number).is_integer() else str(number)


def _setting(default: Any, option: Option, **kwargs: Any) -> Any:
    return attr.ib(default=default, metadata={Option: option}, **kwargs)


def _seconds(name: str, default: float, help: str) -> Any:
    return _setting(
        default, Option(name=name, help=help, metavar="S", coerce=float, minimum=0)
    )


@attr.s(auto_attribs=True, frozen=True, kw_only=True)
class Settings:
    """
    Everything C{twistd pipe} lets an operator tune.  Durations are seconds;
    0 disables a timeout or limit where noted.  Each field's option says
    what it means (C{twistd pipe --help}, docs/usage.md).

    @ivar keys: the keys of C{--secret-file} (the first signs, all verify);
        empty: signing is off and anyone may join any pipe.  Not an option
        of its own: L{pipe.tap.Options} reads the file.
    @ivar oidc_policy: the L{pipe._oidc.policy.Policy} of C{--oidc-policy}
        (L{None}: OIDC tokens are not taken).  Not an option of its own:
        L{pipe.tap.Options} reads the file.
    """

    max_receivers: int = _setting(
        1000,
        Option(
            name="max-receivers",
            help="Largest number of receivers (n) one pipe may ask for.",
            metavar="N",
            coerce=int,
            minimum=1,
            maximum=1_000_000,
        ),
    )
    wait_timeout: float = _seconds(
        "wait-timeout",
        600.0,
        "Seconds a party may wait for its pipe to start (0: no limit). A party "
        "may ask for less with ?wait=SECONDS.",
    )
    stall_timeout: float = _seconds(
        "stall-timeout",
        60.0,
        "Seconds a receiver may take no bytes while data waits for it before "
        "it is dropped (0: never).",
    )
    min_rate: int = _setting(
        0,
        Option(
            name="min-rate",
            help="Bytes per second: a receiver slower than this over a stall "
            "window, while data waits for it, is dropped too (0: off).",
            metavar="BYTES_PER_S",
            coerce=int,
            minimum=0,
        ),
    )
    idle_timeout: float = _seconds(
        "idle-timeout",
        300.0,
        "Seconds a running transfer's sender may send nothing (while the "
        "server is not holding it back) before the transfer is aborted "
        "(0: never).",
    )
    header_timeout: float = _seconds(
        "header-timeout",
        30.0,
        "Seconds a client has to send its request line and headers (0: no limit).",
    )
    max_pipes: int = _setting(
        10_000,
        Option(
            name="max-pipes",
            help="Pipes waiting or running at once; more get 503.",
            metavar="N",
            coerce=int,
            minimum=1,
        ),
    )
    max_connections_per_ip: int = _setting(
        0,
        Option(
            name="max-connections-per-ip",
            help="Parties waiting or transferring from one client address; more "
            "get 503 (0: unlimited). Behind a proxy, the client is the one the "
            "PROXY protocol (a haproxy: listener) or a trusted proxy's "
            "X-Forwarded-For (--trusted-proxies) names; else the proxy.",
            metavar="N",
            coerce=int,
            minimum=0,
        ),
    )
    trusted_proxies: Tuple[Network, ...] = _setting(
        (),
        Option(
            name="trusted-proxies",
            help="Comma-separated addresses and networks (127.0.0.1,10.0.0.0/8) "
            "of the proxies whose X-Forwarded-For header names the client: the "
            "right-most hop that is not one of them. Others' header is ignored. "
            "Default: none (the peer is the client).",
            metavar="NETWORKS",
            coerce=parse_networks,
        ),
    )
    drain_timeout: float = _seconds(
        "drain-timeout",
        60.0,
        "On shutdown, seconds running transfers may go on before they are aborted.",
    )
    log_paths: bool = _setting(
        False,
        Option(
            name="log-paths",
            help="Log raw pipe paths. By default logs carry a short digest of "
            "each path: anyone who can read the logs could otherwise join a pipe.",
        ),
    )
    keys: Tuple[bytes, ...] = attr.ib(default=(), repr=False)
    oidc_policy: Any = attr.ib(default=None, repr=False)
    require_signature: str = _setting(
        "all",
        Option(
            name="require-signature",
            help="With --secret-file: which parties must present a signed URL, "
            "all or send (receivers may then join unsigned).",
            metavar="all|send",
            coerce=str,
            choices=("all", "send"),
        ),
        validator=attr.validators.in_(("all", "send")),
    )
    max_ttl: float = _seconds(
        "max-ttl",
        86400.0,
        "With --secret-file: refuse a signed URL that stays valid for longer "
        "than this many seconds from when it is presented (0: no limit), so "
        "that a leaked key cannot mint URLs that live for years.",
    )


def options() -> Iterator[Option]:
    """
    The command-line option of each field of L{Settings} that has one, in
    the order of the fields, with its field name and default.
    """
    for field in attr.fields(Settings):
        option = field.metadata.get(Option)
        if option is not None:
            yield attr.evolve(option, field=field.name, default=field.default)
