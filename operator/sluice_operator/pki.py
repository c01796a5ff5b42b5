"""X.509 for Sluice's own development TLS: a CA, the leaf certificates it signs, PEM files.

Owns key generation (RSA or EC P-256), the CA certificate, leaf certificates (server and/or client
usage, IP or DNS names) and writing them as PEM (private keys PKCS#8, mode 0600). Used by the
out-of-cluster operator mode (``outofcluster``: the webhook's serving certificate) and by the CLI's
dev cluster (``sluice_cli.devcluster``: the apiserver's, the admin's and the tests' serving
certificates). Not a production PKI: in a cluster the chart's certificates come from Helm or
cert-manager. Pure but for the two ``write_`` functions.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: Certificates start this long before "now", for clocks a little behind ours.
BACKDATE = dt.timedelta(minutes=5)


def new_key(kind: Literal["rsa", "ec"]) -> PrivateKey:
    """RSA 2048 (kube-apiserver signs ServiceAccount tokens with it) or EC P-256 (small, fast)."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def subject_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """IP addresses as IP SANs, anything else as DNS names."""
    out: list[x509.GeneralName] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _key_usage(*, cert_sign: bool, key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def ca_certificate(
    key: PrivateKey,
    common_name: str,
    *,
    now: dt.datetime,
    valid_for: dt.timedelta,
    path_length: int | None = None,
) -> x509.Certificate:
    """A self-signed CA certificate for ``key``."""
    subject = name(common_name)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(cert_sign=True, key_encipherment=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def leaf_certificate(
    ca_key: PrivateKey,
    ca: x509.Certificate,
    key: PrivateKey,
    common_name: str,
    *,
    now: dt.datetime,
    valid_for: dt.timedelta,
    hosts: Sequence[str] = (),
    organization: str | None = None,
    server: bool = False,
    client: bool = False,
) -> x509.Certificate:
    """A certificate for ``key`` signed by ``ca``: TLS server and/or client usage, ``hosts`` as
    subject alternative names."""
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(common_name, organization))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # RSA keys may encipher the TLS key exchange; EC keys only sign.
            _key_usage(cert_sign=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(subject_names(hosts)), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def write_key(path: Path, key: PrivateKey) -> None:
    """``key`` as PKCS#8 PEM, readable by its owner only (from the moment the file exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def read_key(path: Path) -> PrivateKey:
    """A private key written by ``write_key``; ValueError for another kind of key."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an RSA or EC private key")
    return key
