# -*- test-case-name: tests.test_signing -*-
"""
The server side of signed URLs: checking a request's signature, and
remembering the signatures already spent on a transfer until they expire;
and, beside it, the admission of a party by its OIDC ID token
(L{TokenGate}: L{pipe._oidc}'s verdicts as HTTP answers).

See L{pipe.signing} for the URL format.
"""

from __future__ import annotations

import enum
import heapq
import hmac
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import attr
from twisted.internet.interfaces import IReactorTime

from pipe._transfer import messages as messages
from pipe._transfer.refusal import Refusal
from pipe.signing import Scope, canonical, signature

__all__ = ["AUTHENTICATE", "BEARER", "Grant", "Guard", "Requirement", "TokenGate"]

_EXPIRES_SYNTAX = re.compile(rb"[1-9][0-9]{0,11}")
_SIG_SYNTAX = re.compile(rb"[A-Za-z0-9_-]{43}")


class Requirement(enum.Enum):
    """
    Which parties must present a signed URL: C{ALL}, or only C{SEND}ers
    (receivers may then join unsigned; a receiver that does present a
    signature still has it checked).
    """

    ALL = "all"
    SEND = "send"


@attr.s(auto_attribs=True, frozen=True)
class Grant:
    """
    A verified signature: what a party holds until its transfer starts,
    when the guard marks it spent.

    @ivar digest: the C{sig} parameter as given, which is compared
        byte for byte with the expected one, so it is the URL's identity.
    @ivar expires: its Unix expiry time.
    """

    digest: bytes = attr.ib(repr=False)
    expires: int
    #: The token admission (L{pipe._oidc.authority.Admission}) of a party
    #: admitted by its OIDC token (then C{digest} is empty), else L{None}.
    admission: Optional[Any] = attr.ib(default=None, repr=False)


#: The challenge of a 401: a signed URL, not credentials in headers.
AUTHENTICATE = b'Signed-URL realm="txpipe"'


def _denied(code: int, body: bytes, reason: str) -> Refusal:
    """
    A refused signature: 403, or 401 (with its challenge) when it is missing.
    """
    headers = {b"www-authenticate": AUTHENTICATE} if code == 401 else {}
    return Refusal(code, body, reason, headers)


#: Seconds a signed URL may outlive C{max_ttl}: C{txpipe sign --ttl} equal
#: to the servers' limit must pass, although C{expires} is rounded up to a
#: whole second and the signer's clock may run a little ahead.
LIFETIME_SLACK = 60.0


class Guard:
    """
    Checks signed URLs against the server's keys and spends them.

    Checks, in order: a signature is present (or not required: 401), its
    parameters are well formed, the HMAC matches the request's scope, path,
    C{n} and expiry (and its C{min}, when it has one) under one of the keys
    (constant-time), the scope is the request's, it has not expired (it is
    valid while the clock reads at most its C{expires}), it does not stay
    valid longer than C{max_ttl} seconds from now (a leaked key cannot mint
    URLs that live for years), and it was not spent on a transfer that
    started (all 403).

    Spent signatures are remembered until they expire, then forgotten, so
    the memory held is bounded by the URLs used within their lifetime (at
    most C{max_ttl}).  A restart forgets them all.

    @ivar requirement: see L{Requirement}.
    """

    def __init__(
        self,
        keys: Sequence[bytes],
        requirement: Requirement,
        clock: IReactorTime,
        max_ttl: float = 0,
    ) -> None:
        if not keys:
            raise ValueError("a guard needs at least one key")
        self._keys = tuple(keys)
        self.requirement = requirement
        self._clock = clock
        self._max_ttl = max_ttl
        self._spent: Dict[bytes, int] = {}
        self._expiries: List[Tuple[int, bytes]] = []

    def check(
        self,
        scope: Scope,
        path: bytes,
        n: int,
        expires: List[bytes],
        scopes: List[bytes],
        sigs: List[bytes],
        minimum: Optional[int] = None,
    ) -> Optional[Grant]:
        """
        Check the signature parameters of a request.

        @param scope: what the request does (its method).
        @param path: the raw pipe path.
        @param n: the request's receiver count.
        @param expires: the percent-decoded values of C{expires}.
        @param scopes: those of C{scope}.
        @param sigs: those of C{sig}.
        @param minimum: the request's C{min}, if it gave one: then the
            signature must cover it (a URL signed without C{min} cannot
            be given one, nor one signed with it lose it or change it).
        @return: the L{Grant} to spend when the transfer starts, or L{None}
            for an unsigned party that needs no signature.
        @raise pipe._transfer.refusal.Refusal: the request may not join.
        """
        if not sigs:
            if scope is Scope.RECEIVE and self.requirement is Requirement.SEND:
                return None
            raise _denied(
                401, messages.signature_required(), reason="signature_required"
            )
        digest, expiry, signed_scope = _parse(expires, scopes, sigs)
        message = canonical(signed_scope, path, n, expiry, minimum)
        if not any(
            hmac.compare_digest(signature(key, message).encode("ascii"), digest)
            for key in self._keys
        ):
            raise _denied(
                403, messages.signature_mismatch(), reason="signature_mismatch"
            )
        if signed_scope is not scope:
            raise _denied(
                403,
                messages.signature_scope(signed_scope.value, scope.value),
                reason="signature_scope",
            )
        now = self._clock.seconds()
        if now > expiry:
            raise _denied(
                403,
                messages.signature_expired(now - expiry),
                reason="signature_expired",
            )
        if self._max_ttl and expiry - now > self._max_ttl + LIFETIME_SLACK:
            raise _denied(
                403,
                messages.signature_lifetime(expiry - now, self._max_ttl),
                reason="signature_lifetime",
            )
        self._forget_expired(now)
        if digest in self._spent:
            raise _denied(403, messages.signature_used(), reason="signature_used")
        return Grant(digest, expiry)

    def spend(self, grants: Iterable[Optional[Grant]]) -> None:
        """
        A transfer started with these grants: refuse them from now until
        they expire.  L{None} (unsigned parties) is skipped.
        """
        for grant in grants:
            if grant is None or grant.admission is not None:
                continue
            if grant.digest not in self._spent:
                self._spent[grant.digest] = grant.expires
                heapq.heappush(self._expiries, (grant.expires, grant.digest))

    @property
    def spent_count(self) -> int:
        """
        How many spent signatures are remembered (not yet expired or not
        yet forgotten).
        """
        self._forget_expired(self._clock.seconds())
        return len(self._spent)

    def _forget_expired(self, now: float) -> None:
        expiries = self._expiries
        while expiries and expiries[0][0] < now:
            _, digest = heapq.heappop(expiries)
            del self._spent[digest]


def _parse(
    expires: List[bytes], scopes: List[bytes], sigs: List[bytes]
) -> Tuple[bytes, int, Scope]:
    """
    The C{sig}, expiry and scope of a request's parameters.

    @raise pipe._transfer.refusal.Refusal: (403) any is missing, repeated or malformed.
    """
    if len(expires) != 1 or len(scopes) != 1 or len(sigs) != 1:
        raise _denied(
            403,
            messages.signature_malformed(
                "expires, scope and sig must each be given once"
            ),
            reason="signature_malformed",
        )
    if not _EXPIRES_SYNTAX.fullmatch(expires[0]):
        raise _denied(
            403,
            messages.signature_malformed(
                "expires must be a Unix time in whole seconds"
            ),
            reason="signature_malformed",
        )
    try:
        signed_scope = Scope(scopes[0].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise _denied(
            403,
            messages.signature_malformed("scope must be send or receive"),
            reason="signature_malformed",
        ) from None
    if not _SIG_SYNTAX.fullmatch(sigs[0]):
        raise _denied(
            403,
            messages.signature_malformed("sig must be 43 base64url characters"),
            reason="signature_malformed",
        )
    digest = sigs[0]
    return digest, int(expires[0]), signed_scope


#: The challenge of a 401 when OIDC tokens are accepted (RFC 6750).
BEARER = b'Bearer realm="txpipe"'

#: The status of each token refusal that is not a 401.
_TOKEN_STATUS = {"token_forbidden": 403, "token_used": 403}


class TokenGate:
    """
    Admits a party by the OIDC ID token of its C{Authorization: Bearer}
    header (L{pipe._oidc.authority.Authority}), and answers a refused one as
    RFC 6750 says: 401 with C{WWW-Authenticate: Bearer realm="txpipe",
    error="invalid_token", error_description="..."} (no error when there is
    no token), 403 when a good token's rules do not allow the scope and
    path, 503 with C{Retry-After} when the issuer's keys cannot be had now.

    @ivar authority: the policy in force and the issuers' keys.
    """

    def __init__(self, authority: Any) -> None:
        self.authority = authority

    def check(self, scope: Scope, path: bytes, token: Optional[bytes]) -> Grant:
        """
        The grant of a party with C{token} (L{None}: no Bearer token).

        @raise pipe._transfer.refusal.Refusal: the token does not admit the party.
        """
        from pipe._oidc.tokens import Problem, TokenRefused

        try:
            if token is None:
                raise TokenRefused(
                    Problem.REQUIRED,
                    "an Authorization: Bearer token (an OIDC ID token) is required",
                )
            admission = self.authority.admit(token, scope.value, path)
        except TokenRefused as refused:
            raise token_refusal(refused.problem.value, refused.detail) from None
        return Grant(b"", int(admission.expires), admission)

    def spend(self, grants: Iterable[Optional[Grant]]) -> None:
        """
        A transfer started: spend its parties' tokens (with C{replay =
        "once-per-scope"}).
        """
        self.authority.spend(g.admission for g in grants if g is not None)


def token_refusal(reason: str, detail: str) -> Refusal:
    """
    The answer to a refused token (see L{TokenGate}).
    """
    body = messages.token_refused(detail)
    if reason == "token_keys_unavailable":
        return Refusal.unavailable(body, reason)
    code = _TOKEN_STATUS.get(reason, 401)
    if reason == "token_required":
        challenge = BEARER
    else:
        error = b"insufficient_scope" if code == 403 else b"invalid_token"
        description = detail.replace('"', "'").replace("\\", "/")
        challenge = (
            BEARER
            + b', error="'
            + error
            + b'", error_description="'
            + description.encode("ascii", "replace")
            + b'"'
        )
    return Refusal(code, body, reason, {b"www-authenticate": challenge})
