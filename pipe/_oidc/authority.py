# -*- test-case-name: tests.test_oidc_tokens -*-
"""
The OIDC policy in force, put together: verify a request's token
(L{pipe._oidc.tokens}), find the rule that allows its scope and path
(L{pipe._oidc.policy}), and, with C{replay = "once-per-scope"}, spend its
C{jti} when a transfer starts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional

import treq
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from pipe._oidc.keys import FETCH_TIMEOUT, MAX_DOCUMENT, Fetch, JWKSError, Keyring
from pipe._oidc.policy import Match, Policy, Replay
from pipe._oidc.tokens import Problem, TokenRefused, VerifiedToken, verify_token

__all__ = ["Admission", "Authority", "https_fetcher"]


@dataclass(frozen=True)
class Admission:
    """
    A token that allows its request.

    @ivar token: the verified token.
    @ivar match: the rule that allowed it, and the claims it read.
    @ivar spend_key: what is spent when its transfer starts (C{replay =
        "once-per-scope"}), else L{None}.
    """

    token: VerifiedToken
    match: Match
    spend_key: Optional[bytes] = field(default=None, repr=False)

    @property
    def expires(self) -> float:
        return self.token.expires

    def for_log(self) -> Dict[str, Any]:
        """
        What a log event says of it: the issuer, the rule, the claims the
        rule read (never the token).
        """
        return {
            "issuer": self.token.issuer.name,
            "rule": self.match.rule,
            "claims": dict(self.match.claims),
        }


class Authority:
    """
    Admits requests by their token under the policy in force.

    @ivar policy: the policy in force (L{replace} swaps it).
    @ivar keyring: the discovered issuers' keys.
    """

    log = Logger()

    def __init__(
        self,
        policy: Policy,
        clock: IReactorTime,
        fetcher: Optional[Any] = None,
    ) -> None:
        """
        @param fetcher: makes the fetch function of an issuer given its
            C{ca_file}; by default L{https_fetcher} on C{clock} (the
            reactor).
        """
        self.policy = policy
        self._clock = clock
        self.keyring = Keyring(
            clock, fetcher if fetcher is not None else https_fetcher(clock)
        )
        self._spent: Dict[bytes, float] = {}
        self._started = False

    def start(self) -> None:
        """
        Fetch the discovered issuers' keys (at start-up, so that the first
        job does not wait).  Idempotent.
        """
        if not self._started:
            self._started = True
            self.keyring.track(self.policy.issuers.values())

    def replace(self, policy: Policy) -> None:
        """
        Put C{policy} in force from the next request on.  Issuers kept
        keep their keys; new ones' keys are fetched now.
        """
        self.policy = policy
        if self._started:
            self.keyring.track(policy.issuers.values())

    def admit(self, token: bytes, scope: str, path: bytes) -> Admission:
        """
        Check C{token} for C{scope} (C{send} or C{receive}) on C{path}.

        @raise TokenRefused: it does not allow the request.
        """
        if not self._started:
            self.start()
        policy = self.policy
        now = self._clock.seconds()
        verified = verify_token(token, policy, self.keyring, now)
        match = policy.match(verified.issuer, verified.claims, scope, path)
        if match is None:
            raise TokenRefused(
                Problem.FORBIDDEN,
                f"this token may not {scope} on this path",
            )
        spend_key = None
        if policy.replay == Replay.ONCE_PER_SCOPE:
            spend_key = self._spend_key(verified, scope, now)
        return Admission(verified, match, spend_key)

    def _spend_key(self, verified: VerifiedToken, scope: str, now: float) -> bytes:
        jti = verified.jti
        if not isinstance(jti, str) or not jti:
            raise TokenRefused(
                Problem.CLAIMS, "the token has no jti, which this server requires"
            )
        key = hashlib.sha256(
            "\0".join((verified.issuer.url, jti, scope)).encode("utf-8")
        ).digest()
        self._forget(now)
        if key in self._spent:
            raise TokenRefused(Problem.USED, f"this token was already used to {scope}")
        return key

    def spend(self, admissions: Iterable[Optional[Admission]]) -> None:
        """
        A transfer started with these admissions: with C{replay =
        "once-per-scope"}, their tokens may not be used again for the same
        scope until they expire (plus the leeway).
        """
        leeway = self.policy.leeway
        for admission in admissions:
            if admission is not None and admission.spend_key is not None:
                self._spent[admission.spend_key] = admission.expires + leeway

    def _forget(self, now: float) -> None:
        """
        Forget spent tokens past their expiry.  Only a full sweep, and only
        when the table has grown, so the cost per request stays small.
        """
        if len(self._spent) > 64:
            self._spent = {k: t for k, t in self._spent.items() if t >= now}

    @property
    def spent_count(self) -> int:
        """
        How many spent tokens are remembered.
        """
        self._forget(self._clock.seconds())
        return len(self._spent)


def https_fetcher(reactor: Any) -> Any:
    """
    The fetch-function maker of L{Keyring}: given an issuer's C{ca_file}
    (or L{None}: the system's authorities), a function that GETs an
    C{https://} URL with treq (L{FETCH_TIMEOUT}), and fires with its body
    if the status is 200 and the body at most L{MAX_DOCUMENT} bytes.
    """

    def for_issuer(ca_file: Optional[str]) -> Fetch:
        trust = None
        if ca_file is not None:
            from twisted.internet.ssl import Certificate

            with open(ca_file, "rb") as pem:
                trust = Certificate.loadPEM(pem.read())
        policy = BrowserLikePolicyForHTTPS(trustRoot=trust)
        client = treq.client.HTTPClient(Agent(reactor, contextFactory=policy))

        def fetch(url: str) -> Deferred[bytes]:
            if not url.startswith("https://"):
                return fail(JWKSError(f"{url} is not https://"))
            getting: Deferred[Any] = client.get(url, timeout=FETCH_TIMEOUT)
            getting.addCallback(_body, url)
            return getting

        return fetch

    return for_issuer


def _body(response: Any, url: str) -> Deferred[bytes]:
    if response.code != 200:
        response.deliverBody(_Discard())
        raise JWKSError(f"{url} answered {response.code}")
    if isinstance(response.length, int) and response.length > MAX_DOCUMENT:
        response.deliverBody(_Discard())
        raise JWKSError(f"{url} is larger than {MAX_DOCUMENT} bytes")
    reading: Deferred[bytes] = treq.content(response)
    reading.addCallback(_bounded, url)
    return reading


def _bounded(body: bytes, url: str) -> bytes:
    if len(body) > MAX_DOCUMENT:
        raise JWKSError(f"{url} is larger than {MAX_DOCUMENT} bytes")
    return body


class _Discard:
    """
    A body protocol that drops what it gets.
    """

    def makeConnection(self, transport: Any) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass
