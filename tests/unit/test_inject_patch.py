"""The injection patch, applied with ``jsonpatch`` to real pod dicts: the injected pod is what we
expect (golden files), a second application is a no-op, paths are escaped, and the sidecar passes
Pod Security "restricted".

Refresh the golden files with ``SLUICE_UPDATE_GOLDEN=1 pytest tests/unit/test_inject_patch.py``
and review the diff.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from sluice_operator.inject import InjectorSettings, NamespaceFacts, inject_pod
from sluice_operator.inject import annotations as ann
from sluice_operator.inject.cache import secret_mounts
from sluice_operator.inject.decide import Decision
from sluice_operator.inject.patch import build_patch, escape, secret_volume_name
from sluice_sidecar import contract as c

GOLDEN = Path(__file__).parent / "testdata" / "inject"
SETTINGS = InjectorSettings(
    sidecar_image="registry.example/sluice-sidecar:1.2.3",
    operator_namespace="sluice-system",
    control_plane_url="https://sluice-control-plane.sluice-system.svc:9090",
    control_plane_ca="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    version="1.2.3",
)
FACTS = NamespaceFacts("shop", {ann.INJECT.key: "true"})
SECRETS = {"openai-key": ("api-key",), "anthropic.prod": ("key", "backup-key")}


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((GOLDEN / name).read_text(encoding="utf-8"))
    return data


def inject(
    pod: dict[str, Any],
    *,
    settings: InjectorSettings = SETTINGS,
    secrets: dict[str, tuple[str, ...]] | None = None,
    namespace: str = "shop",
) -> tuple[Decision, list[dict[str, Any]], dict[str, Any]]:
    decision, ops = inject_pod(
        pod, namespace, FACTS, SECRETS if secrets is None else secrets, settings
    )
    before = copy.deepcopy(pod)
    result = jsonpatch.apply_patch(pod, ops)
    assert pod == before, "the patch must not change its input"
    return decision, ops, result


def minimal_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }


def busy_pod() -> dict[str, Any]:
    """A pod with annotations, init containers, volumes and env already present."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "worker-0",
            "labels": {"app": "worker"},
            "annotations": {"team": "search", "odd~key/with": "chars"},
        },
        "spec": {
            "serviceAccountName": "worker",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{"name": "migrate", "image": "migrate:1"}],
            "containers": [
                {
                    "name": "app",
                    "image": "app:1",
                    "env": [{"name": "OPENAI_BASE_URL", "value": "https://proxy.internal/v1"}],
                },
                {
                    "name": "worker",
                    "image": "worker:1",
                    "envFrom": [{"configMapRef": {"name": "c"}}],
                },
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }


def check_golden(name: str, pod: dict[str, Any]) -> None:
    path = GOLDEN / name
    text = yaml.safe_dump(pod, sort_keys=True, width=100)
    if os.environ.get("SLUICE_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing; run with SLUICE_UPDATE_GOLDEN=1"
    assert yaml.safe_load(text) == _load(name), (
        f"{name} differs; if intended, refresh with SLUICE_UPDATE_GOLDEN=1 and review the diff"
    )


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "settings"),
    [
        ("minimal.native.yaml", minimal_pod, SETTINGS),
        ("busy.native.yaml", busy_pod, SETTINGS),
        ("minimal.plain.yaml", minimal_pod, dataclasses.replace(SETTINGS, native_sidecar=False)),
    ],
)
def test_injected_pod_matches_golden(name: str, make: Any, settings: InjectorSettings) -> None:
    decision, _, result = inject(make(), settings=settings)
    assert decision.inject
    check_golden(name, result)


@pytest.mark.parametrize("make", [minimal_pod, busy_pod])
@pytest.mark.parametrize("native", [True, False])
def test_reapplying_to_an_injected_pod_is_a_no_op(make: Any, native: bool) -> None:
    settings = dataclasses.replace(SETTINGS, native_sidecar=native)
    _, ops, injected = inject(make(), settings=settings)
    assert ops
    decision, again, result = inject(injected, settings=settings)
    assert decision.code == "AlreadyInjected"
    assert again == []
    assert result == injected


def test_native_sidecar_goes_first_with_restart_policy_always_and_a_startup_probe() -> None:
    _, _, pod = inject(busy_pod())
    init = pod["spec"]["initContainers"]
    assert [x["name"] for x in init] == ["sluice-sidecar", "migrate"]
    sidecar = init[0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/healthz", "port": 4001}
    assert "readinessProbe" not in sidecar
    assert [x["name"] for x in pod["spec"]["containers"]] == ["app", "worker"]


def test_plain_container_by_annotation() -> None:
    pod = minimal_pod()
    pod["metadata"]["annotations"] = {ann.NATIVE_SIDECAR.key: "false"}
    _, _, result = inject(pod)
    assert "initContainers" not in result["spec"]
    names = [x["name"] for x in result["spec"]["containers"]]
    assert names == ["app", "sluice-sidecar"]
    assert "restartPolicy" not in result["spec"]["containers"][1]
    # the sidecar itself gets no base URLs
    assert "env" in result["spec"]["containers"][1]
    assert all(
        e["name"] not in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")
        for e in result["spec"]["containers"][1]["env"]
    )


def test_existing_env_is_kept_and_missing_ones_added() -> None:
    _, _, pod = inject(busy_pod())
    app, worker = pod["spec"]["containers"]
    assert app["env"] == [
        {"name": "OPENAI_BASE_URL", "value": "https://proxy.internal/v1"},
        {"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:4000"},
    ]
    assert worker["env"] == [
        {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:4000/v1"},
        {"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:4000"},
    ]


def test_set_base_url_false_leaves_the_app_env_alone() -> None:
    pod = minimal_pod()
    pod["metadata"]["annotations"] = {ann.SET_BASE_URL.key: "false"}
    _, _, result = inject(pod)
    assert "env" not in result["spec"]["containers"][0]


def test_port_and_resource_overrides() -> None:
    pod = minimal_pod()
    pod["metadata"]["annotations"] = {
        ann.PORT.key: "5000",
        ann.ADMIN_PORT.key: "5001",
        ann.CPU_REQUEST.key: "10m",
        ann.MEMORY_LIMIT.key: "1Gi",
    }
    _, _, result = inject(pod)
    sidecar = result["spec"]["initContainers"][0]
    args = sidecar["args"]
    assert args[args.index("--port") + 1] == "5000"
    assert args[args.index("--admin-port") + 1] == "5001"
    assert sidecar["ports"] == [{"name": "sluice-admin", "containerPort": 5001, "protocol": "TCP"}]
    assert sidecar["startupProbe"]["httpGet"]["port"] == 5001
    assert sidecar["resources"] == {
        "requests": {"cpu": "10m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    env = result["spec"]["containers"][0]["env"]
    assert {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:5000/v1"} in env


def test_volumes_config_dir_secrets_token_and_podinfo() -> None:
    _, _, pod = inject(minimal_pod())
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["sluice-config"] == {
        "name": "sluice-config",
        "configMap": {"name": "sluice-config", "optional": True},
    }
    token = volumes["sluice-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": "sluice", "expirationSeconds": 3600, "path": "token"}
    assert volumes["sluice-secret-openai-key"]["secret"] == {
        "secretName": "openai-key",
        "optional": True,
        "items": [{"key": "api-key", "path": "api-key"}],
    }
    dotted = volumes[secret_volume_name("anthropic.prod")]["secret"]
    assert dotted["items"] == [
        {"key": "backup-key", "path": "backup-key"},
        {"key": "key", "path": "key"},
    ]
    mounts = {m["name"]: m for m in pod["spec"]["initContainers"][0]["volumeMounts"]}
    # the ConfigMap as a directory (no subPath), so kubelet updates reach the file
    assert mounts["sluice-config"] == {
        "name": "sluice-config",
        "mountPath": "/etc/sluice/config",
        "readOnly": True,
    }
    assert mounts["sluice-secret-openai-key"]["mountPath"] == "/etc/sluice/secrets/openai-key"
    assert mounts[secret_volume_name("anthropic.prod")]["mountPath"] == (
        "/etc/sluice/secrets/anthropic.prod"
    )
    assert all(m.get("readOnly") for n, m in mounts.items() if n != "sluice-tmp")
    assert not any("subPath" in m for m in mounts.values())
    # only the sidecar mounts them
    assert "volumeMounts" not in pod["spec"]["containers"][0]


def test_credentials_paths_match_the_config_contract() -> None:
    """The sidecar reads ``<secrets-dir>/<CredentialRef.file>``; the mounts must put it there."""
    ref = c.CredentialRef(secret_name="openai-key", key="api-key", file="openai-key/api-key")
    config = c.SidecarConfig(
        namespace="shop",
        routes=(
            c.Route(
                name="gpt",
                source="gpt",
                backends=(
                    c.Backend(name="a", provider=c.Provider.OPENAI, model="m", credentials=ref),
                    c.Backend(name="b", provider=c.Provider.MOCK, model="m"),
                ),
            ),
        ),
    )
    secrets = secret_mounts(config)
    assert secrets == {"openai-key": ("api-key",)}
    _, _, pod = inject(minimal_pod(), secrets=secrets)
    sidecar = pod["spec"]["initContainers"][0]
    args = sidecar["args"]
    secrets_dir = args[args.index("--secrets-dir") + 1]
    volume = next(v for v in pod["spec"]["volumes"] if v.get("secret"))
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == volume["name"])
    item = volume["secret"]["items"][0]
    assert f"{mount['mountPath']}/{item['path']}" == f"{secrets_dir}/{ref.file}"
    assert args[args.index("--config") + 1] == "/etc/sluice/config/config.json"


def test_downward_api_env_on_the_sidecar() -> None:
    _, _, pod = inject(minimal_pod())
    env = {e["name"]: e for e in pod["spec"]["initContainers"][0]["env"]}
    paths = {n: e["valueFrom"]["fieldRef"]["fieldPath"] for n, e in env.items() if "valueFrom" in e}
    assert paths == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_UID": "metadata.uid",
        "POD_SERVICE_ACCOUNT": "spec.serviceAccountName",
    }
    assert env["SLUICE_TOKEN_FILE"]["value"] == ("/var/run/secrets/sluice.dev/serviceaccount/token")
    assert env["SLUICE_CONTROL_PLANE_URL"]["value"] == SETTINGS.control_plane_url
    # the sidecar verifies the control plane's HTTPS with the operator's CA, given in its env
    assert env["SLUICE_CONTROL_PLANE_CA"]["value"] == SETTINGS.control_plane_ca


def pss_restricted_violations(container: dict[str, Any]) -> list[str]:
    """The container-level checks of Pod Security Standards "restricted" (v1.29+)."""
    sc = container.get("securityContext") or {}
    problems = []
    if sc.get("privileged"):
        problems.append("privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation must be false")
    if sc.get("runAsNonRoot") is not True:
        problems.append("runAsNonRoot must be true")
    if sc.get("runAsUser") == 0:
        problems.append("runAsUser 0")
    if (sc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile")
    caps = sc.get("capabilities") or {}
    if "ALL" not in caps.get("drop", []):
        problems.append("capabilities must drop ALL")
    if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append("capabilities add")
    if any(p.get("hostPort") for p in container.get("ports", [])):
        problems.append("hostPort")
    return problems


def test_sidecar_is_pod_security_restricted() -> None:
    _, _, pod = inject(minimal_pod())
    sidecar = pod["spec"]["initContainers"][0]
    assert pss_restricted_violations(sidecar) == []
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert sidecar["securityContext"]["runAsUser"] == 65532
    assert sidecar["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"},
    }
    # the pod's own security context is left alone
    assert "securityContext" not in pod["spec"]


def test_annotations_are_created_when_absent_and_escaped_when_added() -> None:
    _, ops, pod = inject(minimal_pod())
    assert ops[0]["path"] == "/metadata/annotations"
    assert set(pod["metadata"]["annotations"]) == {ann.STATUS.key, ann.INJECT_REASON.key}

    _, ops, pod = inject(busy_pod())
    paths = [o["path"] for o in ops if o["path"].startswith("/metadata")]
    assert paths == [
        "/metadata/annotations/sluice.dev~1status",
        "/metadata/annotations/sluice.dev~1inject-reason",
        "/metadata/labels/sluice.dev~1injected",
    ]
    assert pod["metadata"]["annotations"]["odd~key/with"] == "chars"
    assert pod["metadata"]["annotations"][ann.INJECT_REASON.key].startswith("injected: ")


def test_injected_pods_get_the_fleet_label_and_skipped_ones_do_not() -> None:
    _, _, pod = inject(minimal_pod())
    assert pod["metadata"]["labels"][ann.INJECTED.key] == "true"
    bare = minimal_pod()
    del bare["metadata"]["labels"]
    _, _, pod = inject(bare)
    assert pod["metadata"]["labels"] == {ann.INJECTED.key: "true"}
    _, again, _ = inject(pod)
    assert again == []  # idempotent: the label is not added twice
    skipped = minimal_pod()
    skipped["spec"]["hostNetwork"] = True
    _, _, pod = inject(skipped)
    assert ann.INJECTED.key not in pod["metadata"].get("labels", {})


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("sluice.dev/status", "sluice.dev~1status"),
        ("a~b", "a~0b"),
        ("~/", "~0~1"),
        ("a/~1", "a~1~01"),
        ("plain", "plain"),
    ],
)
def test_escape(raw: str, escaped: str) -> None:
    assert escape(raw) == escaped
    doc = {"m": {raw: 0}}
    assert jsonpatch.apply_patch(
        doc, [{"op": "replace", "path": f"/m/{escape(raw)}", "value": 1}]
    ) == {"m": {raw: 1}}


def test_null_collections_are_created() -> None:
    pod = minimal_pod()
    pod["metadata"]["annotations"] = None
    pod["spec"]["volumes"] = None
    pod["spec"]["initContainers"] = None
    pod["spec"]["containers"][0]["env"] = None
    _, _, result = inject(pod)
    assert result["spec"]["initContainers"][0]["name"] == "sluice-sidecar"
    assert len(result["spec"]["volumes"]) == 6
    assert len(result["spec"]["containers"][0]["env"]) == 2
    assert ann.STATUS.key in result["metadata"]["annotations"]


def test_skipped_pod_gets_only_the_reason_annotation() -> None:
    pod = minimal_pod()
    pod["spec"]["hostNetwork"] = True
    decision, ops, result = inject(pod)
    assert not decision.inject
    assert ops == [
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {ann.INJECT_REASON.key: decision.summary},
        }
    ]
    assert result["spec"] == pod["spec"]
    # and only once
    _, again, _ = inject(result)
    assert again == []


def test_system_namespace_pods_are_not_touched() -> None:
    _, ops, _ = inject(minimal_pod(), namespace="kube-system")
    assert ops == []
    _, ops, _ = inject(minimal_pod(), namespace="sluice-system")
    assert ops == []


def test_reinvocation_after_another_webhook_added_a_container() -> None:
    _, _, pod = inject(minimal_pod())
    pod["spec"]["containers"].append({"name": "istio-ish", "image": "proxy"})
    decision, ops, result = inject(pod)
    assert decision.code == "AlreadyInjected"
    assert [o["path"] for o in ops] == ["/spec/containers/1/env"]
    assert result["spec"]["containers"][1]["env"][0]["name"] == "OPENAI_BASE_URL"


def test_copied_spec_missing_volumes_gets_only_what_its_sidecar_mounts() -> None:
    _, _, pod = inject(minimal_pod(), secrets={"openai-key": ("api-key",)})
    pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] != "sluice-config"]
    # the namespace now references another Secret; the existing sidecar does not mount it
    _, ops, result = inject(pod, secrets={"openai-key": ("api-key",), "new": ("k",)})
    assert [o["value"]["name"] for o in ops] == ["sluice-config"]
    assert "sluice-secret-new" not in {v["name"] for v in result["spec"]["volumes"]}


def test_secret_volume_names_are_dns_labels_and_unique() -> None:
    names = ["openai", "a.b", "a-b", "x" * 60, "x" * 61, "Weird_Name", "a" * 253]
    volumes = [secret_volume_name(n) for n in names]
    assert volumes[0] == "sluice-secret-openai"
    assert len(set(volumes)) == len(volumes)
    for v in volumes:
        assert len(v) <= 63
        assert v == v.lower()
        assert v[0].isalnum() and v[-1].isalnum()
        assert set(v) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_build_patch_honours_a_no_inject_decision_without_reasons_twice() -> None:
    pod = minimal_pod()
    decision = Decision(inject=False, reasons=["why"], code="SkippedTest")
    ops = build_patch(pod, SETTINGS, {}, decision)
    assert jsonpatch.apply_patch(pod, ops)["metadata"]["annotations"] == {
        ann.INJECT_REASON.key: "skipped: why"
    }


def test_service_account_name_is_defaulted_only_when_missing() -> None:
    # a projected token volume is invalid without a named ServiceAccount (found against a real
    # apiserver whose ServiceAccount admission plugin had not run)
    _, _, pod = inject(minimal_pod())
    assert pod["spec"]["serviceAccountName"] == "default"
    _, ops, pod = inject(busy_pod())
    assert pod["spec"]["serviceAccountName"] == "worker"
    assert not any(o["path"] == "/spec/serviceAccountName" for o in ops)
