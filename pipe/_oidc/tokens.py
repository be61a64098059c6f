# -*- test-case-name: tests.test_oidc_tokens -*-
"""
Verifying a CI job's OIDC ID token (a JWS compact JWT) the way PyPI,
crates.io and Vault do (docs/security.md):

  1. at most L{MAX_TOKEN} bytes, three base64url parts, a JSON header and
     payload (read, not yet trusted);
  2. C{iss} exactly the C{url} of a configured issuer;
  3. a C{kid}; an C{alg} among the issuer's algorithms (C{none} and
     C{HS*} never), and the key's own C{alg}, if it names one; no C{crit};
  4. the key by C{kid} (L{pipe._oidc.keys});
  5. the signature (PyJWT's algorithms);
  6. C{aud} exactly the policy's audience: one string (or a list of just
     that string), never a list naming others too;
  7. C{exp} and C{iat} present, C{exp}, C{nbf} and C{iat} met within the
     policy's leeway, by the reactor's clock.

Unknown claims are ignored.  A refusal is a L{TokenRefused} with its
L{Problem}: no HTTP here.  Messages never quote the token.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from pipe._oidc.keys import KeysUnavailable, UnknownKey
from pipe._oidc.policy import Issuer, Policy

__all__ = ["MAX_TOKEN", "Problem", "TokenRefused", "VerifiedToken", "verify_token"]

#: The longest token taken, in bytes (GitHub's are about 1.2 KiB).
MAX_TOKEN = 8192

#: The key type each family of algorithms needs (by their first two letters).
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}

_verifier_table: Dict[str, Any] = {}


def _verifiers() -> Dict[str, Any]:
    """
    PyJWT's algorithm objects by name, made once.
    """
    if not _verifier_table:
        from jwt.algorithms import get_default_algorithms

        _verifier_table.update(get_default_algorithms())
    return _verifier_table


#: The bytes of a compact JWS: the base64url alphabet and the dots.
_JWS_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


class Problem(enum.Enum):
    """
    Why a token (or a request's credentials) is refused; each value is the
    reason's slug (a metric label).
    """

    #: No token (nor signature) on a request that needs one.
    REQUIRED = "token_required"
    #: Not a JWT: too long, broken base64 or JSON, a bad header.
    MALFORMED = "token_malformed"
    #: C{iss} is no configured issuer's.
    ISSUER = "token_issuer"
    #: C{none}, HMAC, or an algorithm the issuer is not allowed.
    ALGORITHM = "token_algorithm"
    #: No C{kid}, or one the issuer does not have.
    KEY = "token_key"
    #: The signature does not verify.
    SIGNATURE = "token_signature"
    #: C{aud} is not exactly the audience.
    AUDIENCE = "token_audience"
    #: C{exp} has passed.
    EXPIRED = "token_expired"
    #: C{nbf} or C{iat} is in the future.
    NOT_YET_VALID = "token_not_yet_valid"
    #: A registered claim is missing or of the wrong type.
    CLAIMS = "token_claims"
    #: A valid token that no rule allows this scope and path.
    FORBIDDEN = "token_forbidden"
    #: The token's C{jti} was spent on a transfer of this scope.
    USED = "token_used"
    #: The issuer's keys cannot be had now: try again shortly.
    KEYS_UNAVAILABLE = "token_keys_unavailable"


class TokenRefused(Exception):
    """
    A refused token.

    @ivar problem: see L{Problem}.
    @ivar detail: what is wrong, one line, for the client (never the token,
        never the policy).
    """

    def __init__(self, problem: Problem, detail: str) -> None:
        super().__init__(problem, detail)
        self.problem = problem
        self.detail = detail


@dataclass(frozen=True)
class VerifiedToken:
    """
    A token whose signature, issuer, audience and times check out.

    @ivar issuer: its L{Issuer}.
    @ivar claims: its payload.
    """

    issuer: Issuer
    claims: Mapping[str, Any]

    @property
    def jti(self) -> Any:
        return self.claims.get("jti")

    @property
    def expires(self) -> float:
        return float(self.claims["exp"])


def _part(encoded: bytes, what: str) -> Dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise TokenRefused(
            Problem.MALFORMED, f"the token's {what} is not base64url JSON"
        ) from None
    if not isinstance(value, dict):
        raise TokenRefused(
            Problem.MALFORMED, f"the token's {what} is not a JSON object"
        )
    return value


def _numeric_claim(claims: Mapping[str, Any], name: str, required: bool) -> Any:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenRefused(
            Problem.CLAIMS,
            f"the token's {name} claim is "
            + ("missing" if value is None else "not a number"),
        )
    return value


def _header_and_payload(token: bytes) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    if len(token) > MAX_TOKEN:
        raise TokenRefused(
            Problem.MALFORMED, f"the token is longer than {MAX_TOKEN} bytes"
        )
    parts = token.split(b".")
    # translate() deletes every allowed byte in C: what is left is not.
    if len(parts) != 3 or not all(parts) or token.translate(None, _JWS_BYTES):
        raise TokenRefused(
            Problem.MALFORMED, "the token is not three base64url parts joined by dots"
        )
    header, payload, _ = parts
    return _part(header, "header"), _part(payload, "payload")


def verify_token(
    token: bytes, policy: Policy, keyring: Any, now: float
) -> VerifiedToken:
    """
    Verify C{token} (the bytes after C{Bearer }) against C{policy}'s
    issuers, with their keys from C{keyring} (a L{pipe._oidc.keys.Keyring}),
    at time C{now}.

    @raise TokenRefused: it is refused; L{Problem.KEYS_UNAVAILABLE} when
        the issuer's keys cannot be had now.
    """
    from jwt.exceptions import PyJWTError

    header, unverified = _header_and_payload(token)
    iss = unverified.get("iss")
    issuer = policy.issuer_for(iss) if isinstance(iss, str) else None
    if issuer is None:
        raise TokenRefused(Problem.ISSUER, "the token's issuer is not trusted here")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in issuer.algorithms:
        raise TokenRefused(
            Problem.ALGORITHM,
            f"the token's algorithm is not one of {', '.join(issuer.algorithms)}",
        )
    if "crit" in header:
        raise TokenRefused(
            Problem.MALFORMED, "the token has critical header extensions"
        )
    kid = header.get("kid")
    if kid is None and not issuer.require_kid:
        key = _key(issuer, keyring, None)
    elif not isinstance(kid, str) or not kid:
        raise TokenRefused(Problem.KEY, "the token names no key (kid)")
    else:
        key = _key(issuer, keyring, kid)
    if key.algorithm is not None and key.algorithm != algorithm:
        raise TokenRefused(Problem.ALGORITHM, "the token's algorithm is not its key's")
    if key.key_type != _KEY_TYPES[algorithm[:2]]:
        raise TokenRefused(Problem.ALGORITHM, "the token's algorithm is not its key's")
    signing_input, _, signature = token.rpartition(b".")
    try:
        verifier = _verifiers()[algorithm]
        raw_signature = base64.urlsafe_b64decode(
            signature + b"=" * (-len(signature) % 4)
        )
        good = verifier.verify(signing_input, key.key, raw_signature)
    except (PyJWTError, KeyError, TypeError, ValueError, binascii.Error):
        good = False
    if not good:
        raise TokenRefused(Problem.SIGNATURE, "the token's signature does not verify")
    _check_claims(unverified, policy, now)
    return VerifiedToken(issuer, unverified)


def _key(issuer: Issuer, keyring: Any, kid: Optional[str]) -> Any:
    """
    The issuer's key C{kid} (L{None}: its only key).
    """
    if issuer.keys is not None:
        if kid is None:
            keys = list(issuer.keys.values())
            found = keys[0] if len(keys) == 1 else None
        else:
            found = issuer.keys.get(kid)
        if found is None:
            raise TokenRefused(Problem.KEY, "the token's key (kid) is unknown")
        return found
    try:
        held = keyring.keys_of(issuer.url, issuer.ca_file)
        return held.key(kid) if kid is not None else held.only_key()
    except KeysUnavailable:
        raise TokenRefused(
            Problem.KEYS_UNAVAILABLE, "the token issuer's keys are being fetched"
        ) from None
    except UnknownKey:
        raise TokenRefused(Problem.KEY, "the token's key (kid) is unknown") from None


def _check_claims(claims: Mapping[str, Any], policy: Policy, now: float) -> None:
    audience = claims.get("aud")
    # One audience, ours: a string, or a list of that one string (some
    # providers always send a list).  A list naming others too is refused:
    # a token meant for several services is not for this one alone.
    if audience != policy.audience and audience != [policy.audience]:
        raise TokenRefused(
            Problem.AUDIENCE,
            "the token's audience is not this server's"
            + (" alone" if isinstance(audience, list) else ""),
        )
    leeway = policy.leeway
    expires = _numeric_claim(claims, "exp", True)
    issued = _numeric_claim(claims, "iat", True)
    not_before = _numeric_claim(claims, "nbf", False)
    if now > expires + leeway:
        raise TokenRefused(
            Problem.EXPIRED, f"the token expired {now - expires:.0f} s ago"
        )
    if not_before is not None and not_before > now + leeway:
        raise TokenRefused(
            Problem.NOT_YET_VALID,
            f"the token is not valid for {not_before - now:.0f} s",
        )
    if issued > now + leeway:
        raise TokenRefused(
            Problem.NOT_YET_VALID,
            f"the token is issued {issued - now:.0f} s in the future",
        )
