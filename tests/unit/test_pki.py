"""The development PKI (``sluice_operator.pki``): the dev cluster and the out-of-cluster mode."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from sluice_operator import pki

NOW = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_a_leaf_is_signed_by_its_ca_and_names_its_hosts(kind: str, tmp_path: Path) -> None:
    ca_key, key = pki.new_key(kind), pki.new_key(kind)  # type: ignore[arg-type]
    ca = pki.ca_certificate(ca_key, "test CA", now=NOW, valid_for=dt.timedelta(days=1))
    leaf = pki.leaf_certificate(
        ca_key,
        ca,
        key,
        "server",
        now=NOW,
        valid_for=dt.timedelta(days=1),
        hosts=("127.0.0.1", "::1", "op.example"),
        server=True,
    )
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert sans.get_values_for_type(x509.DNSName) == ["op.example"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert leaf.not_valid_before_utc == NOW - pki.BACKDATE
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    # The files load where they are used: Python's TLS (the control plane), and back again.
    pki.write_cert(tmp_path / "tls.crt", leaf)
    pki.write_key(tmp_path / "tls.key", key)
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        tmp_path / "tls.crt", tmp_path / "tls.key"
    )
    assert pki.read_key(tmp_path / "tls.key").public_key() == key.public_key()


def test_a_client_certificate_carries_its_organization() -> None:
    ca_key, key = pki.new_key("ec"), pki.new_key("ec")
    ca = pki.ca_certificate(ca_key, "test CA", now=NOW, valid_for=dt.timedelta(days=1))
    leaf = pki.leaf_certificate(
        ca_key,
        ca,
        key,
        "admin",
        now=NOW,
        valid_for=dt.timedelta(days=1),
        organization="system:masters",
        client=True,
    )
    assert leaf.subject.rfc4514_string() == "CN=admin,O=system:masters"  # (RFC 4514: reversed)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
