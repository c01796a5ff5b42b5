"""The CLI's output is what kubectl accepts: `sluice crds | kubectl apply --dry-run=client -f -`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sluice_operator.devcluster import Cluster

pytestmark = pytest.mark.cluster


def test_sluice_crds_piped_to_kubectl_dry_run(cluster: Cluster) -> None:
    crds = subprocess.run(
        [sys.executable, "-m", "sluice_operator.cli", "crds"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out = cluster.kubectl("apply", "--dry-run=client", "-f", "-", input=crds)
    for name in ("modelroutes", "prompttemplates", "budgets", "guardrailpolicies"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{name}.sluice.dev" in out.stdout
    server = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=crds)
    assert "(server dry run)" in server.stdout
