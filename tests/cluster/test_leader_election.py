"""Two operator replicas on the real apiserver, as the chart runs them (leader election, not
``--standalone``): both serve sidecars' configs; exactly one - the holder of the Lease - writes
status, takes usage reports and grants budget leases, and the other answers those with 503 and
closes the connection (the sidecar's retry may reach the leader). When the leader dies (SIGKILL:
no hand-over), the other takes the Lease over once it has not been renewed for a lease duration,
and from then on writes status and grants leases itself. Leases last 4 s here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice_cli.devcluster import Cluster

from .operator_proc import OperatorProcess, start_operator
from .polling import eventually
from .test_controlplane import pod_token

pytestmark = pytest.mark.cluster

ROUTE = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "ModelRoute",
    "metadata": {"name": "chat"},
    "spec": {"backends": [{"name": "mock", "provider": "mock", "model": "mock-1"}]},
}
BUDGET = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "Budget",
    "metadata": {"name": "team"},
    "spec": {"limits": [{"window": "Day", "requests": 100}], "onExceeded": {"action": "Block"}},
}


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> None:
    body = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))


def holder(cluster: Cluster, home: str) -> str | None:
    got = cluster.kubectl("get", "lease", "sluice-ha", "-n", home, "-o", "json", check=False)
    if got.returncode != 0:
        return None
    return (json.loads(got.stdout).get("spec") or {}).get("holderIdentity") or None


def leading(op: OperatorProcess) -> bool:
    with httpx.Client(timeout=5) as client:
        text = client.get(f"{op.url}/metrics").text
    return "sluice_operator_leader 1.0" in text


def lease_request(namespace: str, pod: str, seq: int) -> dict[str, Any]:
    return {
        "apiVersion": "sluice.dev/lease/v1",
        "namespace": namespace,
        "pod": pod,
        "instance": f"{pod}-1",
        "seq": seq,
        "asks": [
            {
                "budget": "team",
                "window": "Day/UTC",
                "start": 0,
                "want": {"requests": 5},
            }
        ],
    }


def test_one_replica_leads_the_other_serves_configs_and_takes_over_when_it_dies(
    cluster: Cluster, sluice_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    home = cluster.create_namespace("sluice-ha")  # the operators' own namespace: the Lease
    args = (f"--namespace={home}", "--leader-lease=sluice-ha", "--leader-lease-seconds=4")
    a = start_operator(cluster.kubeconfig, tmp_path, *args, standalone=False)
    b: OperatorProcess | None = None
    try:
        eventually(lambda: leading(a), what="the first replica elected")
        b = start_operator(cluster.kubeconfig, tmp_path, *args, standalone=False)
        cluster.kubectl("create", "serviceaccount", "app", "-n", namespace)
        apply(cluster, namespace, ROUTE)
        apply(cluster, namespace, BUDGET)
        cluster.kubectl("wait", "budget/team", "-n", namespace, "--for=condition=Ready")
        token = pod_token(cluster, namespace, "app-1", tmp_path).read_text()
        auth = {"Authorization": f"Bearer {token}"}
        assert not leading(b) and holder(cluster, home) is not None

        with httpx.Client(timeout=10, headers=auth) as client:
            # Both serve the namespace's config (the follower compiled it too), the same one.
            def config(op: OperatorProcess) -> str | None:
                got = client.get(f"{op.url}/v1/config/{namespace}")
                return got.text if got.status_code == 200 else None

            served = [eventually(lambda op=op: config(op), what="a config") for op in (a, b)]
            assert served[0] == served[1]
            # Only the leader grants leases; the follower says so and closes the connection.
            first = client.post(f"{a.url}/v1/leases", json=lease_request(namespace, "app-1", 1))
            assert first.status_code == 200, first.text
            refused = client.post(f"{b.url}/v1/leases", json=lease_request(namespace, "app-1", 2))
            assert refused.status_code == 503
            assert "not the leader" in refused.json()["error"]["message"]
            assert refused.headers["connection"].lower() == "close"

            a.proc.kill()  # no hand-over: the Lease must run out
            a.proc.wait()
            eventually(lambda: leading(b), timeout=60, what="the second replica elected")
            seq = iter(range(3, 1000))

            def granted() -> dict[str, Any] | None:
                got = client.post(
                    f"{b.url}/v1/leases", json=lease_request(namespace, "app-1", next(seq))
                )
                return got.json() if got.status_code == 200 else None

            answer = eventually(granted, what="leases answered by the new leader")
            assert answer["leases"][0]["budget"] == "team"

        # The new leader writes status: an edit after the take-over is observed and reported.
        edited = {
            **BUDGET,
            "spec": {**BUDGET["spec"], "limits": [{"window": "Day", "requests": 7}]},
        }
        apply(cluster, namespace, edited)

        def observed() -> bool:
            got = cluster.kubectl_json("get", "budget/team", "-n", namespace)
            generation = got["metadata"]["generation"]
            return (got.get("status") or {}).get("observedGeneration") == generation

        eventually(observed, timeout=60, what="status of the edited Budget from the new leader")
    finally:
        for op in (a, b):
            if op is not None:
                op.stop()
