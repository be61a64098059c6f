"""
Verifying OIDC ID tokens (L{pipe._oidc.tokens}) and admitting them under a
policy (L{pipe._oidc.authority}), by the clock of a L{task.Clock}: every
hostile token refused with its reason and none admitted; and the keys of a
discovered issuer (L{pipe._oidc.keys}): fetched at start, refreshed on an
unknown C{kid} at most once per cooldown, after a bounded age, and kept
when a fetch fails or finds nothing.  No network: keys come from a
C{jwks_file} or from a fetch function the test answers.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pipe._oidc import keys as keys_module
from pipe._oidc.authority import Authority
from pipe._oidc.keys import KeyState
from pipe._oidc.policy import load_policy, parse_policy
from pipe._oidc.tokens import MAX_TOKEN, Problem, TokenRefused

from .helpers.issuer import (
    AUDIENCE,
    GITHUB_ADMISSION,
    GITHUB_RULE,
    GITLAB_RULES,
    SigningKey,
    compose,
    github_claims,
    gitlab_claims,
    hs256_with,
    policy_text,
    rsa_key,
)

NOW = 1_800_000_000.0
GITHUB = "https://token.actions.githubusercontent.com"
GITLAB = "https://gitlab.example.com"


class Keys:
    """An issuer's signing keys, and its JWKS in a file."""

    def __init__(self, tmp_path: Path) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.rsa = SigningKey("rsa-1", "RS256", rsa_key())
        self.ec = SigningKey("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))
        self.jwks = tmp_path / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [self.rsa.jwk(), self.ec.jwk()]}))

    def token(self, claims: Dict[str, Any], key: Any = None, **header: Any) -> str:
        key = key or self.rsa
        return key.sign({"kid": key.kid, **header}, claims)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


def authority(keys: Keys, tmp_path: Path, **top: Any) -> Authority:
    path = tmp_path / "policy.toml"
    path.write_text(
        policy_text(
            {
                "github": (GITHUB, f'jwks_file = "{keys.jwks}"'),
                "gitlab": (GITLAB, f'jwks_file = "{keys.jwks}"'),
            },
            GITHUB_RULE + GITLAB_RULES,
            **top,
        )
    )
    clock = Clock()
    clock.advance(NOW)
    return Authority(load_policy(path), clock, fetcher=lambda ca: None)


def github(**changes: Any) -> Dict[str, Any]:
    return github_claims(NOW, **{"iss": GITHUB, **changes})


def refused(
    authority: Authority,
    token: Any,
    scope: str = "send",
    path: bytes = b"octo-org/octo-repo/5678901234/x",
) -> TokenRefused:
    if isinstance(token, str):
        token = token.encode()
    with pytest.raises(TokenRefused) as raised:
        authority.admit(token, scope, path)
    return raised.value


def test_github_token_admitted_under_its_run(keys: Keys, tmp_path: Path) -> None:
    """
    A GitHub-shaped token (RS256) may send and receive under
    {repository}/{run_id}/; the match names the rule and the claims it read.
    """
    gate = authority(keys, tmp_path)
    token = keys.token(github()).encode()
    for scope in ("send", "receive"):
        admission = gate.admit(token, scope, b"octo-org/octo-repo/5678901234/app.tar")
        assert admission.for_log() == GITHUB_ADMISSION


def test_gitlab_token_admitted_by_scope(keys: Keys, tmp_path: Path) -> None:
    """
    A GitLab-shaped ES256 token: a protected ref sends, an unprotected one
    only receives (403 for sending); runner_id (an integer) is ignored.
    """
    gate = authority(keys, tmp_path)
    path = b"my-group/my-project/574/out"
    protected = keys.token(gitlab_claims(NOW, iss=GITLAB), keys.ec).encode()
    assert gate.admit(protected, "send", path).match.rule == "rule 2"
    unprotected = keys.token(
        gitlab_claims(NOW, iss=GITLAB, ref_protected="false"), keys.ec
    ).encode()
    assert gate.admit(unprotected, "receive", path).match.rule == "rule 3"
    assert refused(gate, unprotected, "send", path).problem is Problem.FORBIDDEN


def test_other_run_or_repository_forbidden(keys: Keys, tmp_path: Path) -> None:
    """
    A good token is forbidden outside its run's paths, and a repository of
    another owner ID never matches; the message does not reveal the policy.
    """
    gate = authority(keys, tmp_path)
    token = keys.token(github())
    for path in (
        b"octo-org/octo-repo/5678901235/x",
        b"octo-org/octo-repo/56789012345/x",
        b"octo-org/octo-rep/5678901234/x",
        b"octo-org/octo-repo/5678901234",
    ):
        problem = refused(gate, token, path=path)
        assert problem.problem is Problem.FORBIDDEN
        assert "octo" not in problem.detail and "65" not in problem.detail
    resurrected = keys.token(github(repository_owner_id="66"))
    assert refused(gate, resurrected).problem is Problem.FORBIDDEN
    target = keys.token(github(event_name="pull_request_target"))
    assert refused(gate, target).problem is Problem.FORBIDDEN


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "name, problem",
    [
        ("alg none", Problem.ALGORITHM),
        ("HS256 keyed with the public key", Problem.ALGORITHM),
        ("HS256 keyed with the JWK", Problem.ALGORITHM),
        ("wrong iss", Problem.ISSUER),
        ("iss a prefix of ours", Problem.ISSUER),
        ("aud wrong", Problem.AUDIENCE),
        ("aud missing", Problem.AUDIENCE),
        ("aud a list holding ours", Problem.AUDIENCE),
        ("expired", Problem.EXPIRED),
        ("nbf in the future", Problem.NOT_YET_VALID),
        ("iat in the future", Problem.NOT_YET_VALID),
        ("no exp", Problem.CLAIMS),
        ("exp a string", Problem.CLAIMS),
        ("no kid", Problem.KEY),
        ("unknown kid", Problem.KEY),
        ("16 KiB", Problem.MALFORMED),
        ("broken base64", Problem.MALFORMED),
        ("broken JSON", Problem.MALFORMED),
        ("payload a list", Problem.MALFORMED),
        ("two parts", Problem.MALFORMED),
        ("crit header", Problem.MALFORMED),
        ("bad signature", Problem.SIGNATURE),
        ("signed by another key, same kid", Problem.SIGNATURE),
        ("RS256 kid used with ES256", Problem.ALGORITHM),
        ("ES384 not allowed", Problem.ALGORITHM),
    ],
)
def test_hostile_token_refused(
    keys: Keys, tmp_path: Path, name: str, problem: Problem
) -> None:
    """
    Each hostile token is refused with its reason, never admitted.
    """
    gate = authority(keys, tmp_path)
    claims = github()
    rsa = {"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}
    token: Any
    if name == "alg none":
        token = compose({"alg": "none", "kid": "rsa-1"}, claims)
        token = token + "AA"  # a non-empty third part, as some libraries send
    elif name == "HS256 keyed with the public key":
        token = compose(
            {"alg": "HS256", "kid": "rsa-1"}, claims, hs256_with(keys.rsa.public_pem())
        )
    elif name == "HS256 keyed with the JWK":
        secret = json.dumps(keys.rsa.jwk()).encode()
        token = compose({"alg": "HS256", "kid": "rsa-1"}, claims, hs256_with(secret))
    elif name == "wrong iss":
        token = keys.token(github(iss="https://evil.example"))
    elif name == "iss a prefix of ours":
        token = keys.token(github(iss=GITHUB[:-4]))
    elif name == "aud wrong":
        token = keys.token(github(aud="https://other.example"))
    elif name == "aud missing":
        del claims["aud"]
        token = keys.token(claims)
    elif name == "aud a list holding ours":
        token = keys.token(github(aud=[AUDIENCE, "https://other.example"]))
    elif name == "expired":
        token = keys.token(github(exp=int(NOW) - 31))
    elif name == "nbf in the future":
        token = keys.token(github(nbf=int(NOW) + 31))
    elif name == "iat in the future":
        token = keys.token(github(iat=int(NOW) + 31))
    elif name == "no exp":
        del claims["exp"]
        token = keys.token(claims)
    elif name == "exp a string":
        token = keys.token(github(exp=str(int(NOW) + 60)))
    elif name == "no kid":
        token = keys.rsa.sign({}, claims)
    elif name == "unknown kid":
        token = keys.rsa.sign({"kid": "rsa-404"}, claims)
    elif name == "16 KiB":
        token = keys.token(github(padding="x" * 16 * 1024))
        assert len(token) > MAX_TOKEN
    elif name == "broken base64":
        header, payload, signature = keys.token(claims).split(".")
        token = header + "." + payload[:-3] + "!!!" + "." + signature
    elif name == "broken JSON":
        token = _b64(json.dumps(rsa).encode()) + "." + _b64(b'{"iss": ') + ".AAAA"
    elif name == "payload a list":
        token = _b64(json.dumps(rsa).encode()) + "." + _b64(b"[1, 2]") + ".AAAA"
    elif name == "two parts":
        token = ".".join(keys.token(claims).split(".")[:2])
    elif name == "crit header":
        token = keys.token(claims, crit=["exp"])
    elif name == "bad signature":
        header, payload, signature = keys.token(claims).split(".")
        token = header + "." + payload + "." + signature[::-1]
    elif name == "signed by another key, same kid":
        token = SigningKey("rsa-1", "RS256", rsa_key()).sign({"kid": "rsa-1"}, claims)
    elif name == "RS256 kid used with ES256":
        token = keys.ec.sign({"kid": "rsa-1"}, claims)
    elif name == "ES384 not allowed":
        token = compose({"alg": "ES384", "kid": "ec-1"}, claims, lambda d: b"x" * 96)
    else:
        raise AssertionError(name)
    found = refused(gate, token)
    assert found.problem is problem, found.detail
    assert token not in found.detail


def test_leeway_allows_small_skew(keys: Keys, tmp_path: Path) -> None:
    """
    An aud of a list holding only ours passes.
    exp, nbf and iat within the leeway (30 s by default, or the policy's)
    pass; beyond it they do not.
    """
    gate = authority(keys, tmp_path)
    path = b"octo-org/octo-repo/5678901234/x"
    skewed = github(exp=int(NOW) - 30, nbf=int(NOW) + 30, iat=int(NOW) + 30)
    gate.admit(keys.token(skewed).encode(), "send", path)
    listed = github(aud=[AUDIENCE])  # a list of ours alone, as some issuers send
    gate.admit(keys.token(listed).encode(), "send", path)
    strict = authority(keys, tmp_path, leeway=0)
    assert refused(strict, keys.token(skewed)).problem is Problem.EXPIRED


@pytest.mark.parametrize(
    "repository, run_id",
    [
        ("octo-org/../octo-repo", "5678901234"),
        ("octo-org/./octo-repo", "5678901234"),
        ("octo-org//octo-repo", "5678901234"),
        ("octo-org/octo-repo", ".."),
        ("octo-org/octo-repo", "1/2"),
        ("octo-org/octo-repo", "12%2F34"),
        ("octo-org/octo-repo", "*"),
        ("octo-org/octo-repo", "12\x0034"),
        ("octo-org/octo-repo", ""),
        ("octo-org/octo-repo/", "5678901234"),
    ],
)
def test_unsafe_claim_values_do_not_match(
    keys: Keys, tmp_path: Path, repository: str, run_id: str
) -> None:
    """
    A claim substituted into a path must be path-safe: one holding /, ..,
    %2F, *, NUL or nothing makes its rule not match (403), whatever the
    requested path.
    """
    gate = authority(keys, tmp_path)
    token = keys.token(github(repository=repository, run_id=run_id))
    path = f"{repository}/{run_id}/x".encode()
    assert refused(gate, token, path=path).problem is Problem.FORBIDDEN


def test_claims_compared_as_strings(keys: Keys, tmp_path: Path) -> None:
    """
    Integer and boolean claims compare as their JSON text: a Buildkite-style
    integer build number and a boolean matched against "true".
    """
    jwks = keys.jwks
    policy = parse_policy(
        policy_text(
            {"bk": ("https://agent.buildkite.com", f'jwks_file = "{jwks}"')},
            """
[[rule]]
issuer = "bk"
scopes = ["send"]
path = "{pipeline_slug}/{build_number}/"
[rule.claims]
organization_id = "0190"
protected = "true"
""",
        )
    )
    clock = Clock()
    clock.advance(NOW)
    gate = Authority(policy, clock, fetcher=lambda ca: None)
    claims = {
        "iss": "https://agent.buildkite.com",
        "aud": AUDIENCE,
        "organization_id": "0190",
        "protected": True,
        "pipeline_slug": "app",
        "build_number": 42,
        "step_key": None,
        "iat": int(NOW),
        "exp": int(NOW) + 300,
    }
    admission = gate.admit(keys.token(claims).encode(), "send", b"app/42/out")
    assert admission.match.claims["build_number"] == "42"


def test_replay_once_per_scope(keys: Keys, tmp_path: Path) -> None:
    """
    With replay = "once-per-scope", a token spent on a transfer cannot
    send again (403 token_used), but can still receive once; a token with
    no jti is refused.
    """
    gate = authority(keys, tmp_path, replay="once-per-scope")
    path = b"octo-org/octo-repo/5678901234/x"
    token = keys.token(github()).encode()
    sent = gate.admit(token, "send", path)
    gate.admit(token, "send", path)  # not spent until a transfer starts
    gate.spend([sent, None])
    assert refused(gate, token, "send").problem is Problem.USED
    gate.admit(token, "receive", path)
    claims = github()
    del claims["jti"]
    assert refused(gate, keys.token(claims)).problem is Problem.CLAIMS


# The keys of a discovered issuer.


class Fetches:
    """A fetch function whose answers the test gives."""

    def __init__(self) -> None:
        self.pending: List[Any] = []

    def __call__(self, ca_file: Any) -> Any:
        def fetch(url: str) -> Deferred[bytes]:
            d: Deferred[bytes] = Deferred()
            self.pending.append((url, d))
            return d

        return fetch

    def answer(self, url: str, jwks: bytes) -> None:
        """Answer the discovery, then the JWKS fetch, of the first pending."""
        discovery_url, discovery = self.pending.pop(0)
        assert discovery_url == url + "/.well-known/openid-configuration"
        discovery.callback(
            json.dumps({"issuer": url, "jwks_uri": url + "/jwks"}).encode()
        )
        jwks_url, fetched = self.pending.pop(0)
        assert jwks_url == url + "/jwks"
        fetched.callback(jwks)

    def fail(self) -> None:
        _, discovery = self.pending.pop(0)
        discovery.errback(ConnectionRefusedError("down"))


def discovered(keys: Keys) -> Any:
    fetches = Fetches()
    policy = parse_policy(policy_text({"github": (GITHUB, "")}, GITHUB_RULE))
    clock = Clock()
    clock.advance(NOW)
    return Authority(policy, clock, fetcher=fetches), fetches, clock


def test_keys_fetched_at_start_then_used(keys: Keys) -> None:
    """
    The keys are fetched when the authority starts; until they are in, a
    token gets KEYS_UNAVAILABLE (503), then it is admitted.
    """
    gate, fetches, _clock = discovered(keys)
    gate.start()
    assert len(fetches.pending) == 1
    token = keys.token(github()).encode()
    assert refused(gate, token).problem is Problem.KEYS_UNAVAILABLE
    assert len(fetches.pending) == 1  # no second fetch while one is under way
    fetches.answer(GITHUB, keys.jwks.read_bytes())
    gate.admit(token, "send", b"octo-org/octo-repo/5678901234/x")


def test_unknown_kid_refreshes_once_per_cooldown(keys: Keys) -> None:
    """
    A burst of tokens with an unknown kid causes one fetch: 503 while it
    is under way, then 401 token_key until the cooldown has passed; then
    one more fetch, which finds a rotated key.
    """
    gate, fetches, clock = discovered(keys)
    gate.start()
    fetches.answer(GITHUB, keys.jwks.read_bytes())
    clock.advance(keys_module.COOLDOWN)
    rotated = SigningKey("rsa-2", "RS256", rsa_key())
    token = keys.token(github(), rotated).encode()
    assert refused(gate, token).problem is Problem.KEYS_UNAVAILABLE
    for _ in range(50):
        assert refused(gate, token).problem is Problem.KEYS_UNAVAILABLE
    assert len(fetches.pending) == 1
    fetches.answer(GITHUB, keys.jwks.read_bytes())  # still without rsa-2
    for _ in range(50):
        assert refused(gate, token).problem is Problem.KEY
    assert not fetches.pending
    clock.advance(keys_module.COOLDOWN)
    assert refused(gate, token).problem is Problem.KEYS_UNAVAILABLE
    fetches.answer(GITHUB, json.dumps({"keys": [rotated.jwk()]}).encode())
    gate.admit(token, "send", b"octo-org/octo-repo/5678901234/x")
    keys_of = gate.keyring.keys_of(GITHUB, None)
    assert keys_of.fetches == 3
    assert sorted(keys_of.keys) == ["rsa-2"]


def test_failed_or_empty_fetch_keeps_keys(keys: Keys) -> None:
    """
    A refresh that fails, answers garbage or finds no key keeps the keys
    held: tokens signed by them are still admitted.
    """
    gate, fetches, clock = discovered(keys)
    gate.start()
    fetches.answer(GITHUB, keys.jwks.read_bytes())
    path = b"octo-org/octo-repo/5678901234/x"
    keys_of = gate.keyring.keys_of(GITHUB, None)
    for answer in (None, b"<html>", b'{"keys": []}', b'{"keys": [{"kty": "oct"}]}'):
        clock.advance(keys_module.MAX_AGE + 1)
        now = clock.seconds()
        token = keys.token(github_claims(now, iss=GITHUB)).encode()
        gate.admit(token, "send", path)  # starts a refresh, uses the old key
        assert keys_of.state is KeyState.REFRESHING
        if answer is None:
            fetches.fail()
        else:
            fetches.answer(GITHUB, answer)
        assert keys_of.state is KeyState.READY
        gate.admit(token, "send", path)


def test_failed_first_fetch_retried_after_cooldown(keys: Keys) -> None:
    """
    When the key server is down at start, tokens get 503 until a fetch
    after the cooldown succeeds.
    """
    gate, fetches, clock = discovered(keys)
    gate.start()
    fetches.fail()
    token = keys.token(github()).encode()
    assert refused(gate, token).problem is Problem.KEYS_UNAVAILABLE
    assert not fetches.pending
    clock.advance(keys_module.COOLDOWN)
    assert refused(gate, token).problem is Problem.KEYS_UNAVAILABLE
    fetches.answer(GITHUB, keys.jwks.read_bytes())
    gate.admit(token, "send", b"octo-org/octo-repo/5678901234/x")


def test_replaced_policy_keeps_keys_of_kept_issuers(keys: Keys) -> None:
    """
    A re-read policy with the same issuer keeps its keys (no fetch); a new
    issuer's keys are fetched at once; a dropped issuer's tokens are
    refused.
    """
    gate, fetches, _clock = discovered(keys)
    gate.start()
    fetches.answer(GITHUB, keys.jwks.read_bytes())
    gate.replace(
        parse_policy(
            policy_text({"github": (GITHUB, ""), "gitlab": (GITLAB, "")}, GITHUB_RULE)
        )
    )
    assert [url for url, _ in fetches.pending] == [
        GITLAB + "/.well-known/openid-configuration"
    ]
    gate.admit(
        keys.token(github()).encode(), "send", b"octo-org/octo-repo/5678901234/x"
    )
    gate.replace(parse_policy(policy_text({"gitlab": (GITLAB, "")}, GITLAB_RULES)))
    assert refused(gate, keys.token(github())).problem is Problem.ISSUER


def test_discovery_naming_another_issuer_is_a_failed_fetch(keys: Keys) -> None:
    """
    A discovery document whose issuer is not the configured URL is not
    used.
    """
    gate, fetches, _clock = discovered(keys)
    gate.start()
    _, discovery = fetches.pending.pop(0)
    discovery.callback(
        json.dumps(
            {"issuer": "https://evil.example", "jwks_uri": "https://evil.example/jwks"}
        ).encode()
    )
    assert not fetches.pending
    assert gate.keyring.keys_of(GITHUB, None).state is KeyState.EMPTY


def test_authority_ready(keys: Keys) -> None:
    """ready() fires once the first fetches have ended."""
    gate, fetches, _clock = discovered(keys)
    gate.start()
    ready = gate.keyring.ready()
    assert not ready.called
    fetches.answer(GITHUB, keys.jwks.read_bytes())
    assert ready.called
    assert gate.keyring.ready().called


def test_token_without_kid_where_the_issuer_omits_it(
    keys: Keys, tmp_path: Path
) -> None:
    """
    With require_kid = false, a token without a kid is checked with the
    issuer's only key; an issuer with several keys refuses it.
    """
    from cryptography.hazmat.primitives.asymmetric import ec

    only = tmp_path / "only.json"
    only.write_text(json.dumps({"keys": [keys.rsa.jwk()]}))
    policy = parse_policy(
        policy_text(
            {
                "one": (GITHUB, f'jwks_file = "{only}"\nrequire_kid = false'),
                "two": (GITLAB, f'jwks_file = "{keys.jwks}"\nrequire_kid = false'),
            },
            GITHUB_RULE.replace('"github"', '"one"'),
        )
    )
    clock = Clock()
    clock.advance(NOW)
    gate = Authority(policy, clock, fetcher=lambda ca: None)
    path = b"octo-org/octo-repo/5678901234/x"
    gate.admit(keys.rsa.sign({}, github()).encode(), "send", path)
    forged = SigningKey("x", "ES256", ec.generate_private_key(ec.SECP256R1()))
    assert refused(gate, forged.sign({}, github())).problem is Problem.ALGORITHM
    two = keys.rsa.sign({}, github(iss=GITLAB))
    assert refused(gate, two).problem is Problem.KEY


def test_every_credential_reason_counted_from_zero() -> None:
    """
    Admissions by method and refusals by method and reason are exported at
    0 from the start, every token and signature reason among them.
    """
    from pipe._transfer.refusal import REASONS
    from pipe._transfer.registry import Registry
    from pipe.server import Settings

    collectors = Registry(Clock(), Settings()).statistics.collectors
    for method in ("signature", "token"):
        assert (
            collectors.get_sample_value("txpipe_admissions_total", {"method": method})
            == 0
        )
    credential = [r for r in REASONS if r.startswith(("token_", "signature_"))]
    assert {p.value for p in Problem} <= set(credential)
    for reason in credential:
        method = reason.partition("_")[0]
        assert (
            collectors.get_sample_value(
                "txpipe_authentication_refusals_total",
                {"method": method, "reason": reason},
            )
            == 0
        ), reason
