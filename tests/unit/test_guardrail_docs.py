"""The examples of docs/guardrailpolicy.md are what they claim: every GuardrailPolicy in it is
admitted and compiles without problems into the checks the text describes (restore, a Monitor
canary, external classifiers on input and output), and its status example is a valid status."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from sluice_operator import manifests
from sluice_operator.api.guardrailpolicy import GuardrailPolicyStatus
from sluice_operator.compile import compile_namespace
from sluice_operator.manifests import Resource
from sluice_sidecar.contract import Guardrail

DOC = Path(__file__).resolve().parents[2] / "docs" / "guardrailpolicy.md"
ROUTE = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "ModelRoute",
    "metadata": {"name": "chat"},
    "spec": {"backends": [{"name": "m", "provider": "mock", "model": "m"}]},
}


def _blocks() -> list[dict[str, Any]]:
    text = DOC.read_text(encoding="utf-8")
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def _compiled() -> dict[str, Guardrail]:
    resources = []
    for doc in [ROUTE, *(b for b in _blocks() if b.get("kind") == "GuardrailPolicy")]:
        parsed = manifests.parse_object(doc, "docs")
        assert isinstance(parsed, Resource), parsed  # admitted: the spec is valid
        resources.append(parsed)
    result = compile_namespace("default", resources)
    assert not result.problems
    return {g.name: g for g in result.config.guardrails}


def test_every_policy_example_compiles_and_says_what_the_text_says() -> None:
    got = _compiled()
    assert set(got) == {
        "default-filters",
        "keep-customer-data",
        "stricter-injection-canary",
        "support-filters",
    }
    pii = got["keep-customer-data"].input.pii
    assert pii is not None and pii.restore and set(pii.entities) == {"EMAIL", "PHONE"}
    canary = got["stricter-injection-canary"]
    assert canary.mode == "Monitor" and canary.input.prompt_injection is not None
    assert canary.selector.match_labels == {"app": "support-bot", "track": "canary"}
    support = got["support-filters"]
    assert support.input.external is not None and support.output.external is not None
    assert (support.input.external.timeout, support.input.external.failure_mode) == (
        0.3,
        "Closed",
    )
    assert (support.output.external.timeout, support.output.external.failure_mode) == (
        0.5,
        "Open",
    )
    assert support.streaming_mode == "Buffer"


def test_the_status_example_is_a_valid_status() -> None:
    (example,) = [b["status"] for b in _blocks() if set(b) == {"status"}]
    status = GuardrailPolicyStatus.model_validate(example)
    assert status.verdicts is not None
    entities = status.verdicts.entities
    assert sum(e.redacted for e in entities) == status.redacted
    assert sum(e.blocked for e in entities) == status.blocked
    assert sum(e.flagged for e in entities) == status.flagged
    assert sum(b.redacted for b in status.verdicts.buckets) == status.redacted
