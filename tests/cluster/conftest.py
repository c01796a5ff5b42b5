"""Pytest fixtures for the cluster tests: thin wrappers around sluice_cli.devcluster.

Owns the session-scoped control plane (`cluster`), a fresh namespace per test (`namespace`), the
`kubectl` callable, `repo_root`, `sluice_crds` (the project's CRDs applied and Established) and
`kstatus_bin` (Flux's kstatus library as a program; see ``kstatus.py``).
A missing binary is built by hack/ensure-tools.sh; if it is still missing the fixture errors: a
cluster test never skips.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from sluice_cli import devcluster
from sluice_cli.devcluster import Cluster


class Kubectl(Protocol):
    """The shape of Cluster.kubectl, for type hints in tests."""

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return devcluster.find_repo_root(Path(__file__))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Iterator[Cluster]:
    """A fresh etcd + kube-apiserver for the whole session (admin kubeconfig: .kubeconfig)."""
    tools = devcluster.ensure_tools(repo_root)  # builds when missing; raises if still missing
    c = devcluster.start(tmp_path_factory.mktemp("cluster"), tools=tools)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def kubectl(cluster: Cluster) -> Kubectl:
    """`kubectl(*args, input=None, check=True)` -> CompletedProcess[str], as cluster admin."""
    return cluster.kubectl


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace named after the test. Namespace deletion never completes here (no
    controller-manager: nothing empties it), so afterwards the Sluice objects in it are deleted
    (an operator running in a later test then has no leftovers to reconcile) and the namespace
    deletion is only requested, not awaited."""
    name = cluster.create_namespace(request.node.name)
    yield name
    cluster.kubectl("delete", "sluice", "--all", "-n", name, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_established(cluster: Cluster, crd_names: list[str], timeout: float = 60.0) -> None:
    """Block until every named CRD has condition Established=True (polls; no timing asserts)."""
    deadline = time.monotonic() + timeout
    pending = set(crd_names)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            crd = cluster.kubectl_json("get", "crd", name)
            conditions = crd.get("status", {}).get("conditions", [])
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                pending.discard(name)
        if pending:
            time.sleep(0.2)
    if pending:
        raise AssertionError(f"CRDs not Established: {sorted(pending)}")


@pytest.fixture(scope="session")
def sluice_crds(cluster: Cluster, repo_root: Path) -> list[str]:
    """Apply crds/ (server-side) and wait until all are Established; returns the CRD names."""
    crd_dir = repo_root / "crds"
    cluster.kubectl("apply", "--server-side", "-f", str(crd_dir))
    names = [
        line.split("/", 1)[1]
        for line in cluster.kubectl("get", "-f", str(crd_dir), "-o", "name").stdout.split()
    ]
    wait_established(cluster, names)
    return names


@pytest.fixture(scope="session")
def kstatus_bin(repo_root: Path) -> Path:
    """Flux's kstatus library as a program (hack/kstatus), built with the machine's Go and
    cached under ~/.cache/sluice like the other tools."""
    out = subprocess.run(
        ["bash", str(repo_root / "hack" / "build-kstatus.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return Path(out.stdout.strip().splitlines()[-1])
