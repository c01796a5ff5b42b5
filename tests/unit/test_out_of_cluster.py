"""``sluice operator --out-of-cluster``: the URL, the certificate for its host, the helm line."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from sluice_operator import outofcluster
from sluice_operator.settings import OperatorOptions


def test_certificates_are_made_for_the_urls_host_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = OperatorOptions(
        namespace="dev", out_of_cluster=True, webhook_url="https://10.1.2.3:8443"
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ready = outofcluster.prepare(options)
    assert ready.webhook_url == "https://10.1.2.3:8443/mutate-pods"
    assert ready.webhook_port == 8443
    cert_dir = Path(str(ready.webhook_cert_dir))
    assert cert_dir == tmp_path / "cache" / "sluice" / "out-of-cluster" / "10.1.2.3"
    leaf = x509.load_pem_x509_certificate((cert_dir / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((cert_dir / "ca.crt").read_bytes())
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert (cert_dir / "tls.key").stat().st_mode & 0o077 == 0
    ssl.create_default_context().load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")

    # a restart keeps them (the chart's caBundle stays valid); close to expiry renews them
    assert not outofcluster.ensure_certificates(cert_dir, "10.1.2.3")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    assert outofcluster.ensure_certificates(cert_dir, "10.1.2.3", now=later)
    assert outofcluster.ensure_certificates(cert_dir, "dev.example")  # another host

    line = outofcluster.helm_command(ready)
    assert line == (
        "helm upgrade sluice charts/sluice --namespace dev --reuse-values "
        "--set operator.replicas=0 --set webhook.url=https://10.1.2.3:8443/mutate-pods "
        f"--set webhook.certificate.caBundle={outofcluster.ca_bundle(cert_dir)}"
    )
    assert base64.b64decode(outofcluster.ca_bundle(cert_dir)).startswith(b"-----BEGIN CERT")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.1:9443", "must be https://"),
        ("10.0.0.1:9443", "must be https://"),
        ("https://10.0.0.1:9443/other", "path must be /mutate-pods"),
    ],
)
def test_bad_urls_say_what_to_change(url: str, message: str) -> None:
    with pytest.raises(outofcluster.OutOfClusterError, match=message):
        outofcluster.prepare(OperatorOptions(out_of_cluster=True, webhook_url=url))


def test_default_port_and_dns_names() -> None:
    assert outofcluster.url_host_port("https://dev.example") == ("dev.example", 443)
    assert outofcluster.webhook_url("https://dev.example/") == "https://dev.example:443/mutate-pods"
