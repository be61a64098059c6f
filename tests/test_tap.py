"""
Tests for C{twistd pipe}: options, the service, and the installed plugin run
as a real C{twistd} process (memory and disk use measured from /proc).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
import pytest_twisted
from twisted.application.service import IService
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from pipe import __version__
from pipe._settings import Option, Settings
from pipe._settings import options as setting_options
from pipe.tap import (
    DEFAULT_BACKLOG,
    Options,
    _Listener,
    makeService,
    pipe_service,
    with_backlog,
)

from .helpers import (
    DONE,
    TWISTD,
    StopRecorder,
    child_env,
    curl,
    payload,
    sha256_of,
    spawn,
    start_twistd,
    twistd_pipe,
    wait_for,
)


def test_defaults() -> None:
    options = Options()
    options.parseOptions([])
    assert options["listen"] == ["tcp:8080"]
    assert options["max-receivers"] == 1000


def test_listen_is_repeatable_and_max_receivers_is_checked() -> None:
    options = Options()
    options.parseOptions(
        ["--listen", "tcp:0", "--listen", "unix:/tmp/x.sock", "--max-receivers", "5"]
    )
    assert options["listen"] == ["tcp:0", "unix:/tmp/x.sock"]
    assert options["max-receivers"] == 5
    for bad in (["--max-receivers", "0"], ["--max-receivers", "x"]):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(bad)


def test_help_documents_every_option() -> None:
    text = str(Options())
    for option in ("--listen", "--max-receivers", "--version"):
        assert option in text


def test_make_service_has_one_listener_per_endpoint() -> None:
    options = Options()
    options.parseOptions(["--listen", "tcp:0", "--listen", "tcp:0"])
    service = makeService(options, reactor=Clock())
    assert IService.providedBy(service)
    # A drain service, then one listener per endpoint.
    assert len(list(service)) == 3  # type: ignore[call-overload]


def test_pipe_service_is_twistd_pipe_from_its_command_line() -> None:
    """
    L{pipe_service} takes C{twistd pipe}'s arguments: the same drain and
    listeners, the settings parsed from them, the pipes at the root.
    """
    service = pipe_service(
        ["--listen", "tcp:0", "--listen", "tcp:0", "--max-receivers", "5"],
        reactor=Clock(),
    )
    assert IService.providedBy(service)
    drain, *listeners = list(service)  # type: ignore[call-overload]
    assert len(listeners) == 2
    site = drain._site
    assert site.registry.settings.max_receivers == 5
    assert site.resource is site.tree


def test_pipe_service_mounts_the_pipes_into_a_root() -> None:
    root = Resource()
    service = pipe_service(["--listen", "tcp:0"], Clock(), root=root, prefix=b"ci")
    drain, _ = list(service)  # type: ignore[call-overload]
    site = drain._site
    assert site.resource is root
    assert site.mount.pipe_prefix == b"/ci/api/v1/pipe/"


def test_pipe_service_refuses_what_twistd_pipe_refuses() -> None:
    with pytest.raises(usage.UsageError):
        pipe_service(["--max-receivers", "0"], Clock())
    with pytest.raises(ValueError):
        pipe_service([], Clock(), root=Resource())


def test_listeners_get_a_large_backlog_unless_set() -> None:
    assert with_backlog("tcp:0") == f"tcp:0:backlog={DEFAULT_BACKLOG}"
    assert with_backlog("SSL:443:privateKey=k") == (
        f"SSL:443:privateKey=k:backlog={DEFAULT_BACKLOG}"
    )
    assert with_backlog("tcp:0:backlog=7") == "tcp:0:backlog=7"
    assert with_backlog("haproxy:tcp:0") == f"haproxy:tcp:0:backlog={DEFAULT_BACKLOG}"
    assert with_backlog("systemd:domain=INET:index=0") == (
        "systemd:domain=INET:index=0"
    )


@pytest_twisted.ensureDeferred
async def test_listener_listens_with_the_backlog(reactor: Any) -> None:
    """
    The backlog reaches the real listening port.
    """
    options = Options()
    options.parseOptions(
        ["--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp:0:backlog=7"]
    )
    service = makeService(options, reactor=reactor)
    service.startService()
    try:
        listeners = list(service)[1:]  # type: ignore[call-overload]
        await wait_for(reactor, lambda: all(s._port for s in listeners))
        assert [s._port.backlog for s in listeners] == [DEFAULT_BACKLOG, 7]
    finally:
        await service.stopService()


def _installed_twistd_help(cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [*TWISTD, "--help"],
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


def test_installed_plugin_is_listed_by_twistd(tmp_path: Path) -> None:
    """
    From outside the checkout, C{twistd --help} lists C{pipe}: the plugin is
    installed (an editable install would not do this).
    """
    assert any(
        line.split()[:1] == ["pipe"]
        for line in _installed_twistd_help(tmp_path).splitlines()
    ), "twistd does not list the pipe plugin: install txpipe (not editable)"


@pytest_twisted.ensureDeferred
async def test_twistd_pipe_serves_a_transfer_with_flat_memory_and_no_disk_writes(
    reactor: Any, tmp_path: Path
) -> None:
    """
    The installed C{twistd -n pipe}: a 128 MiB chunked upload to 3
    receivers, one throttled, leaves the server's peak RSS within a few MiB
    of what a small warm-up transfer reached, and the server process writes
    nothing to disk.  SIGTERM stops it cleanly.
    """
    server = start_twistd(reactor, tmp_path)
    try:
        port = await server.listening
        base = f"http://127.0.0.1:{port}/api/v1/pipe"
        warm = payload(tmp_path, 1024 * 1024, "warm.bin")
        big = payload(tmp_path, 128 * 1024 * 1024, "big.bin")

        async def transfer(name: str, data: Path, throttle: bool) -> None:
            url = f"{base}/{name}?n=3"
            receivers = [
                curl(reactor, url),
                curl(reactor, url),
                curl(reactor, *(["--limit-rate", "24M"] if throttle else []), url),
            ]
            sender = curl(reactor, "-T", "-", url, stdin=data, keep_text=True)
            results = await defer.gatherResults([r.ended for r in receivers])
            sent = await sender.ended
            assert sent.code == 0, sent
            assert DONE.search(sent.text)
            assert {r.digest for r in results} == {sha256_of(data)}

        await transfer("warm", warm, throttle=False)
        baseline_peak = server.status("VmHWM")
        writes_before = server.io("write_bytes")
        await transfer("big", big, throttle=True)
        growth = server.status("VmHWM") - baseline_peak
        assert growth < 8 * 1024, f"peak RSS grew by {growth} KiB for a 128 MiB upload"
        assert server.io("write_bytes") == writes_before
    finally:
        code = await server.stop()
    assert code == 0, bytes(server.output)
    assert f"txpipe {__version__} listening on".encode() in server.output


def test_twistd_pipe_version(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [*TWISTD, "pipe", "--version"],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip() == f"txpipe {__version__}"


@pytest_twisted.ensureDeferred
async def test_wait_for_helper_fails_on_timeout(reactor: Any) -> None:
    with pytest.raises(AssertionError):
        await wait_for(reactor, lambda: False, timeout=0.05)


@pytest.mark.parametrize(
    "command",
    [
        "twistd --listen",
        "twistd --metrics-listen",
        "txpipe serve --listen",
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_listener_that_cannot_listen_stops_the_server(
    reactor: Any, tmp_path: Path, taken_port: int, command: str
) -> None:
    """
    A taken port makes the server exit with status 1, the reason on
    standard error, instead of running healthy with nothing to serve.
    """
    taken = f"tcp:{taken_port}:interface=127.0.0.1"
    free = "tcp:0:interface=127.0.0.1"
    program, option = command.rsplit(" ", 1)
    if program == "twistd":
        argv = twistd_pipe(taken if option == "--listen" else free)
        if option == "--metrics-listen":
            argv += ["--metrics-listen", taken]
    else:
        argv = [sys.executable, "-m", "pipe", "serve", "--listen", taken]
    child = spawn(reactor, argv, cwd=tmp_path, env=child_env(), keep_text=True)
    child.ended.addTimeout(60, reactor)
    result = await child.ended
    assert result.code == 1, result
    assert f"cannot listen on {taken}".encode() in result.stderr, result


def test_a_listener_failing_after_start_stops_the_reactor_with_status_1() -> None:
    """
    An endpoint that fails only once the reactor runs (none of Twisted's
    own do) stops the reactor, and the process then exits with status 1.
    """

    fake = StopRecorder()
    listener = _Listener(fake, "tcp:1", object(), owns_process=True)
    listener._failed(Failure(OSError("address in use")))
    assert [(phase, event) for phase, event, _ in fake.triggers] == [
        ("after", "shutdown")
    ]
    assert fake.triggers[0][2].__name__ == "_exit_failed"
    assert len(fake.when_running) == 1


# Settings are defined once (pipe._settings): the options, their checks and
# docs/usage.md's table follow from them.


def usage_table() -> Dict[str, Tuple[str, str]]:
    """
    docs/usage.md's options table: option name -> (metavar, default cell).
    """
    text = (Path(__file__).resolve().parent.parent / "docs" / "usage.md").read_text()
    section = text.split("## Options (`twistd pipe --help`)", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `--([\w-]+)(?: ([^`]+))?` \|([^|]*)\|", line)
        if match:
            name, metavar, default = match.groups()
            rows[name] = ((metavar or "").replace("\\|", "|"), default.strip())
    return rows


def documented_default(option: Option) -> str:
    if option.coerce is None:
        return "off" if not option.default else "on"
    if isinstance(option.default, str):
        return option.default
    if isinstance(option.default, tuple):
        return ",".join(map(str, option.default)) or "none"
    value = option.default
    return str(int(value)) if float(value).is_integer() else str(value)


def test_usage_table_matches_the_settings() -> None:
    """
    Every setting's option is a row of docs/usage.md's table, with its
    metavar and, first in the default cell, its default; and every option
    of the table is an option of C{twistd pipe}.
    """
    table = usage_table()
    settings = list(setting_options())
    for option in settings:
        assert option.name in table, f"--{option.name} is not in docs/usage.md"
        metavar, default = table[option.name]
        assert metavar == option.metavar, option.name
        first = re.match(r"`([^`]*)`|(\w+)", default)
        assert first is not None, (option.name, default)
        assert (first.group(1) or first.group(2)) == documented_default(option), (
            option.name,
            default,
        )
    help_text = str(Options())
    for name in table:
        assert f"--{name}" in help_text, f"docs/usage.md documents --{name}"
    others = {"listen", "secret-file", "oidc-policy", "metrics-listen", "version"}
    assert set(table) == {option.name for option in settings} | others


def test_options_are_generated_from_the_settings() -> None:
    """
    Each setting's default is the option's default, each given value
    reaches its field, and each range is checked with a plain reason.
    """
    options = Options()
    options.parseOptions([])
    assert options.settings() == Settings()
    argv = []
    expected: Dict[str, Any] = {}
    for option in setting_options():
        if option.coerce is None:
            argv.append(f"--{option.name}")
            expected[option.field] = True
        elif option.choices:
            argv += [f"--{option.name}", option.choices[-1]]
            expected[option.field] = option.choices[-1]
        else:
            # A number, or what the option takes instead.
            given = {"trusted-proxies": "10.0.0.0/8"}.get(option.name, "7")
            argv += [f"--{option.name}", given]
            expected[option.field] = option.coerce(given)
    argv += ["--secret-file", "/nonexistent"]
    options = Options()
    with pytest.raises(SystemExit):  # the secret file is read last
        options.parseOptions(argv)
    values = {o.field: options[o.name] for o in setting_options() if o.coerce}
    assert values == {k: v for k, v in expected.items() if k != "log_paths"}
    for argv, reason in [
        (["--max-receivers", "0"], "--max-receivers must be from 1 to 1000000"),
        (["--max-pipes", "0"], "--max-pipes must be at least 1"),
        (["--idle-timeout", "-1"], "--idle-timeout must not be negative"),
        (["--min-rate", "-5"], "--min-rate must not be negative"),
        (["--require-signature", "some"], "--require-signature must be all or send"),
    ]:
        with pytest.raises(usage.UsageError) as refused:
            Options().parseOptions(argv)
        assert str(refused.value) == reason
