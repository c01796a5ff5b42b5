"""The MutatingWebhookConfiguration that routes pod creations to the injector, as a dict.

A purely computational function with no side-effects; the caller applies the object. The Helm
chart's ``templates/webhook.yaml`` renders the same shape (a chart test compares the two), and the
cluster tests register the webhook with ``url: https://127.0.0.1:PORT/mutate-pods`` from here.

Opt-in with selectors, as Istio does, so pods that are not opted in never reach the webhook (no
latency, no dependency on the operator for them). Two webhooks:

* ``namespace.inject.sluice.dev``: namespaces labelled ``sluice.dev/inject=true``; its
  objectSelector leaves out pods labelled ``sluice.dev/inject=false`` (the opt-out);
* ``object.inject.sluice.dev``: pods labelled ``sluice.dev/inject=true`` in namespaces that are
  *not* labelled true (so no pod is sent twice).

Both exclude the system namespaces and the operator's own with ``kubernetes.io/metadata.name
NotIn`` (the apiserver sets that label on every namespace), so even with ``failurePolicy: Fail``
a broken injector can block neither kube-system nor the operator's recovery. Both are
``sideEffects: None`` (dry-run requests are sent and answered without side effects),
``reinvocationPolicy: IfNeeded`` (called again if a later webhook adds containers, which then get
the base URLs), CREATE only, and ``timeoutSeconds`` is kept within 1-30 (default 5).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import annotations as ann
from .settings import ALWAYS_EXCLUDED, SYSTEM_NAMESPACES

PATH = "/mutate-pods"
DEFAULT_NAME = "sluice-injector"
NAMESPACE_WEBHOOK = "namespace.inject.sluice.dev"
OBJECT_WEBHOOK = "object.inject.sluice.dev"
NAME_LABEL = "kubernetes.io/metadata.name"

FailurePolicy = Literal["Ignore", "Fail"]


@dataclass(frozen=True)
class ServiceRef:
    """The in-cluster Service in front of the operator's webhook port."""

    name: str
    namespace: str
    port: int = 443
    path: str = PATH


def _selector(*expressions: Mapping[str, Any]) -> dict[str, Any]:
    return {"matchExpressions": [dict(e) for e in expressions]}


def _expr(key: str, operator: str, values: Sequence[str]) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


def mutating_webhook_configuration(
    *,
    operator_namespace: str,
    ca_bundle: str = "",
    name: str = DEFAULT_NAME,
    service: ServiceRef | None = None,
    url: str | None = None,
    failure_policy: FailurePolicy = "Ignore",
    timeout_seconds: int = 5,
    excluded_namespaces: Iterable[str] = SYSTEM_NAMESPACES,
    extra_namespace_expressions: Sequence[Mapping[str, Any]] = (),
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The admissionregistration.k8s.io/v1 object. Exactly one of ``service`` / ``url``.

    ``ca_bundle`` is the base64 of the PEM CA (empty: left out, e.g. for cert-manager's CA
    injector). ``extra_namespace_expressions`` narrow both webhooks' namespaceSelector further.
    """
    if (service is None) == (url is None):
        raise ValueError("give exactly one of service or url")
    if failure_policy not in ("Ignore", "Fail"):
        raise ValueError(f"failure_policy must be Ignore or Fail, not {failure_policy!r}")
    if not 1 <= timeout_seconds <= 30:
        raise ValueError(f"timeout_seconds must be within 1-30, not {timeout_seconds}")

    client: dict[str, Any]
    if service is not None:
        client = {
            "service": {
                "name": service.name,
                "namespace": service.namespace,
                "path": service.path,
                "port": service.port,
            }
        }
    else:
        client = {"url": url}
    if ca_bundle:
        client["caBundle"] = ca_bundle

    excluded = _expr(
        NAME_LABEL, "NotIn", sorted({*excluded_namespaces, *ALWAYS_EXCLUDED, operator_namespace})
    )
    key = ann.INJECT.key

    def webhook(
        webhook_name: str, namespaces: dict[str, Any], objects: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "name": webhook_name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": client,
            "failurePolicy": failure_policy,
            "matchPolicy": "Equivalent",
            "namespaceSelector": namespaces,
            "objectSelector": objects,
            "reinvocationPolicy": "IfNeeded",
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["pods"],
                    "scope": "Namespaced",
                }
            ],
            "sideEffects": "None",
            "timeoutSeconds": timeout_seconds,
        }

    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": [
            webhook(
                NAMESPACE_WEBHOOK,
                _selector(_expr(key, "In", ["true"]), excluded, *extra_namespace_expressions),
                _selector(_expr(key, "NotIn", ["false"])),
            ),
            webhook(
                OBJECT_WEBHOOK,
                _selector(_expr(key, "NotIn", ["true"]), excluded, *extra_namespace_expressions),
                _selector(_expr(key, "In", ["true"])),
            ),
        ],
    }
