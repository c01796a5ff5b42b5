"""The CLI's output is what kubectl accepts: `sluice crds` piped into kubectl (client and server
dry runs). Other tests of the session may have installed the CRDs already, so the client-side
check uses `create` (no diff against live objects) and the server-side one forces conflicts."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
