"""
The CI step script C{ci/txpipe.sh} (what the GitHub Action runs and the
GitLab CI component carries inline), run for real by POSIX shells against a
real server on a loopback port: sending to named receivers, the sender's
outcome as the exit status, refusals with txpipe's C{[ERROR]} line, the
GitHub OIDC token request (a fake token endpoint on loopback), and the
configuration mistakes it refuses.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import parse_qsl, urlsplit

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import Site

from .helpers import (
    CurlResult,
    RunningServer,
    payload,
    sha256_of,
    spawn,
    start_twistd,
)

SCRIPT = Path(__file__).resolve().parent.parent / "ci" / "txpipe.sh"

#: The shells the script must run under: dash (Debian's and Ubuntu's sh,
#: what the action's C{shell: sh} gets), bash, and BusyBox's ash (Alpine
#: images on GitLab) where installed.
SHELLS = [
    pytest.param([shell] if shell != "busybox" else [shell, "sh"], id=shell)
    for shell in ("dash", "bash", "busybox")
    if shutil.which(shell)
]


def environment(**values: str) -> Dict[str, str]:
    """
    The step's environment: this one without CI variables of its own, plus
    C{values}.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TXPIPE_", "GITHUB_", "ACTIONS_"))
    }
    env.update(values)
    return env


def step(
    reactor: Any, shell: List[str], cwd: Path, **values: str
) -> defer.Deferred[CurlResult]:
    """
    Run the script under C{shell} in C{cwd} with C{values} in its
    environment; its result (C{code}, C{text}: standard output, C{stderr}).
    """
    running = spawn(
        reactor,
        [shutil.which(shell[0]) or shell[0], *shell[1:], str(SCRIPT)],
        keep_text=True,
        cwd=cwd,
        env=environment(**values),
    )
    return running.ended


@pytest.fixture(params=SHELLS)
def shell(request: Any) -> List[str]:
    return request.param  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_send_to_named_receivers_through_twistd_pipe(
    reactor: Any, tmp_path: Path, shell: List[str]
) -> None:
    """
    One sending step and three receiving steps (with a quorum given, which
    this server takes with all three there) through a real C{twistd pipe}:
    every receiver's file has the sender's digest, the sender's log shows
    txpipe's progress and closing line, and both succeed.
    """
    server = start_twistd(reactor, tmp_path)
    port = await server.listening
    try:
        data = payload(tmp_path, 1024 * 1024)
        url = f"http://127.0.0.1:{port}/api/v1/pipe/ci/artifact.bin"
        common = dict(TXPIPE_URL=url, TXPIPE_N="3", TXPIPE_MIN="2")
        receivers = []
        for index in range(3):
            where = tmp_path / f"runner-{index}"
            where.mkdir()
            receivers.append(
                step(
                    reactor,
                    shell,
                    where,
                    TXPIPE_MODE="receive",
                    TXPIPE_PATH="artifact.bin",
                    TXPIPE_NAME=f"runner-{index}",
                    **common,
                )
            )
        outputs = tmp_path / "github_output"
        sent = await step(
            reactor,
            shell,
            tmp_path,
            TXPIPE_MODE="send",
            TXPIPE_PATH=str(data),
            GITHUB_OUTPUT=str(outputs),
            **common,
        )
        assert sent.code == 0, sent
        assert b"[INFO] receiver connected" in sent.text, sent
        assert b"[INFO] done: bytes=1048576 receivers=3/3" in sent.text, sent
        assert sent.stderr.endswith(b"txpipe: sent to 3 of 3 receivers\n"), sent
        assert outputs.read_text().startswith("summary=[INFO] done: bytes=1048576")
        for index, receiving in enumerate(receivers):
            result = await receiving
            assert result.code == 0, result
            copy = tmp_path / f"runner-{index}" / "artifact.bin"
            assert sha256_of(copy) == sha256_of(data)
            assert b"received 1048576 bytes into artifact.bin" in result.stderr
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_failed_send_fails_the_step_with_txpipes_error_line(
    reactor: Any, server: RunningServer, tmp_path: Path, shell: List[str]
) -> None:
    """
    The sender's wait for two receivers times out with one there: the step
    fails (status 1) and txpipe's C{[ERROR]} line is in its log; so does a
    receiver the server refuses, and it leaves no file behind.
    """
    data = payload(tmp_path, 1000)
    url = server.url("lonely", "wait=1")
    where = tmp_path / "runner"
    where.mkdir()
    receiving = step(
        reactor,
        shell,
        where,
        TXPIPE_MODE="receive",
        TXPIPE_URL=url,
        TXPIPE_N="2",
        TXPIPE_PATH="x.bin",
    )
    sent = await step(
        reactor,
        shell,
        tmp_path,
        TXPIPE_MODE="send",
        TXPIPE_URL=url,
        TXPIPE_N="2",
        TXPIPE_PATH=str(data),
    )
    assert sent.code == 1, sent
    assert b"[ERROR] " in sent.text, sent
    assert b"txpipe: not sent" in sent.stderr, sent
    await receiving

    refused = await step(
        reactor,
        shell,
        where,
        TXPIPE_MODE="receive",
        TXPIPE_URL=server.url("bad", "n=0"),
        TXPIPE_PATH="y.bin",
    )
    assert refused.code == 1, refused
    assert b"[ERROR] " in refused.stderr and b"not received" in refused.stderr
    assert not (where / "y.bin").exists()


class _Recorder(Resource):
    """
    A stand-in server that records each request's query and headers: the
    GitHub token endpoint (it answers with a token), and a pipe that
    answers a sender with a closing C{done} line.
    """

    isLeaf = True

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer
        self.requests: List[Any] = []

    def render(self, request: Any) -> bytes:
        request.content.read()
        self.requests.append(
            (
                request.method,
                request.uri.decode(),
                dict(request.requestHeaders.getAllRawHeaders()),
            )
        )
        return self.answer


@pytest.fixture
def recorder(reactor: Any) -> Iterator[Any]:
    """
    Start L{_Recorder}s on loopback ports: C{start(answer)} returns the
    recorder and its base URL.
    """
    ports: List[Any] = []

    def start(answer: bytes) -> Any:
        resource = _Recorder(answer)
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        ports.append(port)
        return resource, f"http://127.0.0.1:{port.getHost().port}"

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_the_github_id_token_is_asked_for_and_sent_as_a_bearer(
    reactor: Any, recorder: Any, tmp_path: Path, shell: List[str]
) -> None:
    """
    With an audience, the step asks GitHub's token endpoint (with the
    job's request token, the audience in the query), masks the token in
    the log, and sends it to txpipe as C{Authorization: Bearer}, beside the
    receiver's name; n and min are in the URL.
    """
    github, github_url = recorder(
        json.dumps({"count": 1, "value": "eyJ.a-b_c.d"}).encode()
    )
    done = b"[INFO] done: bytes=5 receivers=3/3 in 0.0 s (0.0 MB/s)\n"
    pipe, pipe_url = recorder(done)
    data = payload(tmp_path, 5)
    values = dict(
        TXPIPE_URL=f"{pipe_url}/api/v1/pipe/ci/a.bin",
        TXPIPE_N="3",
        TXPIPE_MIN="2",
        TXPIPE_GITHUB_AUDIENCE="https://pipe.example",
        ACTIONS_ID_TOKEN_REQUEST_URL=f"{github_url}/token?api-version=2.0",
        ACTIONS_ID_TOKEN_REQUEST_TOKEN="request-token",
        GITHUB_ACTIONS="true",
    )
    sent = await step(
        reactor, shell, tmp_path, TXPIPE_MODE="send", TXPIPE_PATH=str(data), **values
    )
    assert sent.code == 0, sent
    assert b"::add-mask::eyJ.a-b_c.d\n" in sent.text
    received = await step(
        reactor,
        shell,
        tmp_path,
        TXPIPE_MODE="receive",
        TXPIPE_PATH="got.bin",
        TXPIPE_NAME="runner-7\x1b[31m" + "x" * 70,
        **values,
    )
    assert received.code == 0, received

    for method, uri, headers in github.requests:
        assert method == b"GET" and uri.startswith("/token?")
        assert parse_qsl(urlsplit(uri).query) == [
            ("api-version", "2.0"),
            ("audience", "https://pipe.example"),
        ]
        assert headers[b"Authorization"] == [b"bearer request-token"]
    assert len(github.requests) == 2
    (put, put_uri, put_headers), (get, get_uri, get_headers) = pipe.requests
    assert (put, get) == (b"PUT", b"GET")
    assert put_uri == get_uri == "/api/v1/pipe/ci/a.bin?n=3&min=2"
    assert put_headers[b"Authorization"] == [b"Bearer eyJ.a-b_c.d"]
    assert get_headers[b"Authorization"] == [b"Bearer eyJ.a-b_c.d"]
    assert b"Txpipe-Receiver" not in put_headers
    # Printable characters only, at most 64.
    name = ("runner-7[31m" + "x" * 70)[:64].encode()
    assert get_headers[b"Txpipe-Receiver"] == [name]


@pytest_twisted.ensureDeferred
async def test_a_quorum_start_passes_and_too_few_fail(
    reactor: Any, recorder: Any, tmp_path: Path, shell: List[str]
) -> None:
    """
    The closing line of a quorum start (C{receivers=2/3}) is a success with
    C{min} 2, a failure without a quorum; a 200 whose last line is an
    C{[ERROR]} (a receiver lost mid-stream) is a failure.
    """
    data = payload(tmp_path, 5)
    answers = {
        b"[INFO] done: bytes=5 receivers=2/3 (1 never joined) in 0.0 s\n": {
            "2": 0,
            "": 1,
        },
        b"[INFO] done: bytes=5 receivers=3/3 in 0.0 s\n[ERROR] receiver 2 gone\n": {
            "2": 1
        },
    }
    for answer, outcomes in answers.items():
        _, base = recorder(answer)
        for quorum, expected in outcomes.items():
            sent = await step(
                reactor,
                shell,
                tmp_path,
                TXPIPE_MODE="send",
                TXPIPE_URL=f"{base}/api/v1/pipe/q",
                TXPIPE_N="3",
                TXPIPE_MIN=quorum,
                TXPIPE_PATH=str(data),
            )
            assert sent.code == expected, (answer, quorum, sent)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"TXPIPE_MODE": "push"}, b"TXPIPE_MODE must be send or receive, got 'push'"),
        ({"TXPIPE_URL": ""}, b"TXPIPE_URL is empty"),
        ({"TXPIPE_N": "0"}, b"n must be a whole number from 1, got '0'"),
        ({"TXPIPE_MIN": "two"}, b"min must be a whole number from 1, got 'two'"),
        (
            {
                "TXPIPE_URL": "http://127.0.0.1:1/api/v1/pipe/a?n=2&sig=x",
                "TXPIPE_N": "2",
            },
            b"the URL has n already; leave TXPIPE_N empty",
        ),
        ({"TXPIPE_PATH": "/nonexistent/file"}, b"cannot read /nonexistent/file"),
        (
            {"TXPIPE_GITHUB_AUDIENCE": "x"},
            b"give the job 'permissions: id-token: write'",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_configuration_mistakes_exit_2_with_the_reason(
    reactor: Any,
    tmp_path: Path,
    shell: List[str],
    values: Dict[str, str],
    message: bytes,
) -> None:
    data = payload(tmp_path, 5)
    settings: Dict[str, Optional[str]] = {
        "TXPIPE_MODE": "send",
        "TXPIPE_URL": "http://127.0.0.1:1/api/v1/pipe/a",
        "TXPIPE_PATH": str(data),
    }
    settings.update(values)
    result = await step(
        reactor,
        shell,
        tmp_path,
        **{name: value for name, value in settings.items() if value is not None},
    )
    assert result.code == 2, result
    assert message in result.stderr, result


COMPONENT = SCRIPT.parent.parent / "templates" / "txpipe.yml"


def component_script(token: str) -> str:
    """
    The GitLab component's job script as GitLab runs it: its C{script}
    items with the C{token} input interpolated, one shell script.  (Read as
    text, the test environment has no YAML parser; C{docs/test_recipes.py}
    checks the file against GitLab's schema.)
    """
    lines = COMPONENT.read_text().split("\n  script:\n", 1)[1].splitlines()
    items: List[List[str]] = []
    for line in lines:
        if line.startswith("    - |"):
            items.append([])
        elif line.startswith("    - "):
            items.append([line[len("    - ") :]])
        elif line.startswith("      ") or (line == "" and items):
            items[-1].append(line[len("      ") :])
        elif not line.startswith("    #"):
            break
    text = "\n".join("\n".join(item) for item in items) + "\n"
    return text.replace("$[[ inputs.token ]]", token)


@pytest.mark.parametrize("token", ["$TXPIPE_ID_TOKEN", ""])
@pytest_twisted.ensureDeferred
async def test_the_gitlab_components_job_script_sends_with_the_id_token(
    reactor: Any, recorder: Any, tmp_path: Path, token: str
) -> None:
    """
    The component's job script, run as GitLab runs it (a POSIX shell, the
    job's variables and its C{id_tokens} variable in the environment):
    it sends with the ID token as a bearer by default, and with none when
    the C{token} input is empty.
    """
    pipe, base = recorder(b"[INFO] done: bytes=5 receivers=2/2 in 0.0 s\n")
    data = payload(tmp_path, 5)
    job = tmp_path / "job.sh"
    job.write_text(component_script(token))
    result = await spawn(
        reactor,
        [shutil.which("dash") or "/bin/sh", str(job)],
        keep_text=True,
        cwd=tmp_path,
        env=environment(
            TXPIPE_MODE="send",
            TXPIPE_URL=f"{base}/api/v1/pipe/gl",
            TXPIPE_PATH=str(data),
            TXPIPE_N="2",
            TXPIPE_MIN="",
            TXPIPE_NAME="send",
            TXPIPE_ID_TOKEN="gitlab-id-token",
        ),
    ).ended
    assert result.code == 0, result
    [(method, uri, headers)] = pipe.requests
    assert (method, uri) == (b"PUT", "/api/v1/pipe/gl?n=2")
    expected = [b"Bearer gitlab-id-token"] if token else None
    assert headers.get(b"Authorization") == expected
