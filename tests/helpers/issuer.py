"""
A real OpenID Connect token issuer for the tests: its own certificate
authority, a discovery document and a JWKS served over TLS on a loopback
port in the tests' reactor, RSA and EC signing keys (rotated on demand),
tokens shaped like GitHub Actions' and GitLab CI's documented ones, hostile
tokens made by hand, and a key server that can be down, slow or answer
garbage.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

#: The audience of the tests' policies.
AUDIENCE = "https://pipe.test.example"

_RSA_KEYS: List[Any] = []


def rsa_key() -> Any:
    """A 2048-bit RSA key (a few are made once per test run, then reused)."""
    if len(_RSA_KEYS) < 4:
        _RSA_KEYS.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return _RSA_KEYS[-1]
    _RSA_KEYS.append(_RSA_KEYS.pop(0))
    return _RSA_KEYS[-1]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int(number: int) -> str:
    return _b64(number.to_bytes((number.bit_length() + 7) // 8, "big"))


class SigningKey:
    """
    One signing key of the issuer: its C{kid}, algorithm and private key.
    """

    def __init__(self, kid: str, algorithm: str, private: Any) -> None:
        self.kid = kid
        self.algorithm = algorithm
        self.private = private

    def jwk(self) -> Dict[str, Any]:
        """The public key as a JWK."""
        public = self.private.public_key()
        if self.algorithm.startswith("RS"):
            numbers = public.public_numbers()
            return {
                "kty": "RSA",
                "kid": self.kid,
                "use": "sig",
                "alg": self.algorithm,
                "n": _int(numbers.n),
                "e": _int(numbers.e),
            }
        numbers = public.public_numbers()
        return {
            "kty": "EC",
            "kid": self.kid,
            "use": "sig",
            "alg": self.algorithm,
            "crv": "P-256",
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
        }

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )

    def sign(self, header: Dict[str, Any], claims: Dict[str, Any]) -> str:
        """A compact JWS of C{claims} under this key (PyJWT)."""
        import jwt

        return jwt.encode(
            claims, self.private, algorithm=self.algorithm, headers=header
        )


def compose(header: Dict[str, Any], claims: Dict[str, Any], sign: Any = None) -> str:
    """
    A token made by hand: C{sign(signing_input)} gives the signature bytes
    (none: an empty signature, as for C{alg: none}).
    """
    signing_input = (
        _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    )
    signature = sign(signing_input.encode()) if sign else b""
    return signing_input + "." + _b64(signature)


def hs256_with(secret: bytes) -> Any:
    """A signer of HMAC-SHA256 under C{secret} (for forged tokens)."""
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


class CertificateAuthority:
    """
    A certificate authority of the tests' own, and a server certificate it
    issued for 127.0.0.1 and localhost.

    @ivar ca_file: the authority's certificate, PEM (a policy's C{ca_file}).
    """

    def __init__(self, directory: Path) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "txpipe test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256())
        )
        server_key = ec.generate_private_key(ec.SECP256R1())
        import ipaddress

        server = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
            )
            .issuer_name(name)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                False,
            )
            .sign(key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        self.ca_pem = ca.public_bytes(pem)
        self.server_pem = server.public_bytes(pem) + server_key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.ca_pem)
        self.server_file = directory / "server.pem"
        self.server_file.write_bytes(self.server_pem)
        self.cert_file = directory / "server-cert.pem"
        self.cert_file.write_bytes(server.public_bytes(pem))
        self.key_file = directory / "server-key.pem"
        self.key_file.write_bytes(self.server_pem[len(server.public_bytes(pem)) :])

    def server_options(self) -> Any:
        """The TLS options of a server with the issued certificate."""
        return ssl.PrivateCertificate.loadPEM(self.server_pem).options()


class _Document(Resource):
    """
    One document of the issuer (discovery or JWKS), answered as the
    issuer's C{mode} says.
    """

    isLeaf = True

    def __init__(self, issuer: TestIssuer, body: Any) -> None:
        super().__init__()
        self._issuer = issuer
        self._body = body

    def render_GET(self, request: Any) -> Any:
        issuer = self._issuer
        issuer.requests.append(request.path.decode())
        mode = issuer.mode
        if mode == "down":
            request.setResponseCode(503)
            return b"down for maintenance\n"
        body = b"<html>garbage</html>" if mode == "garbage" else self._body()
        request.setHeader(b"content-type", b"application/json")
        if mode == "slow":
            call = issuer.reactor.callLater(issuer.delay, _answer, request, body)
            request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
            return NOT_DONE_YET
        return body


def _answer(request: Any, body: bytes) -> None:
    request.write(body)
    request.finish()


class TestIssuer:
    """
    An OIDC issuer over TLS on a loopback port of the tests' reactor.

    @ivar url: its issuer URL (C{iss}), C{https://127.0.0.1:PORT}.
    @ivar keys: its signing keys, the first signs by default.
    @ivar mode: how its key server answers: C{ok}, C{down} (503),
        C{garbage} (not JSON), C{slow} (after C{delay} seconds) or
        C{empty} (a JWKS with no key).
    @ivar requests: the paths it was asked for.
    """

    __test__ = False

    def __init__(self, reactor: Any, authority: CertificateAuthority) -> None:
        self.reactor = reactor
        self.authority = authority
        self.keys: List[SigningKey] = [
            SigningKey("rsa-1", "RS256", rsa_key()),
            SigningKey("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
        ]
        self.mode = "ok"
        self.delay = 5.0
        self.requests: List[str] = []
        root = Resource()
        well_known = Resource()
        root.putChild(b".well-known", well_known)
        well_known.putChild(b"openid-configuration", _Document(self, self._discovery))
        root.putChild(b"jwks", _Document(self, self._jwks))
        self.port = reactor.listenSSL(
            0, Site(root), authority.server_options(), interface="127.0.0.1"
        )
        self.url = f"https://127.0.0.1:{self.port.getHost().port}"

    def _discovery(self) -> bytes:
        return json.dumps(
            {
                "issuer": self.url,
                "jwks_uri": self.url + "/jwks",
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }
        ).encode()

    def _jwks(self) -> bytes:
        keys = [] if self.mode == "empty" else [key.jwk() for key in self.keys]
        return json.dumps({"keys": keys}).encode()

    def jwks(self) -> bytes:
        """The JWKS as served now (for a policy's C{jwks_file})."""
        return self._jwks()

    def rotate(self) -> SigningKey:
        """Replace the RSA key by a new one (a new C{kid}); return it."""
        number = len([k for k in self.keys if k.algorithm == "RS256"]) + 1
        new = SigningKey(f"rsa-{number}-{uuid.uuid4().hex[:6]}", "RS256", rsa_key())
        self.keys = [new] + [k for k in self.keys if k.algorithm != "RS256"]
        return new

    def token(
        self,
        claims: Dict[str, Any],
        key: Optional[SigningKey] = None,
        **header: Any,
    ) -> str:
        """A token of C{claims} (C{iss} added if missing) signed by C{key}."""
        key = key or self.keys[0]
        claims = {"iss": self.url, **claims}
        return key.sign({"kid": key.kid, **header}, claims)

    def stop(self) -> Any:
        return self.port.stopListening()


def times(now: float, lifetime: int = 300) -> Dict[str, int]:
    """C{iat}, C{nbf} and C{exp} of a token issued at C{now}."""
    issued = int(now)
    return {"iat": issued, "nbf": issued - 5, "exp": issued + lifetime}


def github_claims(now: float, **changes: Any) -> Dict[str, Any]:
    """
    The claims of a GitHub Actions ID token, as its documentation's example
    has them (strings throughout), for run 5678901234 of octo-org/octo-repo.
    """
    claims: Dict[str, Any] = {
        "jti": str(uuid.uuid4()),
        "sub": "repo:octo-org/octo-repo:environment:prod",
        "environment": "prod",
        "aud": AUDIENCE,
        "ref": "refs/heads/main",
        "sha": "example-sha",
        "repository": "octo-org/octo-repo",
        "repository_owner": "octo-org",
        "actor_id": "12",
        "repository_visibility": "private",
        "repository_id": "74",
        "repository_owner_id": "65",
        "run_id": "5678901234",
        "run_number": "10",
        "run_attempt": "2",
        "runner_environment": "github-hosted",
        "actor": "octocat",
        "workflow": "example-workflow",
        "head_ref": "",
        "base_ref": "",
        "event_name": "workflow_dispatch",
        "ref_type": "branch",
        "job_workflow_ref": (
            "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main"
        ),
        **times(now),
    }
    claims.update(changes)
    return claims


def gitlab_claims(now: float, **changes: Any) -> Dict[str, Any]:
    """
    The claims of a GitLab CI C{id_tokens} token, as its documentation's
    example has them (IDs as strings, C{runner_id} an integer,
    C{ref_protected} the string C{"true"}), for pipeline 574 of
    my-group/my-project.
    """
    claims: Dict[str, Any] = {
        "namespace_id": "72",
        "namespace_path": "my-group",
        "project_id": "20",
        "project_path": "my-group/my-project",
        "user_id": "1",
        "user_login": "sample-user",
        "user_email": "sample-user@example.com",
        "pipeline_id": "574",
        "pipeline_source": "push",
        "job_id": "302",
        "ref": "main",
        "ref_type": "branch",
        "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "environment": "test-environment2",
        "environment_protected": "false",
        "deployment_tier": "testing",
        "runner_id": 1,
        "runner_environment": "self-hosted",
        "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
        "project_visibility": "public",
        "ci_config_ref_uri": (
            "gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main"
        ),
        "ci_config_sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
        "jti": str(uuid.uuid4()),
        "sub": "project_path:my-group/my-project:ref_type:branch:ref:main",
        "aud": AUDIENCE,
        **times(now),
    }
    claims.update(changes)
    return claims


def policy_text(issuers: Dict[str, Tuple[str, str]], rules: str, **top: Any) -> str:
    """
    A policy file: C{issuers} maps a name to its C{url} and the rest of its
    table (TOML lines), C{rules} is the C{[[rule]]} tables.
    """
    lines = [f'audience = "{top.get("audience", AUDIENCE)}"']
    for key in ("leeway", "replay"):
        if key in top:
            lines.append(f"{key} = {json.dumps(top[key])}")
    for name, (url, rest) in issuers.items():
        lines += [f"[issuer.{name}]", f'url = "{url}"', rest]
    return "\n".join(lines) + "\n" + rules


#: A GitHub rule: jobs of one run of octo-org/octo-repo (owner and repository
#: bound by ID) send and receive under octo-org/octo-repo/RUN_ID/.
GITHUB_RULE = """
[[rule]]
name = "octo-repo runs"
issuer = "github"
scopes = ["send", "receive"]
path = "{repository}/{run_id}/"
multi_segment = ["repository"]
[rule.claims]
repository_owner_id = "65"
repository_id = "74"
event_name = ["push", "workflow_dispatch"]
"""

#: What a transfer admitted by L{GITHUB_RULE} logs of a L{github_claims}
#: token: the issuer, the rule and the claims the rule read.
GITHUB_ADMISSION = {
    "issuer": "github",
    "rule": "octo-repo runs",
    "claims": {
        "repository_owner_id": "65",
        "repository_id": "74",
        "event_name": "workflow_dispatch",
        "repository": "octo-org/octo-repo",
        "run_id": "5678901234",
    },
}

#: GitLab rules: protected refs of project 20 send, any of its jobs receive,
#: under my-group/my-project/PIPELINE_ID/.
GITLAB_RULES = """
[[rule]]
issuer = "gitlab"
scopes = ["send"]
path = "{project_path}/{pipeline_id}/"
multi_segment = ["project_path"]
[rule.claims]
project_id = "20"
ref_protected = "true"

[[rule]]
issuer = "gitlab"
scopes = ["receive"]
path = "{project_path}/{pipeline_id}/"
multi_segment = ["project_path"]
[rule.claims]
project_id = "20"
"""
