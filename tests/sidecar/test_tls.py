"""TLS failures (FAULTS.md): a certificate the sidecar cannot verify is a clear 502, never retried
against the same host, never downgraded to plaintext and never answered with verification off."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sluice_sidecar.contract import Retry
from tests.fakes.openai_server import FakeOpenAI

from .conftest import StartSidecar, backend, config, route


def self_signed(tmp: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


@pytest.fixture
async def tls_fake(tmp_path: Path) -> AsyncIterator[FakeOpenAI]:
    f = await FakeOpenAI("tls").start(ssl_context=self_signed(tmp_path))
    yield f
    await f.stop()


async def test_untrusted_certificate_is_a_clear_502_without_retry(
    start_sidecar: StartSidecar, tls_fake: FakeOpenAI
) -> None:
    b = backend(
        "tls", provider="openai-compatible", base_url=f"https://localhost:{tls_fake.port}/v1"
    )
    sc = await start_sidecar(config(route("chat", b, retry=Retry(attempts=3))))
    code, headers, body = await sc.post(
        "/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "x"}]}
    )
    assert code == 502
    assert body["error"]["code"] == "upstream_tls_error"
    assert "TLS" in body["error"]["message"]
    assert headers["x-sluice-attempts"] == "1"
    assert tls_fake.requests == []  # the request never reached the untrusted server
