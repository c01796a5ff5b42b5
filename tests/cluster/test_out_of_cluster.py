"""The operator run from a laptop, `sluice status` and `sluice doctor`, against the real apiserver.

The chart is installed with ``operator.replicas=0``; ``sluice operator --out-of-cluster
--webhook-url https://127.0.0.1:PORT`` (admin kubeconfig, leader election on a Lease in the
release namespace) makes a certificate for the URL's host and prints the one ``helm upgrade``
that points the chart's webhook configuration at it. That line is run as printed; afterwards the
apiserver injects through the laptop's webhook, and a later ``helm upgrade --reuse-values``
keeps it so. Then ``sluice status`` (and ``kubectl sluice status``) shows the injected pods, the
one whose sidecar reports with its hash and last report, and ``sluice doctor --canary`` passes -
until the operator stops, when it names the unreachable webhook and exits 1.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sluice_cli.devcluster import Cluster

from .operator_proc import OperatorProcess, free_port, start_operator
from .polling import eventually
from .sidecar_proc import start_sidecar
from .test_chart_install import Helm, documents

pytestmark = pytest.mark.cluster

RELEASE = "sluice"


@dataclass
class Laptop:
    namespace: str
    op: OperatorProcess
    url: str
    helm_line: str
    mwc: str


def sluice(
    cluster: Cluster, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    base["KUBECONFIG"] = str(cluster.kubeconfig)
    return subprocess.run(
        [sys.executable, "-m", "sluice_cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def helm(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(cluster, tmp_path_factory.mktemp("helm-home-ooc"))


@pytest.fixture(scope="module")
def laptop(
    cluster: Cluster,
    sluice_crds: list[str],
    helm: Helm,
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Laptop]:
    namespace = cluster.create_namespace("ooc-system")
    helm(
        "install",
        RELEASE,
        str(repo_root / "charts" / "sluice"),
        "--namespace",
        namespace,
        "--set",
        "operator.replicas=0",
    )
    workdir = tmp_path_factory.mktemp("laptop")
    url = f"https://127.0.0.1:{free_port()}"
    op = start_operator(
        cluster.kubeconfig,
        workdir,
        "--out-of-cluster",
        f"--webhook-url={url}",
        f"--namespace={namespace}",
        standalone=False,  # leader election on the Lease sluice-operator in the namespace
        env={"XDG_CACHE_HOME": str(workdir / "cache")},
    )
    try:
        log = op.log_text()
        line = next(
            (x.strip() for x in log.splitlines() if x.strip().startswith("helm upgrade")), ""
        )
        manifest = documents(helm("get", "manifest", RELEASE, "--namespace", namespace).stdout)
        (mwc,) = [d for d in manifest if d["kind"] == "MutatingWebhookConfiguration"]
        yield Laptop(namespace, op, url, line, mwc["metadata"]["name"])
    finally:
        op.stop()
        helm("uninstall", RELEASE, "--namespace", namespace, check=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def run_printed_helm(helm: Helm, line: str, chart: Path) -> None:
    words = shlex.split(line)
    assert words[:2] == ["helm", "upgrade"]
    helm(*[str(chart) if w == "charts/sluice" else w for w in words[1:]])


def client_configs(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    mwc = cluster.kubectl_json("get", "mutatingwebhookconfiguration", name)
    return [h["clientConfig"] for h in mwc["webhooks"]]


def injected_pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"sluice.dev/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }

    def dry_run() -> Any:
        out = cluster.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod)
        )
        return "sluice.dev/status" in json.loads(out.stdout)["metadata"].get("annotations", {})

    eventually(dry_run, what="the apiserver calling the laptop's webhook")
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    return cluster.kubectl_json("get", "pod", name, "-n", namespace)


def test_operator_prints_the_helm_upgrade_and_it_survives_reuse_values(
    cluster: Cluster, helm: Helm, laptop: Laptop, namespace: str, repo_root: Path
) -> None:
    # before: the chart's Service; the operator says so and prints what to run
    assert [c.get("service", {}).get("name") for c in client_configs(cluster, laptop.mwc)] == [
        f"{RELEASE}-webhook"
    ] * 2
    assert f"calls Service {laptop.namespace}/{RELEASE}-webhook" in laptop.op.log_text()
    assert laptop.helm_line.startswith(
        f"helm upgrade {RELEASE} charts/sluice --namespace {laptop.namespace} --reuse-values "
        f"--set operator.replicas=0 --set webhook.url={laptop.url}/mutate-pods "
        "--set webhook.certificate.caBundle="
    )
    run_printed_helm(helm, laptop.helm_line, repo_root / "charts" / "sluice")
    configs = client_configs(cluster, laptop.mwc)
    assert {c["url"] for c in configs} == {f"{laptop.url}/mutate-pods"}
    assert "service" not in configs[0]
    stored = injected_pod(cluster, namespace, "web")
    assert stored["metadata"]["labels"]["sluice.dev/injected"] == "true"

    # an unrelated upgrade with --reuse-values keeps the URL and the CA
    helm(
        "upgrade",
        RELEASE,
        str(repo_root / "charts" / "sluice"),
        "--namespace",
        laptop.namespace,
        "--reuse-values",
        "--set",
        "webhook.timeoutSeconds=7",
    )
    mwc = cluster.kubectl_json("get", "mutatingwebhookconfiguration", laptop.mwc)
    assert [h["clientConfig"] for h in mwc["webhooks"]] == configs
    assert {h["timeoutSeconds"] for h in mwc["webhooks"]} == {7}
    injected_pod(cluster, namespace, "web-2")


def test_status_lists_pods_hashes_reports_backends_and_budgets(
    cluster: Cluster, laptop: Laptop, namespace: str, repo_root: Path, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(repo_root / "examples" / "01-quickstart"))
    cluster.kubectl("wait", "modelroute/chat", "-n", namespace, "--for=condition=Ready")
    for name in ("web", "idle"):
        injected_pod(cluster, namespace, name)
    cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
    config_hash = cm["metadata"]["annotations"]["sluice.dev/config-hash"]
    config = tmp_path / "config.json"
    config.write_text(cm["data"]["config.json"])
    # the token the kubelet would project into pod web: its ServiceAccount's, bound to the pod
    # (the control plane takes reports only for the pod a token is bound to)
    account = cluster.kubectl_json("get", "pod", "web", "-n", namespace)["spec"]
    account = account.get("serviceAccountName") or "default"
    cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    token = tmp_path / "token"
    token.write_text(
        cluster.kubectl(
            "create", "token", account, "-n", namespace, "--audience=sluice",
            "--bound-object-kind=Pod", "--bound-object-name=web",
        ).stdout
    )  # fmt: skip
    side = start_sidecar(
        config, tmp_path, control_plane=laptop.op.url, namespace=namespace, pod="web",
        token_file=token,
    )  # fmt: skip
    try:

        def reported() -> Any:
            out = sluice(cluster, "status", "-n", namespace, "-o", "json")
            assert out.returncode == 0, out.stderr
            fleet = json.loads(out.stdout)
            pods = {p["name"]: p for p in fleet["pods"]}
            return fleet if pods.get("web", {}).get("state") == "current" else None

        fleet = eventually(reported, timeout=60, what="the sidecar's report in sluice status")
    finally:
        side.stop()
    assert fleet["config_hash"] == config_hash
    pods = {p["name"]: p for p in fleet["pods"]}
    assert pods["web"]["config_hash"] == config_hash
    assert pods["web"]["last_report"].endswith(":00Z")
    assert pods["idle"] == {
        "name": "idle",
        "config_hash": None,
        "last_report": None,
        "state": "no report",
    }
    (route,) = fleet["routes"]
    assert (route["name"], route["applied"]) == ("chat", "1/1")
    assert [b["name"] for b in fleet["budgets"]] == ["team-daily"]

    table = sluice(cluster, "status", "-n", namespace)
    assert table.returncode == 0, table.stderr
    assert "POD" in table.stdout and "current" in table.stdout and "no report" in table.stdout
    assert "team-daily" in table.stdout

    # the same as a kubectl plugin: kubectl finds kubectl-sluice next to the interpreter
    plugin_dir = Path(sys.executable).parent
    assert shutil.which("kubectl-sluice", path=str(plugin_dir)), "pip install -e . installs it"
    env = {**os.environ, "PATH": f"{plugin_dir}{os.pathsep}{os.environ['PATH']}"}
    via = subprocess.run(
        [str(cluster.tools.kubectl), "sluice", "status", "-n", namespace],
        env={**env, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert via.returncode == 0, via.stderr
    assert "POD" in via.stdout and "idle" in via.stdout

    # no kubeconfig: one line, exit 2
    missing = sluice(cluster, "status", env={"KUBECONFIG": str(tmp_path / "nope")})
    assert missing.returncode == 2
    assert missing.stderr.startswith("sluice status: no usable kubeconfig")
    assert "Traceback" not in missing.stderr


def test_doctor_passes_then_names_the_unreachable_webhook(
    cluster: Cluster, laptop: Laptop, namespace: str
) -> None:
    cluster.kubectl("label", "namespace", namespace, "sluice.dev/inject=true")
    ok = sluice(cluster, "doctor", "--canary", namespace)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for expected in (
        "CRD modelroutes.sluice.dev is installed and current",
        "is installed",
        f"the webhook at {laptop.url}/mutate-pods answers and its certificate is valid for "
        "127.0.0.1",
        "an operator is running",
        f"ServiceAccount {laptop.namespace}/{RELEASE} has every permission the operator uses",
        f"a canary pod in {namespace} is injected",
        "all checks passed",
    ):
        assert expected in ok.stdout, ok.stdout
    assert "✗" not in ok.stdout

    laptop.op.stop()
    broken = sluice(cluster, "doctor", "--canary", namespace)
    assert broken.returncode == 1
    assert f"✗ the webhook at {laptop.url}/mutate-pods is not reachable" in broken.stdout
    assert "    fix: start the operator there" in broken.stdout
    assert f"✗ a canary pod in {namespace} was not injected" in broken.stdout
