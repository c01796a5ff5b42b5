"""Checks made once before kopf starts, so that a start that cannot work fails with one clear line.

Left to itself, kopf retries a missing login every 60 seconds with a traceback, and a leader
election without its namespace or its RBAC would retry forever with a warning every 2 seconds.
Both are configuration errors a person has to fix, so the operator checks them first and exits
with a message saying what to do:

* credentials: the in-cluster ServiceAccount, else a kubeconfig (``KUBECONFIG`` or
  ``~/.kube/config``) — the same lookup kopf and ``kube.load_client`` make;
* leader election (unless ``--standalone``): the operator's namespace (``--namespace``) exists
  and its leader-election Lease there can be read (``leader``; the chart's Role allows it).

``check_controlplane_tls``: the control plane serves HTTPS from ``--controlplane-cert-dir``
(readable ``tls.crt`` and ``tls.key``) unless ``--controlplane-insecure-http`` says otherwise.

``webhook_mismatch`` (out-of-cluster mode, a warning rather than a failure): whether the
cluster's Sluice webhook configuration calls this operator's ``--webhook-url`` with its CA.

Reads only; it never writes to the API.
"""

from __future__ import annotations

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import kube
from .settings import OperatorOptions

TIMEOUT_SECONDS = 10.0


class PreflightError(Exception):
    """The operator cannot start; ``str()`` says why and what to do, in one line."""


def check(options: OperatorOptions) -> None:
    """Raise :class:`PreflightError` when kopf could not do its work with ``options``."""
    try:
        api = kube.load_client(kubeconfig_only=options.out_of_cluster)
    except config.ConfigException as exc:
        raise PreflightError(
            "no Kubernetes credentials: not running in a pod (no ServiceAccount) and no "
            f"kubeconfig found ({exc}); set KUBECONFIG or create ~/.kube/config"
        ) from exc
    if options.standalone:
        return
    host = api.configuration.host
    where = f"namespace {options.namespace!r}"
    try:
        found = client.CoreV1Api(api).list_namespace(
            field_selector=f"metadata.name={options.namespace}", _request_timeout=TIMEOUT_SECONDS
        )
        if not found.items:
            raise PreflightError(
                f"the operator's {where} does not exist at {host}: create it or pass "
                "--namespace (where its leader-election Lease lives), or run one replica with "
                "--standalone"
            )
        client.CoordinationV1Api(api).read_namespaced_lease(
            options.leader_lease, options.namespace, _request_timeout=TIMEOUT_SECONDS
        )
    except PreflightError:
        raise
    except ApiException as exc:
        if exc.status == 403:
            raise PreflightError(
                f"the operator may not read its leader-election Lease {options.leader_lease!r} "
                f"in {where} at {host} (403): grant get/create/update on "
                "leases.coordination.k8s.io there (the Helm chart's Role does) or run one "
                "replica with --standalone"
            ) from exc
        if exc.status != 404:  # 404 on the Lease: the first leader creates it
            raise PreflightError(
                f"the Kubernetes API at {host} answered {exc.status} {exc.reason} to reading "
                f"the leader-election Lease in {where}"
            ) from exc
    except Exception as exc:  # urllib3 wraps connection errors in several types
        raise PreflightError(f"cannot reach the Kubernetes API at {host}: {exc}") from exc


WEBHOOK_SUFFIX = ".inject.sluice.dev"


def webhook_mismatch(options: OperatorOptions, ca_bundle: str) -> str | None:
    """Why the cluster's Sluice webhook configuration does not call ``options.webhook_url``
    with ``ca_bundle`` (none installed, another URL or Service, another CA), or None when it
    does or cannot be read."""
    try:
        api = client.AdmissionregistrationV1Api(
            kube.load_client(kubeconfig_only=options.out_of_cluster)
        )
        found = api.list_mutating_webhook_configuration(_request_timeout=TIMEOUT_SECONDS)
    except Exception:  # no permission or no answer: the run itself will say more
        return None
    hooks = [
        (c.metadata.name if c.metadata else "?", h.client_config)
        for c in found.items or []
        for h in c.webhooks or []
        if str(h.name).endswith(WEBHOOK_SUFFIX)
    ]
    if not hooks:
        return "no Sluice MutatingWebhookConfiguration is installed (helm install the chart)"
    for name, cc in hooks:
        if cc.url != options.webhook_url:
            svc = cc.service
            where = cc.url or (f"Service {svc.namespace}/{svc.name}" if svc else "nothing")
            return f"MutatingWebhookConfiguration {name} calls {where}, not {options.webhook_url}"
        if (cc.ca_bundle or "") != ca_bundle:
            return f"MutatingWebhookConfiguration {name} trusts another CA than this operator's"
    return None


def check_controlplane_tls(options: OperatorOptions) -> None:
    """Raise :class:`PreflightError` when the control plane has no certificate and plain HTTP
    was not asked for explicitly."""
    import ssl
    from pathlib import Path

    if options.controlplane_insecure_http:
        return
    if not options.controlplane_cert_dir:
        raise PreflightError(
            "the control plane needs a certificate: --controlplane-cert-dir DIR (tls.crt, "
            "tls.key, ca.crt; the chart mounts one) or, for development only, "
            "--controlplane-insecure-http"
        )
    certs = Path(options.controlplane_cert_dir)
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            certs / "tls.crt", certs / "tls.key"
        )
    except (OSError, ssl.SSLError) as exc:
        raise PreflightError(
            f"cannot load the control plane's certificate from {certs}/tls.crt and tls.key: {exc}"
        ) from exc
