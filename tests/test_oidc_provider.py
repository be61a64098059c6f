"""
An OpenID provider this project did not write (the C{oidc-provider-mock}
package from PyPI, a Flask app, served over TLS with the tests' own
authority in a thread of its own): txpipe discovers its keys, verifies the
ID tokens it issues through its authorization-code flow (its own key, kid
and claim layout) and admits a transfer by them.

The package needs Python 3.10 and cryptography 45 or newer: the
environments that pin an older TLS stack (tox.ini) cannot install it, and
this module skips there.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Any, Iterator, Tuple
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_twisted

from pipe._oidc.policy import load_policy

from .helpers import curl, wait_for
from .helpers.issuer import AUDIENCE, CertificateAuthority, policy_text

mock = pytest.importorskip(
    "oidc_provider_mock",
    reason="oidc-provider-mock is not installed (it needs Python 3.10+ and "
    "cryptography 45+; tox.ini installs it where it can)",
)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Tuple[Any, str, Path]]:
    """The provider's Flask app, served over TLS; its issuer URL; the CA file."""
    import werkzeug.serving  # type: ignore[import-not-found, unused-ignore]

    authority = CertificateAuthority(tmp_path)
    app = mock.app(
        user_claims=[
            mock.User(
                sub="ci-job-17",
                claims={
                    "project_id": "20",
                    "pipeline_id": "574",
                    "ref_protected": True,
                },
            )
        ]
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(authority.cert_file, authority.key_file)
    server = werkzeug.serving.make_server(
        "127.0.0.1", 0, app, threaded=True, ssl_context=context
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield app, f"https://127.0.0.1:{server.server_port}", authority.ca_file
    finally:
        server.shutdown()
        thread.join(10)


def id_token(app: Any, issuer: str) -> str:
    """
    An ID token from the provider's own authorization-code flow, for client
    C{AUDIENCE} (its aud), as user ci-job-17.
    """
    client = app.test_client()
    redirect = "https://client.example/callback"
    query = {
        "client_id": AUDIENCE,
        "redirect_uri": redirect,
        "response_type": "code",
        "scope": "openid",
        "state": "s",
    }
    authorized = client.post(
        "/oauth2/authorize",
        query_string=query,
        data={"sub": "ci-job-17"},
        base_url=issuer,
    )
    assert authorized.status_code == 302, authorized.data
    code = parse_qs(urlsplit(authorized.headers["Location"]).query)["code"][0]
    answer = client.post(
        "/oauth2/token",
        # In the form (client_secret_post): the client ID, a URL, holds a colon.
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": AUDIENCE,
            "client_secret": "any-secret",
        },
        base_url=issuer,
    )
    assert answer.status_code == 200, answer.data
    return str(answer.get_json()["id_token"])


@pytest_twisted.ensureDeferred
async def test_independent_provider_tokens_admit_a_transfer(
    reactor: Any, serve: Any, provider: Tuple[Any, str, Path], tmp_path: Path
) -> None:
    """
    Keys discovered from the provider over TLS; its ID token sends and
    receives under the path its claims allow; the integer-free string
    claims and a boolean compare as strings; another path is forbidden.
    """
    app, issuer, ca_file = provider
    policy = tmp_path / "policy.toml"
    policy.write_text(
        policy_text(
            # Its tokens name no kid: its JWKS has one key.
            {"mock": (issuer, f'ca_file = "{ca_file}"\nrequire_kid = false')},
            """
[[rule]]
issuer = "mock"
scopes = ["send", "receive"]
path = "mock/{sub}/{pipeline_id}/"
[rule.claims]
project_id = "20"
ref_protected = "true"
""",
        )
    )
    token = await _in_thread(reactor, id_token, app, issuer)
    server = serve(oidc_policy=load_policy(policy))
    authority = server.site.registry.token_gate.authority
    authority.start()
    await authority.keyring.ready()
    url = server.url("mock/ci-job-17/574/out")
    header = ["-H", f"Authorization: Bearer {token}"]
    receiver = curl(reactor, *header, url, keep_text=True)
    await wait_for(
        reactor, lambda: server.parties("mock/ci-job-17/574/out") == (False, 1)
    )
    sent = await curl(
        reactor, "-d", "from the mock", *header, url, keep_text=True
    ).ended
    assert b"done" in sent.text, sent
    assert (await receiver.ended).text == b"from the mock"
    other = await curl(
        reactor,
        "-w",
        "%{http_code}",
        *header,
        server.url("mock/ci-job-18/574/x"),
        keep_text=True,
    ).ended
    assert other.text.endswith(b"403")


def _in_thread(reactor: Any, function: Any, *args: Any) -> Any:
    """Run the blocking token flow off the reactor thread."""
    from twisted.internet.threads import deferToThreadPool

    return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)
