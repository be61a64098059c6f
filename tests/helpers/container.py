"""
A container runtime (podman, or docker with a reachable engine) driven by
subprocess, for the image tests: the test base image built from Debian's
packages (cached), the image built from the repository's C{Dockerfile},
containers started on the host's network and always removed; a Secret
volume laid out as the kubelet lays it out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from .twistd import reported_port

ROOT = Path(__file__).resolve().parents[2]

#: The test base: what the issue asks the Dockerfile to build from (Debian
#: with python3 and venv), made with debootstrap from Debian's archive.
BASE_SUITE = "bookworm"
BASE_INCLUDE = "python3,python3-venv,ca-certificates"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

#: What stays out of the build context (as .dockerignore says).
_IGNORED = {
    ".git",
    ".tox",
    ".venv",
    "venv",
    "env",
    "build",
    "dist",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "node_modules",
    "peer",
    "_build",
}


class RuntimeUnavailable(Exception):
    """
    No container runtime can be had here (the reason says why).
    """


#: pytest's terminal reporter (set by conftest.py), which writes past the
#: output capture.
reporter: Optional[Any] = None


def say(line: str) -> None:
    """
    Print C{line} past pytest's capture, so that build steps, timings and
    the image size appear in the run's output.
    """
    if reporter is not None:
        reporter.write_line(f"[container] {line}")
    else:
        print(f"[container] {line}")


class Runtime:
    """
    One container engine's command line.

    @ivar engine: C{podman} or C{docker} (the executable's path).
    @ivar run_flags: flags every C{run} and C{build} needs on this machine
        (found by L{probe}): none where the engine works as installed.
    """

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.is_podman = Path(engine).name.startswith("podman")
        self.run_flags: List[str] = []

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.engine, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,  # type: ignore[call-overload]
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{Path(self.engine).name} {' '.join(args)} exited"
                f" {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    @classmethod
    def find(cls) -> Runtime:
        """
        The first of podman and docker whose engine answers.

        @raise RuntimeUnavailable: neither does.
        """
        reasons = []
        for name in ("podman", "docker"):
            path = shutil.which(name)
            if path is None:
                reasons.append(f"no {name}")
                continue
            try:
                info = subprocess.run(
                    [path, "info"], capture_output=True, text=True, timeout=60
                )
            except subprocess.TimeoutExpired:
                reasons.append(f"{name} info timed out")
                continue
            if info.returncode == 0:
                return cls(path)
            reasons.append(f"{name} info: {info.stderr.strip()[:200]}")
        raise RuntimeUnavailable("; ".join(reasons))

    def probe(self, image: str) -> None:
        """
        Find the flags a container needs to start here.  A VM whose root
        lacks C{CAP_SYS_RESOURCE} and has hybrid cgroups (this kind of CI
        machine) refuses podman's default rlimits and crun; runc with the
        current limits works.
        """
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = hard if hard != resource.RLIM_INFINITY else 1048576
        candidates: List[List[str]] = [[]]
        if self.is_podman:
            candidates.append(
                [
                    "--runtime",
                    "runc",
                    "--ulimit",
                    f"nofile={nofile}:{nofile}",
                    "--ulimit",
                    "nproc=4096:4096",
                ]
            )
        errors = []
        for flags in candidates:
            result = self(
                "run", "--rm", "--network", "none", *flags,
                "--entrypoint", "true", image, check=False,
            )  # fmt: skip
            if result.returncode == 0:
                self.run_flags = flags
                say(f"runtime: {self.engine} {' '.join(flags) or '(no extra flags)'}")
                return
            errors.append(f"{flags}: {result.stderr.strip()}")
        raise AssertionError("no container starts here:\n" + "\n".join(errors))

    def has_image(self, name: str) -> bool:
        return self("image", "inspect", name, check=False).returncode == 0

    # The test base image.

    def debian_base(self, cache: Path) -> str:
        """
        The name of an image of Debian with python3 and venv: from the
        engine's store, else from the cached root filesystem tarball, else
        made with debootstrap (and cached, keyed by its inputs).
        """
        mirror = os.environ.get("TXPIPE_DEBIAN_MIRROR", DEFAULT_MIRROR)
        inputs = json.dumps(
            ["minbase", BASE_SUITE, BASE_INCLUDE, mirror, os.uname().machine]
        )
        key = hashlib.sha256(inputs.encode()).hexdigest()[:12]
        name = f"localhost/txpipe-test-base:{key}"
        if self.has_image(name):
            say(f"base {name}: in the image store")
            return name
        tarball = cache / f"debian-{BASE_SUITE}-{key}.tar"
        if not tarball.exists():
            self._debootstrap(mirror, tarball)
        started = time.monotonic()
        with tarball.open("rb") as stream:
            self("import", "-", name, stdin=stream, timeout=600)
        say(f"base {name}: imported {tarball} in {time.monotonic() - started:.0f} s")
        return name

    def _debootstrap(self, mirror: str, tarball: Path) -> None:
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        if not Path(debootstrap).exists():
            raise RuntimeUnavailable("no debootstrap to build the test base image")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=tarball.parent) as work:
            root = Path(work) / "root"
            subprocess.run(
                [
                    debootstrap,
                    "--variant=minbase",
                    f"--include={BASE_INCLUDE}",
                    BASE_SUITE,
                    str(root),
                    mirror,
                ],
                check=True,
                capture_output=True,
                timeout=1200,
            )
            partial = tarball.with_suffix(".partial")
            subprocess.run(
                ["tar", "-C", str(root), "-cf", str(partial), "."],
                check=True,
                timeout=600,
            )
            partial.rename(tarball)
        say(f"base: debootstrap {BASE_SUITE} in {time.monotonic() - started:.0f} s")

    def python_version(self, image: str) -> str:
        script = "import sys; print('%d.%d' % sys.version_info[:2])"
        result = self(
            "run", "--rm", "--network", "none", *self.run_flags,
            "--entrypoint", "python3", image, "-c", script,
        )  # fmt: skip
        return result.stdout.strip()

    # The image.

    def build(self, base: Optional[str], tag: str, work: Path) -> None:
        """
        Build the repository's Dockerfile as C{tag}, from C{base} (default:
        the Dockerfile's own).  Where the base's Python is this one, the
        wheels are built here first and handed to the build (pip inside
        the build then needs no index: this machine's pip settings and
        certificates stay out of the image).
        """
        context = work / "context"
        shutil.copytree(
            ROOT,
            context,
            ignore=lambda _, names: [
                n for n in names if n in _IGNORED or n.endswith(".egg-info")
            ],
        )
        args: List[str] = []
        if base is not None:
            args += ["--build-arg", f"BASE={base}"]
            here = "{}.{}".format(*sys.version_info[:2])
            if self.python_version(base) == here:
                started = time.monotonic()
                subprocess.run(
                    [
                        *(sys.executable, "-m", "pip", "wheel", "-q"),
                        *("--wheel-dir", str(context / "wheelhouse")),
                        *(str(ROOT), "setuptools", "wheel"),
                    ],
                    check=True,
                    capture_output=True,
                    timeout=600,
                )
                say(f"wheels built on the host in {time.monotonic() - started:.0f} s")
                args += [
                    "--build-arg",
                    "PIP_NO_INDEX=1",
                    "--build-arg",
                    "PIP_FIND_LINKS=/src/wheelhouse",
                ]
        if self.is_podman:
            # HEALTHCHECK is Docker's format; OCI images drop it.
            args += ["--format", "docker", "--layers=false"]
        started = time.monotonic()
        self(
            "build", "--network", "host", *self.run_flags, *args,
            "-t", tag, str(context), timeout=900,
        )  # fmt: skip
        say(f"image {tag}: built in {time.monotonic() - started:.0f} s")

    def inspect(self, image: str) -> Dict[str, Any]:
        data = json.loads(self("image", "inspect", image).stdout)
        return data[0]  # type: ignore[no-any-return]

    def remove_image(self, name: str) -> None:
        self("rmi", "-f", name, check=False)


#: The hardening the issue asks for: a read-only root, no capabilities, no
#: privilege escalation (the user is the image's own, 10001).
HARDENED = [
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]


class Container:
    """
    One detached container on the host's network; removed by L{remove}.
    """

    def __init__(self, runtime: Runtime, name: str) -> None:
        self.runtime = runtime
        self.name = name

    @classmethod
    def start(
        cls,
        runtime: Runtime,
        image: str,
        args: Sequence[str],
        options: Sequence[str] = (),
        network: str = "host",
    ) -> Container:
        name = f"txpipe-test-{uuid.uuid4().hex[:10]}"
        extra = ["--read-only-tmpfs=false"] if runtime.is_podman else []
        if "--read-only" not in options:
            extra = []
        runtime(
            "run", "--detach", "--name", name, "--network", network,
            *runtime.run_flags, *options, *extra, image, *args,
        )  # fmt: skip
        return cls(runtime, name)

    def logs(self) -> str:
        result = self.runtime("logs", self.name, check=False)
        return result.stdout + result.stderr

    def wait_for_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """
        Follow the container's output until a line matches C{pattern}.

        @raise AssertionError: the container ended, or C{timeout} passed.
        """
        return wait_for_line(
            [self.runtime.engine, "logs", "--follow", self.name], pattern, timeout
        )

    def listening_port(self) -> int:
        """
        The port of the first C{listening on} line (the server was given
        port 0).
        """
        return reported_port(self.wait_for_log(r"listening on ").string)

    def exec(
        self, *command: str, env: Dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        flags: List[str] = []
        for key, value in (env or {}).items():
            flags += ["--env", f"{key}={value}"]
        return self.runtime("exec", *flags, self.name, *command, check=False)

    def signal(self, name: str) -> None:
        self.runtime("kill", "--signal", name, self.name)

    def exit_status(self, timeout: float) -> int:
        """
        Wait for the container to end (at most C{timeout} seconds).
        """
        result = self.runtime("wait", self.name, timeout=timeout)
        return int(result.stdout.strip().splitlines()[-1])

    def remove(self) -> None:
        self.runtime("rm", "--force", self.name, check=False)


def read_lines(fd: int, timeout: float, pending: bytearray) -> Iterator[str]:
    """
    The lines that come out of C{fd} within C{timeout} seconds, read with
    C{os.read} (a buffered reader would hide lines from C{select});
    C{pending} keeps a partial line between calls.
    """
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            while b"\n" in pending:
                line, _, rest = bytes(pending).partition(b"\n")
                pending[:] = rest
                yield line.decode("utf-8", "replace") + "\n"
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                return
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            pending += chunk


def wait_for_line(command: List[str], pattern: str, timeout: float) -> re.Match[str]:
    """
    Run C{command} and read its output (stdout and stderr) until a line
    matches C{pattern} (at most C{timeout} seconds); then end it.
    """
    seen: List[str] = []
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    try:
        for line in read_lines(process.stdout.fileno(), timeout, bytearray()):
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(
            f"no line matching {pattern!r} in {timeout} s:\n" + "".join(seen)
        )
    finally:
        process.kill()
        process.wait()


def start(
    runtime: Runtime,
    image: str,
    containers: List[Container],
    args: List[str],
    options: List[str] = (),  # type: ignore[assignment]
    network: str = "host",
) -> Container:
    """
    Start a container of C{image} with C{args} (and runtime C{options}),
    noted in C{containers} so that the test's fixture removes it.
    """
    container = Container.start(runtime, image, args, options, network)
    containers.append(container)
    return container


def secret_volume(root: Path, owner: int, group: int, mode: int) -> Path:
    """
    A directory laid out as the kubelet lays out a Secret volume: C{secret}
    is a link through C{..data} into a timestamped directory, whose file has
    C{owner}, C{group} and C{mode}.
    """
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    stamped = root / "..2026_12_03_04_00_00.000000001"
    stamped.mkdir(mode=0o755)
    stamped.chmod(0o755)
    (stamped / "secret").write_bytes(os.urandom(16).hex().encode() * 2 + b"\n")
    os.chown(stamped / "secret", owner, group)
    (stamped / "secret").chmod(mode)
    (root / "..data").symlink_to(stamped.name)
    (root / "secret").symlink_to("..data/secret")
    return root
