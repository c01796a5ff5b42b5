"""The injector's settings: everything the decision, the patch and the webhook are told.

Owns ``InjectorSettings`` (an immutable dataclass with safe defaults) and ``from_env``, which reads
the ``SLUICE_*`` variables the Helm chart sets on the operator's container. Nothing here touches
the Kubernetes API; reading the environment is the caller's business (it passes a mapping in).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

from .. import configmap
from . import annotations as ann

#: Namespaces never injected by default, whatever their labels say (configurable).
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
#: Excluded whatever the configuration says (the operator's own namespace is added too).
ALWAYS_EXCLUDED = frozenset({"kube-system"})

SIDECAR_NAME = "sluice-sidecar"
#: Volumes the injector adds are named with this prefix; pods may not use it themselves.
VOLUME_PREFIX = "sluice-"
NONROOT_UID = 65532


def _package_version() -> str:
    try:
        return metadata.version("sluicegate")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _default_resources() -> dict[str, dict[str, str]]:
    return {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}


@dataclass(frozen=True)
class InjectorSettings:
    """How to inject. Defaults match the chart's ``values.yaml``."""

    sidecar_image: str = "ghcr.io/sluice-dev/sluice-sidecar:latest"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    operator_namespace: str = "sluice-system"
    excluded_namespaces: frozenset[str] = SYSTEM_NAMESPACES
    #: native sidecar (init container, restartPolicy Always; Kubernetes >= 1.29) or a plain one
    native_sidecar: bool = True
    sidecar_name: str = SIDECAR_NAME
    port: int = 4000
    admin_port: int = 4001
    config_map: str = configmap.NAME
    config_key: str = configmap.KEY
    config_dir: str = "/etc/sluice/config"
    secrets_dir: str = "/etc/sluice/secrets"
    podinfo_dir: str = "/etc/sluice/podinfo"
    token_dir: str = "/var/run/secrets/sluice.dev/serviceaccount"  # noqa: S105 - a path
    token_audience: str = "sluice"  # noqa: S105 - an audience name
    token_expiration_seconds: int = 3600
    #: where sidecars reach the operator's control plane; empty = not set on the sidecar
    control_plane_url: str = ""
    #: PEM CA bundle the sidecar trusts for the control plane's HTTPS (env SLUICE_CONTROL_PLANE_CA)
    control_plane_ca: str = ""
    resources: dict[str, dict[str, str]] = field(default_factory=_default_resources)
    run_as_user: int = NONROOT_UID
    #: on an internal webhook error: deny the pod (True) or admit it without a sidecar (False)
    fail_closed: bool = False
    version: str = field(default_factory=_package_version)

    def __post_init__(self) -> None:
        if self.token_expiration_seconds < 600:
            raise ValueError("token_expiration_seconds must be at least 600 (apiserver minimum)")
        if self.port == self.admin_port:
            raise ValueError("port and admin_port must differ")
        for name in ("port", "admin_port"):
            value = getattr(self, name)
            if not 1024 <= value <= 65535:
                raise ValueError(f"{name} must be within 1024-65535, not {value}")
        if not self.sidecar_image:
            raise ValueError("sidecar_image must be set")

    def excluded(self, namespace: str) -> bool:
        """System namespaces, kube-system and the operator's own are never injected."""
        return (
            namespace in self.excluded_namespaces
            or namespace in ALWAYS_EXCLUDED
            or namespace == self.operator_namespace
        )

    @property
    def config_file(self) -> str:
        return f"{self.config_dir}/{self.config_key}"

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> InjectorSettings:
        """Settings from the chart's environment variables (unset ones keep their defaults).

        ``SLUICE_OPERATOR_NAMESPACE``, ``SLUICE_SIDECAR_IMAGE``,
        ``SLUICE_SIDECAR_IMAGE_PULL_POLICY``, ``SLUICE_SIDECAR_RESOURCES`` (JSON ``{requests,
        limits}``), ``SLUICE_NATIVE_SIDECAR``,
        ``SLUICE_CONTROL_PLANE_URL``, ``SLUICE_TOKEN_AUDIENCE``, ``SLUICE_EXCLUDED_NAMESPACES``
        (comma-separated, replaces the default list; kube-system stays excluded),
        ``SLUICE_WEBHOOK_FAIL_CLOSED``.
        Raises ValueError naming the variable on a bad value.
        """
        kwargs: dict[str, Any] = {}

        def boolean(name: str) -> bool:
            text = env[name].strip().lower()
            if text not in ("true", "false"):
                raise ValueError(f"{name}={env[name]!r}: expected true or false")
            return text == "true"

        if env.get("SLUICE_OPERATOR_NAMESPACE"):
            kwargs["operator_namespace"] = env["SLUICE_OPERATOR_NAMESPACE"]
        if env.get("SLUICE_SIDECAR_IMAGE"):
            kwargs["sidecar_image"] = env["SLUICE_SIDECAR_IMAGE"]
        if env.get("SLUICE_SIDECAR_IMAGE_PULL_POLICY"):
            policy = env["SLUICE_SIDECAR_IMAGE_PULL_POLICY"]
            if policy not in ("Always", "IfNotPresent", "Never"):
                raise ValueError(f"SLUICE_SIDECAR_IMAGE_PULL_POLICY={policy!r} is not valid")
            kwargs["image_pull_policy"] = policy
        if env.get("SLUICE_SIDECAR_RESOURCES"):
            kwargs["resources"] = _resources(env["SLUICE_SIDECAR_RESOURCES"])
        if env.get("SLUICE_NATIVE_SIDECAR"):
            kwargs["native_sidecar"] = boolean("SLUICE_NATIVE_SIDECAR")
        if env.get("SLUICE_CONTROL_PLANE_URL"):
            kwargs["control_plane_url"] = env["SLUICE_CONTROL_PLANE_URL"]
        if env.get("SLUICE_TOKEN_AUDIENCE"):
            kwargs["token_audience"] = env["SLUICE_TOKEN_AUDIENCE"]
        if "SLUICE_EXCLUDED_NAMESPACES" in env:
            kwargs["excluded_namespaces"] = frozenset(
                n.strip() for n in env["SLUICE_EXCLUDED_NAMESPACES"].split(",") if n.strip()
            )
        if env.get("SLUICE_WEBHOOK_FAIL_CLOSED"):
            kwargs["fail_closed"] = boolean("SLUICE_WEBHOOK_FAIL_CLOSED")
        kwargs.update(overrides)
        return cls(**kwargs)


def _resources(text: str) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"SLUICE_SIDECAR_RESOURCES is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not set(data) <= {"requests", "limits"}:
        raise ValueError("SLUICE_SIDECAR_RESOURCES must be an object with requests and/or limits")
    out: dict[str, dict[str, str]] = {}
    for section, values in data.items():
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"SLUICE_SIDECAR_RESOURCES.{section} must be an object")
        for name, value in values.items():
            text_value = str(value)
            if ann.parse_quantity(text_value) is None:
                raise ValueError(
                    f"SLUICE_SIDECAR_RESOURCES.{section}.{name}={value!r} is not a quantity"
                )
            out.setdefault(section, {})[str(name)] = text_value
    return out
