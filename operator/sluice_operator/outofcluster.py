"""The operator run from a laptop against a cluster (``sluice operator --out-of-cluster``).

Owns what that mode needs beyond the in-cluster one: a webhook serving certificate valid for the
host of ``--webhook-url`` (a CA and a leaf made once and kept in a folder, so the caBundle the
chart holds stays valid across restarts), the options the run then uses (webhook bound on the
URL's port, certificates from that folder, credentials from the kubeconfig only), and the one
``helm upgrade`` line that points the chart's MutatingWebhookConfiguration at the URL. That line
sets chart values (``webhook.url``, ``webhook.certificate.caBundle``, ``operator.replicas=0``), so
a later ``helm upgrade --reuse-values`` keeps the mode instead of undoing a hand-made patch.

Writes only under the certificate folder; never calls the Kubernetes API (``preflight`` does).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import os
from pathlib import Path
from urllib.parse import urlsplit

from .settings import OperatorOptions

RENEW_BEFORE = dt.timedelta(days=30)
VALIDITY = dt.timedelta(days=365)


class OutOfClusterError(ValueError):
    """``--out-of-cluster`` options that cannot work; ``str()`` says what to change."""


def default_cert_dir(host: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sluice" / "out-of-cluster" / host


def url_host_port(url: str) -> tuple[str, int]:
    """The host and port of an ``https://`` webhook URL (port 443 when absent)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise OutOfClusterError(
            f"--webhook-url must be https://HOST[:PORT]/mutate-pods (the apiserver calls "
            f"webhooks over TLS only), not {url!r}"
        )
    if parts.path not in ("", "/", "/mutate-pods"):
        raise OutOfClusterError(f"--webhook-url path must be /mutate-pods, not {parts.path!r}")
    return parts.hostname, parts.port or 443


def webhook_url(url: str) -> str:
    """``url`` with the webhook's path."""
    host, port = url_host_port(url)
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{port}/mutate-pods"


def prepare(options: OperatorOptions) -> OperatorOptions:
    """The options an out-of-cluster run uses: certificates for the URL's host (made when
    missing or expiring), the webhook on the URL's port. Options without ``webhook_url`` are
    returned as they are (the operator then runs without the webhook)."""
    if not options.webhook_url:
        return options
    host, port = url_host_port(options.webhook_url)
    cert_dir = Path(options.webhook_cert_dir) if options.webhook_cert_dir else None
    if cert_dir is None:
        cert_dir = default_cert_dir(host)
        ensure_certificates(cert_dir, host)
    elif not (cert_dir / "tls.crt").is_file() or not (cert_dir / "tls.key").is_file():
        raise OutOfClusterError(f"--webhook-cert-dir {cert_dir} needs tls.crt and tls.key")
    return dataclasses.replace(
        options,
        webhook_url=webhook_url(options.webhook_url),
        webhook_port=port,
        webhook_cert_dir=str(cert_dir),
        # the same host serves the control plane: its HTTPS uses the same certificate
        controlplane_cert_dir=options.controlplane_cert_dir
        or (None if options.controlplane_insecure_http else str(cert_dir)),
    )


def ca_bundle(cert_dir: Path) -> str:
    """The base64 PEM CA for the webhook configuration (``ca.crt``, else the leaf itself)."""
    ca = cert_dir / "ca.crt"
    return base64.b64encode((ca if ca.is_file() else cert_dir / "tls.crt").read_bytes()).decode()


def helm_command(options: OperatorOptions, release: str = "sluice") -> str:
    """The ``helm upgrade`` that points the chart's webhook configuration at this operator."""
    assert options.webhook_url and options.webhook_cert_dir
    return (
        f"helm upgrade {release} charts/sluice --namespace {options.namespace} --reuse-values "
        f"--set operator.replicas=0 --set webhook.url={options.webhook_url} "
        f"--set webhook.certificate.caBundle={ca_bundle(Path(options.webhook_cert_dir))}"
    )


def ensure_certificates(cert_dir: Path, host: str, now: dt.datetime | None = None) -> bool:
    """Make ``ca.crt``, ``tls.crt`` and ``tls.key`` for ``host`` in ``cert_dir`` unless valid
    ones are there; True when new ones were made (the caBundle in the chart must then change)."""
    from cryptography import x509

    now = now or dt.datetime.now(dt.UTC)
    crt = cert_dir / "tls.crt"
    if crt.is_file() and (cert_dir / "tls.key").is_file() and (cert_dir / "ca.crt").is_file():
        leaf = x509.load_pem_x509_certificate(crt.read_bytes())
        if leaf.not_valid_after_utc - now > RENEW_BEFORE and _names(leaf) & {host}:
            return False
    _issue(cert_dir, host, now)
    return True


def _names(cert: object) -> set[str]:
    from cryptography import x509

    assert isinstance(cert, x509.Certificate)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return set(sans.get_values_for_type(x509.DNSName)) | ips


def _issue(cert_dir: Path, host: str, now: dt.datetime) -> None:
    from . import pki  # cryptography: only this mode needs it

    ca_key, key = pki.new_key("ec"), pki.new_key("ec")
    ca = pki.ca_certificate(
        ca_key,
        f"sluice out-of-cluster webhook CA ({host})",
        now=now,
        valid_for=VALIDITY,
        path_length=0,
    )
    leaf = pki.leaf_certificate(
        ca_key, ca, key, host, now=now, valid_for=VALIDITY, hosts=(host,), server=True
    )
    pki.write_cert(cert_dir / "ca.crt", ca)
    pki.write_cert(cert_dir / "tls.crt", leaf)
    pki.write_key(cert_dir / "tls.key", key)
