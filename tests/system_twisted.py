"""
C{tox -e system-twisted}: txpipe on the Twisted the operating system ships.

On Debian 12 (C{apt-get install python3-twisted python3-treq
python3-prometheus-client python3-tqdm python3-openssl
python3-service-identity python3-jwt python3-venv}), this makes a virtual environment
with C{--system-site-packages} on C{/usr/bin/python3}, installs txpipe into
it with a plain C{pip install} (dependencies resolved, nothing skipped),
and checks that pip installed no Twisted, treq or prometheus_client of its
own: C{pip check} is clean and each is imported from
C{/usr/lib/python3/dist-packages}.  Then it runs the whole suite (unit and
end to end) with that environment's Python, and starts the server the way
docs/install.md tells users of such an environment to (C{txpipe serve}:
the venv has no C{twistd} of its own) for a real curl transfer to two
receivers and a drain on C{SIGTERM}.

Without a system Python that has Twisted it skips (exit status 0, saying
so), unless C{TXPIPE_REQUIRE_SYSTEM_TWISTED=1}, which C{.ci/run} sets after
installing the packages: then it fails.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
SYSTEM_SITE = "/usr/lib/python3/dist-packages/"
#: What the operating system must provide, and pip must not replace.
SYSTEM_PACKAGES = (
    "twisted",
    "treq",
    "prometheus_client",
    "zope.interface",
    "attr",
    # PyJWT 2.6.0 (python3-jwt): the floor of the OIDC token verifier.
    "jwt",
)
#: Test tools only: txpipe's runtime dependencies all come from the system.
TEST_TOOLS = ["pytest", "pytest-twisted", "hypothesis", "pytest-timeout"]


def say(line: str) -> None:
    print(f"system-twisted: {line}", flush=True)


def unavailable(why: str) -> int:
    if os.environ.get("TXPIPE_REQUIRE_SYSTEM_TWISTED") == "1":
        say(f"FAILED: {why} (TXPIPE_REQUIRE_SYSTEM_TWISTED=1)")
        return 1
    say(f"SKIPPED: {why}")
    return 0


def run(argv: List[str], **kwargs: object) -> None:
    say("$ " + " ".join(argv))
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def output(argv: List[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


#: Distributions whose C{pip check} problems concern this environment.
OURS = re.compile(
    r"^(txpipe|twisted|treq|prometheus[-_]client|attrs|zope[-.]interface|tqdm|"
    r"pyopenssl|cryptography|service[-_]identity|idna|incremental|automat|"
    r"constantly|hyperlink|typing[-_]extensions|requests|pytest\S*|pyjwt|"
    r"hypothesis)\b",
    re.IGNORECASE,
)


def pip_check(python: str, env: Dict[str, str]) -> None:
    """
    C{pip check}: clean for txpipe, its dependencies and the test tools.
    A problem between two other system packages (on Debian 12,
    C{python3-gi} without C{python3-cairo}) is shown, not failed on.
    """
    checked = subprocess.run(
        [python, "-m", "pip", "check"], capture_output=True, text=True, env=env
    )
    print(checked.stdout, end="")
    ours = [line for line in checked.stdout.splitlines() if OURS.match(line)]
    if ours or (checked.returncode and not checked.stdout.strip()):
        raise SystemExit("pip check: " + ("; ".join(ours) or checked.stderr))
    say("pip check: clean for txpipe and everything it needs")


def check_system_packages(python: str) -> None:
    """
    Every package the system ships is imported from the system's site
    directory, not from the venv.
    """
    program = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    module = importlib.import_module(name)\n"
        "    print(name, getattr(module, '__version__', ''), module.__file__)\n"
    )
    found = output([python, "-c", program, *SYSTEM_PACKAGES])
    print(found, end="")
    for line in found.splitlines():
        name, *_, where = line.split(" ")
        if not where.startswith(SYSTEM_SITE):
            raise SystemExit(f"pip installed its own {name}: {where}")


def serve_and_transfer(venv: Path, work: Path) -> None:
    """
    C{txpipe serve} from the venv: a 3 MB transfer to two curl receivers,
    byte for byte, the sender's C{done}, then C{SIGTERM}: drained and shut
    down as twistd does.
    """
    log = work / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                str(venv / "bin" / "txpipe"),
                "serve",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            match = re.search(rb"listening on .*?port=(\d+)", log.read_bytes())
            if match is not None:
                port = int(match.group(1))
            elif server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("txpipe serve did not start:\n" + log.read_text())
            else:
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/api/v1/pipe/system?n=2"
        data = work / "payload.bin"
        data.write_bytes(os.urandom(3 * 1024 * 1024))
        receivers = [
            subprocess.Popen(["curl", "-fsS", "-o", str(work / f"got{i}"), url])
            for i in range(2)
        ]
        sent = subprocess.run(
            ["curl", "-fsS", "-T", str(data), url],
            capture_output=True,
            timeout=60,
        )
        codes = [r.wait(timeout=60) for r in receivers]
        print(sent.stdout.decode(errors="replace"), end="")
        if sent.returncode or codes != [0, 0]:
            raise SystemExit(
                f"transfer failed: sender {sent.returncode}, receivers {codes}"
            )
        if b"done: bytes=3145728 receivers=2/2" not in sent.stdout:
            raise SystemExit("the sender did not see done")
        want = hashlib.sha256(data.read_bytes()).hexdigest()
        for i in range(2):
            if hashlib.sha256((work / f"got{i}").read_bytes()).hexdigest() != want:
                raise SystemExit(f"receiver {i} got other bytes")
        say("txpipe serve: 2 receivers got the 3 MB byte for byte, sender done")
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    # twistd ends by the signal that stopped it once it has shut down
    # (status -15 here, 143 in a shell), as on every Twisted.
    text = log.read_text()
    if code not in (0, -signal.SIGTERM) or "drained" not in text:
        raise SystemExit(f"txpipe serve exited {code} on SIGTERM:\n" + text)
    say(f"txpipe serve: SIGTERM, drained, exit status {code}")


def main() -> int:
    work = Path(
        sys.argv[1] if len(sys.argv) > 1 else ROOT / ".tox" / "system-twisted-work"
    )
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return unavailable(f"no {SYSTEM_PYTHON}")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import twisted, treq, prometheus_client, ensurepip"],
        capture_output=True,
        text=True,
    )
    if probe.returncode:
        return unavailable(
            "the system Python lacks Twisted, treq, prometheus_client or venv "
            "(apt-get install python3-twisted python3-treq "
            "python3-prometheus-client python3-tqdm python3-openssl "
            "python3-service-identity python3-venv): "
            + probe.stderr.strip().splitlines()[-1]
        )
    venv = work / "venv"
    if venv.exists():
        run(["rm", "-rf", str(venv)])
    work.mkdir(parents=True, exist_ok=True)
    run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)])
    python = str(venv / "bin" / "python")
    # The pip configuration of the machine (index, certificates) applies;
    # a constraint file for another environment must not.
    env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}
    run([python, "-m", "pip", "install", "-q", str(ROOT)], env=env)
    pip_check(python, env)
    check_system_packages(python)
    run([python, "-m", "pip", "install", "-q", *TEST_TOOLS], env=env)
    # The test tools must not have replaced anything of the system's either.
    check_system_packages(python)
    pip_check(python, env)
    suite_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    run(
        [
            python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--timeout=300",
            "--ignore=tests/integration",
            "tests",
        ],
        cwd=str(ROOT),
        env=suite_env,
    )
    serve_and_transfer(venv, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
