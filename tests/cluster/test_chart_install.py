"""The Helm chart against the real apiserver, and the operator running with the chart's RBAC.

``helm install`` of ``charts/sluice`` into its own namespace, ``helm template`` output applied with
kubectl, then the operator started with a token of the chart's ServiceAccount (leader election on
the chart's Lease, not ``--standalone``, webhook on). Everything it does in the quickstart -
watches, start-up lists, the ConfigMap, status patches, Events, the leader-election Lease,
TokenReviews for sidecars, the injector cache - must work with exactly the chart's permissions,
and the ServiceAccount must not be able to read Secrets.

CRDs: the session fixture ``sluice_crds`` has already applied ``crds/`` (the four Sluice CRDs,
server-side). ``helm install`` runs WITHOUT ``--skip-crds``: Helm skips the CRDs that already
exist, as it does on any cluster where Sluice's CRDs were installed first (the upgrade path in
docs/install.md).

No kubelet runs here, so the chart's Deployment never starts a pod; the operator runs as a local
process with the ServiceAccount's credentials instead.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice_cli.devcluster import Cluster
from sluice_operator import configmap

from .operator_proc import OperatorProcess, free_port, start_operator
from .polling import eventually

pytestmark = pytest.mark.cluster

RELEASE = "sluice"
SIDECAR_IMAGE = "registry.test/sluice-sidecar:chart"
QUICKSTART = [
    ("modelroute", "chat"),
    ("prompttemplate", "support-answer"),
    ("budget", "team-daily"),
    ("guardrailpolicy", "default-filters"),
]


@dataclass
class Helm:
    cluster: Cluster
    home: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            env[var] = str(self.home / var.lower())
        proc = subprocess.run(
            [str(self.cluster.tools.helm), f"--kubeconfig={self.cluster.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc


@dataclass
class Release:
    namespace: str
    manifest: list[dict[str, Any]]
    install_output: str

    def named(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.manifest if d["kind"] == kind]

    @property
    def service_account(self) -> str:
        (sa,) = self.named("ServiceAccount")
        return str(sa["metadata"]["name"])

    @property
    def leader_lease(self) -> str:
        """The Lease the chart's Deployment passes as ``--leader-lease``."""
        (deployment,) = self.named("Deployment")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return str(args[args.index("--leader-lease") + 1])

    @property
    def webhook_config(self) -> str:
        (mwc,) = self.named("MutatingWebhookConfiguration")
        return str(mwc["metadata"]["name"])


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def helm(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(cluster, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def release(
    cluster: Cluster, sluice_crds: list[str], helm: Helm, repo_root: Path
) -> Iterator[Release]:
    namespace = cluster.create_namespace("sluice-system")
    out = helm(
        "install",
        RELEASE,
        str(repo_root / "charts" / "sluice"),
        "--namespace",
        namespace,
        "--set",
        f"sidecar.image.repository={SIDECAR_IMAGE.rsplit(':', 1)[0]}",
        "--set",
        f"sidecar.image.tag={SIDECAR_IMAGE.rsplit(':', 1)[1]}",
    )
    manifest = documents(helm("get", "manifest", RELEASE, "--namespace", namespace).stdout)
    try:
        yield Release(namespace, manifest, out.stdout)
    finally:
        # cluster-scoped objects (ClusterRole, webhook configuration, peering) must not outlive
        # the module; the namespace never finishes deleting here
        helm("uninstall", RELEASE, "--namespace", namespace, check=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# ------------------------------------------------------------------------------------------------
# Installing


def test_helm_install_creates_every_object(
    cluster: Cluster, helm: Helm, release: Release, sluice_crds: list[str]
) -> None:
    assert "STATUS: deployed" in release.install_output
    status = json.loads(
        helm("status", RELEASE, "--namespace", release.namespace, "-o", "json").stdout
    )
    assert status["info"]["status"] == "deployed"

    kinds = {d["kind"] for d in release.manifest}
    assert {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "Secret",
        "MutatingWebhookConfiguration",
        "PodDisruptionBudget",
    } <= kinds
    # every rendered object is in the cluster
    found = cluster.kubectl(
        "get",
        "-f",
        "-",
        "-o",
        "name",
        input="---\n".join(yaml.safe_dump(d) for d in release.manifest),
    ).stdout.split()
    assert len(found) == len(release.manifest)

    # Helm left the existing CRDs alone (and brought no others: leadership is a Lease)
    assert "ClusterKopfPeering" not in kinds
    for crd in sluice_crds:
        got = cluster.kubectl_json("get", "crd", crd)
        assert any(
            c["type"] == "Established" and c["status"] == "True"
            for c in got["status"]["conditions"]
        ), crd

    # the webhook configuration the apiserver stored still excludes the release namespace
    mwc = cluster.kubectl_json("get", "mutatingwebhookconfiguration", release.webhook_config)
    for webhook in mwc["webhooks"]:
        excluded = next(
            e
            for e in webhook["namespaceSelector"]["matchExpressions"]
            if e["key"] == "kubernetes.io/metadata.name"
        )
        assert release.namespace in excluded["values"]
        assert "kube-system" in excluded["values"]
        assert webhook["failurePolicy"] == "Ignore"
        assert webhook["sideEffects"] == "None"


def test_helm_template_output_applies(cluster: Cluster, helm: Helm, repo_root: Path) -> None:
    namespace = cluster.create_namespace("sluice-template")
    rendered = helm(
        "template",
        "tpl",
        str(repo_root / "charts" / "sluice"),
        "--namespace",
        namespace,
        # cluster-scoped names (ClusterRoles, webhook configuration) carry the release name "tpl",
        # so they do not collide with the installed release's
    ).stdout
    docs = documents(rendered)
    assert docs, "helm template rendered nothing"
    try:
        applied = cluster.kubectl("apply", "-f", "-", input=rendered).stdout
        assert len(applied.strip().splitlines()) == len(docs), applied
        names = cluster.kubectl("get", "-f", "-", "-o", "name", input=rendered).stdout.split()
        assert len(names) == len(docs)
        deployment = cluster.kubectl_json(
            "get", "deployment", "tpl-sluice-operator", "-n", namespace
        )
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "tpl-sluice"
    finally:
        cluster.kubectl(
            "delete", "-f", "-", "--ignore-not-found", "--wait=false", input=rendered, check=False
        )
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# ------------------------------------------------------------------------------------------------
# The chart's ServiceAccount


def test_service_account_cannot_read_secrets(cluster: Cluster, release: Release) -> None:
    who = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    for verb in ("get", "list", "watch"):
        for scope in (["-A"], ["-n", release.namespace], ["-n", "default"]):
            out = cluster.kubectl(
                "auth", "can-i", verb, "secrets", *scope, f"--as={who}", check=False
            )
            assert (out.returncode, out.stdout.strip()) == (1, "no"), (verb, scope, out)
    # a control: the same check says yes for what the chart does grant
    granted = cluster.kubectl("auth", "can-i", "patch", "modelroutes/status", "-A", f"--as={who}")
    assert granted.stdout.strip() == "yes"

    # and with the ServiceAccount's own token, an actual read is refused
    kubeconfig = cluster.service_account_kubeconfig(
        release.namespace, release.service_account, create=False
    )
    assert (
        cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout.count(who)
        == 1
    )
    for scope in (["-n", release.namespace], ["-A"]):
        out = cluster.kubectl("get", "secrets", *scope, kubeconfig=kubeconfig, check=False)
        assert out.returncode != 0
        assert "Forbidden" in out.stderr
        assert 'cannot list resource "secrets"' in out.stderr
    secret = next(d for d in release.manifest if d["kind"] == "Secret")["metadata"]["name"]
    out = cluster.kubectl(
        "get", "secret", secret, "-n", release.namespace, kubeconfig=kubeconfig, check=False
    )
    assert out.returncode != 0
    assert "Forbidden" in out.stderr


def test_service_account_writes_only_sluices_own_configmap(
    cluster: Cluster, release: Release, namespace: str
) -> None:
    who = f"system:serviceaccount:{release.namespace}:{release.service_account}"

    def can(*args: str) -> bool:
        out = cluster.kubectl("auth", "can-i", *args, f"--as={who}", check=False)
        return out.stdout.strip() == "yes"

    own = f"configmaps/{configmap.NAME}"
    for verb in ("get", "create", "update", "patch"):
        assert can(verb, own, "-n", namespace), verb
        assert can(verb, own, "-n", "kube-system"), verb  # the name, in any namespace
        assert not can(verb, "configmaps/kube-root-ca.crt", "-n", namespace), verb
        assert not can(verb, "configmaps/coredns", "-n", "kube-system"), verb
    for verb in ("list", "watch", "delete"):
        assert not can(verb, "configmaps", "-n", namespace), verb
    assert not can("create", "configmaps", "-n", namespace)  # a POST names nothing: refused

    # What the operator does, with the ServiceAccount's own token: server-side apply creates
    # sluice-config (the apiserver authorizes that create with the name) and nothing else.
    kubeconfig = cluster.service_account_kubeconfig(
        release.namespace, release.service_account, create=False
    )

    def apply(name: str) -> subprocess.CompletedProcess[str]:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {configmap.KEY: "{}"},
        }
        return cluster.kubectl(
            "apply",
            "--server-side",
            "--field-manager=sluice-operator",
            "-f",
            "-",
            input=json.dumps(body),
            kubeconfig=kubeconfig,
            check=False,
        )

    created = apply(configmap.NAME)
    assert created.returncode == 0, created.stderr
    refused = apply("not-sluices")
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr


def test_namespace_viewers_and_editors_get_the_four_kinds(
    cluster: Cluster, release: Release, namespace: str
) -> None:
    """The chart's -view and -edit ClusterRoles carry the aggregation labels of the built-in
    view and edit roles. There is no controller-manager here to aggregate them, so each is bound
    directly, as aggregation would make view's and edit's holders get them."""
    view = cluster.kubectl_json("get", "clusterrole", f"{RELEASE}-view")
    edit = cluster.kubectl_json("get", "clusterrole", f"{RELEASE}-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    # the built-in roles select exactly those labels (and view is part of edit)
    builtin_edit = cluster.kubectl_json("get", "clusterrole", "edit")
    builtin_view = cluster.kubectl_json("get", "clusterrole", "view")
    assert builtin_view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"]
    for role, label in ((builtin_view, "view"), (builtin_edit, "edit")):
        selectors = role["aggregationRule"]["clusterRoleSelectors"]
        assert {"matchLabels": {f"rbac.authorization.k8s.io/aggregate-to-{label}": "true"}} in (
            selectors
        )

    grants = {"viewer": ["view"], "editor": ["view", "edit"]}
    for user, roles in grants.items():
        cluster.kubectl("create", "serviceaccount", user, "-n", namespace)
        for role in roles:
            cluster.kubectl(
                "create",
                "rolebinding",
                f"{user}-{role}",
                "-n",
                namespace,
                f"--clusterrole={RELEASE}-{role}",
                f"--serviceaccount={namespace}:{user}",
            )

    def can(user: str, verb: str, resource: str, *extra: str) -> bool:
        who = f"--as=system:serviceaccount:{namespace}:{user}"
        out = cluster.kubectl(
            "auth", "can-i", verb, resource, *extra, "-n", namespace, who, check=False
        )
        return out.stdout.strip() == "yes"

    for kind in ("modelroutes", "prompttemplates", "budgets", "guardrailpolicies"):
        for verb in ("get", "list", "watch"):
            assert can("viewer", verb, f"{kind}.sluice.dev"), (kind, verb)
            assert can("editor", verb, f"{kind}.sluice.dev"), (kind, verb)
        for verb in ("create", "update", "patch", "delete", "deletecollection"):
            assert not can("viewer", verb, f"{kind}.sluice.dev"), (kind, verb)
            assert can("editor", verb, f"{kind}.sluice.dev"), (kind, verb)
        assert can("viewer", "get", f"{kind}.sluice.dev", "--subresource=status")
        assert not can("editor", "patch", f"{kind}.sluice.dev", "--subresource=status")
    assert not can("editor", "get", "secrets")


@dataclass
class SaOperator:
    op: OperatorProcess
    webhook_url: str
    kubeconfig: Path


@pytest.fixture(scope="module")
def sa_operator(
    cluster: Cluster, release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaOperator]:
    """The operator authenticated as the chart's ServiceAccount, with leader election and the
    webhook.

    The chart's own MutatingWebhookConfiguration is pointed at it (``url`` on loopback instead of
    the Service, which has no endpoints without a kubelet), so the apiserver calls this operator
    through the chart's selectors.
    """
    workdir = tmp_path_factory.mktemp("sa-operator")
    kubeconfig = cluster.service_account_kubeconfig(
        release.namespace, release.service_account, create=False
    )
    crt, key = cluster.issue_serving_cert(f"chart-webhook-{release.namespace}", ("127.0.0.1",))
    cert_dir = workdir / "certs"
    cert_dir.mkdir()
    shutil.copy(crt, cert_dir / "tls.crt")
    shutil.copy(key, cert_dir / "tls.key")
    port = free_port()
    op = start_operator(
        kubeconfig,
        workdir,
        "--leader-lease",
        release.leader_lease,
        f"--namespace={release.namespace}",
        "--webhook-host=127.0.0.1",
        f"--webhook-port={port}",
        f"--webhook-cert-dir={cert_dir}",
        standalone=False,
        env={"SLUICE_SIDECAR_IMAGE": SIDECAR_IMAGE},
    )
    try:
        context = ssl.create_default_context(cafile=str(cluster.ca_cert))

        def ready() -> bool:
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/readyz", timeout=2, context=context
                ) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        eventually(ready, what="the webhook's /readyz (cache synced as the ServiceAccount)")
        url = f"https://127.0.0.1:{port}/mutate-pods"
        ca_bundle = base64.b64encode(cluster.ca_cert.read_bytes()).decode()
        client = {"url": url, "caBundle": ca_bundle}
        patch = [
            {"op": "replace", "path": f"/webhooks/{i}/clientConfig", "value": client}
            for i in range(2)
        ]
        cluster.kubectl(
            "patch",
            "mutatingwebhookconfiguration",
            release.webhook_config,
            "--type=json",
            "-p",
            json.dumps(patch),
        )
        yield SaOperator(op, url, kubeconfig)
    finally:
        op.stop()


def condition(cluster: Cluster, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    obj = cluster.kubectl_json("get", kind, name, "-n", ns)
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == "Ready":
            return dict(c)
    return None


def test_quickstart_reconciles_with_the_charts_rbac(
    cluster: Cluster, namespace: str, release: Release, sa_operator: SaOperator, repo_root: Path
) -> None:
    quickstart = repo_root / "examples" / "01-quickstart"
    # the prompt first: it goes Ready=False (RouteNotFound) and recovers once the route is
    # there, so the operator has Events to post (an object Ready on first sight gets none)
    cluster.kubectl("apply", "-n", namespace, "-f", str(quickstart / "prompttemplate.yaml"))
    not_ready = eventually(
        lambda: condition(cluster, namespace, "prompttemplate", "support-answer"),
        what="a Ready condition written by the operator",
    )
    assert (not_ready["status"], not_ready["reason"]) == ("False", "RouteNotFound")
    cluster.kubectl("apply", "-n", namespace, "-f", str(quickstart))

    for kind, name in QUICKSTART:
        cluster.kubectl(
            "wait", f"{kind}/{name}", "-n", namespace, "--for=condition=Ready", "--timeout=30s"
        )
        obj = cluster.kubectl_json("get", kind, name, "-n", namespace)
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]

    cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
    config = json.loads(cm["data"]["config.json"])
    assert config["namespace"] == namespace
    assert [r["name"] for r in config["routes"]] == ["chat"]
    assert [p["name"] for p in config["prompts"]] == ["support-answer"]
    assert config["budgets"] and config["guardrails"]
    config_hash = cm["metadata"]["annotations"]["sluice.dev/config-hash"]
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sluice-operator"

    def events() -> list[tuple[str, str]]:
        items = cluster.kubectl_json(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "involvedObject.name=support-answer",
        )["items"]
        return sorted((e["type"], e["reason"]) for e in items)

    seen = eventually(lambda: len(events()) >= 2 and events(), what="two Events")
    assert ("Warning", "RouteNotFound") in seen
    assert any(kind == "Normal" for kind, _ in seen), seen

    # TokenReview: a sidecar's projected token (audience sluice) reads this namespace's config
    cluster.kubectl("create", "serviceaccount", "app", "-n", namespace)
    token = cluster.kubectl(
        "create", "token", "app", "-n", namespace, "--audience=sluice"
    ).stdout.strip()
    request = urllib.request.Request(
        f"{sa_operator.op.url}/v1/config/{namespace}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        body = json.loads(r.read())
    assert body["hash"] == config_hash
    other = urllib.request.Request(
        f"{sa_operator.op.url}/v1/config/{release.namespace}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(other, timeout=10).close()
    assert refused.value.code == 403
    refused.value.close()

    assert_no_rbac_errors(sa_operator.op.log_text())


def test_charts_webhook_configuration_injects_through_the_sa_operator(
    cluster: Cluster, namespace: str, release: Release, sa_operator: SaOperator, repo_root: Path
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(repo_root / "examples" / "01-quickstart"))
    cluster.kubectl(
        "wait", "modelroute/chat", "-n", namespace, "--for=condition=Ready", "--timeout=30s"
    )
    cluster.kubectl("label", "namespace", namespace, "sluice.dev/inject=true")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    want = f'injected: namespace "{namespace}" has label sluice.dev/inject=true'

    def reason() -> Any:
        # dry runs until the operator's Namespace watch (list/watch namespaces) has the label
        out = cluster.kubectl(
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
            input=json.dumps(pod),
            check=False,
        )
        if out.returncode:
            return None
        return (
            json.loads(out.stdout)["metadata"]
            .get("annotations", {})
            .get("sluice.dev/inject-reason")
        )

    assert eventually(reason, what="an injected dry run") == want
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    stored = cluster.kubectl_json("get", "pod", "web", "-n", namespace)
    init = stored["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["sluice-sidecar"]
    assert init[0]["image"] == SIDECAR_IMAGE
    assert stored["metadata"]["annotations"]["sluice.dev/inject-reason"] == want

    # the release namespace is excluded by the chart's selector even when labelled
    cluster.kubectl("label", "namespace", release.namespace, "sluice.dev/inject=true")
    try:
        own = {**pod, "metadata": {"name": "own", "namespace": release.namespace}}
        cluster.kubectl("create", "-f", "-", input=json.dumps(own))
        got = cluster.kubectl_json("get", "pod", "own", "-n", release.namespace)
        assert "initContainers" not in got["spec"]
    finally:
        cluster.kubectl("label", "namespace", release.namespace, "sluice.dev/inject-")
    assert_no_rbac_errors(sa_operator.op.log_text())


def test_operator_leads_through_the_charts_lease(
    cluster: Cluster, release: Release, sa_operator: SaOperator
) -> None:
    """The chart's Role lets its ServiceAccount create and renew the leader-election Lease."""

    def holder() -> str | None:
        got = cluster.kubectl(
            "get", "lease", release.leader_lease, "-n", release.namespace, "-o", "json", check=False
        )
        if got.returncode != 0:
            return None
        spec = json.loads(got.stdout).get("spec") or {}
        return spec.get("holderIdentity") or None

    first = eventually(holder, what="the operator holding the chart's leader Lease")
    lease = cluster.kubectl_json("get", "lease", release.leader_lease, "-n", release.namespace)
    renewed = lease["spec"]["renewTime"]
    eventually(
        lambda: (
            cluster.kubectl_json("get", "lease", release.leader_lease, "-n", release.namespace)[
                "spec"
            ]["renewTime"]
            != renewed
        ),
        what="a renewal of the Lease",
    )
    assert holder() == first  # one leader, renewing
    log = sa_operator.op.log_text()
    assert "leader election: " in log and " leads (Lease " in log
    assert_no_rbac_errors(log)


FORBIDDEN = re.compile(r"forbidden|(?<![\w,.:])403(?!\w)", re.IGNORECASE)


def assert_no_rbac_errors(log: str) -> None:
    """No log record says the API refused something. Records are split at their timestamps; the
    bare urllib3 status lines are skipped (the record explaining a refusal follows them), and
    so are refusals because another test's namespace is being deleted (not an RBAC matter: this
    session's operators share one apiserver)."""
    records = re.split(r"\n(?=\[\d{4}-\d\d-\d\d )", log)
    hits = [
        r
        for r in records
        if FORBIDDEN.search(r) and "urllib3.connectionpo" not in r and "being terminated" not in r
    ]
    assert not hits, "RBAC errors in the operator log:\n" + "\n".join(hits[:20])
