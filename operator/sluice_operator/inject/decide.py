"""Whether to inject the sidecar into a pod, and why: the decision, never a bare boolean.

A purely computational function with no side-effects; the caller performs the IO. Input: the pod
as the apiserver sent it (a dict; at admission time ``metadata.name`` and ``metadata.namespace``
may be empty, so the namespace is passed separately), what the cache knows about the namespace,
and the settings. Output: a ``Decision`` whose reasons become the pod's
``sluice.dev/inject-reason`` annotation and whose warnings go back in the admission response.

Checks, in order (the first that applies decides):

1. system namespaces (kube-system, kube-public, kube-node-lease) and the operator's own namespace
   are never injected, whatever their labels say, and their pods are not touched at all (not
   even annotated);
2. mirror (static) pods are left untouched: the apiserver does not let them be changed;
3. a pod labelled ``sluice.dev/inject=false`` has opted out;
4. the pod must be opted in: pod label ``true``, or its namespace's label ``true``. A namespace the
   cache has not seen yet is trusted to be opted in, since the webhook's selectors matched;
5. hostNetwork pods are skipped: the sidecar's loopback port would be the node's, shared with
   every other hostNetwork pod on it;
6. a pod carrying ``sluice.dev/status`` is already injected: injection proceeds, and the patch
   adds only what is missing (an empty patch on a complete pod), so re-invocation is a no-op;
7. a container or init container already called like the sidecar, or a volume using the reserved
   ``sluice-`` prefix, is a conflict: **skip** (not deny), with the reason on the pod and an
   admission warning. Denying would block a workload for a naming clash; skipping admits the pod
   unchanged, the operator reports it, and the app's LLM calls fail closed on loopback instead;
8. an app container that declares the sidecar's port or admin port is a conflict: skip (the
   ``sluice.dev/port`` / ``sluice.dev/admin-port`` annotations move the sidecar's ports).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import annotations as ann
from .cache import NamespaceFacts
from .settings import VOLUME_PREFIX, InjectorSettings

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True)
class Decision:
    """The injector's verdict on one pod."""

    inject: bool
    reasons: list[str]
    #: CamelCase reason for Events and metrics: Injected, AlreadyInjected, Skipped<Why>
    code: str
    #: short texts for the admission response's ``warnings`` (shown by kubectl)
    warnings: list[str] = field(default_factory=list)
    #: False: leave the pod entirely untouched, not even the reason annotation (system and
    #: operator namespaces, mirror pods)
    annotate: bool = True

    @property
    def summary(self) -> str:
        """One line for the ``sluice.dev/inject-reason`` annotation."""
        verb = "injected" if self.inject else "skipped"
        return f"{verb}: " + "; ".join(self.reasons)


def _skip(code: str, reason: str, *, warn: bool = False, annotate: bool = True) -> Decision:
    return Decision(
        inject=False,
        reasons=[reason],
        code=f"Skipped{code}",
        warnings=[f"sluice: sidecar not injected: {reason}"] if warn else [],
        annotate=annotate,
    )


def metadata(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = pod.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    value = pod.get("spec")
    return value if isinstance(value, Mapping) else {}


def string_map(value: Any) -> dict[str, str]:
    """A labels/annotations value as a dict of strings (None and junk become empty)."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def containers(pod: Mapping[str, Any], field_name: str) -> list[Mapping[str, Any]]:
    items = spec(pod).get(field_name)
    if not isinstance(items, list):
        return []
    return [c for c in items if isinstance(c, Mapping)]


def _all_containers(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield from containers(pod, "initContainers")
    yield from containers(pod, "containers")


def _declared_ports(c: Mapping[str, Any]) -> set[int]:
    ports = c.get("ports")
    if not isinstance(ports, list):
        return set()
    return {
        p["containerPort"]
        for p in ports
        if isinstance(p, Mapping) and isinstance(p.get("containerPort"), int)
    }


def effective_ports(
    overrides: ann.PodOverrides, settings: InjectorSettings
) -> tuple[int, int, list[str]]:
    """The sidecar's API and admin ports for a pod, and a text per override that had to go."""
    port = overrides.port or settings.port
    admin_port = overrides.admin_port or settings.admin_port
    if port != admin_port:
        return port, admin_port, []
    # only one of the two was overridden, onto the other's default
    if overrides.admin_port is not None:
        return (
            port,
            settings.admin_port,
            [f"ignored {ann.ADMIN_PORT.key}={admin_port}: it is the sidecar's API port"],
        )
    return (
        settings.port,
        admin_port,
        [f"ignored {ann.PORT.key}={port}: it is the sidecar's admin port"],
    )


def decide(
    pod: Mapping[str, Any],
    namespace: str,
    facts: NamespaceFacts | None,
    settings: InjectorSettings,
) -> Decision:
    """Decide about ``pod`` in ``namespace``. Pure: no IO, no clock, no randomness."""
    meta = metadata(pod)
    labels = string_map(meta.get("labels"))
    pod_annotations = string_map(meta.get("annotations"))

    if namespace == settings.operator_namespace:
        return _skip(
            "OperatorNamespace", f'namespace "{namespace}" is the operator\'s own', annotate=False
        )
    if settings.excluded(namespace):
        return _skip(
            "SystemNamespace", f'namespace "{namespace}" is excluded from injection', annotate=False
        )
    if MIRROR_ANNOTATION in pod_annotations:
        return _skip("MirrorPod", "mirror (static) pods cannot be changed", annotate=False)

    pod_label = ann.parse_bool(labels.get(ann.INJECT.key))
    if pod_label is False:
        return _skip("OptedOut", f"pod has label {ann.INJECT.key}=false")
    if pod_label is True:
        why = f"pod has label {ann.INJECT.key}=true"
    elif facts is None:
        why = (
            f"namespace \"{namespace}\" is not in the injector's cache yet; the webhook's "
            "selectors matched, so it is treated as opted in"
        )
    elif ann.parse_bool(facts.labels.get(ann.INJECT.key)) is True:
        why = f'namespace "{namespace}" has label {ann.INJECT.key}=true'
    else:
        return _skip(
            "NotOptedIn",
            f'neither the pod nor namespace "{namespace}" has label {ann.INJECT.key}=true',
        )

    if spec(pod).get("hostNetwork") is True:
        return _skip(
            "HostNetwork",
            "hostNetwork pod: the sidecar's 127.0.0.1 port would be shared with the node",
            warn=True,
        )

    overrides, problems = ann.parse_pod_overrides(pod_annotations)
    warnings = [f"sluice: {p}" for p in problems]

    if ann.STATUS.key in pod_annotations:
        return Decision(
            inject=True,
            reasons=[
                why,
                f"already injected ({ann.STATUS.key} present); adding only what is missing",
            ],
            code="AlreadyInjected",
            warnings=warnings,
        )

    name = settings.sidecar_name
    if any(c.get("name") == name for c in _all_containers(pod)):
        return _skip(
            "NameConflict",
            f'the pod already has a container named "{name}" but no {ann.STATUS.key} annotation; '
            "rename that container to have the sidecar injected",
            warn=True,
        )
    volumes = spec(pod).get("volumes")
    taken = sorted(
        str(v.get("name"))
        for v in (volumes if isinstance(volumes, list) else [])
        if isinstance(v, Mapping) and str(v.get("name", "")).startswith(VOLUME_PREFIX)
    )
    if taken:
        return _skip(
            "VolumeConflict",
            f"volume names starting with {VOLUME_PREFIX!r} are reserved for the sidecar: "
            + ", ".join(taken),
            warn=True,
        )

    port, admin_port, port_problems = effective_ports(overrides, settings)
    _, resource_problems = ann.merge_resources(settings.resources, overrides.resources)
    problems += port_problems + resource_problems
    warnings += [f"sluice: {p}" for p in port_problems + resource_problems]
    for c in _all_containers(pod):
        clash = sorted(_declared_ports(c) & {port, admin_port})
        if clash:
            return _skip(
                "PortConflict",
                f'container "{c.get("name")}" declares port {clash[0]}, which the sidecar needs; '
                f"set {ann.PORT.key} / {ann.ADMIN_PORT.key} to free ports",
                warn=True,
            )

    return Decision(inject=True, reasons=[why, *problems], code="Injected", warnings=warnings)


def missed(
    pod: Mapping[str, Any],
    namespace: str,
    facts: NamespaceFacts | None,
    settings: InjectorSettings,
) -> str | None:
    """Why an existing pod should have the sidecar but does not (the webhook was down or slow
    under ``failurePolicy: Ignore``), or None. Pure; the operator turns it into an Event."""
    if ann.STATUS.key in string_map(metadata(pod).get("annotations")):
        return None
    decision = decide(pod, namespace, facts, settings)
    if not decision.inject:
        return None
    return (
        "pod was created without the Sluice sidecar although it is opted in "
        f"({'; '.join(decision.reasons)}); "
        "the injector webhook was probably unavailable. Its LLM calls have no base URL or keys: "
        "recreate the pod (e.g. kubectl rollout restart) once the operator is ready."
    )


def skipped(
    pod: Mapping[str, Any],
    namespace: str,
    facts: NamespaceFacts | None,
    settings: InjectorSettings,
) -> tuple[str, str] | None:
    """``(reason, message)`` for the Event on a pod the webhook saw and skipped (its
    ``sluice.dev/inject-reason`` says ``skipped: …``), or None. Pure; the reason is the
    decision's code (``SkippedHostNetwork``, ``SkippedPortConflict``, …) and the message the
    webhook's own words, so ``kubectl describe pod`` says why it has no sidecar."""
    said = string_map(metadata(pod).get("annotations")).get(ann.INJECT_REASON.key, "")
    if not said.startswith("skipped: "):
        return None
    decision = decide(pod, namespace, facts, settings)
    code = decision.code if not decision.inject else "SkippedInjection"
    return code, f"Sluice sidecar not injected: {said.removeprefix('skipped: ')}"
