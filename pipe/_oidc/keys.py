# -*- test-case-name: tests.test_oidc_tokens -*-
"""
The issuers' signing keys: a JWKS parsed into keys by C{kid}
(L{parse_jwks}), and the keys of each discovered issuer, fetched with treq
and cached (L{IssuerKeys}, L{Keyring}).

A discovered issuer's keys are fetched from the C{jwks_uri} of
C{{url}/.well-known/openid-configuration}, over HTTPS only (trusting the
issuer's C{ca_file}, or the system's authorities), never by a blocking call
on the reactor.  They are fetched at start-up, again on a token with an
unknown C{kid} (at most once per L{COOLDOWN}), and again once they are
older than L{MAX_AGE} (so that a key the issuer dropped stops being
trusted).  A fetch that fails, or finds no usable key, keeps the keys held.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "COOLDOWN",
    "FETCH_TIMEOUT",
    "MAX_AGE",
    "MAX_DOCUMENT",
    "IssuerKeys",
    "JWKSError",
    "Key",
    "KeyState",
    "Keyring",
    "KeysUnavailable",
    "UnknownKey",
    "parse_jwks",
]

#: The least number of seconds between two fetches of one issuer's keys
#: prompted by unknown C{kid}s or failures.
COOLDOWN = 60.0

#: Seconds after which held keys are fetched again when next used.
MAX_AGE = 3600.0

#: Seconds a discovery or JWKS fetch may take.
FETCH_TIMEOUT = 10.0

#: The largest discovery document or JWKS read, in bytes.
MAX_DOCUMENT = 1024 * 1024

#: The key types a JWKS key may have (others are skipped).
_KEY_TYPES = {"RSA", "EC", "OKP"}


@dataclass(frozen=True)
class Key:
    """
    One verification key of a JWKS.

    @ivar kid: its key ID.
    @ivar key: the public key object PyJWT's algorithms verify with.
    @ivar algorithm: the JWK's C{alg}, if it names one: a token signed with
        another algorithm is refused.
    @ivar key_type: C{RSA}, C{EC} or C{OKP}.
    """

    kid: str
    key: Any = field(repr=False)
    algorithm: Optional[str]
    key_type: str


class JWKSError(ValueError):
    """
    A JWKS that yields no usable key, or a discovery document that is
    unusable.
    """


def parse_jwks(document: bytes) -> Dict[str, Key]:
    """
    The usable keys of a JWKS document (C{{"keys": [...]}}), by C{kid}.
    Keys without a C{kid}, for encryption (C{use: enc}), of another type
    or that PyJWT cannot load are skipped.

    @raise JWKSError: it is not a JWKS, or no key is usable.
    """
    from jwt import PyJWK

    try:
        parsed = json.loads(document)
    except ValueError:
        raise JWKSError("not JSON") from None
    entries = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(entries, list):
        raise JWKSError('not a JWKS: no "keys" list')
    keys: Dict[str, Key] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid, key_type = entry.get("kid"), entry.get("kty")
        if not isinstance(kid, str) or not kid or key_type not in _KEY_TYPES:
            continue
        if entry.get("use", "sig") != "sig":
            continue
        algorithm = entry.get("alg")
        try:
            loaded = PyJWK(entry).key
        except Exception:  # PyJWT raises several types for a bad key
            continue
        keys[kid] = Key(
            kid, loaded, algorithm if isinstance(algorithm, str) else None, key_type
        )
    if not keys:
        raise JWKSError("no usable signing key (RSA, EC or OKP with a kid)")
    return keys


class KeysUnavailable(Exception):
    """
    The issuer's keys are not held yet (the first fetch is under way or
    failed), or a fetch prompted by an unknown C{kid} is under way: ask
    again shortly.
    """


class UnknownKey(Exception):
    """
    The issuer's keys, fetched recently enough, have no such C{kid}.
    """


class KeyState(enum.Enum):
    """
    The keys of one discovered issuer::

        state       keys held   a fetch under way
        EMPTY       no          no        (before the first fetch, or after
                                           it failed)
        LOADING     no          yes
        READY       yes         no
        REFRESHING  yes         yes

    A fetch goes C{EMPTY -> LOADING} or C{READY -> REFRESHING}; its end
    goes to C{READY} if it found keys, else back to where it came from
    (keys held are kept).
    """

    EMPTY = "empty"
    LOADING = "loading"
    READY = "ready"
    REFRESHING = "refreshing"


#: The transitions of L{KeyState}: a fetch starts, a fetch ends.
_FETCH_STARTS = {KeyState.EMPTY: KeyState.LOADING, KeyState.READY: KeyState.REFRESHING}
_FETCH_FAILS = {KeyState.LOADING: KeyState.EMPTY, KeyState.REFRESHING: KeyState.READY}

#: Fetches a URL with the issuer's trust: the response body, or a failure.
Fetch = Callable[[str], "Deferred[bytes]"]


class IssuerKeys:
    """
    The cached keys of one discovered issuer (see L{KeyState}).

    @ivar state: see L{KeyState}.
    @ivar keys: the keys held, by C{kid}.
    @ivar fetched_at: when the keys held were fetched (reactor seconds).
    @ivar attempted_at: when the last fetch started (reactor seconds).
    @ivar fetches: how many fetches started (for tests and logs).
    """

    log = Logger()

    def __init__(self, url: str, fetch: Fetch, clock: IReactorTime) -> None:
        self.url = url
        self._fetch = fetch
        self._clock = clock
        self.state = KeyState.EMPTY
        self.keys: Mapping[str, Key] = {}
        self.fetched_at = 0.0
        self.attempted_at: Optional[float] = None
        self.fetches = 0
        self._under_way: Optional[Deferred[Any]] = None

    def key(self, kid: str) -> Key:
        """
        The key C{kid}, fetching the keys again if it is unknown (at most
        once per L{COOLDOWN}) or they are older than L{MAX_AGE}.

        @raise KeysUnavailable: no keys are held yet, or a fetch for an
            unknown C{kid} is under way.
        @raise UnknownKey: no such key after a recent fetch.
        """
        now = self._clock.seconds()
        found = self.keys.get(kid)
        if found is not None:
            if now - self.fetched_at > MAX_AGE and self._may_fetch(now):
                self.refresh()
            return found
        if self._may_fetch(now):
            self.refresh()
        if self.state is not KeyState.READY:
            raise KeysUnavailable(self.url)
        raise UnknownKey(kid)

    def only_key(self) -> Key:
        """
        The issuer's only key, for a token that names none (see
        L{pipe._oidc.policy.Issuer.require_kid}).

        @raise KeysUnavailable: no keys are held yet.
        @raise UnknownKey: the issuer has several keys.
        """
        if self.state in (KeyState.EMPTY, KeyState.LOADING):
            if self._may_fetch(self._clock.seconds()):
                self.refresh()
            raise KeysUnavailable(self.url)
        if len(self.keys) != 1:
            raise UnknownKey("")
        return next(iter(self.keys.values()))

    @property
    def fetching(self) -> bool:
        """
        Whether a fetch is under way.
        """
        return self._under_way is not None

    def _may_fetch(self, now: float) -> bool:
        if self.state not in _FETCH_STARTS:
            return False
        return self.attempted_at is None or now - self.attempted_at >= COOLDOWN

    def refresh(self) -> Deferred[None]:
        """
        Fetch the keys now, unless a fetch is under way (then wait for
        that one).  Never fails: a failure is logged and keeps the keys.

        @return: fires when the fetch has ended.
        """
        if self._under_way is not None:
            return _follow(self._under_way)
        self._move(_FETCH_STARTS)
        self.attempted_at = self._clock.seconds()
        self.fetches += 1
        self._under_way = under_way = self._discover()
        under_way.addCallbacks(self._fetched, self._failed)
        return _follow(under_way)

    def _move(self, transitions: Mapping[KeyState, KeyState]) -> None:
        """
        Take the transition of C{transitions} from the current state.

        @raise RuntimeError: there is none from it.
        """
        following = transitions.get(self.state)
        if following is None:
            raise RuntimeError(f"no such transition of issuer keys from {self.state}")
        self.state = following

    def _discover(self) -> Deferred[Any]:
        discovery = self.url.rstrip("/") + "/.well-known/openid-configuration"
        loading: Deferred[Any] = self._fetch(discovery)
        loading.addCallback(self._jwks_uri)
        loading.addCallback(self._fetch)
        loading.addCallback(parse_jwks)
        return loading

    def _jwks_uri(self, body: bytes) -> str:
        try:
            document = json.loads(body)
        except ValueError:
            raise JWKSError("the discovery document is not JSON") from None
        if not isinstance(document, dict):
            raise JWKSError("the discovery document is not a JSON object")
        if document.get("issuer") != self.url:
            raise JWKSError(
                f"the discovery document names issuer {document.get('issuer')!r}"
            )
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith("https://"):
            raise JWKSError("the discovery document has no https:// jwks_uri")
        return uri

    def _fetched(self, keys: Mapping[str, Key]) -> None:
        self._under_way = None
        self.keys = keys
        self.fetched_at = self._clock.seconds()
        self.state = KeyState.READY
        self.log.info(
            "OIDC keys of {issuer}: {count} ({kids})",
            issuer=self.url,
            count=len(keys),
            kids=", ".join(sorted(keys)),
        )

    def _failed(self, reason: Failure) -> None:
        self._under_way = None
        self._move(_FETCH_FAILS)
        self.log.warn(
            "fetching the OIDC keys of {issuer} failed ({held} keys kept): {why}",
            issuer=self.url,
            held=len(self.keys),
            why=reason.getErrorMessage() or getattr(reason.type, "__name__", "?"),
        )


def _follow(under_way: Deferred[Any]) -> Deferred[None]:
    """
    A new L{Deferred} that fires with L{None} when C{under_way} fires
    (which may have several followers).
    """
    follower: Deferred[None] = Deferred()

    def passed_on(result: Any) -> Any:
        follower.callback(None)
        return result

    under_way.addBoth(passed_on)
    return follower


class Keyring:
    """
    The L{IssuerKeys} of every discovered issuer of the policy in force,
    by C{(url, ca_file)}: a policy re-read with the same issuer keeps its
    cached keys.

    @ivar issuers: the issuers' keys.
    """

    def __init__(
        self,
        clock: IReactorTime,
        fetcher: Callable[[Optional[str]], Fetch],
    ) -> None:
        """
        @param fetcher: makes the fetch function of an issuer, given its
            C{ca_file} (see L{pipe._oidc.authority.https_fetcher}).
        """
        self._clock = clock
        self._fetcher = fetcher
        self.issuers: Dict[tuple, IssuerKeys] = {}

    def track(self, issuers: Any) -> None:
        """
        Hold keys for exactly these discovered issuers (L{pipe._oidc.policy.Issuer}s),
        keeping those already held and fetching the new ones' keys now.
        """
        wanted = {(i.url, i.ca_file): i for i in issuers if i.discovered}
        kept = {k: v for k, v in self.issuers.items() if k in wanted}
        for url, ca_file in wanted:
            if (url, ca_file) not in kept:
                kept[url, ca_file] = keys = IssuerKeys(
                    url, self._fetcher(ca_file), self._clock
                )
                keys.refresh()
        self.issuers = kept

    def keys_of(self, url: str, ca_file: Optional[str]) -> IssuerKeys:
        """
        The keys of a tracked issuer.
        """
        return self.issuers[url, ca_file]

    def ready(self) -> Deferred[Any]:
        """
        Fires when no fetch is under way (the first fetches have ended).
        """
        pending = [keys.refresh() for keys in self.issuers.values() if keys.fetching]
        if not pending:
            return succeed(None)
        return gatherResults(pending)
