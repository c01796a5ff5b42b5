"""The four kinds' models: valid documents pass, invalid ones fail naming the field.

Each invalid case is a valid document with one thing broken; the test asserts the exact field path
and a fragment of the message that `sluice render` shows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from sluice_operator import manifests
from sluice_operator.manifests import ManifestError, Resource

ROUTE: dict[str, Any] = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "ModelRoute",
    "metadata": {"name": "chat", "namespace": "team-a"},
    "spec": {
        "strategy": "Failover",
        "backends": [
            {
                "name": "primary",
                "provider": "openai",
                "model": "gpt-4o-mini",
                "credentials": {"secretRef": {"name": "openai", "key": "api-key"}},
            },
            {"name": "local", "provider": "mock", "model": "mock-1", "weight": 2},
        ],
        "retry": {"attempts": 3, "backoff": "100ms", "retryOn": ["5xx", "429"]},
        "fallback": {"on": ["connectError", "5xx"], "maxRetryAfter": "5s"},
        "timeouts": {"connect": "2s", "firstToken": "10s", "idle": "30s", "total": "1m"},
        "circuitBreaker": {"consecutiveFailures": 3, "baseEjection": "10s", "maxEjection": "5m"},
        "streaming": {"midStreamFailure": "Error"},
        "workloadSelector": {"matchLabels": {"app": "web"}},
    },
}

PROMPT: dict[str, Any] = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "PromptTemplate",
    "metadata": {"name": "support", "namespace": "team-a"},
    "spec": {
        "versions": [
            {
                "version": 1,
                "messages": [{"role": "system", "content": "Help with {{product}}."}],
                "variables": {"product": {"default": "Sluice", "maxLength": 40}},
                "params": {"temperature": 0.2, "max_tokens": 200},
                "route": "chat",
            },
            {"version": 2, "messages": [{"role": "user", "content": "{{q}}"}]},
        ],
        "labels": {"production": 1, "canary": 2},
        "split": {"canary": 10},
    },
}

BUDGET: dict[str, Any] = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "Budget",
    "metadata": {"name": "daily", "namespace": "team-a"},
    "spec": {
        "selector": {"matchLabels": {"team": "a"}, "routes": ["chat"]},
        "limits": [
            {"window": "Day", "timezone": "Europe/Berlin", "usd": 5},
            {"window": "Rolling", "duration": "1h", "tokens": 100000},
        ],
        "rateLimits": {"rpm": 60, "tpm": 100000},
        "alerts": {"thresholds": [50, 80, 100]},
        "onExceeded": {"action": "Downgrade", "route": "cheap"},
    },
}

GUARD: dict[str, Any] = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "GuardrailPolicy",
    "metadata": {"name": "filters", "namespace": "team-a"},
    "spec": {
        "mode": "Enforce",
        "input": {
            "pii": {"entities": ["EMAIL", "CREDIT_CARD"], "action": "Redact"},
            "promptInjection": {"action": "Block", "threshold": 0.7},
            "deny": [{"regex": "(?i)internal only", "action": "Block"}],
            "maxChars": 10000,
            "external": {"url": "https://classifier.internal/check", "failureMode": "Open"},
        },
        "output": {"pii": {"entities": ["API_KEY"]}},
        "streaming": {"mode": "Holdback", "holdbackChars": 32},
    },
}

BASES = {"ModelRoute": ROUTE, "PromptTemplate": PROMPT, "Budget": BUDGET, "GuardrailPolicy": GUARD}


def parse(doc: dict[str, Any]) -> Resource | list[ManifestError]:
    result = manifests.parse_object(doc, "test.yaml: document 1")
    assert result is not None
    return result


@pytest.mark.parametrize("kind", sorted(BASES))
def test_valid_documents_parse(kind: str) -> None:
    result = parse(BASES[kind])
    assert isinstance(result, Resource), result
    assert result.kind.kind == kind
    assert result.namespace == "team-a"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a dotted path (list indices as numbers) in a document; value DELETE removes it."""

    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        key: Any = int(last) if last.isdigit() else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = value

    return apply


DELETE = object()
KEY = "sk-proj-abcdefghijklmnopqrstuvwx"

# (id, kind, mutation, expected field path, message fragment)
INVALID: list[tuple[str, str, Callable[[dict[str, Any]], None], str, str]] = [
    # --- ModelRoute
    ("route-no-backends", "ModelRoute", _set("spec.backends", []), "spec.backends", "at least 1"),
    (
        "route-duplicate-backend",
        "ModelRoute",
        _set("spec.backends.1.name", "primary"),
        "spec.backends",
        "unique",
    ),
    (
        "route-weighted-without-weight",
        "ModelRoute",
        _set("spec.strategy", "Weighted"),
        "spec.backends",
        "weight",
    ),
    (
        "route-zero-weight",
        "ModelRoute",
        _set("spec.backends.1.weight", 0),
        "spec.backends[1].weight",
        "greater than or equal to 1",
    ),
    (
        "route-bad-strategy",
        "ModelRoute",
        _set("spec.strategy", "Random"),
        "spec.strategy",
        "Failover",
    ),
    (
        "route-bad-provider",
        "ModelRoute",
        _set("spec.backends.0.provider", "acme"),
        "spec.backends[0].provider",
        "openai",
    ),
    (
        "route-inline-key-model",
        "ModelRoute",
        _set("spec.backends.0.model", KEY),
        "spec.backends[0].model",
        "inline API key",
    ),
    (
        "route-inline-key-url",
        "ModelRoute",
        _set("spec.backends.1.baseURL", f"https://x.test/?key=AIza{'B' * 30}"),
        "spec.backends[1].baseURL",
        "inline API key",
    ),
    (
        "route-missing-credentials",
        "ModelRoute",
        _set("spec.backends.0.credentials", DELETE),
        "spec.backends[0].credentials",
        "secretRef",
    ),
    (
        "route-compatible-no-url",
        "ModelRoute",
        _set("spec.backends.1.provider", "openai-compatible"),
        "spec.backends[1].baseURL",
        "baseURL",
    ),
    (
        "route-bad-duration",
        "ModelRoute",
        _set("spec.timeouts.total", "10 minutes"),
        "spec.timeouts.total",
        "pattern",
    ),
    (
        "route-retry-zero",
        "ModelRoute",
        _set("spec.retry.attempts", 0),
        "spec.retry.attempts",
        "greater than or equal to 1",
    ),
    (
        "route-unknown-field",
        "ModelRoute",
        _set("spec.backends.0.apiKey", "x"),
        "spec.backends[0].apiKey",
        "unknown field",
    ),
    (
        "route-bad-retry-on",
        "ModelRoute",
        _set("spec.retry.retryOn", ["sometimes"]),
        "spec.retry.retryOn[0]",
        "connectError",
    ),
    (
        "route-bad-backend-name",
        "ModelRoute",
        _set("spec.backends.0.name", "Primary_1"),
        "spec.backends[0].name",
        "pattern",
    ),
    (
        "route-bad-midstream",
        "ModelRoute",
        _set("spec.streaming.midStreamFailure", "Ignore"),
        "spec.streaming.midStreamFailure",
        "Error",
    ),
    (
        "route-secret-without-key",
        "ModelRoute",
        _set("spec.backends.0.credentials.secretRef.key", DELETE),
        "spec.backends[0].credentials.secretRef.key",
        "required",
    ),
    # --- PromptTemplate
    (
        "prompt-no-versions",
        "PromptTemplate",
        _set("spec.versions", []),
        "spec.versions",
        "at least 1",
    ),
    (
        "prompt-label-missing-version",
        "PromptTemplate",
        _set("spec.labels.production", 7),
        "spec.labels",
        "label production points at version 7, which does not exist",
    ),
    (
        "prompt-split-not-label",
        "PromptTemplate",
        _set("spec.split", {"beta": 5}),
        "spec.split",
        "split key beta is not a label",
    ),
    (
        "prompt-split-over-100",
        "PromptTemplate",
        _set("spec.split.canary", 101),
        "spec.split.canary",
        "less than or equal to 100",
    ),
    (
        "prompt-duplicate-version",
        "PromptTemplate",
        _set("spec.versions.1.version", 1),
        "spec.versions",
        "version 1 appears more than once",
    ),
    (
        "prompt-bad-role",
        "PromptTemplate",
        _set("spec.versions.0.messages.0.role", "robot"),
        "spec.versions[0].messages[0].role",
        "system",
    ),
    (
        "prompt-inline-key-content",
        "PromptTemplate",
        _set("spec.versions.0.messages.0.content", f"use {KEY}"),
        "spec.versions[0].messages[0].content",
        "inline API key",
    ),
    (
        "prompt-version-zero",
        "PromptTemplate",
        _set("spec.versions.0.version", 0),
        "spec.versions[0].version",
        "greater than or equal to 1",
    ),
    (
        "prompt-no-messages",
        "PromptTemplate",
        _set("spec.versions.1.messages", []),
        "spec.versions[1].messages",
        "at least 1",
    ),
    (
        "prompt-bad-variable-name",
        "PromptTemplate",
        _set("spec.versions.0.variables", {"1x": {}}),
        "spec.versions[0].variables.1x.[key]",
        "pattern",
    ),
    (
        "prompt-bad-label-name",
        "PromptTemplate",
        _set("spec.labels", {"Prod!": 1}),
        "spec.labels.Prod!.[key]",
        "pattern",
    ),
    # --- Budget
    (
        "budget-no-limits",
        "Budget",
        lambda d: (d["spec"].pop("limits"), d["spec"].pop("rateLimits")),
        "spec.limits",
        "at least one",
    ),
    (
        "budget-thresholds-descending",
        "Budget",
        _set("spec.alerts.thresholds", [80, 50]),
        "spec.alerts.thresholds",
        "ascending",
    ),
    (
        "budget-threshold-over-100",
        "Budget",
        _set("spec.alerts.thresholds", [50, 150]),
        "spec.alerts.thresholds[1]",
        "less than or equal to 100",
    ),
    (
        "budget-threshold-zero",
        "Budget",
        _set("spec.alerts.thresholds", [0, 50]),
        "spec.alerts.thresholds[0]",
        "greater than or equal to 1",
    ),
    (
        "budget-threshold-duplicate",
        "Budget",
        _set("spec.alerts.thresholds", [50, 50]),
        "spec.alerts.thresholds",
        "unique",
    ),
    (
        "budget-limit-empty",
        "Budget",
        _set("spec.limits.0", {"window": "Day"}),
        "spec.limits[0]",
        "usd, tokens or requests",
    ),
    (
        "budget-rolling-no-duration",
        "Budget",
        _set("spec.limits.1.duration", DELETE),
        "spec.limits[1].duration",
        "Rolling",
    ),
    (
        "budget-negative-usd",
        "Budget",
        _set("spec.limits.0.usd", -1),
        "spec.limits[0].usd",
        "greater than 0",
    ),
    (
        "budget-bad-window",
        "Budget",
        _set("spec.limits.0.window", "Fortnight"),
        "spec.limits[0].window",
        "Day",
    ),
    (
        "budget-downgrade-no-route",
        "Budget",
        _set("spec.onExceeded.route", DELETE),
        "spec.onExceeded.route",
        "Downgrade",
    ),
    (
        "budget-string-tokens",
        "Budget",
        _set("spec.limits.1.tokens", "lots"),
        "spec.limits[1].tokens",
        "integer",
    ),
    # --- GuardrailPolicy
    (
        "guard-empty",
        "GuardrailPolicy",
        lambda d: (d["spec"].pop("input"), d["spec"].pop("output")),
        "spec",
        "input or output",
    ),
    (
        "guard-bad-entity",
        "GuardrailPolicy",
        _set("spec.input.pii.entities", ["PASSPORT"]),
        "spec.input.pii.entities[0]",
        "EMAIL",
    ),
    (
        "guard-no-entities",
        "GuardrailPolicy",
        _set("spec.input.pii.entities", []),
        "spec.input.pii.entities",
        "at least 1",
    ),
    (
        "guard-bad-regex",
        "GuardrailPolicy",
        _set("spec.input.deny.0.regex", "(unclosed"),
        "spec.input.deny[0].regex",
        "regular expression",
    ),
    ("guard-bad-mode", "GuardrailPolicy", _set("spec.mode", "Shadow"), "spec.mode", "Enforce"),
    (
        "guard-threshold-over-1",
        "GuardrailPolicy",
        _set("spec.input.promptInjection.threshold", 2),
        "spec.input.promptInjection.threshold",
        "less than or equal to 1",
    ),
    (
        "guard-injection-redact",
        "GuardrailPolicy",
        _set("spec.input.promptInjection.action", "Redact"),
        "spec.input.promptInjection.action",
        "Block or Log",
    ),
    (
        "guard-external-bad-url",
        "GuardrailPolicy",
        _set("spec.input.external.url", "ftp://x"),
        "spec.input.external.url",
        "pattern",
    ),
    (
        "guard-holdback-zero",
        "GuardrailPolicy",
        _set("spec.streaming.holdbackChars", 0),
        "spec.streaming.holdbackChars",
        "greater than or equal to 1",
    ),
    (
        "guard-bad-failure-mode",
        "GuardrailPolicy",
        _set("spec.input.external.failureMode", "Maybe"),
        "spec.input.external.failureMode",
        "Open",
    ),
]


@pytest.mark.parametrize(
    ("kind", "mutate", "path", "fragment"),
    [pytest.param(k, m, p, f, id=i) for i, k, m, p, f in INVALID],
)
def test_invalid_documents_name_the_field(
    kind: str, mutate: Callable[[dict[str, Any]], None], path: str, fragment: str
) -> None:
    doc = copy.deepcopy(BASES[kind])
    mutate(doc)
    result = parse(doc)
    assert isinstance(result, list), "expected validation errors"
    rendered = [str(e) for e in result]
    matching = [e for e in result if e.path == path]
    assert matching, f"no error at {path}: {rendered}"
    assert any(fragment.lower() in e.message.lower() for e in matching), rendered
    assert all(str(e).startswith(f'test.yaml: document 1 ({kind} "') for e in result)


def test_there_are_at_least_30_invalid_cases_across_all_kinds() -> None:
    assert len(INVALID) >= 30
    assert {k for _, k, _, _, _ in INVALID} == set(BASES)


def test_error_message_format() -> None:
    doc = copy.deepcopy(ROUTE)
    doc["spec"]["backends"][1]["weight"] = 0
    result = parse(doc)
    assert isinstance(result, list)
    assert str(result[0]) == (
        'test.yaml: document 1 (ModelRoute "chat"): spec.backends[1].weight: '
        "Input should be greater than or equal to 1"
    )


def test_non_sluice_documents_are_ignored() -> None:
    assert manifests.parse_object({"apiVersion": "v1", "kind": "Secret"}, "x") is None


def test_unknown_kind_and_version_are_errors() -> None:
    doc = {"apiVersion": "sluice.dev/v2", "kind": "Route", "metadata": {"name": "x"}, "spec": {}}
    result = parse(doc)
    assert isinstance(result, list)
    assert {e.path for e in result} == {"apiVersion", "kind"}


def test_missing_name_is_an_error() -> None:
    doc = copy.deepcopy(ROUTE)
    del doc["metadata"]["name"]
    result = parse(doc)
    assert isinstance(result, list)
    assert [e.path for e in result] == ["metadata.name"]


def test_namespace_defaults_to_default() -> None:
    doc = copy.deepcopy(ROUTE)
    del doc["metadata"]["namespace"]
    result = parse(doc)
    assert isinstance(result, Resource)
    assert result.namespace == "default"
