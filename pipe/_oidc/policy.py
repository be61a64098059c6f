# -*- test-case-name: tests.test_oidc_policy -*-
"""
The OIDC policy file (C{--oidc-policy FILE}, TOML): which issuers are
trusted, with which keys and algorithms, and which verified claims may use
which pipe paths for which scopes.

Deny by default: a token is allowed a scope on a path when any C{[[rule]]}
matches (L{Policy.match}).  A rule matches when the token's issuer is the
rule's, every claim of C{[rule.claims]} is present and, compared as a
string, equal to the value or one of the list, the scope is one of
C{scopes}, and the pipe path starts, on a segment boundary, with the rule's
C{path} after each C{{claim}} in it is replaced by the verified claim's
value.  A substituted value must be path-safe (L{SAFE_VALUE}; a claim
named in C{multi_segment} may also hold C{/}, but no empty, C{.} or C{..}
segment); a rule whose value is not does not match.  There are no globs.

Every problem of a file is a L{PolicyError} naming the file, the key and
what is wrong, in one line.  docs/usage.md is the reference.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple, Union

from pipe._oidc.keys import JWKSError, Key, parse_jwks

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9 and 3.10
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "Issuer",
    "Match",
    "Policy",
    "PolicyError",
    "Replay",
    "Rule",
    "claim_text",
    "load_policy",
    "parse_policy",
]

#: The signature algorithms an issuer may list: asymmetric ones only.
#: C{none} and the HMAC algorithms (C{HS*}) are refused whatever a policy
#: says: an HMAC "key" of a public issuer is public.
ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    }
)

#: An issuer's algorithms when its table lists none.
DEFAULT_ALGORITHMS = ("RS256", "ES256")

#: What a substituted claim value may hold (one path segment).
SAFE_VALUE = re.compile(r"[A-Za-z0-9._@-]+")

#: The literal text of a rule's C{path} between its C{{claim}}s.
_SAFE_LITERAL = re.compile(r"[A-Za-z0-9._@/-]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

#: The longest leeway a policy may set, in seconds.
MAX_LEEWAY = 300

SCOPES = ("send", "receive")

_TOP_KEYS = {"audience", "leeway", "replay", "issuer", "rule"}
_ISSUER_KEYS = {"url", "algorithms", "jwks_file", "ca_file", "require_kid"}
_RULE_KEYS = {
    "name",
    "issuer",
    "scopes",
    "path",
    "multi_segment",
    "claims",
    "receiver_name",
}


class PolicyError(ValueError):
    """
    A policy file that cannot be used: C{str()} is one line naming the
    file, the key and the problem.
    """

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(
            f"{source}: {key}: {problem}" if key else f"{source}: {problem}"
        )
        self.source = source
        self.key = key
        self.problem = problem


class Replay:
    """
    The values of the policy's C{replay}: C{OFF} (a token may be used for
    as many requests as its life allows), or C{ONCE_PER_SCOPE} (its C{jti}
    is spent, per scope, when a transfer starts with it).
    """

    OFF = "off"
    ONCE_PER_SCOPE = "once-per-scope"


@dataclass(frozen=True)
class Issuer:
    """
    One C{[issuer.NAME]} table.

    @ivar name: C{NAME}, which rules refer to.
    @ivar url: the exact C{iss} of its tokens; its keys are found from
        C{{url}/.well-known/openid-configuration} unless C{keys} are given.
    @ivar algorithms: the signature algorithms accepted.
    @ivar keys: the keys of C{jwks_file}, by C{kid} (L{None}: discovered).
    @ivar ca_file: a PEM file of the certificate authorities to trust for
        the discovery and JWKS fetches (L{None}: the system's).
    @ivar require_kid: whether a token must name its key (C{kid}); if not
        (C{require_kid = false}, for an issuer that omits it), a token
        without one is verified with the issuer's only key, and refused
        when it has several.
    """

    name: str
    url: str
    algorithms: Tuple[str, ...] = DEFAULT_ALGORITHMS
    keys: Optional[Mapping[str, Key]] = field(default=None, compare=False, repr=False)
    ca_file: Optional[str] = None
    require_kid: bool = True

    @property
    def discovered(self) -> bool:
        """
        Whether its keys are fetched (no C{jwks_file}).
        """
        return self.keys is None


@dataclass(frozen=True)
class Match:
    """
    A rule that allowed a request.

    @ivar rule: the rule's name (its C{name}, or C{rule N}).
    @ivar claims: the claims the rule read (its C{[rule.claims]} and
        those its C{path} substitutes), as compared.
    @ivar receiver_name: the value of the claim the rule's
        C{receiver_name} names, as a string (L{None}: the rule names none,
        or the token lacks it): a receiver admitted by the rule is called
        so unless its request names itself.
    """

    rule: str
    claims: Mapping[str, str]
    receiver_name: Optional[str] = None


@dataclass(frozen=True)
class Rule:
    """
    One C{[[rule]]}.

    @ivar name: its C{name}, or C{rule N} (its place in the file, from 1).
    @ivar issuer: the name of its issuer.
    @ivar scopes: C{send}, C{receive} or both.
    @ivar path: the path template, split into literal text (even
        indexes) and claim names (odd indexes).
    @ivar multi_segment: the claims whose values may hold C{/}.
    @ivar claims: each claim that must be present, with the strings it
        may equal.
    @ivar receiver_name: the claim whose value names a receiver this rule
        admits (a job's ID, say), or L{None}.
    """

    name: str
    issuer: str
    scopes: FrozenSet[str]
    path: Tuple[str, ...]
    multi_segment: FrozenSet[str]
    claims: Tuple[Tuple[str, FrozenSet[str]], ...]
    receiver_name: Optional[str] = None

    def match(
        self, claims: Mapping[str, Any], scope: str, path: bytes
    ) -> Optional[Match]:
        """
        Whether this rule allows C{claims} (a verified token's, of this
        rule's issuer) to use C{path} for C{scope}.
        """
        if scope not in self.scopes:
            return None
        used: Dict[str, str] = {}
        for name, allowed in self.claims:
            value = claim_text(claims.get(name))
            if value is None or value not in allowed:
                return None
            used[name] = value
        parts = []
        for index, part in enumerate(self.path):
            if index % 2 == 0:
                parts.append(part)
                continue
            value = claim_text(claims.get(part))
            if value is None or not _path_safe(value, part in self.multi_segment):
                return None
            used[part] = value
            parts.append(value)
        prefix = "".join(parts).encode("ascii")
        if not _under(path, prefix):
            return None
        named = None
        if self.receiver_name is not None:
            named = claim_text(claims.get(self.receiver_name))
        return Match(self.name, used, named)


def _under(path: bytes, prefix: bytes) -> bool:
    """
    Whether C{path} starts with C{prefix} on a segment boundary
    (C{org/app/12} is not under C{org/app/1}).
    """
    if prefix.endswith(b"/") or not prefix:
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + b"/")


def _path_safe(value: str, multi_segment: bool) -> bool:
    segments = value.split("/") if multi_segment else [value]
    return all(
        SAFE_VALUE.fullmatch(segment) and segment not in (".", "..")
        for segment in segments
    )


def claim_text(value: Any) -> Optional[str]:
    """
    A claim's value as the string a policy compares: text as it is,
    integers in decimal (Buildkite's C{build_number}), C{true} and
    C{false} as JSON writes them; L{None} for a missing or null claim and
    for lists and objects, which no rule can match.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


@dataclass(frozen=True)
class Policy:
    """
    A parsed policy file.

    @ivar source: where it was read from (for messages).
    @ivar audience: the one C{aud} accepted.
    @ivar leeway: seconds of clock skew allowed on C{exp}, C{nbf}, C{iat}.
    @ivar replay: see L{Replay}.
    @ivar issuers: the issuers, by name.
    @ivar rules: the rules, in file order.
    """

    source: str
    audience: str
    leeway: float
    replay: str
    issuers: Mapping[str, Issuer]
    rules: Tuple[Rule, ...]

    def issuer_for(self, iss: str) -> Optional[Issuer]:
        """
        The issuer whose C{url} is exactly C{iss}, if any.
        """
        for issuer in self.issuers.values():
            if issuer.url == iss:
                return issuer
        return None

    def match(
        self, issuer: Issuer, claims: Mapping[str, Any], scope: str, path: bytes
    ) -> Optional[Match]:
        """
        The first rule that allows a verified token of C{issuer} with
        C{claims} to use C{path} for C{scope}, or L{None}.
        """
        for rule in self.rules:
            if rule.issuer == issuer.name:
                found = rule.match(claims, scope, path)
                if found is not None:
                    return found
        return None


def load_policy(path: Union[str, Path]) -> Policy:
    """
    Read and check the policy file at C{path} (and the C{jwks_file}s it
    names).

    @raise PolicyError: the file cannot be read or is not a valid policy.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(source, "", f"cannot read it: {_problem_of(error)}") from None
    return parse_policy(text, source)


def _problem_of(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """
    Parse and check a policy's TOML text.

    @raise PolicyError: it is not a valid policy.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(source, "", f"not valid TOML: {error}") from None
    _known_keys(source, "", document, _TOP_KEYS)
    audience = document.get("audience")
    if not isinstance(audience, str) or not audience:
        raise PolicyError(source, "audience", "must be given, as a non-empty string")
    leeway = document.get("leeway", 30)
    if (
        isinstance(leeway, bool)
        or not isinstance(leeway, (int, float))
        or not 0 <= leeway <= MAX_LEEWAY
    ):
        raise PolicyError(source, "leeway", f"must be seconds from 0 to {MAX_LEEWAY}")
    replay = document.get("replay", Replay.OFF)
    if replay not in (Replay.OFF, Replay.ONCE_PER_SCOPE):
        raise PolicyError(
            source, "replay", f'must be "{Replay.OFF}" or "{Replay.ONCE_PER_SCOPE}"'
        )
    issuers = _issuers(source, document.get("issuer"))
    rules = _rules(source, document.get("rule"), issuers)
    return Policy(source, audience, float(leeway), replay, issuers, rules)


def _known_keys(source: str, where: str, table: Mapping[str, Any], known: set) -> None:
    for key in table:
        if key not in known:
            raise PolicyError(
                source,
                f"{where}{key}",
                "unknown key (expected one of " + ", ".join(sorted(known)) + ")",
            )


def _table(source: str, key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(source, key, "must be a table")
    return value


def _strings(source: str, key: str, value: Any) -> Tuple[str, ...]:
    """
    A string or a list of strings, as a tuple (at least one).
    """
    values = [value] if isinstance(value, str) else value
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, str) and v for v in values)
    ):
        raise PolicyError(source, key, "must be a string or a list of strings")
    return tuple(values)


def _issuers(source: str, tables: Any) -> Dict[str, Issuer]:
    if tables is None:
        raise PolicyError(source, "issuer", "no [issuer.NAME] table: no token can pass")
    issuers: Dict[str, Issuer] = {}
    urls: Dict[str, str] = {}
    for name, table in _table(source, "issuer", tables).items():
        where = f"issuer.{name}"
        table = _table(source, where, table)
        _known_keys(source, where + ".", table, _ISSUER_KEYS)
        url = table.get("url")
        if not isinstance(url, str) or not url.startswith("https://"):
            raise PolicyError(source, f"{where}.url", "must be an https:// URL")
        if url in urls:
            raise PolicyError(
                source, f"{where}.url", f"the same as issuer.{urls[url]}'s"
            )
        urls[url] = name
        algorithms = _strings(
            source,
            f"{where}.algorithms",
            table.get("algorithms", list(DEFAULT_ALGORITHMS)),
        )
        for algorithm in algorithms:
            if algorithm not in ALGORITHMS:
                raise PolicyError(
                    source,
                    f"{where}.algorithms",
                    f"{algorithm!r} is not allowed (one of "
                    + ", ".join(sorted(ALGORITHMS))
                    + "; never none or HS*)",
                )
        keys = None
        if "jwks_file" in table:
            keys = _jwks_file(source, f"{where}.jwks_file", table["jwks_file"])
        ca_file = table.get("ca_file")
        if ca_file is not None:
            ca_file = _readable(source, f"{where}.ca_file", ca_file)
        require_kid = table.get("require_kid", True)
        if not isinstance(require_kid, bool):
            raise PolicyError(source, f"{where}.require_kid", "must be true or false")
        issuers[name] = Issuer(name, url, algorithms, keys, ca_file, require_kid)
    if not issuers:
        raise PolicyError(source, "issuer", "no [issuer.NAME] table: no token can pass")
    return issuers


def _readable(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise PolicyError(source, key, "must be a file name")
    if not Path(value).is_file():
        raise PolicyError(source, key, f"{value}: no such file")
    return value


def _jwks_file(source: str, key: str, value: Any) -> Mapping[str, Key]:
    name = _readable(source, key, value)
    try:
        return parse_jwks(Path(name).read_bytes())
    except (OSError, JWKSError) as error:
        raise PolicyError(source, key, f"{name}: {_problem_of(error)}") from None


def _rules(source: str, tables: Any, issuers: Mapping[str, Issuer]) -> Tuple[Rule, ...]:
    if not isinstance(tables, list) or not tables:
        raise PolicyError(source, "rule", "no [[rule]]: every token would be refused")
    return tuple(
        _rule(source, index, table, issuers) for index, table in enumerate(tables, 1)
    )


def _rule(source: str, index: int, table: Any, issuers: Mapping[str, Issuer]) -> Rule:
    where = f"rule[{index}]"
    table = _table(source, where, table)
    _known_keys(source, where + ".", table, _RULE_KEYS)
    name = table.get("name", f"rule {index}")
    if not isinstance(name, str) or not name:
        raise PolicyError(source, f"{where}.name", "must be a non-empty string")
    issuer = table.get("issuer")
    if issuer not in issuers:
        raise PolicyError(
            source,
            f"{where}.issuer",
            "must name an [issuer.NAME] table (one of " + ", ".join(issuers) + ")",
        )
    scopes = _strings(source, f"{where}.scopes", table.get("scopes"))
    for scope in scopes:
        if scope not in SCOPES:
            raise PolicyError(source, f"{where}.scopes", "each must be send or receive")
    template = table.get("path")
    if not isinstance(template, str):
        raise PolicyError(source, f"{where}.path", "must be given, as a string")
    path = _template(source, f"{where}.path", template)
    multi = frozenset(
        _strings(source, f"{where}.multi_segment", table["multi_segment"])
        if "multi_segment" in table
        else ()
    )
    for claim in multi:
        if claim not in path[1::2]:
            raise PolicyError(
                source, f"{where}.multi_segment", f"{claim!r} is not in the path"
            )
    claims = _table(source, f"{where}.claims", table.get("claims"))
    if not claims:
        raise PolicyError(
            source,
            f"{where}.claims",
            "must bind at least one claim (an owner or project ID)",
        )
    bound = tuple(
        (claim, frozenset(_strings(source, f"{where}.claims.{claim}", value)))
        for claim, value in claims.items()
    )
    receiver_name = table.get("receiver_name")
    if receiver_name is not None and (
        not isinstance(receiver_name, str) or not receiver_name
    ):
        raise PolicyError(
            source, f"{where}.receiver_name", "must be a claim's name, a string"
        )
    return Rule(name, issuer, frozenset(scopes), path, multi, bound, receiver_name)


def _template(source: str, key: str, template: str) -> Tuple[str, ...]:
    """
    A rule's C{path} split into literal text and claim names
    (alternating, literal first and last).
    """
    parts: List[str] = []
    position = 0
    for placeholder in _PLACEHOLDER.finditer(template):
        parts.append(template[position : placeholder.start()])
        claim = placeholder.group(1)
        if not claim:
            raise PolicyError(source, key, "{} names no claim")
        parts.append(claim)
        position = placeholder.end()
    parts.append(template[position:])
    for literal in parts[::2]:
        if not _SAFE_LITERAL.fullmatch(literal):
            raise PolicyError(
                source,
                key,
                "only letters, digits, . _ @ - / and {claim} may appear, "
                f"got {template!r}",
            )
    if template.startswith("/") or "//" in template:
        raise PolicyError(source, key, "must not start with / nor hold //")
    if not template.replace("/", ""):
        raise PolicyError(source, key, "must not be empty: it would allow every path")
    return tuple(parts)
