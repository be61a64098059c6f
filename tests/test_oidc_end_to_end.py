"""
OIDC tokens over real sockets: a test issuer serving its discovery document
and JWKS over TLS (its own certificate authority), GitHub- and
GitLab-shaped jobs sending and receiving real bytes by curl and by
C{txpipe send/recv --id-token} with no secret anywhere; every answer as a
client sees it (401 with its RFC 6750 challenge, 403, 503 with
C{Retry-After}); key rotation while the server runs; a key server that is
down, slow (other pipes keep flowing) or answers garbage; and C{twistd
pipe --oidc-policy} re-reading its policy on C{SIGHUP} while a transfer
runs.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
import pytest_twisted
from twisted.logger import formatEvent

from pipe._oidc.keys import KeyState
from pipe._oidc.policy import load_policy

from .helpers import (
    RunningServer,
    curl,
    ended,
    payload,
    sha256_of,
    start_twistd,
    txpipe,
    wait_for,
    wait_for_status,
)
from .helpers.issuer import (
    GITHUB_ADMISSION,
    GITHUB_RULE,
    GITLAB_RULES,
    CertificateAuthority,
    TestIssuer,
    github_claims,
    gitlab_claims,
    policy_text,
)

RUN = "octo-org/octo-repo/5678901234"
PIPELINE = "my-group/my-project/574"


@pytest.fixture
def issuers(reactor: Any, tmp_path: Path) -> Iterator[Tuple[TestIssuer, TestIssuer]]:
    """A GitHub-like and a GitLab-like issuer, over TLS with a test CA."""
    authority = CertificateAuthority(tmp_path)
    made = (TestIssuer(reactor, authority), TestIssuer(reactor, authority))
    yield made
    for issuer in made:
        pytest_twisted.blockon(issuer.stop())


def write_policy(
    tmp_path: Path, github: TestIssuer, gitlab: TestIssuer, rules: str = ""
) -> Path:
    ca = github.authority.ca_file
    path = tmp_path / "policy.toml"
    path.write_text(
        policy_text(
            {
                "github": (github.url, f'ca_file = "{ca}"'),
                "gitlab": (gitlab.url, f'ca_file = "{ca}"'),
            },
            rules or GITHUB_RULE + GITLAB_RULES,
        )
    )
    return path


async def token_server(serve: Any, policy: Path, wait: bool = True) -> RunningServer:
    """A server with the policy, once its issuers' first key fetches ended."""
    server = serve(oidc_policy=load_policy(policy))
    authority = server.site.registry.token_gate.authority
    authority.start()
    if wait:
        await authority.keyring.ready()
    return server


def bearer(token: str) -> List[str]:
    return ["-H", f"Authorization: Bearer {token}"]


async def moved_on(reactor: Any, server: RunningServer, path: str, token: str) -> bytes:
    """L{moved} on C{path} of C{server}, the sender once the receiver is in."""
    return await moved(
        reactor,
        server.url(path),
        token,
        lambda: server.parties(path) == (False, 1),
    )


async def moved(reactor: Any, url: str, token: str, parties: Any = None) -> bytes:
    """
    One receiver and one sender with C{token} on C{url}: what the receiver
    got (the sender's C{[ERROR]} line if it was refused).
    """
    receiver = curl(reactor, *bearer(token), url, keep_text=True)
    if parties is not None:
        await wait_for(reactor, parties, what="the receiver")
    sent = await curl(reactor, "-d", "hello", *bearer(token), url, keep_text=True).ended
    got = await receiver.ended
    return got.text if got.text == b"hello" else sent.text + got.text


async def answer(reactor: Any, url: str, *args: str) -> Tuple[int, str, str]:
    """The status, the WWW-Authenticate/Retry-After headers and the body curl gets."""
    result = await curl(reactor, "-i", *args, url, keep_text=True).ended
    head, _, body = result.text.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = "\n".join(
        line
        for line in lines[1:]
        if line.lower().startswith(("www-authenticate:", "retry-after:"))
    )
    return status, headers, body.decode()


@pytest_twisted.ensureDeferred
async def test_github_and_gitlab_jobs_send_and_receive_by_curl(
    reactor: Any,
    serve: Any,
    issuers: Tuple[TestIssuer, TestIssuer],
    tmp_path: Path,
    events: List[Any],
) -> None:
    """
    A GitHub-shaped (RS256) and a GitLab-shaped (ES256) job each send 1 MiB
    to two receivers under their run's path, by curl with one header; the
    bytes arrive whole; the transfer event names the issuer, the rule and
    the claims it read, and no log holds a token.
    """
    github, gitlab = issuers
    server = await token_server(serve, write_policy(tmp_path, github, gitlab))
    now = reactor.seconds()
    data = payload(tmp_path, 1024 * 1024)
    tokens = []
    for token, path in (
        (github.token(github_claims(now)), f"{RUN}/app.tar"),
        (gitlab.token(gitlab_claims(now), gitlab.keys[1]), f"{PIPELINE}/app.tar"),
    ):
        tokens.append(token)
        url = server.url(path, "n=2")
        receivers = [curl(reactor, *bearer(token), url) for _ in range(2)]
        await wait_for(
            reactor,
            lambda path=path: server.parties(path) == (False, 2),  # type: ignore[misc]
            what="receivers",
        )
        sent = await curl(
            reactor, "-T", str(data), *bearer(token), url, keep_text=True
        ).ended
        assert b"[INFO] done: bytes=1048576 receivers=2/2" in sent.text, sent
        for receiver in receivers:
            got = await receiver.ended
            assert (got.code, got.digest) == (0, sha256_of(data))
    texts = [formatEvent(event) for event in events]
    assert not [text for text in texts if any(token in text for token in tokens)]
    # One event per transfer.
    transfers = list({e["pipe"]: e for e in events if e.get("tokens")}.values())
    assert len(transfers) == 2
    assert transfers[0]["tokens"][0] == GITHUB_ADMISSION
    assert "token of github by 'octo-repo runs'" in transfers[0]["line"]
    assert {t["rule"] for t in transfers[1]["tokens"]} == {"rule 2", "rule 3"}
    collectors = server.site.registry.statistics.collectors
    assert (
        collectors.get_sample_value("txpipe_admissions_total", {"method": "token"}) == 6
    )


@pytest_twisted.ensureDeferred
async def test_a_rule_names_its_receivers_by_a_claim(
    reactor: Any,
    serve: Any,
    issuers: Tuple[TestIssuer, TestIssuer],
    tmp_path: Path,
    events: List[Any],
) -> None:
    """
    A rule with C{receiver_name = "job_id"} names each receiver it admits
    by its job: the sender's lines and the transfer event say
    C{receiver 302}, unless the receiver names itself (C{Txpipe-Receiver}).
    """
    github, gitlab = issuers
    rules = GITLAB_RULES.replace(
        'scopes = ["receive"]', 'scopes = ["receive"]\nreceiver_name = "job_id"'
    )
    server = await token_server(serve, write_policy(tmp_path, github, gitlab, rules))
    now = reactor.seconds()
    url = server.url(f"{PIPELINE}/named", "n=2")
    by_claim = gitlab.token(gitlab_claims(now))
    named = gitlab.token(gitlab_claims(now, job_id="303"))
    receivers = [
        curl(reactor, *bearer(by_claim), url),
        curl(reactor, *bearer(named), "-H", "Txpipe-Receiver: runner-b", url),
    ]
    await wait_for(
        reactor,
        lambda: server.parties(f"{PIPELINE}/named") == (False, 2),
        what="receivers",
    )
    sent = await curl(
        reactor, "-d", "hello", *bearer(by_claim), url, keep_text=True
    ).ended
    assert b"[INFO] done: bytes=5 receivers=2/2" in sent.text, sent
    for receiver in receivers:
        assert (await receiver.ended).code == 0
    [event] = [e for e in events if e.get("outcome") == "complete"]
    assert "302 (127.0.0.1:" in event["receivers"]
    assert "runner-b (127.0.0.1:" in event["receivers"]
    assert "303" not in event["receivers"]


@pytest_twisted.ensureDeferred
async def test_refusals_as_a_client_sees_them(
    reactor: Any,
    serve: Any,
    issuers: Tuple[TestIssuer, TestIssuer],
    tmp_path: Path,
) -> None:
    """
    No token: 401 with a bare Bearer challenge; a bad token: 401 with
    error="invalid_token" and what is wrong; a good token elsewhere: 403;
    keys that cannot be had: 503 with Retry-After.  Each is counted by
    method and reason.
    """
    github, gitlab = issuers
    gitlab.mode = "down"
    server = await token_server(serve, write_policy(tmp_path, github, gitlab))
    now = reactor.seconds()
    url = server.url(f"{RUN}/x")
    assert await answer(reactor, url) == (
        401,
        'WWW-Authenticate: Bearer realm="txpipe"',
        "[ERROR] token refused: an Authorization: Bearer token (an OIDC ID token)"
        " is required\n",
    )
    expired = github.token(github_claims(now - 3600))
    status, headers, body = await answer(reactor, url, *bearer(expired))
    assert status == 401
    assert headers.startswith(
        'WWW-Authenticate: Bearer realm="txpipe", error="invalid_token", '
        'error_description="the token expired'
    )
    assert body.startswith("[ERROR] token refused: the token expired")
    other_run = server.url("octo-org/octo-repo/1/x")
    status, headers, body = await answer(
        reactor, other_run, *bearer(github.token(github_claims(now)))
    )
    assert (status, body) == (
        403,
        "[ERROR] token refused: this token may not receive on this path\n",
    )
    assert 'error="insufficient_scope"' in headers
    status, headers, body = await answer(
        reactor,
        server.url(f"{PIPELINE}/x"),
        *bearer(gitlab.token(gitlab_claims(now))),
    )
    assert (status, headers) == (503, "Retry-After: 5")
    assert "keys are being fetched" in body
    collectors = server.site.registry.statistics.collectors
    for reason in ("token_required", "token_expired", "token_forbidden"):
        assert (
            collectors.get_sample_value(
                "txpipe_authentication_refusals_total",
                {"method": "token", "reason": reason},
            )
            == 1
        )
    assert (
        collectors.get_sample_value(
            "txpipe_authentication_refusals_total",
            {"method": "token", "reason": "token_audience"},
        )
        == 0
    )


@pytest_twisted.ensureDeferred
async def test_signature_or_token_admits(
    reactor: Any,
    serve: Any,
    issuers: Tuple[TestIssuer, TestIssuer],
    tmp_path: Path,
) -> None:
    """
    Beside --secret-file, a signed URL or a token admits; with neither, the
    401 offers both.
    """
    from pipe.signing import sign_url

    from .helpers import KEY

    github, gitlab = issuers
    server = serve(
        keys=(KEY,),
        oidc_policy=load_policy(write_policy(tmp_path, github, gitlab)),
    )
    server.site.registry.token_gate.authority.start()
    await server.site.registry.token_gate.authority.keyring.ready()
    url = server.url(f"{RUN}/x")
    status, headers, _ = await answer(reactor, url)
    assert (status, headers) == (
        401,
        'WWW-Authenticate: Bearer realm="txpipe", Signed-URL realm="txpipe"',
    )
    receive = curl(
        reactor,
        *bearer(github.token(github_claims(reactor.seconds()))),
        url,
        keep_text=True,
    )
    await wait_for(reactor, lambda: server.parties(f"{RUN}/x") == (False, 1))
    sent = await curl(
        reactor, "-d", "hello", sign_url(url, KEY, "send", 60), keep_text=True
    ).ended
    assert b"done" in sent.text
    assert (await receive.ended).text == b"hello"


@pytest_twisted.ensureDeferred
async def test_replay_once_per_scope_spends_tokens_of_started_transfers(
    reactor: Any,
    serve: Any,
    issuers: Tuple[TestIssuer, TestIssuer],
    tmp_path: Path,
) -> None:
    """
    With replay = "once-per-scope", a transfer's start spends its parties'
    tokens: the sender's token cannot send again (403 token_used), while a
    fresh token of the same job can.
    """
    github, gitlab = issuers
    path = write_policy(tmp_path, github, gitlab)
    path.write_text('replay = "once-per-scope"\n' + path.read_text())
    server = await token_server(serve, path)
    token = github.token(github_claims(reactor.seconds()))
    assert await moved_on(reactor, server, f"{RUN}/once", token) == b"hello"
    status, _, body = await answer(
        reactor, server.url(f"{RUN}/again"), "-d", "x", *bearer(token)
    )
    assert (status, body) == (
        403,
        "[ERROR] token refused: this token was already used to send\n",
    )
    fresh = github.token(github_claims(reactor.seconds()))
    assert await moved_on(reactor, server, f"{RUN}/again", fresh) == b"hello"


@pytest_twisted.ensureDeferred
async def test_key_rotation_while_running(
    reactor: Any,
    serve: Any,
    issuers: Tuple[TestIssuer, TestIssuer],
    tmp_path: Path,
) -> None:
    """
    The issuer rotates its RSA key while the server runs: the first token
    under the new kid gets 503 while the keys are fetched again, then it
    is admitted; a token under the dropped key is refused (401 token_key).
    """
    github, gitlab = issuers
    server = await token_server(serve, write_policy(tmp_path, github, gitlab))
    keys = server.site.registry.token_gate.authority.keyring.keys_of(
        github.url, str(github.authority.ca_file)
    )
    keys.attempted_at = -1e9  # the start-up fetch was long ago: no cooldown
    old_key = github.keys[0]
    github.rotate()
    now = reactor.seconds()
    url = server.url(f"{RUN}/rotated", "wait=1")
    token = github.token(github_claims(now))
    status, headers, _ = await answer(reactor, url, *bearer(token))
    assert (status, headers) == (503, "Retry-After: 5")
    await server.site.registry.token_gate.authority.keyring.ready()
    assert await moved_on(reactor, server, f"{RUN}/rotated", token) == b"hello"
    stale = github.token(github_claims(now), old_key)
    status, _, body = await answer(reactor, url, *bearer(stale))
    assert (status, body) == (
        401,
        "[ERROR] token refused: the token's key (kid) is unknown\n",
    )


@pytest_twisted.ensureDeferred
async def test_slow_key_server_blocks_no_other_pipe(
    reactor: Any,
    serve: Any,
    issuers: Tuple[TestIssuer, TestIssuer],
    tmp_path: Path,
) -> None:
    """
    One issuer's key server takes 5 s to answer: meanwhile its tokens get
    503 and the other issuer's jobs transfer as usual (the fetch blocks
    nothing); once the keys arrive, its tokens are admitted.
    """
    github, gitlab = issuers
    gitlab.mode = "slow"
    gitlab.delay = 5.0
    server = serve(oidc_policy=load_policy(write_policy(tmp_path, github, gitlab)))
    authority = server.site.registry.token_gate.authority
    started = reactor.seconds()
    authority.start()
    slow = authority.keyring.keys_of(gitlab.url, str(gitlab.authority.ca_file))
    await wait_for(
        reactor,
        lambda: (
            authority.keyring.keys_of(github.url, str(github.authority.ca_file)).state
            is KeyState.READY
        ),
    )
    token = github.token(github_claims(reactor.seconds()))
    for number in range(5):
        url = server.url(f"{RUN}/{number}")
        receiver = curl(reactor, *bearer(token), url, keep_text=True)
        await wait_for(
            reactor,
            lambda number=number: server.parties(f"{RUN}/{number}") == (False, 1),  # type: ignore[misc]
        )
        sent = await curl(reactor, "-d", f"pipe {number}", *bearer(token), url).ended
        assert sent.code == 0
        assert (await receiver.ended).text == f"pipe {number}".encode()
    assert slow.state is KeyState.LOADING
    assert reactor.seconds() - started < 4.5
    status, headers, _ = await answer(
        reactor,
        server.url(f"{PIPELINE}/x", "wait=1"),
        *bearer(gitlab.token(gitlab_claims(reactor.seconds()))),
    )
    assert (status, headers) == (503, "Retry-After: 5")
    await authority.keyring.ready()
    assert slow.state is KeyState.READY
    assert reactor.seconds() - started >= 4.9


@pytest_twisted.ensureDeferred
async def test_garbage_key_server_then_recovery(
    reactor: Any,
    serve: Any,
    issuers: Tuple[TestIssuer, TestIssuer],
    tmp_path: Path,
    events: List[Any],
) -> None:
    """
    A key server answering garbage or an empty JWKS yields no keys (503,
    and the log says why); the keys held survive a later garbage answer.
    """
    github, gitlab = issuers
    github.mode = "garbage"
    server = await token_server(serve, write_policy(tmp_path, github, gitlab))
    url = server.url(f"{RUN}/x", "wait=1")
    token = github.token(github_claims(reactor.seconds()))
    assert (await answer(reactor, url, *bearer(token)))[0] == 503
    assert any(
        "fetching the OIDC keys of" in formatEvent(e) and "not JSON" in formatEvent(e)
        for e in events
    )
    keys = server.site.registry.token_gate.authority.keyring.keys_of(
        github.url, str(github.authority.ca_file)
    )
    github.mode = "empty"
    await keys.refresh()
    assert keys.state is KeyState.EMPTY
    github.mode = "ok"
    await keys.refresh()
    github.mode = "garbage"
    await keys.refresh()
    assert keys.state is KeyState.READY
    assert await moved_on(reactor, server, f"{RUN}/y", token) == b"hello"


@pytest_twisted.ensureDeferred
async def test_txpipe_send_and_recv_with_id_tokens(
    reactor: Any,
    serve: Any,
    issuers: Tuple[TestIssuer, TestIssuer],
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    """
    C{txpipe send --id-token github:AUDIENCE} (the token asked of a fake
    Actions token service, as a runner would) and C{txpipe recv --id-token
    env:NAME} and C{file:PATH} move real bytes; a missing variable is a
    usage error (status 2) that prints no token.
    """
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from .helpers.issuer import AUDIENCE

    github, gitlab = issuers
    server = await token_server(serve, write_policy(tmp_path, github, gitlab))
    token = github.token(github_claims(reactor.seconds()))
    asked: List[Any] = []

    class Actions(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            asked.append((request.args, request.getHeader("authorization")))
            return json.dumps({"value": token}).encode()

    actions = reactor.listenTCP(0, Site(Actions()), interface="127.0.0.1")
    monkeypatch.setenv(
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        f"http://127.0.0.1:{actions.getHost().port}/token?api-version=2.0",
    )
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-request-token")
    monkeypatch.setenv("TXPIPE_ID_TOKEN", token)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    data = payload(tmp_path, 300 * 1024)
    url = server.url(f"{RUN}/cli", "n=2")
    try:
        receivers = [
            txpipe(
                reactor,
                "recv",
                "-q",
                "--id-token",
                "env:TXPIPE_ID_TOKEN",
                url,
                "-o",
                str(tmp_path / "a"),
            ),
            txpipe(
                reactor,
                "recv",
                "-q",
                "--id-token",
                f"file:{token_file}",
                url,
                "-o",
                str(tmp_path / "b"),
            ),
        ]
        await wait_for(reactor, lambda: server.parties(f"{RUN}/cli") == (False, 2))
        code, _, err = await ended(
            txpipe(
                reactor,
                "send",
                "-q",
                "--id-token",
                f"github:{AUDIENCE}",
                url,
                str(data),
            )
        )
        assert code == 0, err
        for receiver in receivers:
            code, _, err = await ended(receiver)
            assert code == 0, err
        assert sha256_of(tmp_path / "a") == sha256_of(tmp_path / "b") == sha256_of(data)
        ((args, authorization),) = asked
        assert args[b"audience"] == [AUDIENCE.encode()]
        assert args[b"api-version"] == [b"2.0"]
        assert authorization == "bearer runner-request-token"
        monkeypatch.delenv("TXPIPE_ID_TOKEN")
        code, out, err = await ended(
            txpipe(reactor, "recv", "--id-token", "env:TXPIPE_ID_TOKEN", url)
        )
        assert code == 2
        assert b"$TXPIPE_ID_TOKEN is not set" in err
        assert token.encode() not in out + err
    finally:
        await actions.stopListening()


def _hup_policy(tmp_path: Path, issuer: TestIssuer, run_id: str) -> str:
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(issuer.jwks())
    return policy_text(
        {"github": (issuer.url, f'jwks_file = "{jwks}"')},
        GITHUB_RULE.replace("{run_id}", run_id),
    )


@pytest_twisted.ensureDeferred
async def test_sighup_rereads_policy_while_a_transfer_runs(
    reactor: Any,
    issuers: Tuple[TestIssuer, TestIssuer],
    tmp_path: Path,
) -> None:
    """
    C{twistd pipe --oidc-policy}: a transfer runs; C{SIGHUP} with a new
    policy (another run's path) and then with a broken one: the transfer
    finishes whole; the next requests meet the new policy, and then still
    the new policy (the broken file is logged, not used).
    """
    github, _ = issuers
    policy = tmp_path / "policy.toml"
    policy.write_text(_hup_policy(tmp_path, github, "{run_id}"))
    twistd = start_twistd(reactor, tmp_path, "--oidc-policy", str(policy))
    try:
        port = await twistd.listening
        base = f"http://127.0.0.1:{port}/api/v1/pipe"
        token = github.token(github_claims(reactor.seconds()))
        token_file = tmp_path / "token"
        token_file.write_text(token)
        url = f"{base}/{RUN}/long"
        receiver = curl(reactor, *bearer(token), url)
        sender = txpipe(
            reactor, "send", "-q", "--id-token", f"file:{token_file}", url, feed=True
        )
        first = os.urandom(64 * 1024)
        sender.feed(first)
        await wait_for_status(reactor, port, lambda d: d["pipes_running"] == 1)
        policy.write_text(_hup_policy(tmp_path, github, "999"))
        os.kill(twistd.pid, signal.SIGHUP)
        await wait_for(
            reactor, lambda: b"re-read" in bytes(twistd.output), what="re-read"
        )
        status, _, body = await answer(reactor, f"{base}/{RUN}/next", *bearer(token))
        assert status == 403, body
        policy.write_text("audience = \n")
        os.kill(twistd.pid, signal.SIGHUP)
        await wait_for(
            reactor, lambda: b"not re-read" in bytes(twistd.output), what="kept"
        )
        assert b"policy.toml" in bytes(twistd.output)
        status, _, body = await answer(reactor, f"{base}/{RUN}/next", *bearer(token))
        assert status == 403, body
        other = github.token(github_claims(reactor.seconds(), run_id="999"))
        got = await moved(reactor, f"{base}/octo-org/octo-repo/999/x", other)
        assert got == b"hello"
        rest = os.urandom(64 * 1024)
        sender.feed(rest)
        assert sender.transport is not None
        sender.transport.closeStdin()
        code, _, err = await ended(sender)
        assert code == 0, err
        whole = await receiver.ended
        import hashlib

        assert whole.digest == hashlib.sha256(first + rest).hexdigest()
    finally:
        await twistd.stop()


def test_bad_policy_stops_the_server_with_one_line(tmp_path: Path) -> None:
    """
    A bad policy file at start: C{twistd pipe} exits non-zero with one line
    naming the file, the key and the problem.
    """
    import subprocess
    import sys

    from .helpers import child_env, twistd_pipe

    policy = tmp_path / "policy.toml"
    policy.write_text(
        'audience = "x"\n[issuer.gh]\nurl = "https://a.example"\n'
        'algorithms = ["HS256"]\n'
    )
    argv = twistd_pipe(
        "tcp:0:interface=127.0.0.1", "--oidc-policy", str(policy), log="-"
    )
    done = subprocess.run(
        [sys.executable, *argv[1:]] if argv[0] == sys.executable else argv,
        env=child_env(),
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "policy.toml" in line]
    assert lines == [
        f"twistd pipe: --oidc-policy {policy}: issuer.gh.algorithms: 'HS256' is not"
        " allowed (one of ES256, ES384, ES512, EdDSA, PS256, PS384, PS512, RS256,"
        " RS384, RS512; never none or HS*)"
    ], done.stderr
