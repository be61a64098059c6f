"""
TLS listeners: a transfer over C{ssl:} endpoints with curl verifying a
throwaway CA, HTTP/1.1 only (no h2 through ALPN).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any, Tuple

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.endpoints import serverFromString
from twisted.web import http

from pipe.server import make_site

from .helpers import curl, payload, sha256_of, wait_for


def make_certificate(directory: Path) -> Tuple[Path, Path, Path]:
    """
    A throwaway CA and a server certificate for 127.0.0.1 signed by it.

    @return: (CA certificate, server key, server certificate) paths.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "txpipe test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    key_path = directory / "key.pem"
    cert_path = directory / "cert.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca_path, key_path, cert_path


def test_alpn_offers_only_http11_even_with_h2(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.internet.task import Clock

    monkeypatch.setattr(http, "H2_ENABLED", True)
    assert make_site(Clock()).acceptableProtocols() == [b"http/1.1"]  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_transfer_over_tls(reactor: Any, tmp_path: Path) -> None:
    ca, key, cert = make_certificate(tmp_path)
    site = make_site(reactor)
    endpoint = serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    )
    port = await endpoint.listen(site)
    try:
        data = payload(tmp_path, 4 * 1024 * 1024)
        url = f"https://127.0.0.1:{port.getHost().port}/api/v1/pipe/tls?n=2"
        receivers = [
            curl(reactor, "--cacert", str(ca), url),
            curl(
                reactor,
                "--cacert",
                str(ca),
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version}",
                url,
                keep_text=True,
            ),
        ]
        await wait_for(
            reactor, lambda: site.pipes.rendezvous.parties(b"tls") == (False, 2)
        )
        sent = await curl(
            reactor, "--cacert", str(ca), "-T", str(data), url, keep_text=True
        ).ended
        first, second = [await r.ended for r in receivers]
        assert sent.code == 0, sent
        assert b"[INFO] done: bytes=4194304 receivers=2/2" in sent.text
        assert first.code == 0 and first.digest == sha256_of(data)
        assert second.code == 0 and second.text == b"1.1"
    finally:
        await port.stopListening()
