"""``sluice doctor``: check a Sluice install and say what to fix.

Owns the checks, in the order a person would fix them: the cluster answers; the four CRDs are
installed and current (the generated schema is contained in the served one); a Sluice
MutatingWebhookConfiguration exists; its endpoint is reachable (a ``url``: TLS to it, checked
against the configuration's caBundle and the URL's host, then ``/readyz``; a Service: ready
endpoints behind it, and the serving certificate in the chart's Secret issued by the caBundle for
``<service>.<namespace>.svc``) and its certificate does not expire within ``EXPIRY_FAIL_DAYS``; an
operator runs (an available Deployment, or a leader-election Lease renewed lately, or the URL's
webhook answering); the operator's ServiceAccount has every permission the operator uses and
cannot read Secrets (SubjectAccessReview); and, with ``--canary``, a server-side dry run of an
opted-in pod comes back injected (nothing is stored). Exit 1 on any failure.
"""

from __future__ import annotations

import base64
import datetime as dt
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from sluice_operator import configmap, crdgen
from sluice_operator.api import GROUP, KINDS
from sluice_operator.inject import annotations as ann
from sluice_operator.settings import OperatorOptions

from .fleet import ClusterError, load_api

EXPIRY_FAIL_DAYS = 7
EXPIRY_WARN_DAYS = 30
WEBHOOK_SUFFIX = ".inject.sluice.dev"
LEASE_FRESH = dt.timedelta(minutes=2)
#: The operator's leader-election Lease (its ``--leader-lease`` default, the chart's too).
LEADER_LEASE = OperatorOptions().leader_lease

# (verb, group, resource, subresource, name) the operator needs, cluster-wide
NEEDS: tuple[tuple[str, str, str, str, str], ...] = (
    *((verb, GROUP, k.plural, "", "") for k in KINDS for verb in ("get", "list", "watch")),
    *((("patch", GROUP, k.plural, "status", "")) for k in KINDS),
    ("create", "", "events", "", ""),
    ("get", "", "configmaps", "", configmap.NAME),
    ("patch", "", "configmaps", "", configmap.NAME),
    ("create", "", "configmaps", "", configmap.NAME),
    ("list", "", "pods", "", ""),
    ("watch", "", "pods", "", ""),
    ("list", "", "namespaces", "", ""),
    ("watch", "", "namespaces", "", ""),
    ("create", "authentication.k8s.io", "tokenreviews", "", ""),
)
MUST_NOT: tuple[tuple[str, str, str, str, str], ...] = (
    ("get", "", "secrets", "", ""),
    ("list", "", "secrets", "", ""),
)


@dataclass(frozen=True)
class Result:
    ok: bool | None  # None: a warning
    what: str
    fix: str = ""


@dataclass
class Install:
    """What the checks found out about the install, for the later checks."""

    namespace: str | None = None
    webhook: dict[str, Any] | None = None  # the first Sluice webhook's clientConfig
    webhook_ok: bool = False
    deployment: Any = None


def _ok(what: str) -> Result:
    return Result(True, what)


def _fail(what: str, fix: str) -> Result:
    return Result(False, what, fix)


def check_crds(api: Any) -> Iterator[Result]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ext = client.ApiextensionsV1Api(api)
    for name, text in sorted(crdgen.render_all().items()):
        import yaml

        wanted = yaml.safe_load(text)
        crd_name = wanted["metadata"]["name"]
        try:
            live = api.sanitize_for_serialization(
                ext.read_custom_resource_definition(crd_name, _request_timeout=10)
            )
        except ApiException as exc:
            if exc.status == 404:
                yield _fail(
                    f"CRD {crd_name} is not installed",
                    "kubectl apply --server-side -f crds/  (or helm install the chart)",
                )
                continue
            raise
        if not _contains(live["spec"], wanted["spec"]):
            yield _fail(
                f"CRD {crd_name} is out of date (not what this sluice {name} generates)",
                "kubectl apply --server-side --force-conflicts -f crds/  (helm upgrade does not "
                "update CRDs)",
            )
        else:
            yield _ok(f"CRD {crd_name} is installed and current")


def _contains(live: Any, wanted: Any) -> bool:
    """Every field of ``wanted`` is in ``live`` with the same value (the apiserver may add)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(
            k in live and _contains(live[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(_contains(a, b) for a, b in zip(live, wanted, strict=True))
        )
    return bool(live == wanted)


def check_webhook(api: Any, install: Install, operator_namespace: str | None) -> Iterator[Result]:
    from kubernetes import client

    configs = client.AdmissionregistrationV1Api(api).list_mutating_webhook_configuration(
        _request_timeout=10
    )
    found: list[tuple[Any, Any]] = [
        (c, h)
        for c in configs.items or []
        for h in c.webhooks or []
        if h.name.endswith(WEBHOOK_SUFFIX)
    ]
    if not found:
        yield _fail(
            "no Sluice MutatingWebhookConfiguration: pods are never injected",
            "helm install the chart (charts/sluice); see docs/install.md",
        )
        return
    mwc, hook = found[0]
    annotations = mwc.metadata.annotations or {}
    cc = api.sanitize_for_serialization(hook.client_config)
    install.webhook = cc
    install.namespace = (
        operator_namespace
        or annotations.get("meta.helm.sh/release-namespace")
        or (cc.get("service") or {}).get("namespace")
    )
    yield _ok(f"MutatingWebhookConfiguration {mwc.metadata.name} is installed")
    ca = base64.b64decode(cc.get("caBundle") or "")
    if cc.get("url"):
        yield from _check_url(cc["url"], ca, install)
    else:
        yield from _check_service(api, cc["service"], ca, install)


def _expiry(not_after: dt.datetime, what: str) -> Result:
    left = not_after - dt.datetime.now(dt.UTC)
    if left < dt.timedelta(days=EXPIRY_FAIL_DAYS):
        return _fail(
            f"{what} expires {not_after:%Y-%m-%d} ({left.days} days)",
            "renew it (the chart regenerates it when its Secret is deleted and helm upgrade "
            "runs; out of cluster, delete ~/.cache/sluice/out-of-cluster/<host>)",
        )
    if left < dt.timedelta(days=EXPIRY_WARN_DAYS):
        return Result(None, f"{what} expires soon: {not_after:%Y-%m-%d}", "renew it")
    return _ok(f"{what} is valid until {not_after:%Y-%m-%d}")


def _check_url(url: str, ca: bytes, install: Install) -> Iterator[Result]:
    from cryptography import x509

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    with tempfile.NamedTemporaryFile(suffix=".pem") as cafile:
        cafile.write(ca)
        cafile.flush()
        ctx = ssl.create_default_context(cafile=cafile.name) if ca else ssl.create_default_context()
        try:
            with (
                socket.create_connection((host, port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname=host) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
                request = f"GET /readyz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                tls.sendall(request.encode())
                answer = tls.recv(64).decode(errors="replace")
        except ssl.SSLCertVerificationError as exc:
            yield _fail(
                f"the webhook at {url} presents a certificate the caBundle does not accept for "
                f"{host}: {exc.verify_message}",
                "serve a certificate for that host signed by the CA in "
                "webhook.certificate.caBundle (sluice operator --out-of-cluster makes one and "
                "prints the helm upgrade)",
            )
            return
        except OSError as exc:
            yield _fail(
                f"the webhook at {url} is not reachable: {exc}",
                "start the operator there (sluice operator --out-of-cluster --webhook-url ...) "
                "or point webhook.url at where it runs",
            )
            return
    if " 200 " not in answer.split("\r\n", 1)[0] + " ":
        first = answer.splitlines()[0] if answer else ""
        yield _fail(f"the webhook at {url} is not ready: {first!r}", "see the operator's log")
        return
    install.webhook_ok = True
    yield _ok(f"the webhook at {url} answers and its certificate is valid for {host}")
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    yield _expiry(cert.not_valid_after_utc, "the webhook certificate")


def _check_service(api: Any, svc: dict[str, Any], ca: bytes, install: Install) -> Iterator[Result]:
    from cryptography import x509
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    ns, name = svc["namespace"], svc["name"]
    try:
        core.read_namespaced_service(name, ns, _request_timeout=10)
    except ApiException as exc:
        if exc.status == 404:
            yield _fail(f"the webhook's Service {ns}/{name} does not exist", "helm upgrade")
            return
        raise
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        ns, label_selector=f"kubernetes.io/service-name={name}", _request_timeout=10
    )
    ready = [
        e
        for s in slices.items or []
        for e in s.endpoints or []
        if e.conditions is None or e.conditions.ready is not False
    ]
    if ready:
        install.webhook_ok = True
        yield _ok(f"the webhook's Service {ns}/{name} has {len(ready)} ready endpoint(s)")
    else:
        yield _fail(
            f"the webhook's Service {ns}/{name} has no ready endpoints: nothing answers the "
            "apiserver",
            f"kubectl -n {ns} get pods,deploy; kubectl -n {ns} logs "
            "deploy/<release>-sluice-operator",
        )
    secret_name = f"{name.removesuffix('-webhook')}-webhook-cert"
    try:
        secret = core.read_namespaced_secret(secret_name, ns, _request_timeout=10)
    except ApiException as exc:
        yield Result(
            None, f"could not read the webhook certificate Secret {ns}/{secret_name} ({exc.status})"
        )
        return
    leaf = x509.load_pem_x509_certificate(base64.b64decode((secret.data or {})["tls.crt"]))
    dns = f"{name}.{ns}.svc"
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if dns not in sans.get_values_for_type(x509.DNSName):
        yield _fail(f"the webhook certificate is not valid for {dns}", f"reissue it for {dns}")
    else:
        try:
            leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
            yield _ok(f"the webhook certificate is valid for {dns} and issued by the caBundle")
        except Exception:
            yield _fail(
                "the webhook certificate is not issued by the configuration's caBundle",
                "helm upgrade the chart (it keeps the two in step) or fix "
                "webhook.certificate.caBundle",
            )
    yield _expiry(leaf.not_valid_after_utc, "the webhook certificate")


def check_operator(api: Any, install: Install) -> Iterator[Result]:
    from kubernetes import client

    ns = install.namespace
    if ns:
        deployments = client.AppsV1Api(api).list_namespaced_deployment(
            ns, label_selector="app.kubernetes.io/component=operator", _request_timeout=10
        )
        found: list[Any] = deployments.items or []
        for d in found:
            install.deployment = d
            if (d.status.available_replicas or 0) > 0:
                yield _ok(f"operator Deployment {ns}/{d.metadata.name} is available")
                return
    now = dt.datetime.now(dt.UTC)
    leases: list[Any]
    try:
        leases = (
            client.CoordinationV1Api(api)
            .list_lease_for_all_namespaces(
                field_selector=f"metadata.name={LEADER_LEASE}", _request_timeout=10
            )
            .items
            or []
        )
    except Exception:
        leases = []
    for lease in leases:
        spec = lease.spec
        renewed = spec.renew_time if spec is not None else None
        if spec is None or not spec.holder_identity or renewed is None:
            continue
        if renewed.tzinfo is None:
            renewed = renewed.replace(tzinfo=dt.UTC)
        if now - renewed < LEASE_FRESH:
            meta = lease.metadata
            where = f"{meta.namespace}/{meta.name}" if meta is not None else LEADER_LEASE
            yield _ok(f"an operator is running (leader {spec.holder_identity}, Lease {where})")
            return
    if install.webhook_ok and (install.webhook or {}).get("url"):
        yield _ok("an operator answers at the webhook URL (out of cluster)")
        return
    where = f" in {ns}" if ns else ""
    yield _fail(
        f"no running operator found{where} (no available Deployment, no recently renewed "
        f"leader Lease {LEADER_LEASE!r})",
        f"kubectl -n {ns or '<namespace>'} describe deploy; or run `sluice operator` "
        "(docs/operations.md)",
    )


def check_rbac(api: Any, install: Install, service_account: str | None) -> Iterator[Result]:
    from kubernetes import client

    ns = install.namespace
    sa = service_account
    if sa is None and install.deployment is not None:
        sa = install.deployment.spec.template.spec.service_account_name
    if not ns or not sa:
        yield Result(
            None,
            "RBAC not checked: the operator's ServiceAccount is unknown",
            "pass --service-account NS/NAME",
        )
        return
    if "/" in sa:
        ns, sa = sa.split("/", 1)
    user = f"system:serviceaccount:{ns}:{sa}"
    auth = client.AuthorizationV1Api(api)

    def allowed(verb: str, group: str, resource: str, sub: str, name: str) -> bool:
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                groups=[
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{ns}",
                    "system:authenticated",
                ],
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb,
                    group=group,
                    resource=resource,
                    subresource=sub or None,
                    name=name or None,
                ),
            )
        )
        answer: Any = auth.create_subject_access_review(review, _request_timeout=10)
        return bool(answer.status.allowed)

    def show(verb: str, group: str, resource: str, sub: str, name: str) -> str:
        what = f"{resource}{'/' + sub if sub else ''}{'.' + group if group else ''}"
        return f"{verb} {what}" + (f" ({name})" if name else "")

    missing = [show(*n) for n in NEEDS if not allowed(*n)]
    if missing:
        yield _fail(
            f"ServiceAccount {ns}/{sa} lacks: {', '.join(missing)}",
            "helm upgrade the chart with rbac.create=true (or grant these to the ServiceAccount)",
        )
    else:
        yield _ok(f"ServiceAccount {ns}/{sa} has every permission the operator uses")
    extra = [show(*n) for n in MUST_NOT if allowed(*n)]
    if extra:
        yield Result(
            None,
            f"ServiceAccount {ns}/{sa} can {', '.join(extra)}: the operator needs no Secrets",
            "remove that grant",
        )


def check_canary(api: Any, namespace: str) -> Iterator[Result]:
    from kubernetes import client

    pod: Any = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "sluice-doctor-", "labels": {ann.INJECT.key: "true"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }
    try:
        got: Any = client.CoreV1Api(api).create_namespaced_pod(
            namespace, pod, dry_run="All", _request_timeout=15
        )
    except Exception as exc:
        yield _fail(f"a canary pod in {namespace} was refused: {exc}", "see the message")
        return
    notes = got.metadata.annotations or {}
    if ann.STATUS.key in notes:
        yield _ok(f"a canary pod in {namespace} is injected (server dry run, nothing stored)")
    else:
        why = notes.get(ann.INJECT_REASON.key) or "the webhook did not answer (policy Ignore)"
        yield _fail(
            f"a canary pod in {namespace} was not injected: {why}", "fix the failures above first"
        )


def run_checks(
    api: Any,
    *,
    operator_namespace: str | None,
    service_account: str | None,
    canary: str | None,
) -> Iterator[Result]:
    install = Install()
    steps: list[Callable[[], Iterator[Result]]] = [
        lambda: check_crds(api),
        lambda: check_webhook(api, install, operator_namespace),
        lambda: check_operator(api, install),
        lambda: check_rbac(api, install, service_account),
    ]
    if canary:
        steps.append(lambda: check_canary(api, canary))
    for step in steps:
        try:
            yield from step()
        except Exception as exc:
            yield _fail(f"check failed to run: {type(exc).__name__}: {exc}", "see the message")


def main(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    operator_namespace: str | None = None,
    service_account: str | None = None,
    canary: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    try:
        api, _ = load_api(kubeconfig, context)
        from kubernetes import client

        version = client.VersionApi(api).get_code(_request_timeout=10)
    except ClusterError as exc:
        print(f"✗ {exc}", file=out)
        return 1
    except Exception as exc:
        print(f"✗ cannot reach the cluster: {exc}\n    fix: check KUBECONFIG / --context", file=out)
        return 1
    host = api.configuration.host
    print(f"✓ cluster {host} answers (Kubernetes {version.git_version})", file=out)
    failures = 0
    for r in run_checks(
        api, operator_namespace=operator_namespace, service_account=service_account, canary=canary
    ):
        mark = {True: "✓", False: "✗", None: "!"}[r.ok]
        print(f"{mark} {r.what}", file=out)
        if r.fix and r.ok is not True:
            print(f"    fix: {r.fix}", file=out)
        failures += r.ok is False
    print(f"\n{failures} problem(s) to fix" if failures else "\nall checks passed", file=out)
    return 1 if failures else 0
