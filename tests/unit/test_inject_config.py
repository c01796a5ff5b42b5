"""The MutatingWebhookConfiguration builder, the selector semantics it encodes (every opted-in pod
reaches exactly one webhook, nothing else reaches any), and the injector settings."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from sluice_operator.inject import InjectorSettings, NamespaceFacts
from sluice_operator.inject import annotations as ann
from sluice_operator.inject.config import (
    NAMESPACE_WEBHOOK,
    OBJECT_WEBHOOK,
    ServiceRef,
    mutating_webhook_configuration,
)
from sluice_operator.inject.decide import decide

OPERATOR_NS = "sluice-system"


def build(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("operator_namespace", OPERATOR_NS)
    if "url" not in kwargs:
        kwargs.setdefault("service", ServiceRef("sluice-webhook", OPERATOR_NS))
    return mutating_webhook_configuration(**kwargs)


def test_shape() -> None:
    mwc = build(ca_bundle="Q0E=", failure_policy="Fail", timeout_seconds=3)
    assert mwc["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert mwc["kind"] == "MutatingWebhookConfiguration"
    assert mwc["metadata"] == {"name": "sluice-injector"}
    hooks = mwc["webhooks"]
    assert [h["name"] for h in hooks] == [NAMESPACE_WEBHOOK, OBJECT_WEBHOOK]
    for hook in hooks:
        assert hook["clientConfig"] == {
            "service": {
                "name": "sluice-webhook",
                "namespace": OPERATOR_NS,
                "path": "/mutate-pods",
                "port": 443,
            },
            "caBundle": "Q0E=",
        }
        assert hook["failurePolicy"] == "Fail"
        assert hook["timeoutSeconds"] == 3
        assert hook["sideEffects"] == "None"
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["matchPolicy"] == "Equivalent"
        assert hook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        excluded = hook["namespaceSelector"]["matchExpressions"][1]
        assert excluded == {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-node-lease", "kube-public", "kube-system", OPERATOR_NS],
        }
    json.dumps(mwc)  # plain JSON types only


def test_url_client_config_for_tests_and_no_ca_bundle() -> None:
    mwc = build(url="https://127.0.0.1:8443/mutate-pods")
    for hook in mwc["webhooks"]:
        assert hook["clientConfig"] == {"url": "https://127.0.0.1:8443/mutate-pods"}
        assert hook["failurePolicy"] == "Ignore"
        assert hook["timeoutSeconds"] == 5


def test_extra_expressions_labels_and_annotations() -> None:
    extra = {"key": "team", "operator": "In", "values": ["ml"]}
    mwc = build(
        extra_namespace_expressions=[extra],
        excluded_namespaces=["legacy"],
        labels={"app": "sluice"},
        annotations={"cert-manager.io/inject-ca-from": "sluice-system/webhook"},
    )
    assert mwc["metadata"]["labels"] == {"app": "sluice"}
    assert mwc["metadata"]["annotations"]
    for hook in mwc["webhooks"]:
        expressions = hook["namespaceSelector"]["matchExpressions"]
        assert expressions[-1] == extra
        # kube-system stays excluded whatever the list says
        assert expressions[1]["values"] == ["kube-system", "legacy", OPERATOR_NS]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "https://x", "service": ServiceRef("a", "b")},
        {"url": None, "service": None},
        {"failure_policy": "Sometimes"},
        {"timeout_seconds": 0},
        {"timeout_seconds": 31},
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        mutating_webhook_configuration(operator_namespace=OPERATOR_NS, **kwargs)


# ------------------------------------------------------------------------------------------------
# Selector semantics, evaluated the way the apiserver does


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and (value is None or value not in expr["values"]):
            return False
        if expr["operator"] == "NotIn" and value is not None and value in expr["values"]:
            return False
        if expr["operator"] == "Exists" and value is None:
            return False
        if expr["operator"] == "DoesNotExist" and value is not None:
            return False
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _hooks_called(
    mwc: dict[str, Any], ns: str, ns_labels: dict[str, str], pod_labels: dict[str, str]
) -> list[str]:
    ns_labels = {**ns_labels, "kubernetes.io/metadata.name": ns}
    return [
        h["name"]
        for h in mwc["webhooks"]
        if _matches(h["namespaceSelector"], ns_labels) and _matches(h["objectSelector"], pod_labels)
    ]


VALUES = [None, "true", "false", "other"]
NAMESPACES = ["shop", "kube-system", "kube-public", OPERATOR_NS]


@pytest.mark.parametrize(
    ("ns", "ns_value", "pod_value"), list(itertools.product(NAMESPACES, VALUES, VALUES))
)
def test_each_pod_reaches_at_most_one_webhook_and_agrees_with_decide(
    ns: str, ns_value: str | None, pod_value: str | None
) -> None:
    mwc = build()
    ns_labels = {} if ns_value is None else {ann.INJECT.key: ns_value}
    pod_labels = {} if pod_value is None else {ann.INJECT.key: pod_value}
    called = _hooks_called(mwc, ns, ns_labels, pod_labels)
    assert len(called) <= 1, f"double call: {called}"

    opted_in = pod_value == "true" or (ns_value == "true" and pod_value != "false")
    excluded = ns != "shop"
    assert bool(called) == (opted_in and not excluded)
    if called == [NAMESPACE_WEBHOOK]:
        assert ns_value == "true"
    if called == [OBJECT_WEBHOOK]:
        assert pod_value == "true"

    # whatever reaches the webhook, the decision agrees with the selectors
    if called:
        pod = {"metadata": {"labels": pod_labels}, "spec": {"containers": [{"name": "app"}]}}
        settings = InjectorSettings(operator_namespace=OPERATOR_NS)
        decision = decide(pod, ns, NamespaceFacts(ns, ns_labels), settings)
        assert decision.inject, decision.summary


# ------------------------------------------------------------------------------------------------
# Settings


def test_settings_from_env() -> None:
    settings = InjectorSettings.from_env(
        {
            "SLUICE_OPERATOR_NAMESPACE": "ops",
            "SLUICE_SIDECAR_IMAGE": "reg/sidecar:9",
            "SLUICE_SIDECAR_IMAGE_PULL_POLICY": "Always",
            "SLUICE_SIDECAR_RESOURCES": json.dumps(
                {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": 128}}
            ),
            "SLUICE_NATIVE_SIDECAR": "false",
            "SLUICE_CONTROL_PLANE_URL": "http://cp:9090",
            "SLUICE_TOKEN_AUDIENCE": "aud",
            "SLUICE_EXCLUDED_NAMESPACES": "a, b,,",
            "SLUICE_WEBHOOK_FAIL_CLOSED": "true",
            "UNRELATED": "x",
        },
        version="9",
    )
    assert settings.operator_namespace == "ops"
    assert settings.sidecar_image == "reg/sidecar:9"
    assert settings.image_pull_policy == "Always"
    assert settings.resources == {
        "requests": {"cpu": "10m", "memory": "32Mi"},
        "limits": {"memory": "128"},
    }
    assert settings.native_sidecar is False
    assert settings.control_plane_url == "http://cp:9090"
    assert settings.token_audience == "aud"
    assert settings.excluded_namespaces == frozenset({"a", "b"})
    assert settings.fail_closed is True
    assert settings.version == "9"
    assert settings.excluded("kube-system") and settings.excluded("ops")
    assert not settings.excluded("kube-public")


def test_settings_defaults_from_an_empty_environment() -> None:
    settings = InjectorSettings.from_env({})
    assert settings == InjectorSettings(version=settings.version)
    assert settings.native_sidecar is True
    assert settings.config_file == "/etc/sluice/config/config.json"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLUICE_NATIVE_SIDECAR": "yes"}, "SLUICE_NATIVE_SIDECAR"),
        ({"SLUICE_SIDECAR_IMAGE_PULL_POLICY": "Sometimes"}, "PULL_POLICY"),
        ({"SLUICE_SIDECAR_RESOURCES": "{"}, "not JSON"),
        ({"SLUICE_SIDECAR_RESOURCES": '{"cpu": "1"}'}, "requests and/or limits"),
        ({"SLUICE_SIDECAR_RESOURCES": '{"limits": {"cpu": "lots"}}'}, "not a quantity"),
        ({"SLUICE_WEBHOOK_FAIL_CLOSED": "1"}, "FAIL_CLOSED"),
    ],
)
def test_settings_from_env_rejects_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InjectorSettings.from_env(env)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token_expiration_seconds": 60},
        {"port": 4001},
        {"port": 80},
        {"sidecar_image": ""},
    ],
)
def test_settings_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        InjectorSettings(**kwargs)


def test_pure_modules_do_no_io() -> None:
    """decide, patch, admission, config, cache and settings are pure: only webhook.py does IO."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "operator/sluice_operator/inject"
    forbidden = {"aiohttp", "kopf", "kubernetes", "asyncio", "socket", "ssl", "os", "subprocess"}
    for name in ("decide", "patch", "admission", "config", "cache", "settings", "__init__"):
        tree = ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
                elif node.module in ("webhook", "kube") or (
                    node.module is None and {a.name for a in node.names} & {"webhook", "kube"}
                ):
                    imported.add(f".{node.module}")
        assert not imported & forbidden, f"{name}.py imports {imported & forbidden}"
        assert not {".webhook", ".kube"} & imported, f"{name}.py imports an IO module"
