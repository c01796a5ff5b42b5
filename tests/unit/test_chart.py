"""The Helm chart: its CRDs are the repository's, and `helm template` with default and non-default
values renders least-privilege RBAC (no Secrets), Pod Security "restricted" workloads, the
webhook configuration exactly as ``sluice_operator.inject.config`` builds it, and settings and
flags the operator actually accepts.

helm is the pinned binary from hack/ensure-tools.sh (built on first use); a missing helm is a
failure, never a skip.
"""

from __future__ import annotations

import argparse
import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from sluice_cli import devcluster
from sluice_operator.inject import InjectorSettings
from sluice_operator.inject.config import ServiceRef, mutating_webhook_configuration
from sluice_operator.settings import add_flags
from tests.unit.test_inject_patch import pss_restricted_violations

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sluice"
CHART_ONLY_CRDS: set[str] = set()
KINDS = ("ModelRoute", "PromptTemplate", "Budget", "GuardrailPolicy")


# ------------------------------------------------------------------------------------------------
# CRDs


def test_chart_crds_are_byte_identical_copies() -> None:
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert source, "crds/ is empty"
    drift = sorted(n for n in source if copies.get(n) != source[n])
    extra = sorted(set(copies) - set(source) - CHART_ONLY_CRDS)
    assert not drift and not extra, (
        f"charts/sluice/crds/ differs from crds/ (changed: {drift}, extra: {extra}); run\n"
        "  cp crds/*.yaml charts/sluice/crds/"
        + (f" && rm {' '.join('charts/sluice/crds/' + e for e in extra)}" if extra else "")
    )


# ------------------------------------------------------------------------------------------------
# helm


@pytest.fixture(scope="module")
def helm() -> Path:
    return devcluster.ensure_tools(REPO).helm  # builds when missing; raises, never skips


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


class Rendered:
    def __init__(self, text: str) -> None:
        self.docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(text) if d]

    def kinds(self) -> list[str]:
        return sorted(d["kind"] for d in self.docs)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"{len(found)} {kind} objects"
        return found[0]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
        return found[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.docs)


def render(helm: Path, *args: str, namespace: str = "sluice-system") -> Rendered:
    return Rendered(run_helm(helm, "template", "sluice", str(CHART), "-n", namespace, *args).stdout)


NON_DEFAULT = {
    "webhook": {
        "failurePolicy": "Fail",
        "timeoutSeconds": 3,
        "failClosedOnError": True,
        "excludedNamespaces": ["legacy"],
        "namespaceSelector": {
            "matchExpressions": [{"key": "team", "operator": "In", "values": ["ml"]}]
        },
        "certificate": {"existingSecret": "my-webhook-tls", "caBundle": "Q0EgUEVN"},
    },
    "sidecar": {
        "native": False,
        "image": {"repository": "reg.example/sidecar", "tag": "9.9.9", "pullPolicy": "Always"},
        # null removes a default (here: no CPU limit)
        "resources": {
            "requests": {"cpu": "20m", "memory": "48Mi"},
            "limits": {"cpu": None, "memory": "1Gi"},
        },
    },
    "image": {"repository": "reg.example/operator", "tag": "9.9.9"},
    "operator": {"replicas": 1, "logLevel": "debug"},
    "podDisruptionBudget": {"enabled": False},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
    "prometheusRule": {"enabled": True},
    "leaderElection": {"enabled": False},
    "rbac": {"aggregateToDefaultRoles": False},
}


@pytest.fixture(scope="module")
def default(helm: Path) -> Rendered:
    return render(helm)


@pytest.fixture(scope="module")
def custom(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    values = tmp_path_factory.mktemp("values") / "values.yaml"
    values.write_text(yaml.safe_dump(NON_DEFAULT))
    return render(helm, "-f", str(values), namespace="platform")


def test_helm_lint(helm: Path) -> None:
    run_helm(helm, "lint", "--strict", str(CHART))
    run_helm(
        helm,
        "lint",
        "--strict",
        str(CHART),
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true",
    )


def test_default_objects(default: Rendered) -> None:
    assert default.kinds() == sorted(
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "MutatingWebhookConfiguration",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Secret",
            "Secret",
            "Service",
            "Service",
            "ServiceAccount",
        ]
    )
    assert default.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert default.one("Deployment")["spec"]["replicas"] == 2


# -- RBAC --


def _rules(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{r['kind']}/{r['metadata']['name']}", rule)
        for r in rendered
        if r["kind"] in ("Role", "ClusterRole")
        for rule in r["rules"]
    ]


SLUICE_RESOURCES = {"modelroutes", "prompttemplates", "budgets", "guardrailpolicies"}


@pytest.mark.parametrize("which", ["default", "custom"])
def test_rbac_has_no_secrets_no_wildcards_no_delete(
    which: str, request: pytest.FixtureRequest
) -> None:
    rendered: Rendered = request.getfixturevalue(which)
    rules = _rules(rendered)
    assert rules
    for where, rule in rules:
        resources = rule.get("resources", [])
        assert not any(r == "secrets" or r.startswith("secrets/") for r in resources), where
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"{where}: wildcard in {field}"
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), where
        if where.endswith("-operator"):  # the operator never deletes anything
            assert not {"delete", "deletecollection"} & set(rule["verbs"]), where
        else:  # namespace users (aggregated roles) may delete Sluice resources, nothing else
            assert rule["apiGroups"] == ["sluice.dev"], where
            assert {r.split("/")[0] for r in resources} <= SLUICE_RESOURCES, where
        assert "nonResourceURLs" not in rule


def test_configmap_writes_are_limited_to_sluices_own_configmap(default: Rendered) -> None:
    from sluice_operator import configmap

    rules = [
        r
        for r in default.named("ClusterRole", "sluice-operator")["rules"]
        if "configmaps" in r["resources"]
    ]
    # read by name, written by server-side apply: no list, no watch, and every verb by name
    assert {v for r in rules for v in r["verbs"]} == {"get", "update", "patch", "create"}
    for rule in rules:
        assert rule["resources"] == ["configmaps"]
        assert rule["resourceNames"] == [configmap.NAME]
    # create is a rule of its own (with the comment that says why a name restricts it here)
    assert ["create"] in [r["verbs"] for r in rules]


def test_namespace_users_get_the_four_kinds_through_view_and_edit(default: Rendered) -> None:
    view = default.named("ClusterRole", "sluice-view")
    edit = default.named("ClusterRole", "sluice-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-edit" not in view["metadata"]["labels"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    (read,) = view["rules"]
    assert read["verbs"] == ["get", "list", "watch"]
    assert {r.split("/")[0] for r in read["resources"]} == SLUICE_RESOURCES
    (write,) = edit["rules"]
    assert set(write["resources"]) == SLUICE_RESOURCES  # no status: the operator owns it
    assert set(write["verbs"]) == {"create", "update", "patch", "delete", "deletecollection"}


def test_rbac_grants_what_the_operator_needs(default: Rendered) -> None:
    cluster = default.named("ClusterRole", "sluice-operator")["rules"]

    def verbs(group: str, resource: str) -> set[str]:
        return {
            v
            for r in cluster
            if group in r["apiGroups"] and resource in r["resources"]
            for v in r["verbs"]
        }

    for kind in ("modelroutes", "prompttemplates", "budgets", "guardrailpolicies"):
        assert verbs("sluice.dev", kind) == {"get", "list", "watch", "patch"}
        assert {"get", "patch"} <= verbs("sluice.dev", f"{kind}/status")
    assert verbs("", "events") == {"create", "patch"}
    assert verbs("", "configmaps") == {"get", "create", "update", "patch"}
    assert verbs("", "pods") == {"list", "watch"}
    assert verbs("", "namespaces") == {"list", "watch"}
    assert verbs("authentication.k8s.io", "tokenreviews") == {"create"}
    assert verbs("kopf.dev", "clusterkopfpeerings") == set(), "leadership is a Lease now"
    assert verbs("coordination.k8s.io", "leases") == set(), "leases belong in the namespaced Role"
    role = default.one("Role")
    assert role["metadata"]["namespace"] == "sluice-system"
    assert role["rules"][0]["resources"] == ["leases"]
    binding = default.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "sluice-operator"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sluice", "namespace": "sluice-system"}
    ]


# -- the operator Deployment --


def _container(rendered: Rendered) -> dict[str, Any]:
    containers: list[dict[str, Any]] = rendered.one("Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


def _env(rendered: Rendered) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(rendered)["env"] if "value" in e}


@pytest.mark.parametrize("which", ["default", "custom"])
def test_operator_is_pod_security_restricted_and_reads_no_secret_via_env(
    which: str, request: pytest.FixtureRequest
) -> None:
    rendered: Rendered = request.getfixturevalue(which)
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod
    container = _container(rendered)
    assert pss_restricted_violations(container) == []
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not any("secretKeyRef" in str(e) for e in container["env"])
    assert "envFrom" not in container


def test_operator_flags_are_the_ones_sluice_operator_accepts(
    default: Rendered, custom: Rendered
) -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    for rendered, namespace in ((default, "sluice-system"), (custom, "platform")):
        container = _container(rendered)
        assert container["command"] == ["sluice"]
        assert container["args"][0] == "operator"
        args = parser.parse_args(container["args"][1:])
        assert args.namespace == namespace
        assert args.controlplane_port == 9090
        assert args.liveness == "http://0.0.0.0:8080/healthz"
    default_args = parser.parse_args(_container(default)["args"][1:])
    assert default_args.leader_lease == "sluice-operator" and not default_args.standalone
    assert default_args.leader_lease_seconds == 15.0
    custom_args = parser.parse_args(_container(custom)["args"][1:])
    assert custom_args.standalone and custom_args.verbose


def test_injector_settings_from_the_rendered_env(default: Rendered, custom: Rendered) -> None:
    settings = InjectorSettings.from_env(
        {**_env(default), "SLUICE_OPERATOR_NAMESPACE": "sluice-system"}
    )
    assert settings.sidecar_image == "ghcr.io/sluice-dev/sluice-sidecar:0.1.0"
    assert settings.native_sidecar is True
    assert settings.fail_closed is False
    assert settings.resources == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"},
    }
    assert settings.excluded_namespaces == {
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "sluice-system",
    }
    assert settings.control_plane_url == "https://sluice-control-plane.sluice-system.svc:9090"

    settings = InjectorSettings.from_env({**_env(custom), "SLUICE_OPERATOR_NAMESPACE": "platform"})
    assert settings.sidecar_image == "reg.example/sidecar:9.9.9"
    assert settings.image_pull_policy == "Always"
    assert settings.native_sidecar is False
    assert settings.fail_closed is True
    assert settings.resources == {
        "requests": {"cpu": "20m", "memory": "48Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert settings.excluded_namespaces == {"kube-system", "legacy", "platform"}
    assert _container(custom)["image"] == "reg.example/operator:9.9.9"


def test_ports_services_and_probes_line_up(default: Rendered) -> None:
    container = _container(default)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"webhook": 9443, "control-plane": 9090, "health": 8080}
    assert _env(default)["SLUICE_WEBHOOK_PORT"] == "9443"
    services = {s["metadata"]["name"]: s for s in default.all("Service")}
    webhook = services["sluice-webhook"]["spec"]["ports"][0]
    assert (webhook["port"], webhook["targetPort"]) == (443, "webhook")
    control = services["sluice-control-plane"]["spec"]["ports"][0]
    assert (control["port"], control["targetPort"]) == (9090, "control-plane")
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "webhook",
        "scheme": "HTTPS",
    }
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    selector = default.one("Deployment")["spec"]["selector"]["matchLabels"]
    for service in services.values():
        assert service["spec"]["selector"] == selector


# -- webhook configuration and certificate --


def _expected_mwc(rendered: Rendered, **kwargs: Any) -> dict[str, Any]:
    mwc = rendered.one("MutatingWebhookConfiguration")
    return mutating_webhook_configuration(
        ca_bundle=mwc["webhooks"][0]["clientConfig"].get("caBundle", ""),
        labels=mwc["metadata"]["labels"],
        annotations=mwc["metadata"].get("annotations"),
        **kwargs,
    )


def test_default_webhook_configuration_is_the_builders(default: Rendered) -> None:
    mwc = default.one("MutatingWebhookConfiguration")
    assert mwc == _expected_mwc(
        default,
        operator_namespace="sluice-system",
        service=ServiceRef("sluice-webhook", "sluice-system"),
    )
    assert {h["failurePolicy"] for h in mwc["webhooks"]} == {"Ignore"}


def test_custom_webhook_configuration_is_the_builders(custom: Rendered) -> None:
    mwc = custom.one("MutatingWebhookConfiguration")
    assert mwc == _expected_mwc(
        custom,
        operator_namespace="platform",
        service=ServiceRef("sluice-webhook", "platform"),
        failure_policy="Fail",
        timeout_seconds=3,
        excluded_namespaces=["legacy"],
        extra_namespace_expressions=[{"key": "team", "operator": "In", "values": ["ml"]}],
    )
    for hook in mwc["webhooks"]:
        assert hook["failurePolicy"] == "Fail"
        assert hook["clientConfig"]["caBundle"] == "Q0EgUEVN"


def test_generated_certificate_serves_the_webhook_service(default: Rendered) -> None:
    secret = default.named("Secret", "sluice-webhook-cert")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == "sluice-webhook-cert"
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "sluice-webhook.sluice-system.svc" in sans.get_values_for_type(x509.DNSName)
    mwc = default.one("MutatingWebhookConfiguration")
    assert {h["clientConfig"]["caBundle"] for h in mwc["webhooks"]} == {secret["data"]["ca.crt"]}
    # mounted as files, never read through the API
    volumes = default.one("Deployment")["spec"]["template"]["spec"]["volumes"]
    certs = next(v for v in volumes if v["name"] == "webhook-certs")
    assert certs["secret"]["secretName"] == "sluice-webhook-cert"


def test_existing_secret_replaces_the_generated_one(custom: Rendered) -> None:
    assert [s["metadata"]["name"] for s in custom.all("Secret")] == ["sluice-control-plane-cert"]
    volumes = custom.one("Deployment")["spec"]["template"]["spec"]["volumes"]
    certs = next(v for v in volumes if v["name"] == "webhook-certs")
    assert certs["secret"]["secretName"] == "my-webhook-tls"


# -- non-default toggles --


def test_toggles(custom: Rendered) -> None:
    assert custom.all("PodDisruptionBudget") == []
    assert custom.one("Deployment")["spec"]["replicas"] == 1
    assert [r["metadata"]["name"] for r in custom.all("ClusterRole")] == ["sluice-operator"]
    monitor = custom.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "https-control"
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {
        "name": "sluice-control-plane-cert",
        "key": "ca.crt",
    }
    pod_monitor = custom.one("PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "sluice-admin"
    rules = custom.one("PrometheusRule")["spec"]["groups"][0]["rules"]
    alerts = {r["alert"]: r for r in rules}
    assert set(alerts) == {
        "SluiceBudgetThresholdCrossed",
        "SluiceBudgetExhausted",
        "SluiceBudgetBurnRateHigh",
        "SluiceFallbackRateHigh",
        "SluiceCircuitBreakerOpen",
        "SluiceConfigNotApplied",
        "SluiceOperatorNoLeader",
    }
    assert alerts["SluiceOperatorNoLeader"]["expr"] == (
        '(sum(sluice_operator_leader{namespace="platform"}) or vector(0)) != 1'
    )
    assert "0.8" in alerts["SluiceBudgetThresholdCrossed"]["expr"]
    burn = alerts["SluiceBudgetBurnRateHigh"]["expr"]
    assert "sluice_budget_window_seconds" in burn and "4 * 3600" in burn
    assert "sluice_fallbacks_total" in alerts["SluiceFallbackRateHigh"]["expr"]
    assert "{{ $labels.route }}" in alerts["SluiceFallbackRateHigh"]["annotations"]["summary"]


def test_the_sidecar_admin_port_name_matches_the_pod_monitor() -> None:
    from sluice_operator.inject import patch

    assert patch.ADMIN_PORT_NAME == "sluice-admin"


# -- invalid values fail at render time with a message --


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "webhook.failurePolicy=Sometimes"], "failurePolicy must be Ignore or Fail"),
        (["--set", "webhook.timeoutSeconds=60"], "timeoutSeconds must be within 1-30"),
        (["--set", "webhook.timeoutSeconds=0"], "timeoutSeconds must be within 1-30"),
        (["--set", "webhook.certificate.existingSecret=x"], "caBundle"),
        (["--kube-version", "1.28.5"], "needs Kubernetes 1.29"),
        (
            ["--set", "leaderElection.enabled=false"],
            "leaderElection.enabled=false runs each operator replica as its own leader "
            "(--standalone), so 2 replicas would all write status and grant budget leases at "
            "once; set operator.replicas=1 or leaderElection.enabled=true",
        ),
        (
            ["--set", "leaderElection.enabled=false,operator.replicas=3"],
            "so 3 replicas would all write status",
        ),
    ],
)
def test_bad_values_fail_with_a_message(helm: Path, args: list[str], message: str) -> None:
    proc = run_helm(helm, "template", "sluice", str(CHART), *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_plain_sidecar_renders_on_kubernetes_1_28(helm: Path) -> None:
    rendered = Rendered(
        run_helm(
            helm,
            "template",
            "sluice",
            str(CHART),
            "--kube-version",
            "1.28.5",
            "--set",
            "sidecar.native=false",
        ).stdout
    )
    assert rendered.one("Deployment")


def test_cert_manager_annotation_allows_an_existing_secret_without_ca_bundle(helm: Path) -> None:
    rendered = render(
        helm,
        "--set",
        "webhook.certificate.existingSecret=tls",
        "--set-string",
        "webhook.annotations.cert-manager\\.io/inject-ca-from=sluice-system/tls",
    )
    mwc = rendered.one("MutatingWebhookConfiguration")
    assert all("caBundle" not in h["clientConfig"] for h in mwc["webhooks"])
    assert mwc["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "sluice-system/tls"}


def test_webhook_url_for_an_out_of_cluster_operator(helm: Path) -> None:
    url = "https://10.0.0.5:9443/mutate-pods"
    rendered = render(
        helm,
        "--set",
        f"webhook.url={url}",
        "--set",
        "webhook.certificate.caBundle=Q0EgUEVN",
        "--set",
        "operator.replicas=0",
    )
    mwc = rendered.one("MutatingWebhookConfiguration")
    assert mwc == _expected_mwc(rendered, operator_namespace="sluice-system", url=url)
    assert {h["clientConfig"]["caBundle"] for h in mwc["webhooks"]} == {"Q0EgUEVN"}
    assert rendered.one("Deployment")["spec"]["replicas"] == 0
    for args, message in (
        (["--set", f"webhook.url={url}"], "webhook.url needs webhook.certificate.caBundle"),
        (
            ["--set", "webhook.url=http://x:1", "--set", "webhook.certificate.caBundle=Q0E="],
            "webhook.url must start with https://",
        ),
    ):
        proc = run_helm(helm, "template", "sluice", str(CHART), *args, check=False)
        assert proc.returncode != 0
        assert message in proc.stderr


def test_generated_certificate_serves_the_control_plane_service(default: Rendered) -> None:
    """HTTPS for sidecars: a CA and a certificate for the control-plane Service, mounted with
    ca.crt (the operator gives it to injected sidecars); sidecars are told an https URL."""
    secret = default.named("Secret", "sluice-control-plane-cert")
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "sluice-control-plane.sluice-system.svc" in sans.get_values_for_type(x509.DNSName)
    pod = default.one("Deployment")["spec"]["template"]["spec"]
    certs = next(v for v in pod["volumes"] if v["name"] == "control-plane-certs")
    assert certs["secret"]["secretName"] == "sluice-control-plane-cert"
    assert {i["key"] for i in certs["secret"]["items"]} == {"tls.crt", "tls.key", "ca.crt"}
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["SLUICE_CONTROLPLANE_CERT_DIR"] == "/etc/sluice/control-plane-certs"
    assert env["SLUICE_CONTROL_PLANE_URL"].startswith("https://")
