"""The injection itself: a pod and a decision in, an RFC 6902 JSON patch out.

A purely computational function with no side-effects; the caller performs the IO. The patch only
ever *adds*, and only what is missing, so applying it to a pod that already carries the sidecar
gives an empty patch (idempotent under ``reinvocationPolicy: IfNeeded``, and for pod specs copied
from an injected pod). It creates ``/metadata/annotations``, ``/spec/initContainers``,
``/spec/volumes`` and ``env`` arrays when they are absent, and escapes ``~`` and ``/`` in
annotation keys as JSON Pointer requires (``sluice.dev/status`` → ``sluice.dev~1status``).

What an injected pod gets (besides the sidecar's identity in its env: pod name, namespace, uid,
the control plane's URL and the PEM CA bundle it verifies that URL's certificate with,
``SLUICE_CONTROL_PLANE_CA``):

* the sidecar, by default as a **native sidecar**: first in ``initContainers`` with
  ``restartPolicy: Always`` (Kubernetes 1.29+). The kubelet starts it before the app containers
  and, because it has a ``startupProbe``, starts the app only once the sidecar answers, so the
  app's first LLM call never races the proxy; it is stopped after the app, so in-flight calls can
  finish; and a Job's pod completes when its app container exits. As a plain container
  (``native_sidecar=False`` or ``sluice.dev/native-sidecar: "false"``) none of that holds;
* volumes: the namespace's ``sluice-config`` ConfigMap mounted as a directory (not ``subPath``, so
  the kubelet's updates reach the file), one read-only Secret volume per referenced Secret at
  ``<secretsDir>/<secret>`` with only the referenced keys and ``optional: true`` (a missing
  Secret or key does not block the pod; the sidecar answers 503 for that backend), a projected
  ServiceAccount token (audience ``sluice``, short-lived) for the control plane (and
  ``serviceAccountName: default`` if nothing set one, as the apiserver requires), the pod's labels
  through the downward API (for ``workloadSelector``), and a small ``/tmp``;
* Pod Security "restricted" on the sidecar: non-root UID 65532, no privilege escalation, all
  capabilities dropped, RuntimeDefault seccomp, read-only root filesystem;
* ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL`` on every app container whose ``env`` does not set
  them already (values from ``envFrom`` cannot be seen at admission time and are overridden, as
  ``env`` wins over ``envFrom``; ``sluice.dev/set-base-url: "false"`` opts out);
* the ``sluice.dev/status`` and ``sluice.dev/inject-reason`` annotations and the
  ``sluice.dev/injected: "true"`` label (the fleet's selector). A skipped pod gets only the reason
  annotation (and, from the operator's pod watch, an Event); pods in system namespaces, the
  operator's namespace and mirror pods get nothing at all.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .. import configmap
from . import annotations as ann
from .decide import Decision, containers, effective_ports, metadata, spec, string_map
from .settings import InjectorSettings

JsonPatch = list[dict[str, Any]]

CONFIG_VOLUME = configmap.NAME  # the volume is named after the ConfigMap it mounts
TOKEN_VOLUME = "sluice-token"  # noqa: S105 - a volume name
PODINFO_VOLUME = "sluice-podinfo"
TMP_VOLUME = "sluice-tmp"
SECRET_VOLUME_PREFIX = "sluice-secret-"  # noqa: S105 - a volume name prefix
ADMIN_PORT_NAME = "sluice-admin"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def escape(segment: str) -> str:
    """One JSON Pointer reference token (RFC 6901): ``~`` → ``~0``, then ``/`` → ``~1``."""
    return segment.replace("~", "~0").replace("/", "~1")


def secret_volume_name(secret: str) -> str:
    """A pod volume name (a DNS label, at most 63 characters) for a Secret name.

    Readable when it can be (``sluice-secret-openai``); otherwise a cut-down name plus a hash of
    the full one, so two Secrets never share a volume.
    """
    plain = SECRET_VOLUME_PREFIX + secret
    if len(plain) <= 63 and _DNS_LABEL.match(secret):
        return plain
    digest = hashlib.sha256(secret.encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]+", "-", secret.lower())[:40].strip("-")
    return f"{SECRET_VOLUME_PREFIX}{stem}-{digest}" if stem else f"{SECRET_VOLUME_PREFIX}{digest}"


def status_value(settings: InjectorSettings, native: bool, secrets: Sequence[str]) -> str:
    """The ``sluice.dev/status`` annotation: compact, stable JSON."""
    return json.dumps(
        {
            "version": settings.version,
            "sidecar": settings.sidecar_name,
            "native": native,
            "image": settings.sidecar_image,
            "configMap": settings.config_map,
            "secrets": sorted(secrets),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def security_context(settings: InjectorSettings) -> dict[str, Any]:
    """Pod Security Standards "restricted", and a read-only root filesystem."""
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_user,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def volumes(
    settings: InjectorSettings, secrets: Mapping[str, Sequence[str]]
) -> list[dict[str, Any]]:
    """The volumes the sidecar mounts, in a stable order."""
    out: list[dict[str, Any]] = [
        {
            "name": CONFIG_VOLUME,
            # optional: a namespace whose config is not compiled yet still starts its pods; the
            # sidecar stays unready-for-traffic (503) until the file appears.
            "configMap": {"name": settings.config_map, "optional": True},
        },
        {
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": settings.token_audience,
                            "expirationSeconds": settings.token_expiration_seconds,
                            "path": "token",
                        }
                    }
                ]
            },
        },
        {
            "name": PODINFO_VOLUME,
            "downwardAPI": {
                "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
            },
        },
        {"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    for secret, keys in sorted(secrets.items()):
        out.append(
            {
                "name": secret_volume_name(secret),
                "secret": {
                    "secretName": secret,
                    "optional": True,
                    "items": [{"key": k, "path": k} for k in sorted(set(keys))],
                },
            }
        )
    return out


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def sidecar_container(
    settings: InjectorSettings,
    secrets: Mapping[str, Sequence[str]],
    *,
    native: bool,
    port: int,
    admin_port: int,
    resources: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """The sidecar's container spec (for ``initContainers`` when ``native``)."""
    env: list[dict[str, Any]] = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("POD_UID", "metadata.uid"),
        _field_env("POD_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        {"name": "SLUICE_TOKEN_FILE", "value": f"{settings.token_dir}/token"},
        {"name": "SLUICE_POD_LABELS_FILE", "value": f"{settings.podinfo_dir}/labels"},
    ]
    if settings.control_plane_url:
        env.append({"name": "SLUICE_CONTROL_PLANE_URL", "value": settings.control_plane_url})
    if settings.control_plane_ca:
        env.append({"name": "SLUICE_CONTROL_PLANE_CA", "value": settings.control_plane_ca})
    mounts: list[dict[str, Any]] = [
        {"name": CONFIG_VOLUME, "mountPath": settings.config_dir, "readOnly": True},
        {"name": TOKEN_VOLUME, "mountPath": settings.token_dir, "readOnly": True},
        {"name": PODINFO_VOLUME, "mountPath": settings.podinfo_dir, "readOnly": True},
        {"name": TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
    ]
    mounts += [
        {
            "name": secret_volume_name(secret),
            "mountPath": f"{settings.secrets_dir}/{secret}",
            "readOnly": True,
        }
        for secret in sorted(secrets)
    ]

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": admin_port},
            "periodSeconds": period,
            "timeoutSeconds": 1,
            "failureThreshold": failures,
        }

    container: dict[str, Any] = {
        "name": settings.sidecar_name,
        "image": settings.sidecar_image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": [
            "--config",
            settings.config_file,
            "--secrets-dir",
            settings.secrets_dir,
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            # the API stays on 127.0.0.1; the admin port must be reachable by the kubelet's
            # probes and by Prometheus
            "--admin-host",
            "0.0.0.0",  # noqa: S104
        ],
        "env": env,
        "ports": [{"name": ADMIN_PORT_NAME, "containerPort": admin_port, "protocol": "TCP"}],
        "resources": {section: dict(values) for section, values in resources.items()},
        "securityContext": security_context(settings),
        "volumeMounts": mounts,
        # The app starts only after this succeeds (native sidecar); up to 60 s to come up.
        # No readinessProbe on purpose: a native sidecar's readiness is part of the pod's, and
        # "no config yet" (/readyz 503) must not take every pod of a namespace out of its
        # Services; it shows as sluice_config_loaded=0 and the SluiceConfigNotApplied alert.
        "startupProbe": probe("/healthz", 1, 60),
        "livenessProbe": probe("/healthz", 10, 3),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if native:
        container["restartPolicy"] = "Always"
    return container


def base_url_env(port: int) -> list[dict[str, str]]:
    """The variables the OpenAI and Anthropic SDKs read, pointed at the sidecar."""
    return [
        {"name": "OPENAI_BASE_URL", "value": f"http://127.0.0.1:{port}/v1"},
        {"name": "ANTHROPIC_BASE_URL", "value": f"http://127.0.0.1:{port}"},
    ]


def _add_to_list(ops: JsonPatch, path: str, current: Any, items: Sequence[Any]) -> None:
    """Append ``items`` to the array at ``path``, creating it when absent (or null)."""
    if not items:
        return
    if isinstance(current, list):
        ops.extend({"op": "add", "path": f"{path}/-", "value": item} for item in items)
    else:
        ops.append({"op": "add", "path": path, "value": list(items)})


def _annotation_ops(pod: Mapping[str, Any], wanted: Mapping[str, str]) -> JsonPatch:
    meta = pod.get("metadata")
    current = metadata(pod).get("annotations")
    existing = string_map(current)
    missing = {k: v for k, v in wanted.items() if k not in existing}
    if not missing:
        return []
    if not isinstance(meta, Mapping):
        return [{"op": "add", "path": "/metadata", "value": {"annotations": missing}}]
    if not isinstance(current, Mapping):
        return [{"op": "add", "path": "/metadata/annotations", "value": missing}]
    return [
        {"op": "add", "path": f"/metadata/annotations/{escape(k)}", "value": v}
        for k, v in missing.items()
    ]


def _label_ops(pod: Mapping[str, Any], key: str, value: str) -> JsonPatch:
    current = metadata(pod).get("labels")
    if string_map(current).get(key) == value:
        return []
    if not isinstance(current, Mapping):
        return [{"op": "add", "path": "/metadata/labels", "value": {key: value}}]
    return [{"op": "add", "path": f"/metadata/labels/{escape(key)}", "value": value}]


def build_patch(
    pod: Mapping[str, Any],
    settings: InjectorSettings,
    secrets: Mapping[str, Sequence[str]],
    decision: Decision,
) -> JsonPatch:
    """The JSON patch that carries out ``decision`` on ``pod``; empty when nothing is missing.

    ``secrets`` is the namespace's Secret name → keys (``cache.secret_mounts`` of its config,
    usually read from the cache). Existing annotations, containers, volumes and env entries are
    never replaced.
    """
    if not decision.annotate:
        return []
    annotations_now = string_map(metadata(pod).get("annotations"))
    overrides, _ = ann.parse_pod_overrides(annotations_now)
    native = (
        settings.native_sidecar if overrides.native_sidecar is None else overrides.native_sidecar
    )
    wanted = {ann.INJECT_REASON.key: decision.summary}
    if decision.inject:
        wanted = {ann.STATUS.key: status_value(settings, native, list(secrets)), **wanted}
    ops = _annotation_ops(pod, wanted)
    if not decision.inject:
        return ops
    if isinstance(pod.get("metadata"), Mapping):  # else the annotation op just created it
        ops += _label_ops(pod, ann.INJECTED.key, "true")
    else:
        ops.append({"op": "add", "path": "/metadata/labels", "value": {ann.INJECTED.key: "true"}})

    port, admin_port, _ = effective_ports(overrides, settings)
    resources, _ = ann.merge_resources(settings.resources, overrides.resources)
    sidecar = sidecar_container(
        settings, secrets, native=native, port=port, admin_port=admin_port, resources=resources
    )
    pod_spec = spec(pod)
    init = containers(pod, "initContainers")
    apps = containers(pod, "containers")
    existing = next((c for c in (*init, *apps) if c.get("name") == settings.sidecar_name), None)

    # Volumes: all of ours for a fresh injection; for an existing sidecar, only the ones it
    # mounts that the pod lacks (a copied spec), never new ones it would not use.
    ours = volumes(settings, secrets)
    have = {v.get("name") for v in pod_spec.get("volumes") or [] if isinstance(v, Mapping)}
    if existing is not None:
        mounted = {
            m.get("name") for m in existing.get("volumeMounts") or [] if isinstance(m, Mapping)
        }
        ours = [v for v in ours if v["name"] in mounted]
    _add_to_list(
        ops, "/spec/volumes", pod_spec.get("volumes"), [v for v in ours if v["name"] not in have]
    )

    set_env = overrides.set_base_url is not False
    if set_env:
        for index, container in enumerate(apps):
            if container.get("name") == settings.sidecar_name:
                continue
            env = container.get("env")
            names = {e.get("name") for e in env or [] if isinstance(e, Mapping)}
            _add_to_list(
                ops,
                f"/spec/containers/{index}/env",
                env,
                [e for e in base_url_env(port) if e["name"] not in names],
            )

    if existing is None and not pod_spec.get("serviceAccountName"):
        # A projected token needs a named ServiceAccount. The ServiceAccount admission plugin
        # normally sets "default" before webhooks run; where it has not, we do the same.
        ops.append({"op": "add", "path": "/spec/serviceAccountName", "value": "default"})

    if existing is None:
        if native:
            if isinstance(pod_spec.get("initContainers"), list):
                # first, so that the pod's own init containers can use it too
                ops.append({"op": "add", "path": "/spec/initContainers/0", "value": sidecar})
            else:
                ops.append({"op": "add", "path": "/spec/initContainers", "value": [sidecar]})
        else:
            _add_to_list(ops, "/spec/containers", pod_spec.get("containers"), [sidecar])
    return ops
