"""Operator ↔ sidecar over the real control plane: push, reports in status (rollout, counts, API
keys the sidecars cannot read), operator down.

The control plane serves HTTPS with a certificate from a CA (the test cluster's), and the real
sidecar processes verify it with that CA (``SLUICE_CONTROL_PLANE_CA``), as injected pods do.

The local apiserver has no kubelet, so a ConfigMap change never reaches a file here: a sidecar
that serves a changed route got it through the operator's long-poll push.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from sluice_cli.devcluster import Cluster
from sluice_sidecar.contract import UsageReport

from .kstatus import both
from .operator_proc import OperatorProcess, start_operator
from .polling import eventually
from .sidecar_proc import SidecarProcess, start_sidecar

pytestmark = pytest.mark.cluster


def route(namespace: str, reply: str) -> dict[str, Any]:
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {
            "backends": [
                {"name": "mock", "provider": "mock", "model": "mock-1", "mock": {"reply": reply}}
            ]
        },
    }


def ask(side: SidecarProcess) -> str:
    client = openai.OpenAI(base_url=side.base_url, api_key="unused", max_retries=0, timeout=10)
    with client:
        out = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    return out.choices[0].message.content or ""


def pod_token(cluster: Cluster, namespace: str, pod: str, tmp_path: Path) -> Path:
    """A Pod object ``pod`` (ServiceAccount ``app``; it never runs: no kubelet here) and a token
    bound to it with audience sluice, as the kubelet projects into an injected pod."""
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": namespace},
                "spec": {
                    "serviceAccountName": "app",
                    "containers": [{"name": "app", "image": "example.invalid/app:1"}],
                },
            }
        ),
    )
    token = cluster.kubectl(
        "create",
        "token",
        "app",
        "-n",
        namespace,
        "--audience=sluice",
        "--bound-object-kind=Pod",
        f"--bound-object-name={pod}",
    ).stdout.strip()
    path = tmp_path / f"token-{pod}"
    path.write_text(token)
    return path


def controlplane_certs(cluster: Cluster, tmp_path: Path) -> Path:
    """tls.crt/tls.key for 127.0.0.1 and ca.crt, the way the chart mounts them."""
    crt, key = cluster.issue_serving_cert(f"controlplane-{tmp_path.name}")
    certs = tmp_path / "controlplane-certs"
    certs.mkdir()
    shutil.copy(crt, certs / "tls.crt")
    shutil.copy(key, certs / "tls.key")
    shutil.copy(cluster.pki.ca_cert, certs / "ca.crt")
    return certs


def sidecar(
    op: OperatorProcess,
    config: Path,
    namespace: str,
    pod: str,
    token: Path,
    tmp_path: Path,
    secrets_dir: Path | None = None,
) -> SidecarProcess:
    """A sidecar process of ``pod`` that trusts the operator's CA, as an injected one does."""
    return start_sidecar(
        config,
        tmp_path,
        control_plane=op.url,
        namespace=namespace,
        pod=pod,
        token_file=token,
        ca_file=op.ca_file,
        secrets_dir=secrets_dir,
    )


@pytest.fixture
def setup(
    cluster: Cluster,
    sluice_crds: list[str],
    namespace: str,
    tmp_path: Path,
) -> Iterator[tuple[OperatorProcess, Path]]:
    op = start_operator(
        cluster.kubeconfig, tmp_path, controlplane_certs=controlplane_certs(cluster, tmp_path)
    )
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(route(namespace, "version one")))
        cluster.kubectl("wait", "modelroute/chat", "-n", namespace, "--for=condition=Ready")
        cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
        config = tmp_path / "config.json"
        config.write_text(cm["data"]["config.json"])
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "app", "namespace": namespace},
                }
            ),
        )
        yield op, config
    finally:
        op.stop()


def test_route_change_reaches_a_running_sidecar_by_push(
    cluster: Cluster, namespace: str, tmp_path: Path, setup: tuple[OperatorProcess, Path]
) -> None:
    op, config = setup
    token = pod_token(cluster, namespace, "p1", tmp_path)
    side = sidecar(op, config, namespace, "p1", token, tmp_path)
    try:
        assert ask(side) == "version one"
        cluster.kubectl("apply", "-f", "-", input=json.dumps(route(namespace, "version two")))
        eventually(lambda: ask(side) == "version two", what="pushed config served")
        # The file on disk never changed: the push did it.
        assert "version one" in config.read_text()
    finally:
        side.stop()


def test_reports_from_two_sidecars_show_in_status_and_operator_down_keeps_serving(
    cluster: Cluster, namespace: str, tmp_path: Path, setup: tuple[OperatorProcess, Path]
) -> None:
    op, config = setup
    sides = [
        sidecar(op, config, namespace, p, pod_token(cluster, namespace, p, tmp_path), tmp_path)
        for p in ("pod-a", "pod-b")
    ]
    try:
        for side in sides:
            for _ in range(3):
                assert ask(side) == "version one"

        def status() -> Any:
            st = cluster.kubectl_json("get", "modelroute", "chat", "-n", namespace)["status"]
            rollout = st.get("rollout", {})
            backends = {b["name"]: b for b in st.get("backends", [])}
            done = (
                rollout.get("pods") == 2
                and rollout.get("applied") == 2
                and backends.get("mock", {}).get("requests", 0) >= 6
            )
            return st if done else None

        st = eventually(status, timeout=60, what="rollout 2/2 and request counts in status")
        assert st["backends"][0]["state"] == "Healthy"
        rollout = st["rollout"]
        assert rollout["summary"] == "2/2"
        assert [s["pod"] for s in rollout["sidecars"]] == ["pod-a", "pod-b"]
        assert {s["configHash"] for s in rollout["sidecars"]} == {rollout["configHash"]}
        assert all(s["lastReport"].endswith(":00Z") for s in rollout["sidecars"])
        # kubectl get shows APPLIED as applied/total
        table = cluster.kubectl("get", "modelroute", "chat", "-n", namespace).stdout
        assert "APPLIED" in table.splitlines()[0] and " 2/2 " in table.splitlines()[1]

        # every kind carries the namespace's rollout: a Budget applied now gets it too
        budget = {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Budget",
            "metadata": {"name": "cap", "namespace": namespace},
            "spec": {"limits": [{"window": "Day", "usd": 5}]},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(budget))

        def budget_rollout() -> Any:
            got = cluster.kubectl_json("get", "budget", "cap", "-n", namespace)
            out = got.get("status", {}).get("rollout") or {}
            return out if out.get("pods") == 2 else None

        # the new config reaches both sidecars by push; then both report the new hash
        got = eventually(
            lambda: (r := budget_rollout()) and r["applied"] == 2 and r,
            timeout=60,
            what="the Budget's rollout 2/2 on the new config",
        )
        assert got["summary"] == "2/2"
        assert "sidecars" not in got
        # The Budget blocks without a lease from the operator: each sidecar gets one first.
        for side in sides:
            eventually(lambda s=side: _admitted(s), timeout=60, what="a lease for the Budget")

        # A sidecar from another namespace's token is refused (403), not served.
        # (covered in unit tests) -- here: the operator goes away, the sidecars keep serving.
        op.stop()
        for side in sides:
            assert ask(side) == "version one"
    finally:
        for side in sides:
            side.stop()


def _admitted(side: SidecarProcess) -> bool:
    try:
        return ask(side) == "version one"
    except openai.RateLimitError:
        return False


def post_report(op: OperatorProcess, token: str, namespace: str, pod: str) -> tuple[int, str]:
    report = UsageReport(
        namespace=namespace, pod=pod, config_hash="forged", seq=1, window_start=0, window_end=1
    )
    request = urllib.request.Request(
        f"{op.url}/v1/reports",
        data=report.model_dump_json(by_alias=True).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with op.open(request) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_pod_cannot_report_for_another_pod(
    cluster: Cluster, namespace: str, tmp_path: Path, setup: tuple[OperatorProcess, Path]
) -> None:
    """Tokens minted by the real apiserver, bound to real Pod objects: the TokenReview's pod
    claim decides which pod a token may report for."""
    op, _ = setup
    token_a = pod_token(cluster, namespace, "pod-a", tmp_path).read_text()
    pod_token(cluster, namespace, "pod-b", tmp_path)
    assert post_report(op, token_a, namespace, "pod-b")[0] == 403
    status, body = post_report(op, token_a, namespace, "pod-a")
    assert status == 200, body
    # a token of the same ServiceAccount not bound to a pod: may read config, never report
    unbound = cluster.kubectl(
        "create", "token", "app", "-n", namespace, "--audience=sluice"
    ).stdout.strip()
    assert post_report(op, unbound, namespace, "pod-a")[0] == 403
    # the bound pod deleted: its token no longer authenticates at all
    cluster.kubectl("delete", "pod", "pod-a", "-n", namespace, "--wait=false")
    fresh = pod_token(cluster, namespace, "pod-a", tmp_path).read_text()  # recreated: new uid
    assert post_report(op, fresh, namespace, "pod-a")[0] == 200
    with op.open(f"{op.url}/metrics") as r:
        metrics = r.read().decode()
    assert 'sluice_operator_controlplane_denied_total{reason="pod_mismatch"} 1.0' in metrics
    assert 'sluice_operator_controlplane_denied_total{reason="unbound_token"} 1.0' in metrics
    # every answer counted by route pattern and code: two refusals above, two reports accepted
    assert 'sluice_operator_controlplane_requests_total{code="403",path="/v1/reports"} 2.0' in (
        metrics
    )
    assert 'sluice_operator_controlplane_requests_total{code="200",path="/v1/reports"} 2.0' in (
        metrics
    )


def test_the_sidecar_verifies_the_control_plane_certificate(
    cluster: Cluster, namespace: str, tmp_path: Path, setup: tuple[OperatorProcess, Path]
) -> None:
    """A sidecar that does not trust the operator's CA (only the system's) gets no push - the
    handshake fails - and keeps serving its file, while one with the CA gets the change."""
    op, config = setup
    token = pod_token(cluster, namespace, "p1", tmp_path)
    wrong = start_sidecar(
        config, tmp_path, control_plane=op.url, namespace=namespace, pod="p1", token_file=token
    )
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(route(namespace, "version two")))
        right = sidecar(op, config, namespace, "p1", token, tmp_path)
        try:
            eventually(lambda: ask(right) == "version two", what="pushed over verified TLS")
        finally:
            right.stop()
        assert ask(wrong) == "version one"
    finally:
        wrong.stop()


def test_deleting_the_route_is_pushed_and_the_sidecar_stops_serving_it(
    cluster: Cluster, namespace: str, tmp_path: Path, setup: tuple[OperatorProcess, Path]
) -> None:
    """Deleting a CR is an instruction, not a fault (docs/operations.md): the namespace's config
    without it is written and pushed; a sidecar then answers 404 model_not_found for the route
    instead of serving a config nobody has any more. The last good config is kept only when the
    operator cannot be asked (down, unreachable) - see the operator-down test above."""
    op, config = setup
    token = pod_token(cluster, namespace, "p1", tmp_path)
    side = sidecar(op, config, namespace, "p1", token, tmp_path)
    try:
        assert ask(side) == "version one"
        cluster.kubectl("delete", "modelroute", "chat", "-n", namespace)

        def refused() -> bool:
            try:
                ask(side)
            except openai.NotFoundError as exc:
                return exc.code == "model_not_found"
            return False

        eventually(refused, what="the deleted route no longer served")
        cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
        assert json.loads(cm["data"]["config.json"])["routes"] == []
    finally:
        side.stop()


def test_a_key_the_sidecars_cannot_read_shows_on_the_route_until_the_secret_appears(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    setup: tuple[OperatorProcess, Path],
    kstatus_bin: Path,
) -> None:
    """The operator has no access to Secrets; the sidecars read the mounted keys and say which
    they cannot read. A route whose Secret does not exist is not Ready (in progress for kstatus
    and Argo CD, not failed: the Secret may come a moment later), names the Secret, key and pods,
    and serves from its next backend meanwhile; once the key is there, it is Current/Healthy."""
    op, _ = setup
    keyed = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "keyed", "namespace": namespace},
        "spec": {
            "backends": [
                {
                    "name": "openai",
                    "provider": "openai-compatible",
                    "baseURL": "http://127.0.0.1:9/v1",
                    "model": "gpt-4o-mini",
                    "credentials": {"secretRef": {"name": "llm-keys", "key": "openai"}},
                },
                {"name": "spare", "provider": "mock", "model": "mock-1"},
            ]
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(keyed))
    cluster.kubectl("wait", "modelroute/keyed", "-n", namespace, "--for=condition=Valid")
    cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
    config = tmp_path / "keyed-config.json"
    config.write_text(cm["data"]["config.json"])
    secrets = tmp_path / "secrets"
    (secrets / "llm-keys").mkdir(parents=True)  # the Secret's volume: no such key in it
    token = pod_token(cluster, namespace, "pod-k", tmp_path)
    side = sidecar(op, config, namespace, "pod-k", token, tmp_path, secrets_dir=secrets)
    try:

        def credentials(status: str) -> Any:
            obj = cluster.kubectl_json("get", "modelroute", "keyed", "-n", namespace)
            conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
            return obj if conds.get("CredentialsAvailable", {}).get("status") == status else None

        obj = eventually(lambda: credentials("False"), timeout=60, what="CredentialsMissing")
        conds = {c["type"]: c for c in obj["status"]["conditions"]}
        assert conds["CredentialsAvailable"]["reason"] == "CredentialsMissing"
        message = conds["CredentialsAvailable"]["message"]
        assert "backend openai: 1 of 1 sidecar(s) (pod-k) cannot read Secret llm-keys" in message
        assert f"kubectl create secret generic llm-keys -n {namespace}" in message
        assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == (
            "False",
            "CredentialsMissing",
        )
        assert both(kstatus_bin, obj) == ("InProgress", "Progressing")
        backends = {b["name"]: b for b in obj["status"]["backends"]}
        assert backends["openai"]["credentials"] == "Missing"
        assert "credentials" not in backends["spare"]
        events = cluster.kubectl_json(
            "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=keyed"
        )
        assert any(e["reason"] == "CredentialsMissing" for e in events["items"])
        # Meanwhile the route serves from its next backend.
        client = openai.OpenAI(base_url=side.base_url, api_key="unused", max_retries=0)
        with client:
            raw = client.chat.completions.with_raw_response.create(
                model="keyed", messages=[{"role": "user", "content": "hi"}]
            )
        assert raw.headers["x-sluice-backend"] == "spare"

        # The kubelet brings the new Secret's key into the volume; the next reports clear it.
        (secrets / "llm-keys" / "openai").write_text("sk-test-not-a-real-key\n")
        obj = eventually(lambda: credentials("True"), timeout=60, what="CredentialsAvailable")
        conds = {c["type"]: c for c in obj["status"]["conditions"]}
        assert conds["CredentialsAvailable"]["reason"] == "ReadBySidecars"
        assert conds["Ready"]["status"] == "True"
        assert both(kstatus_bin, obj) == ("Current", "Healthy")
        assert all("credentials" not in b for b in obj["status"]["backends"])
        assert "sk-test-not-a-real-key" not in json.dumps(obj)
    finally:
        side.stop()
