"""The injector webhook as the kube-apiserver calls it: real admission, real selectors.

One operator per module, in its own namespace (``--namespace``), serving the webhook on
``https://127.0.0.1:<port>/mutate-pods`` with a certificate signed by the cluster CA, and a
``MutatingWebhookConfiguration`` built by ``inject.config.mutating_webhook_configuration`` with that
URL and the CA as ``caBundle``. Every pod below is created through the apiserver, so the
selectors, the JSON patch, dry-run handling, Pod Security admission after the mutation and the
``failurePolicy`` are the apiserver's own. Nothing waits a fixed time: everything polls.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sluice_cli.devcluster import Cluster, KubectlError
from sluice_operator.inject.config import (
    NAMESPACE_WEBHOOK,
    FailurePolicy,
    mutating_webhook_configuration,
)

from .operator_proc import OperatorProcess, free_port, start_operator
from .polling import eventually

pytestmark = pytest.mark.cluster

INJECT = "sluice.dev/inject"
STATUS = "sluice.dev/status"
REASON = "sluice.dev/inject-reason"
SIDECAR = "sluice-sidecar"
SIDECAR_IMAGE = "registry.test/sluice-sidecar:e2e"
CONTROL_PLANE_URL = "http://sluice-control-plane.sluice-test.svc:9090"
OPENAI_URL = "http://127.0.0.1:4000/v1"
ANTHROPIC_URL = "http://127.0.0.1:4000"

# Pod Security "restricted" for the app's own parts, so a namespace enforcing restricted admits
# the pod exactly when the injected sidecar is admissible too.
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def pod_manifest(
    name: str,
    namespace: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "securityContext": POD_SECURITY,
            "containers": containers
            or [{"name": "app", "image": "app:1", "securityContext": CONTAINER_SECURITY}],
            **spec,
        },
    }


def sidecars(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return [
        c
        for c in [*spec.get("initContainers", []), *spec.get("containers", [])]
        if c["name"] == SIDECAR
    ]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def sluice_annotations(pod: dict[str, Any]) -> dict[str, str]:
    annotations = pod["metadata"].get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith("sluice.dev/")}


def pod_events(cluster: Cluster, namespace: str, pod: str, reason: str) -> list[dict[str, Any]]:
    """The Events with ``reason`` about ``pod``."""
    items = cluster.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={pod}"
    )["items"]
    return [e for e in items if e["reason"] == reason]


def label_namespace(cluster: Cluster, namespace: str, value: str = "true") -> None:
    cluster.kubectl("label", "namespace", namespace, f"{INJECT}={value}", "--overwrite")


@dataclass
class Injector:
    """The module's operator + webhook registration; tests may stop and restart it."""

    cluster: Cluster
    workdir: Path
    namespace: str  # the operator's own namespace
    cert_dir: Path
    port: int
    config_name: str
    probe_namespace: str  # labelled sluice.dev/inject=true, used to see the webhook work
    op: OperatorProcess | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate-pods"

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs)

    def start(self) -> None:
        if self.op is not None:
            return
        self.op = start_operator(
            self.cluster.kubeconfig,
            self.workdir,
            f"--namespace={self.namespace}",
            "--webhook-host=127.0.0.1",
            f"--webhook-port={self.port}",
            f"--webhook-cert-dir={self.cert_dir}",
            env={
                "SLUICE_SIDECAR_IMAGE": SIDECAR_IMAGE,
                "SLUICE_CONTROL_PLANE_URL": CONTROL_PLANE_URL,
            },
        )
        self.logs.append(self.op.log)
        context = ssl.create_default_context(cafile=str(self.cluster.ca_cert))

        def ready() -> bool:
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{self.port}/readyz", timeout=2, context=context
                ) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        eventually(ready, what="the webhook's /readyz")

    def stop(self) -> None:
        if self.op is not None:
            self.op.stop()
            self.op = None

    def register(self, failure_policy: FailurePolicy) -> None:
        ca_bundle = base64.b64encode(self.cluster.ca_cert.read_bytes()).decode()
        config = mutating_webhook_configuration(
            operator_namespace=self.namespace,
            name=self.config_name,
            url=self.url,
            ca_bundle=ca_bundle,
            failure_policy=failure_policy,
        )
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(config))

    def dry_run(self, pod: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
            input=json.dumps(pod),
            check=False,
        )

    def wait_injecting(self) -> None:
        """Until the apiserver calls this webhook and it injects (a dry run: nothing stored)."""
        probe = pod_manifest("probe", self.probe_namespace)
        last: list[str] = []

        def injected() -> bool:
            out = self.dry_run(probe)
            last[:] = [out.stderr or out.stdout[-2000:]]
            return out.returncode == 0 and bool(sidecars(json.loads(out.stdout)))

        try:
            eventually(injected, what="the apiserver to call the webhook")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast kubectl output: {last}") from None


@pytest.fixture(scope="module")
def injector(
    cluster: Cluster, sluice_crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Injector]:
    workdir = tmp_path_factory.mktemp("injector")
    operator_ns = cluster.create_namespace("sluice-injector")
    crt, key = cluster.issue_serving_cert(f"injector-{operator_ns}", ("127.0.0.1",))
    cert_dir = workdir / "certs"
    cert_dir.mkdir()
    shutil.copy(crt, cert_dir / "tls.crt")
    shutil.copy(key, cert_dir / "tls.key")
    probe_ns = cluster.create_namespace("injector-probe")
    label_namespace(cluster, probe_ns)
    inj = Injector(
        cluster=cluster,
        workdir=workdir,
        namespace=operator_ns,
        cert_dir=cert_dir,
        port=free_port(),
        config_name=f"sluice-injector-{operator_ns}",
        probe_namespace=probe_ns,
    )
    try:
        inj.start()
        inj.register("Ignore")
        inj.wait_injecting()
        yield inj
    finally:
        cluster.kubectl(
            "delete", "mutatingwebhookconfiguration", inj.config_name, "--ignore-not-found"
        )
        inj.stop()
        for ns in (operator_ns, probe_ns):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def create(cluster: Cluster, pod: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Create ``pod`` through the apiserver; the STORED pod (read back) and kubectl's stderr."""
    out = cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    meta = pod["metadata"]
    stored = cluster.kubectl_json("get", "pod", meta["name"], "-n", meta["namespace"])
    return stored, out.stderr


def apply_route_with_secrets(cluster: Cluster, namespace: str) -> None:
    """A ModelRoute whose backends read keys from two Secrets; Ready = compiled into the cache."""
    route = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {
            "strategy": "Failover",
            "backends": [
                {
                    "name": "openai",
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "credentials": {"secretRef": {"name": "openai", "key": "api-key"}},
                },
                {
                    "name": "anthropic",
                    "provider": "anthropic",
                    "model": "claude-haiku-4-5",
                    "priority": 1,
                    "credentials": {"secretRef": {"name": "anthropic", "key": "token"}},
                },
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(route))
    cluster.kubectl(
        "wait", "modelroute/chat", "-n", namespace, "--for=condition=Ready", "--timeout=30s"
    )


# ------------------------------------------------------------------------------------------------
# Injected pods


def test_labelled_pod_gets_the_native_sidecar_with_config_and_secret_volumes(
    cluster: Cluster, namespace: str, injector: Injector
) -> None:
    # The namespace enforces Pod Security "restricted" (checked by the apiserver AFTER mutation),
    # so creation itself proves the injected sidecar is admissible there.
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    apply_route_with_secrets(cluster, namespace)
    pod = pod_manifest(
        "web",
        namespace,
        labels={INJECT: "true", "app": "web"},
        initContainers=[
            {"name": "migrate", "image": "migrate:1", "securityContext": CONTAINER_SECURITY}
        ],
    )
    stored, _ = create(cluster, pod)
    spec = stored["spec"]

    # native sidecar: FIRST init container, restartPolicy Always; the pod's own init stays after
    assert [c["name"] for c in spec["initContainers"]] == [SIDECAR, "migrate"]
    assert [c["name"] for c in spec["containers"]] == ["app"]
    sidecar = spec["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == SIDECAR_IMAGE
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert "readinessProbe" not in sidecar
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert not sc.get("privileged")

    # volumes: the namespace's ConfigMap as a directory, and one per referenced Secret
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["sluice-config"]["configMap"] == {
        "name": "sluice-config",
        "optional": True,
        "defaultMode": 420,
    }
    for secret, key in (("openai", "api-key"), ("anthropic", "token")):
        vol = volumes[f"sluice-secret-{secret}"]["secret"]
        assert vol["secretName"] == secret
        assert vol["optional"] is True
        assert vol["items"] == [{"key": key, "path": key}]
    token = volumes["sluice-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "sluice"
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts["sluice-config"]["mountPath"] == "/etc/sluice/config"
    assert "subPath" not in mounts["sluice-config"]
    assert mounts["sluice-secret-openai"]["mountPath"] == "/etc/sluice/secrets/openai"
    assert mounts["sluice-secret-anthropic"]["readOnly"] is True
    # only the sidecar mounts the provider keys
    for c in [*spec["containers"], spec["initContainers"][1]]:
        assert not any(m["name"].startswith("sluice-") for m in c.get("volumeMounts", []))

    # environment: downward API + control plane on the sidecar, base URLs on the app only
    side_env = env_of(sidecar)
    assert side_env["POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert side_env["POD_NAMESPACE"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert side_env["POD_UID"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert side_env["POD_SERVICE_ACCOUNT"]["fieldRef"]["fieldPath"] == "spec.serviceAccountName"
    assert side_env["SLUICE_CONTROL_PLANE_URL"] == CONTROL_PLANE_URL
    app_env = env_of(spec["containers"][0])
    assert app_env == {"OPENAI_BASE_URL": OPENAI_URL, "ANTHROPIC_BASE_URL": ANTHROPIC_URL}
    assert "OPENAI_BASE_URL" not in env_of(spec["initContainers"][1])

    # the decision, written on the pod
    notes = sluice_annotations(stored)
    assert notes[REASON] == f"injected: pod has label {INJECT}=true"
    status = json.loads(notes[STATUS])
    assert status["sidecar"] == SIDECAR
    assert status["native"] is True
    assert status["image"] == SIDECAR_IMAGE
    assert status["configMap"] == "sluice-config"
    assert status["secrets"] == ["anthropic", "openai"]
    # and the label that finds the fleet (`sluice status`, kubectl -l)
    assert stored["metadata"]["labels"]["sluice.dev/injected"] == "true"


def test_namespace_label_injects_pods_without_a_pod_label_and_false_opts_out(
    cluster: Cluster, namespace: str, injector: Injector
) -> None:
    label_namespace(cluster, namespace)
    plain = pod_manifest("plain", namespace)
    reason = f'injected: namespace "{namespace}" has label {INJECT}=true'

    def sees_label() -> Any:
        # dry runs until the operator's Namespace watch has the new label (nothing is stored)
        out = injector.dry_run(plain)
        return out.returncode == 0 and sluice_annotations(json.loads(out.stdout)).get(REASON)

    assert eventually(sees_label, what="the namespace label in the cache") == reason

    stored, _ = create(cluster, plain)
    assert len(sidecars(stored)) == 1
    assert sluice_annotations(stored)[REASON] == reason

    # pod label "false" in the opted-in namespace: the selector keeps it from the webhook
    out_pod, _ = create(cluster, pod_manifest("opted-out", namespace, labels={INJECT: "false"}))
    assert sidecars(out_pod) == []
    assert "initContainers" not in out_pod["spec"]
    assert sluice_annotations(out_pod) == {}
    assert "env" not in out_pod["spec"]["containers"][0]
    assert f"{namespace}/opted-out" not in injector.log_text()


def test_host_network_pod_is_skipped_with_a_reason_and_a_warning(
    cluster: Cluster, namespace: str, injector: Injector
) -> None:
    pod = pod_manifest("hostnet", namespace, labels={INJECT: "true"}, hostNetwork=True)
    stored, stderr = create(cluster, pod)
    assert sidecars(stored) == []
    assert "initContainers" not in stored["spec"]
    notes = sluice_annotations(stored)
    assert STATUS not in notes
    assert notes[REASON].startswith("skipped: hostNetwork pod")
    assert "sluice: sidecar not injected: hostNetwork pod" in stderr  # kubectl shows the warning
    assert "env" not in stored["spec"]["containers"][0]
    assert "sluice.dev/injected" not in stored["metadata"].get("labels", {})

    # the operator's pod watch posts the decision as an Event (kubectl describe pod shows it)
    (found,) = eventually(
        lambda: pod_events(cluster, namespace, "hostnet", "SkippedHostNetwork"),
        what="a SkippedHostNetwork Event on the pod",
    )
    assert found["type"] == "Warning"
    assert found["message"].startswith("Sluice sidecar not injected: hostNetwork pod")


def test_kube_system_pod_with_the_label_never_reaches_the_webhook(
    cluster: Cluster, namespace: str, injector: Injector
) -> None:
    name = f"labelled-{namespace}"[:63]
    # a control in a plain namespace: the webhook logs every request it sees
    create(cluster, pod_manifest("control", namespace, labels={INJECT: "true"}))
    assert f"{namespace}/control" in injector.log_text()
    try:
        stored, _ = create(cluster, pod_manifest(name, "kube-system", labels={INJECT: "true"}))
        assert sidecars(stored) == []
        assert "initContainers" not in stored["spec"]
        assert sluice_annotations(stored) == {}
        assert f"kube-system/{name}" not in injector.log_text()
    finally:
        cluster.kubectl("delete", "pod", name, "-n", "kube-system", "--ignore-not-found")


def test_operator_namespace_is_never_injected_even_when_labelled(
    cluster: Cluster, injector: Injector
) -> None:
    label_namespace(cluster, injector.namespace)
    try:
        stored, _ = create(
            cluster, pod_manifest("own", injector.namespace, labels={INJECT: "true"})
        )
        assert sidecars(stored) == []
        assert sluice_annotations(stored) == {}
        assert f"{injector.namespace}/own" not in injector.log_text()
    finally:
        cluster.kubectl("label", "namespace", injector.namespace, f"{INJECT}-")


def test_server_dry_run_returns_the_mutated_pod_and_stores_nothing(
    cluster: Cluster, namespace: str, injector: Injector
) -> None:
    apply_route_with_secrets(cluster, namespace)
    events_before = cluster.kubectl_json("get", "events", "-n", namespace)["items"]
    out = injector.dry_run(pod_manifest("ghost", namespace, labels={INJECT: "true"}))
    assert out.returncode == 0, out.stderr
    answered = json.loads(out.stdout)
    assert len(sidecars(answered)) == 1
    assert {"sluice-config", "sluice-secret-openai"} <= {
        v["name"] for v in answered["spec"]["volumes"]
    }
    assert sluice_annotations(answered)[REASON].startswith("injected:")

    # nothing stored, nothing posted; the webhook saw it and knew it was a dry run
    missing = cluster.kubectl("get", "pod", "ghost", "-n", namespace, check=False)
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr
    assert cluster.kubectl_json("get", "events", "-n", namespace)["items"] == events_before
    assert f"{namespace}/ghost (dry run)" in injector.log_text()


def test_app_that_sets_its_own_base_url_keeps_it(
    cluster: Cluster, namespace: str, injector: Injector
) -> None:
    mine = "http://my-proxy.internal:8080/v1"
    pod = pod_manifest(
        "custom",
        namespace,
        labels={INJECT: "true"},
        containers=[
            {
                "name": "app",
                "image": "app:1",
                "securityContext": CONTAINER_SECURITY,
                "env": [{"name": "OPENAI_BASE_URL", "value": mine}, {"name": "X", "value": "1"}],
            },
            {"name": "worker", "image": "worker:1", "securityContext": CONTAINER_SECURITY},
        ],
    )
    stored, _ = create(cluster, pod)
    app, worker = stored["spec"]["containers"]
    assert [e["name"] for e in app["env"]] == ["OPENAI_BASE_URL", "X", "ANTHROPIC_BASE_URL"]
    assert env_of(app)["OPENAI_BASE_URL"] == mine
    assert env_of(app)["ANTHROPIC_BASE_URL"] == ANTHROPIC_URL
    assert env_of(worker) == {"OPENAI_BASE_URL": OPENAI_URL, "ANTHROPIC_BASE_URL": ANTHROPIC_URL}


def _copy_of(stored: dict[str, Any], name: str, *, keep_annotations: bool) -> dict[str, Any]:
    """A new pod from a stored pod's spec (as `kubectl get -o yaml`, edit, create would do)."""
    meta = stored["metadata"]
    new_meta: dict[str, Any] = {
        "name": name,
        "namespace": meta["namespace"],
        "labels": meta.get("labels", {}),
    }
    if keep_annotations:
        new_meta["annotations"] = meta.get("annotations", {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": new_meta, "spec": stored["spec"]}


@pytest.mark.parametrize("keep_annotations", [True, False], ids=["with-status", "spec-only"])
def test_pod_copied_from_an_injected_pod_gets_no_duplicates(
    cluster: Cluster, namespace: str, injector: Injector, keep_annotations: bool
) -> None:
    apply_route_with_secrets(cluster, namespace)
    original, _ = create(cluster, pod_manifest("original", namespace, labels={INJECT: "true"}))
    assert len(sidecars(original)) == 1

    copied, stderr = create(
        cluster, _copy_of(copy.deepcopy(original), "copy", keep_annotations=keep_annotations)
    )
    spec = copied["spec"]
    assert len(sidecars(copied)) == 1
    assert [c["name"] for c in spec["initContainers"]] == [SIDECAR]
    names = [v["name"] for v in spec["volumes"]]
    assert len(names) == len(set(names)), names
    assert sorted(names) == sorted(v["name"] for v in original["spec"]["volumes"])
    for c in spec["containers"]:
        env_names = [e["name"] for e in c.get("env", [])]
        assert len(env_names) == len(set(env_names)), env_names
    assert spec == original["spec"]
    notes = sluice_annotations(copied)
    log = injector.log_text()
    if keep_annotations:
        # sluice.dev/status came along: already injected, the patch is empty
        assert notes == sluice_annotations(original)
        assert f"{namespace}/copy: injected: " in log
        assert "already injected" in log.split(f"{namespace}/copy: ", 1)[1].splitlines()[0]
        assert "(0 ops)" in log.split(f"{namespace}/copy: ", 1)[1].splitlines()[0]
    else:
        # a container called sluice-sidecar without the status annotation: skipped, not doubled
        assert STATUS not in notes
        assert notes[REASON].startswith("skipped: the pod already has a container named")
        assert "sluice: sidecar not injected" in stderr


# ------------------------------------------------------------------------------------------------
# The webhook down: failurePolicy decides (these tests stop the operator and restore it)


@pytest.fixture
def webhook_down(injector: Injector) -> Iterator[Injector]:
    injector.stop()
    try:
        yield injector
    finally:
        injector.register("Ignore")
        injector.start()
        injector.wait_injecting()


def test_webhook_down_with_ignore_creates_pods_without_the_sidecar(
    cluster: Cluster, namespace: str, webhook_down: Injector
) -> None:
    label_namespace(cluster, namespace)
    stored, _ = create(cluster, pod_manifest("unguarded", namespace, labels={INJECT: "true"}))
    assert sidecars(stored) == []
    assert "initContainers" not in stored["spec"]
    assert STATUS not in sluice_annotations(stored)  # easy to find and restart later
    assert "env" not in stored["spec"]["containers"][0]

    # Once the operator is back it reports the pod that slipped through, with what to do.
    webhook_down.start()

    (event,) = eventually(
        lambda: pod_events(cluster, namespace, "unguarded", "NotInjected"),
        what="a NotInjected Event",
    )
    assert event["type"] == "Warning"
    assert "rollout restart" in event["message"]


def test_webhook_down_with_fail_blocks_opted_in_pods_only(
    cluster: Cluster, namespace: str, webhook_down: Injector
) -> None:
    label_namespace(cluster, namespace)
    webhook_down.register("Fail")
    blocked = pod_manifest("blocked", namespace)

    def refused() -> Any:
        out = webhook_down.dry_run(blocked)
        return out.returncode != 0 and out.stderr

    message = eventually(refused, what="the apiserver to apply failurePolicy Fail")
    assert f'failed calling webhook "{NAMESPACE_WEBHOOK}"' in message
    assert webhook_down.url in message

    with pytest.raises(KubectlError) as refusal:
        create(cluster, blocked)
    assert "failed calling webhook" in str(refusal.value)
    missing = cluster.kubectl("get", "pod", "blocked", "-n", namespace, check=False)
    assert missing.returncode != 0

    # kube-system, the operator's namespace and namespaces that did not opt in are unaffected
    system_pod = f"unaffected-{namespace}"[:63]
    try:
        stored, _ = create(
            cluster, pod_manifest(system_pod, "kube-system", labels={INJECT: "true"})
        )
        assert sidecars(stored) == []
    finally:
        cluster.kubectl("delete", "pod", system_pod, "-n", "kube-system", "--ignore-not-found")
    label_namespace(cluster, webhook_down.namespace)
    try:
        own, _ = create(
            cluster, pod_manifest("own-while-down", webhook_down.namespace, labels={INJECT: "true"})
        )
        assert sidecars(own) == []
    finally:
        cluster.kubectl("label", "namespace", webhook_down.namespace, f"{INJECT}-")
    other_ns = cluster.create_namespace("not-opted-in")
    try:
        plain, _ = create(cluster, pod_manifest("plain", other_ns))
        assert sidecars(plain) == []
    finally:
        cluster.kubectl("delete", "namespace", other_ns, "--wait=false", check=False)
