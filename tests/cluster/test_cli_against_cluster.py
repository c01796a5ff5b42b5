"""The CLI against a real apiserver.

`sluice crds` output is what kubectl accepts (client and server dry runs). Other tests of the
session may have installed the CRDs already, so the client-side check uses `create` (no diff
against live objects) and the server-side one forces conflicts.

`sluice status` and `sluice doctor` on a cluster without the CRDs say so; `sluice operator` on a
cluster where only crds/ were applied and its namespace (where its leader-election Lease lives)
does not exist exits with a message instead of retrying forever; that needs a cluster of its own,
since other tests install the CRDs and the chart into the shared one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sluice_cli import devcluster
from sluice_cli.devcluster import Cluster

pytestmark = pytest.mark.cluster


def test_sluice_crds_piped_to_kubectl_dry_run(cluster: Cluster) -> None:
    crds = subprocess.run(
        [sys.executable, "-m", "sluice_cli", "crds"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out = cluster.kubectl("create", "--dry-run=client", "-o", "name", "-f", "-", input=crds)
    for name in ("modelroutes", "prompttemplates", "budgets", "guardrailpolicies"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{name}.sluice.dev" in out.stdout
    server = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", input=crds
    )
    assert server.stdout.count("(server dry run)") == 4


def sluice(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_operator_without_its_namespace_says_so_and_how_to_fix_it(
    tmp_path: Path, cluster: Cluster, repo_root: Path
) -> None:
    bare = devcluster.start(tmp_path / "bare", tools=cluster.tools)
    try:
        env = {k: v for k, v in bare.env().items() if not k.startswith("KUBERNETES_")}
        # `sluice status` and `sluice doctor` before the CRDs are there: say so, no traceback
        status = sluice(env, "status", "-n", "default")
        assert status.returncode == 2, status.stderr
        assert status.stderr.startswith("sluice status: the Sluice CRDs are not installed at")
        assert "kubectl apply --server-side -f crds/" in status.stderr
        doctor = sluice(env, "doctor")
        assert doctor.returncode == 1
        assert "✗ CRD modelroutes.sluice.dev is not installed" in doctor.stdout
        assert "✗ no Sluice MutatingWebhookConfiguration" in doctor.stdout
        assert "Traceback" not in doctor.stdout + doctor.stderr

        bare.kubectl("apply", "--server-side", "-f", str(repo_root / "crds"))
        out = sluice(env, "operator", "--liveness=")
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(
            "sluice operator: the operator's namespace 'sluice-system' does not exist at"
        )
        assert "--namespace" in out.stderr and "--standalone" in out.stderr
        assert "Traceback" not in out.stderr

        # With its namespace there the same check passes (the first leader creates the Lease).
        bare.kubectl("create", "namespace", "sluice-system")
        check = (
            "from sluice_operator import preflight, settings\n"
            "preflight.check(settings.OperatorOptions())\n"
        )
        ok = subprocess.run(
            [sys.executable, "-c", check],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stderr
    finally:
        bare.stop()
