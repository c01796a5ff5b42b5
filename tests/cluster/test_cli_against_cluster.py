"""The CLI against a real apiserver.

`sluice crds` output is what kubectl accepts (client and server dry runs). Other tests of the
session may have installed the CRDs already, so the client-side check uses `create` (no diff
against live objects) and the server-side one forces conflicts.

`sluice status` and `sluice doctor` on a cluster without the CRDs say so; `sluice operator` on a
cluster where only crds/ were applied (no kopf peering CRD) exits with a message instead of
waiting forever; that needs a cluster of its own, since the chart test installs
the peering CRD into the shared one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sluice_cli import devcluster
from sluice_cli.devcluster import Cluster

from .conftest import wait_established

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


def test_operator_without_peering_crd_says_so_and_how_to_fix_it(
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
            "sluice operator: kopf's peering CRD (clusterkopfpeerings.kopf.dev) is not installed"
        )
        assert "kubectl apply -f charts/sluice/crds/kopf.dev-peerings.yaml" in out.stderr
        assert "--standalone" in out.stderr
        assert "Traceback" not in out.stderr

        # With the peering CRD installed the same check passes.
        peering = repo_root / "charts" / "sluice" / "crds" / "kopf.dev-peerings.yaml"
        bare.kubectl("apply", "--server-side", "-f", str(peering))
        wait_established(bare, ["clusterkopfpeerings.kopf.dev"])
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
