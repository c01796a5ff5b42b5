"""The in-memory facts the webhook needs, filled from watches so admission makes no API calls.

Owns ``InjectionCache``: per namespace, its labels (for the opt-in decision) and the Secrets and
keys its compiled ``SidecarConfig`` references (for the volume mounts), plus a ``synced`` flag the
webhook's ``/readyz`` reports. The operator's kopf handlers are the only writers; the webhook only
reads. Every write replaces a whole immutable entry, so a reader on the event loop (or another
thread) always sees a consistent namespace. No IO and no Kubernetes client here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sluice_sidecar.contract import SidecarConfig


@dataclass(frozen=True)
class NamespaceFacts:
    """What the injector knows about one namespace."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NamespaceConfig:
    """What the injector needs from one namespace's compiled config."""

    #: Secret name → the keys to mount from it (sorted, unique)
    secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    config_hash: str | None = None


_EMPTY = NamespaceConfig()


def secret_mounts(config: SidecarConfig) -> dict[str, tuple[str, ...]]:
    """The Secrets (name → sorted keys) a namespace's compiled config reads credentials from."""
    found: dict[str, set[str]] = {}
    for route in config.routes:
        for backend in route.backends:
            if backend.credentials is not None:
                found.setdefault(backend.credentials.secret_name, set()).add(
                    backend.credentials.key
                )
    return {name: tuple(sorted(keys)) for name, keys in sorted(found.items())}


class InjectionCache:
    """Namespace labels and referenced Secrets, kept current by the operator's watches.

    Writers (the lead's kopf handlers): ``upsert_namespace`` / ``remove_namespace`` from a
    Namespace watch, ``set_config`` (or ``set_secrets``) whenever a namespace's config is compiled,
    ``mark_synced`` once the initial lists are in. Readers (the webhook): ``namespace``,
    ``config``, ``synced``.
    """

    def __init__(self) -> None:
        self._namespaces: dict[str, NamespaceFacts] = {}
        self._configs: dict[str, NamespaceConfig] = {}
        self._synced = False

    # -- writers ---------------------------------------------------------------------------------

    def upsert_namespace(self, name: str, labels: Mapping[str, str] | None) -> None:
        self._namespaces[name] = NamespaceFacts(name, MappingProxyType(dict(labels or {})))

    def remove_namespace(self, name: str) -> None:
        self._namespaces.pop(name, None)
        self._configs.pop(name, None)

    def set_config(self, namespace: str, config: SidecarConfig | None) -> None:
        """Record the namespace's compiled config (None: it has none any more)."""
        if config is None:
            self._configs.pop(namespace, None)
            return
        self.set_secrets(namespace, secret_mounts(config), config.content_hash())

    def set_secrets(
        self,
        namespace: str,
        secrets: Mapping[str, Iterable[str]],
        config_hash: str | None = None,
    ) -> None:
        """Record the Secrets (name → keys) the namespace's config references."""
        frozen = {name: tuple(sorted(set(keys))) for name, keys in sorted(secrets.items())}
        self._configs[namespace] = NamespaceConfig(MappingProxyType(frozen), config_hash)

    def mark_synced(self, synced: bool = True) -> None:
        self._synced = synced

    # -- readers ---------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once the writers have loaded the initial state (the webhook's readiness)."""
        return self._synced

    def namespace(self, name: str) -> NamespaceFacts | None:
        """The namespace's facts, or None when the cache has not seen it."""
        return self._namespaces.get(name)

    def config(self, namespace: str) -> NamespaceConfig:
        """The namespace's Secrets and config hash; empty when it has no compiled config."""
        return self._configs.get(namespace, _EMPTY)
