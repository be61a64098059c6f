"""
What admitting a party costs the server: the CPU of a tiny pipe (1 KiB,
n=1) unsigned, with signed URLs (C{--secret-file}), and with OIDC ID tokens
(C{--oidc-policy}; RS256 and ES256, GitHub-shaped claims).

    python bench/auth_cost.py                 # 2000 pipes of each kind
    python bench/auth_cost.py --pipes 5000

Each pipe is a receiver's GET and a sender's PUT through real channels of a
real site (L{pipe.server.make_site}) on in-memory transports, in this
process, so the figure is the server's Python work alone: parsing, the
credential check (two per pipe: the sender's and the receiver's), the
rendezvous, the fan-out and the responses; no sockets, no kernel.  The
kinds are interleaved in rounds, and each is reported by its best round
(the least disturbed by the other work of a shared machine), in
microseconds of process CPU per pipe, with the difference to unsigned.
The target of issue 31 is at most 200 us more per pipe for tokens than
unsigned.  Like the other benchmarks it prints and never asserts.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pipe._oidc.policy import load_policy
from pipe.server import Settings, make_site
from pipe.signing import sign_url

PAYLOAD = b"x" * 1024
AUDIENCE = "https://pipe.bench.example"
ISSUER = "https://token.actions.githubusercontent.com"
KEY = b"bench-signing-key-0123456789abcdef"


def _b64int(number: int) -> str:
    import base64

    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _issuer(directory: Path) -> Tuple[Path, Dict[str, Any]]:
    """A policy file with a static-key issuer, and its private keys by alg."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    n = rsa_key.public_key().public_numbers()
    p = ec_key.public_key().public_numbers()
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "kid": "r",
                "alg": "RS256",
                "n": _b64int(n.n),
                "e": _b64int(n.e),
            },
            {
                "kty": "EC",
                "kid": "e",
                "alg": "ES256",
                "crv": "P-256",
                "x": _pad(p.x),
                "y": _pad(p.y),
            },
        ]
    }
    (directory / "jwks.json").write_text(json.dumps(jwks))
    policy = directory / "policy.toml"
    policy.write_text(
        f'audience = "{AUDIENCE}"\n'
        f'[issuer.github]\nurl = "{ISSUER}"\njwks_file = "{directory / "jwks.json"}"\n'
        '[[rule]]\nissuer = "github"\nscopes = ["send", "receive"]\n'
        'path = "{repository}/{run_id}/"\nmulti_segment = ["repository"]\n'
        '[rule.claims]\nrepository_owner_id = "65"\nrepository_id = "74"\n'
    )
    return policy, {"RS256": ("r", rsa_key), "ES256": ("e", ec_key)}


def _pad(coordinate: int) -> str:
    import base64

    return (
        base64.urlsafe_b64encode(coordinate.to_bytes(32, "big")).rstrip(b"=").decode()
    )


def _token(kid: str, key: Any, algorithm: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
        "repository": "octo-org/octo-repo",
        "repository_owner_id": "65",
        "repository_id": "74",
        "run_id": "5678901234",
        "run_attempt": "1",
        "event_name": "push",
        "ref": "refs/heads/main",
        "jti": "bench",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 3600,
    }
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


class _Peer:
    _ports = iter(range(20000, 60000))

    def __init__(self, site: Any) -> None:
        self.channel = site.buildProtocol(None)
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", next(self._ports))
        )
        self.channel.makeConnection(self.transport)


def _pipe(site: Any, target: bytes, headers: bytes) -> bool:
    """One tiny transfer; whether the receiver got the payload."""
    receiver = _Peer(site)
    receiver.channel.dataReceived(
        b"GET " + target + b" HTTP/1.1\r\nHost: b\r\n" + headers + b"\r\n"
    )
    sender = _Peer(site)
    sender.channel.dataReceived(
        b"PUT "
        + target
        + b" HTTP/1.1\r\nHost: b\r\nContent-Length: 1024\r\n"
        + headers
        + b"\r\n"
        + PAYLOAD
    )
    return receiver.transport.value().endswith(PAYLOAD)


Kind = Callable[[int], Tuple[bytes, bytes]]


def kinds(policy: Path, keys: Dict[str, Any]) -> Dict[str, Tuple[Any, Kind]]:
    loaded = load_policy(policy)

    # A site of its own for every round: a Clock keeps every delayed call
    # of the connections the round leaves open, in a list it sorts at each
    # callLater, which would make each round slower than the one before.
    def site(**settings: Any) -> Callable[[], Any]:
        def make() -> Any:
            clock = Clock()
            clock.advance(time.time())
            return make_site(clock, Settings(**settings))

        return make

    plain = site()
    signed = site(keys=(KEY,))
    tokens = site(oidc_policy=loaded)
    by_token = {
        alg: b"Authorization: Bearer " + _token(kid, key, alg).encode() + b"\r\n"
        for alg, (kid, key) in keys.items()
    }

    def unsigned(i: int) -> Tuple[bytes, bytes]:
        return b"/api/v1/pipe/octo-org/octo-repo/5678901234/p%d?n=1" % i, b""

    def token(alg: str) -> Kind:
        return lambda i: (
            b"/api/v1/pipe/octo-org/octo-repo/5678901234/p%d?n=1" % i,
            by_token[alg],
        )

    # Signed URLs differ per party (the scope): see _signed_round.
    return {
        "unsigned": (plain, unsigned),
        "signed URL": (signed, unsigned),
        "token RS256": (tokens, token("RS256")),
        "token ES256": (tokens, token("ES256")),
    }


def _signed_round(site: Any, base: int, pipes: int) -> float:
    urls = []
    for i in range(base, base + pipes):
        url = f"http://b/api/v1/pipe/octo-org/octo-repo/5678901234/s{i}?n=1"
        receive = sign_url(url, KEY, "receive", 3600).split("http://b", 1)[1]
        send = sign_url(url, KEY, "send", 3600).split("http://b", 1)[1]
        urls.append((receive.encode(), send.encode()))
    started = time.process_time()
    ok = 0
    for receive_url, send_url in urls:
        receiver = _Peer(site)
        receiver.channel.dataReceived(
            b"GET " + receive_url + b" HTTP/1.1\r\nHost: b\r\n\r\n"
        )
        sender = _Peer(site)
        sender.channel.dataReceived(
            b"PUT "
            + send_url
            + b" HTTP/1.1\r\nHost: b\r\nContent-Length: 1024\r\n\r\n"
            + PAYLOAD
        )
        ok += receiver.transport.value().endswith(PAYLOAD)
    spent = time.process_time() - started
    assert ok == pipes, f"signed: {ok} of {pipes} pipes delivered"
    return spent / pipes


def _round(site: Any, kind: Kind, base: int, pipes: int) -> float:
    requests = [kind(i) for i in range(base, base + pipes)]
    started = time.process_time()
    ok = sum(_pipe(site, target, headers) for target, headers in requests)
    spent = time.process_time() - started
    assert ok == pipes, f"{ok} of {pipes} pipes delivered"
    return spent / pipes


def checks(policy: Path, keys: Dict[str, Any], count: int) -> Dict[str, float]:
    """
    The credential check alone, per party, in seconds of process CPU: the
    signed URL's (L{pipe._transfer.guard.Guard.check}) and the token's
    (L{pipe._transfer.guard.TokenGate.check}), best of five runs of C{count}.
    """
    from pipe._oidc.authority import Authority
    from pipe._transfer.guard import Guard, Requirement, TokenGate
    from pipe.signing import Scope, canonical, signature

    clock = Clock()
    clock.advance(time.time())
    path = b"octo-org/octo-repo/5678901234/p"
    expires = int(clock.seconds()) + 3600
    sig = signature(KEY, canonical(Scope.SEND, path, 1, expires)).encode()
    guard = Guard((KEY,), Requirement.ALL, clock)
    gate = TokenGate(Authority(load_policy(policy), clock))
    tokens = {alg: _token(kid, key, alg).encode() for alg, (kid, key) in keys.items()}
    runs: Dict[str, Callable[[], object]] = {
        "signed URL": lambda: guard.check(
            Scope.SEND, path, 1, [b"%d" % expires], [b"send"], [sig]
        ),
        "token RS256": lambda: gate.check(Scope.SEND, path, tokens["RS256"]),
        "token ES256": lambda: gate.check(Scope.SEND, path, tokens["ES256"]),
    }
    for alg, (_, key) in keys.items():
        signed = jwt.encode({"a": 1}, key, algorithm=alg).encode()
        head, body, encoded = signed.split(b".")
        verifier = jwt.algorithms.get_default_algorithms()[alg]
        raw = jwt.utils.base64url_decode(encoded)
        public = key.public_key()
        message = head + b"." + body
        runs[f"{alg} verify"] = functools.partial(verifier.verify, message, public, raw)
    best: Dict[str, float] = {}
    for name, run in runs.items():
        for _ in range(5):
            started = time.process_time()
            for _ in range(count):
                run()
            spent = (time.process_time() - started) / count
            best[name] = min(best.get(name, spent), spent)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipes", type=int, default=2000, help="pipes per kind")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        policy, keys = _issuer(Path(directory))
        table = kinds(policy, keys)
        best: Dict[str, float] = {name: float("inf") for name in table}
        per_round = max(1, args.pipes // args.rounds)
        base = 0
        for _ in range(args.rounds + 1):  # the first round warms up
            for name, (site, kind) in table.items():
                # The server runs with its garbage frozen (twistd pipe's
                # gc.freeze); here a collection would land in one kind's
                # round or another's by chance.
                gc.collect()
                gc.disable()
                try:
                    if name == "signed URL":
                        cost = _signed_round(site(), base, per_round)
                    else:
                        cost = _round(site(), kind, base, per_round)
                finally:
                    gc.enable()
                if base:
                    best[name] = min(best[name], cost)
            base += per_round
        alone = checks(policy, keys, per_round)
    floor = best["unsigned"]
    rows: List[str] = []
    for name, cost in best.items():
        extra = "" if name == "unsigned" else f"{(cost - floor) * 1e6:+8.1f} us"
        rows.append(f"{name:<12} {cost * 1e6:8.1f} us/pipe {extra}")
    print(
        "server CPU per tiny pipe (1 KiB, n=1),"
        f" best of {args.rounds} rounds of {per_round}:"
    )
    print("\n".join(rows))
    print(
        "the credential check alone, per party (a pipe has two),"
        " and PyJWT's signature verification alone:"
    )
    for name, cost in alone.items():
        print(f"{name:<12} {cost * 1e6:8.1f} us/party {2 * cost * 1e6:8.1f} us/pipe")
    print("target: a token-admitted pipe at most +200 us over unsigned (issue 31)")


if __name__ == "__main__":
    main()
