"""GuardrailPolicy status on the real apiserver: a real sidecar process counts its verdicts,
reports them to the operator, and each policy's status shows blocked / redacted / flagged per
entity over the last hour (an enforced policy and a Monitor canary side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from sluice_cli.devcluster import Cluster

from .operator_proc import start_operator
from .polling import eventually
from .sidecar_proc import SidecarProcess, start_sidecar
from .test_budget_status import apply, bound_token

pytestmark = pytest.mark.cluster

ROUTE = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "ModelRoute",
    "metadata": {"name": "chat"},
    "spec": {
        "backends": [
            {
                "name": "mock",
                "provider": "mock",
                "model": "mock-1",
                "mock": {"reply": "Your card 4111 1111 1111 1111 is on file."},
            }
        ]
    },
}
ENFORCE = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "GuardrailPolicy",
    "metadata": {"name": "filters"},
    "spec": {
        "input": {"pii": {"entities": ["EMAIL"], "action": "Redact"}},
        "output": {"pii": {"entities": ["CREDIT_CARD"], "action": "Block"}},
    },
}
CANARY = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "GuardrailPolicy",
    "metadata": {"name": "canary"},
    "spec": {
        "mode": "Monitor",
        "input": {"pii": {"entities": ["PHONE"], "action": "Block"}},
    },
}
USER = "Write to ann.lee@example.org and bob@example.com, or call +1 415 555 0100."


def ask(side: SidecarProcess) -> str | None:
    client = openai.OpenAI(base_url=side.base_url, api_key="unused", max_retries=0, timeout=10)
    with client:
        out = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": USER}]
        )
    return out.choices[0].finish_reason


def status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = cluster.kubectl_json("get", f"guardrailpolicy/{name}", "-n", namespace)
    return got.get("status") or {}


def test_verdict_counts_reach_each_policys_status(
    cluster: Cluster, sluice_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    op = start_operator(cluster.kubeconfig, tmp_path)
    side: SidecarProcess | None = None
    try:
        for obj in (ROUTE, ENFORCE, CANARY):
            apply(cluster, namespace, obj)
        for name in ("filters", "canary"):
            cluster.kubectl(
                "wait", f"guardrailpolicy/{name}", "-n", namespace, "--for=condition=Ready"
            )
        cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
        config = tmp_path / "config.json"
        config.write_text(cm["data"]["config.json"])
        token = bound_token(cluster, namespace, "p1", tmp_path)
        side = start_sidecar(
            config, tmp_path, control_plane=op.url, namespace=namespace, pod="p1", token_file=token
        )
        # the Monitor canary changes nothing; the enforced policy redacts and blocks the answer
        assert [ask(side), ask(side)] == ["content_filter", "content_filter"]

        def counted() -> dict[str, Any] | None:
            st = status(cluster, namespace, "filters")
            return st if st.get("blocked") == 2 and st.get("redacted") == 4 else None

        st = eventually(
            counted, timeout=60, what="the sidecar's verdicts in GuardrailPolicy status"
        )
        assert st["flagged"] == 0
        verdicts = st["verdicts"]
        assert verdicts["window"] == "1h"
        assert verdicts["entities"] == [
            {"entity": "EMAIL", "blocked": 0, "redacted": 4, "flagged": 0},
            {"entity": "CREDIT_CARD", "blocked": 2, "redacted": 0, "flagged": 0},
        ]
        assert sum(b["blocked"] for b in verdicts["buckets"]) == 2
        assert all(b["start"].endswith("Z") for b in verdicts["buckets"])

        canary = eventually(
            lambda: (
                status(cluster, namespace, "canary").get("flagged") == 2
                and status(cluster, namespace, "canary")
            ),
            timeout=60,
            what="the Monitor canary's flagged count",
        )
        assert (canary["blocked"], canary["redacted"]) == (0, 0)
        assert canary["verdicts"]["entities"] == [
            {"entity": "PHONE", "blocked": 0, "redacted": 0, "flagged": 2}
        ]
        # the printer columns read the same numbers
        table = cluster.kubectl("get", "guardrailpolicies", "-n", namespace, "-o", "wide").stdout
        head, *rows = table.splitlines()
        assert "BLOCKED" in head and "REDACTED" in head and "FLAGGED" in head
        row = next(r.split() for r in rows if r.startswith("filters"))
        assert row[1:5] == ["Enforce", "2", "4", "0"]
    finally:
        if side is not None:
            side.stop()
        op.stop()
