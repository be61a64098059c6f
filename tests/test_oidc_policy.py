"""
The OIDC policy file (L{pipe._oidc.policy}): the memo's example parses;
every mistake is one L{PolicyError} line naming the file, the key and the
problem; rules match by issuer, claims (as strings), scope and a path
prefix on a segment boundary, with path-safe substitution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest

from pipe._oidc.policy import (
    DEFAULT_ALGORITHMS,
    PolicyError,
    claim_text,
    load_policy,
    parse_policy,
)

EXAMPLE = """
audience = "https://pipe.example.com"     # the only aud accepted
leeway = 30
replay = "off"

[issuer.github]
url = "https://token.actions.githubusercontent.com"
algorithms = ["RS256"]

[issuer.gitlab]
url = "https://gitlab.example.com"

[[rule]]
issuer = "github"
scopes = ["send", "receive"]
path = "{repository}/{run_id}/"
multi_segment = ["repository"]
[rule.claims]
repository_owner_id = "1234567"
repository_id = "89012345"
event_name = ["push", "workflow_dispatch", "schedule", "pull_request"]

[[rule]]
issuer = "gitlab"
scopes = ["send"]
path = "{project_path}/{pipeline_id}/"
multi_segment = ["project_path"]
[rule.claims]
project_id = "4242"
ref_protected = "true"
"""


def test_memo_example_parses() -> None:
    """
    The design memo's example (section 7) is a valid policy: defaults
    filled in, rules named by their place.
    """
    policy = parse_policy(EXAMPLE, "example.toml")
    assert policy.audience == "https://pipe.example.com"
    assert policy.leeway == 30 and policy.replay == "off"
    assert policy.issuers["github"].algorithms == ("RS256",)
    assert policy.issuers["gitlab"].algorithms == DEFAULT_ALGORITHMS
    assert policy.issuers["gitlab"].discovered
    assert [rule.name for rule in policy.rules] == ["rule 1", "rule 2"]
    assert policy.issuer_for("https://gitlab.example.com/") is None
    assert policy.issuer_for("https://gitlab.example.com").name == "gitlab"


def _broken(change: str, old: str = "") -> str:
    return EXAMPLE.replace(old, change) if old else EXAMPLE + change


@pytest.mark.parametrize(
    "text, key, problem",
    [
        ("audience = \n", "", "not valid TOML"),
        (
            EXAMPLE.replace('audience = "https://pipe.example.com"', ""),
            "audience",
            "must be given",
        ),
        (EXAMPLE.replace("leeway = 30", "leeway = 3000"), "leeway", "from 0 to 300"),
        (EXAMPLE.replace('replay = "off"', 'replay = "never"'), "replay", "must be"),
        (EXAMPLE.replace("leeway = 30", "lewway = 30"), "lewway", "unknown key"),
        (
            EXAMPLE.replace('algorithms = ["RS256"]', 'algorithms = ["none"]'),
            "issuer.github.algorithms",
            "'none' is not allowed",
        ),
        (
            EXAMPLE.replace('algorithms = ["RS256"]', 'algorithms = ["HS256"]'),
            "issuer.github.algorithms",
            "'HS256' is not allowed",
        ),
        (
            EXAMPLE.replace(
                'url = "https://gitlab.example.com"',
                'url = "http://gitlab.example.com"',
            ),
            "issuer.gitlab.url",
            "https://",
        ),
        (
            EXAMPLE.replace(
                'url = "https://gitlab.example.com"',
                'url = "https://token.actions.githubusercontent.com"',
            ),
            "issuer.gitlab.url",
            "the same as issuer.github",
        ),
        (
            EXAMPLE.replace(
                'url = "https://gitlab.example.com"',
                'url = "https://gitlab.example.com"\n'
                'jwks_file = "/nonexistent/jwks.json"',
            ),
            "issuer.gitlab.jwks_file",
            "no such file",
        ),
        (
            EXAMPLE.replace(
                'url = "https://gitlab.example.com"',
                'url = "https://gitlab.example.com"\nca_file = "/nonexistent/ca.pem"',
            ),
            "issuer.gitlab.ca_file",
            "no such file",
        ),
        (
            EXAMPLE.replace('issuer = "gitlab"', 'issuer = "gitlub"'),
            "rule[2].issuer",
            "must name an [issuer.NAME]",
        ),
        (
            EXAMPLE.replace('scopes = ["send"]', 'scopes = ["write"]'),
            "rule[2].scopes",
            "send or receive",
        ),
        (
            EXAMPLE.replace(
                'path = "{project_path}/{pipeline_id}/"', 'path = "{project_path}/{}/"'
            ),
            "rule[2].path",
            "names no claim",
        ),
        (
            EXAMPLE.replace(
                'path = "{project_path}/{pipeline_id}/"', 'path = "{project_path}/*/"'
            ),
            "rule[2].path",
            "only letters",
        ),
        (
            EXAMPLE.replace(
                'path = "{project_path}/{pipeline_id}/"', 'path = "/{project_path}/"'
            ),
            "rule[2].path",
            "must not start with /",
        ),
        (
            EXAMPLE.replace(
                'multi_segment = ["project_path"]', 'multi_segment = ["ref"]'
            ),
            "rule[2].multi_segment",
            "'ref' is not in the path",
        ),
        (
            EXAMPLE.replace('project_id = "4242"\nref_protected = "true"', ""),
            "rule[2].claims",
            "at least one claim",
        ),
        (
            EXAMPLE.replace('project_id = "4242"', "project_id = 4242"),
            "rule[2].claims.project_id",
            "string or a list of strings",
        ),
        (
            EXAMPLE.replace('scopes = ["send"]', 'scopes = ["send"]\npaths = "x/"'),
            "rule[2].paths",
            "unknown key",
        ),
        (
            EXAMPLE.replace(
                'scopes = ["send"]', 'scopes = ["send"]\nreceiver_name = 7'
            ),
            "rule[2].receiver_name",
            "a claim's name",
        ),
        ('audience = "a"\n[[rule]]\n', "issuer", "no [issuer.NAME]"),
        (
            'audience = "a"\n[issuer.x]\nurl = "https://x.example"\n',
            "rule",
            "no [[rule]]",
        ),
    ],
)
def test_bad_policy_names_file_key_and_problem(
    text: str, key: str, problem: str
) -> None:
    """
    Each mistake is refused with one line: the file, the key, the problem.
    """
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, "/etc/txpipe/oidc.toml")
    error = raised.value
    assert (error.source, error.key) == ("/etc/txpipe/oidc.toml", key)
    assert problem in error.problem
    assert "\n" not in str(error)
    assert str(error).startswith(
        "/etc/txpipe/oidc.toml: " + (f"{key}: " if key else "")
    )


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file is a PolicyError saying so."""
    with pytest.raises(PolicyError, match="cannot read it: No such file"):
        load_policy(tmp_path / "missing.toml")


def test_bad_jwks_file(tmp_path: Path) -> None:
    """A jwks_file with no usable key is refused at load."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}')
    text = EXAMPLE.replace(
        'url = "https://gitlab.example.com"',
        f'url = "https://gitlab.example.com"\njwks_file = "{jwks}"',
    )
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, "p.toml")
    assert raised.value.key == "issuer.gitlab.jwks_file"
    assert "no usable signing key" in raised.value.problem


def _claims(**changes: Any) -> Dict[str, Any]:
    claims: Dict[str, Any] = {
        "repository_owner_id": "1234567",
        "repository_id": "89012345",
        "event_name": "push",
        "repository": "org/app",
        "run_id": "77",
    }
    claims.update(changes)
    return claims


def test_rule_matching() -> None:
    """
    Deny by default; a rule matches on its issuer, every claim, the scope
    and the path under its substituted prefix (on a segment boundary).
    """
    policy = parse_policy(EXAMPLE)
    github, gitlab = policy.issuers["github"], policy.issuers["gitlab"]
    assert policy.match(github, _claims(), "send", b"org/app/77/x")
    assert policy.match(github, _claims(), "receive", b"org/app/77/")
    assert not policy.match(github, _claims(), "send", b"org/app/770/x")
    assert not policy.match(github, _claims(), "send", b"org/app/77")
    assert not policy.match(gitlab, _claims(), "send", b"org/app/77/x")
    assert not policy.match(
        github, _claims(event_name="pull_request_target"), "send", b"org/app/77/x"
    )
    missing = _claims()
    del missing["repository_id"]
    assert not policy.match(github, missing, "send", b"org/app/77/x")
    assert not policy.match(
        github, _claims(repository_id=89012345.5), "send", b"org/app/77/x"
    )


def test_segment_boundary_without_trailing_slash() -> None:
    """A path without a trailing / still matches on whole segments only."""
    text = EXAMPLE.replace(
        'path = "{repository}/{run_id}/"', 'path = "{repository}/{run_id}"'
    )
    policy = parse_policy(text)
    github = policy.issuers["github"]
    assert policy.match(github, _claims(), "send", b"org/app/77")
    assert policy.match(github, _claims(), "send", b"org/app/77/x")
    assert not policy.match(github, _claims(), "send", b"org/app/777")


@pytest.mark.parametrize(
    "value, text",
    [
        ("a", "a"),
        (42, "42"),
        (True, "true"),
        (False, "false"),
        (4.0, "4"),
        (None, None),
        ([1], None),
        ({"a": 1}, None),
        (float("nan"), None),
    ],
)
def test_claim_text(value: Any, text: Any) -> None:
    """Claims compare as strings: integers in decimal, booleans as JSON."""
    assert claim_text(value) == text


def test_oidc_package_imports_only_twisted_treq_pyjwt_and_stdlib() -> None:
    """
    C{pipe._oidc} knows nothing of HTTP answers nor of the rest of C{pipe}:
    it imports Twisted, treq, PyJWT, its own modules and the standard
    library only (tomli stands in for tomllib before Python 3.11).
    """
    import ast
    import sys

    package = Path(__file__).resolve().parent.parent / "pipe" / "_oidc"
    allowed = {"twisted", "treq", "jwt", "tomli", "tomllib", "__future__"}
    stdlib = set(getattr(sys, "stdlib_module_names", ())) or {
        "base64", "binascii", "dataclasses", "enum", "hashlib", "json", "math",
        "pathlib", "re", "signal", "sys", "threading", "typing",
    }  # fmt: skip
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if (node.module or "").startswith("pipe._oidc."):
                    continue  # within pipe._oidc
                assert not node.level, (path.name, node.module)
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in stdlib, (path.name, name)
