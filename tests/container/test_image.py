"""
The image built from the repository's C{Dockerfile}, run for real: a fan-out
to three receivers under a read-only root with no capabilities, the secret
file modes orchestrators mount, a drain on C{SIGTERM} that ends with status
0, and the C{HEALTHCHECK}.  Every container uses the host's network and
listens on 127.0.0.1 (or has no network at all).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import pipe

from ..helpers.container import HARDENED, Container, Runtime, say, secret_volume, start

pytestmark = pytest.mark.needs_runtime

UID = GID = 10001
LOOPBACK_ANY_PORT = "tcp:0:interface=127.0.0.1"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def payload(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(size))
    return path


def curl(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["curl", "-fsS", "--no-buffer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> Tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def proc_status(container: Container) -> Dict[str, str]:
    """
    The server process's C{/proc/1/status} fields.
    """
    result = container.exec("cat", "/proc/1/status")
    assert result.returncode == 0, result.stderr
    return dict(
        line.split(":\t", 1) for line in result.stdout.splitlines() if ":\t" in line
    )


def test_the_image_is_labelled_non_root_and_carries_no_build_tools(
    runtime: Runtime, image: str
) -> None:
    info = runtime.inspect(image)
    config = info["Config"]
    assert isinstance(config, dict)
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == pipe.__version__
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert config["User"] == f"{UID}:{GID}"
    assert config["Entrypoint"] == [
        "/opt/txpipe/bin/python",
        "-m",
        "pipe._deploy.container",
    ]
    assert config["Cmd"] == ["--listen", "tcp:8080"]
    assert "8080/tcp" in config["ExposedPorts"]
    # As root, to see everywhere: no compiler, no source tree, no wheels or
    # pip cache left by the build, no pip in the venv. (A base may carry
    # pip of its own: the official images do, Debian's venv its wheels.)
    script = (
        "for tool in gcc cc c++ make; do command -v $tool; done;"
        " ls -d /src /wheels /root/.cache /opt/txpipe/bin/pip* 2>/dev/null;"
        " find /opt /root /tmp /var/tmp -xdev -name '*.whl' -o -xdev -type d"
        " -name 'pip' -path '*cache*';"
        " true"
    )
    result = runtime(
        "run", "--rm", "--network", "none", *runtime.run_flags,
        "--user", "0", "--entrypoint", "sh", image, "-c", script,
    )  # fmt: skip
    assert result.stdout.strip() == ""


def test_fan_out_to_three_receivers_read_only_without_capabilities(
    runtime: Runtime, image: str, containers: List[Container], tmp_path: Path
) -> None:
    """
    The image's own user, a read-only root, every capability dropped and
    no-new-privileges: an n=3 transfer arrives byte-identical and the
    sender ends with C{done ... receivers=3/3}.
    """
    container = start(
        runtime, image, containers, ["--listen", LOOPBACK_ANY_PORT], HARDENED
    )
    port = container.listening_port()
    status = proc_status(container)
    assert status["Uid"].split()[:2] == [str(UID), str(UID)]
    assert status["Gid"].split()[:2] == [str(GID), str(GID)]
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    writable = container.exec("sh", "-c", "touch /opt/txpipe/x || touch /tmp/x")
    assert writable.returncode != 0

    data = payload(tmp_path, 8 * 1024 * 1024)
    url = f"http://127.0.0.1:{port}/api/v1/pipe/fan-out/three?n=3"
    receivers = [curl("-o", str(tmp_path / f"got{i}"), url) for i in range(3)]
    sender = curl("-T", str(data), url)
    code, said = finish(sender)
    assert code == 0, said
    assert re.search(rf"\[INFO\] done: bytes={8 * 1024 * 1024} receivers=3/3", said)
    for i, receiver in enumerate(receivers):
        assert finish(receiver)[0] == 0
        assert sha256(tmp_path / f"got{i}") == sha256(data)


def test_sigterm_during_a_transfer_lets_it_finish_and_exits_0(
    runtime: Runtime, image: str, containers: List[Container], tmp_path: Path
) -> None:
    """
    C{SIGTERM} while a receiver takes its time: the transfer completes, the
    container exits with status 0, well within the documented grace (75 s,
    for the default --drain-timeout 60).
    """
    container = start(
        runtime,
        image,
        containers,
        ["--listen", LOOPBACK_ANY_PORT, "--drain-timeout", "60"],
        HARDENED,
    )
    port = container.listening_port()
    size = 12 * 1024 * 1024
    data = payload(tmp_path, size)
    url = f"http://127.0.0.1:{port}/api/v1/pipe/drain?n=1"
    # About 4 s at 3 MB/s: the signal arrives mid-transfer.
    receiver = curl("--limit-rate", "3M", "-o", str(tmp_path / "got"), url)
    sending = curl("-T", str(data), url)
    assert sending.stdout is not None
    # The sender's progress lines come as they happen (curl --no-buffer).
    for line in sending.stdout:
        if "transfer started" in line:
            break
    else:
        raise AssertionError(f"the transfer did not start: {finish(sending)}")
    signalled = time.monotonic()
    container.signal("TERM")
    rest = sending.stdout.read()
    assert sending.wait(timeout=120) == 0, rest
    assert re.search(rf"\[INFO\] done: bytes={size} receivers=1/1", rest), rest
    assert finish(receiver)[0] == 0
    assert sha256(tmp_path / "got") == sha256(data)
    assert container.exit_status(timeout=75) == 0
    took = time.monotonic() - signalled
    assert took < 75
    logs = container.logs()
    assert "received SIGTERM: draining" in logs
    assert "drained" in logs
    say(f"SIGTERM mid-transfer to exit status 0: {took:.1f} s")


def test_the_healthcheck_passes_on_the_default_command(
    runtime: Runtime, image: str, containers: List[Container]
) -> None:
    """
    The image's C{HEALTHCHECK}, run as the runtime runs it, against the
    default command (C{tcp:8080} on every interface of a container with no
    network but its own loopback); and it fails once nothing answers.
    """
    info = runtime.inspect(image)
    # Docker keeps it in Config, podman beside it.
    test = (info["Config"].get("Healthcheck") or info["Healthcheck"])["Test"]
    assert test[0] == "CMD", test
    container = start(runtime, image, containers, [], HARDENED, network="none")
    container.wait_for_log(r"listening on .*port=8080")
    result = container.exec(*test[1:])
    assert (result.returncode, result.stdout.strip()) == (0, "200 ok"), result
    if runtime.is_podman:
        verdict = runtime("healthcheck", "run", container.name, check=False)
        assert verdict.returncode == 0, verdict
    down = container.exec(
        *test[1:], env={"TXPIPE_HEALTHCHECK_URL": "http://127.0.0.1:9/healthz"}
    )
    assert down.returncode == 1, down


@pytest.mark.parametrize(
    "owner, mode, refusal",
    [
        (0, 0o440, None),  # Kubernetes: defaultMode 0440 with an fsGroup
        (0, 0o640, None),
        (UID, 0o400, None),  # the server's own file, owner-only
        (UID, 0o640, "owned by uid 10001, not root"),
        (0, 0o444, "readable or writable by other"),  # Docker's default
    ],
)
def test_secret_files_as_orchestrators_mount_them(
    runtime: Runtime,
    image: str,
    containers: List[Container],
    tmp_path: Path,
    owner: int,
    mode: int,
    refusal: str | None,
) -> None:
    volume = secret_volume(tmp_path / "secret", owner, GID, mode)
    options = [*HARDENED, "--volume", f"{volume}:/run/secrets/txpipe:ro"]
    args = [
        "--listen",
        LOOPBACK_ANY_PORT,
        "--secret-file",
        "/run/secrets/txpipe/secret",
    ]
    if refusal is None:
        container = start(runtime, image, containers, args, options)
        container.wait_for_log(r"signed URLs required \(all\); 1 keys verify")
        container.listening_port()
        return
    result = runtime(
        "run", "--rm", "--network", "host", *runtime.run_flags,
        *options, *(["--read-only-tmpfs=false"] if runtime.is_podman else []),
        image, *args, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert refusal in result.stderr + result.stdout
