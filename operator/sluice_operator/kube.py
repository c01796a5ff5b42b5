"""The only module that writes to the Kubernetes API (and asks it to review tokens).

Owns: applying the per-namespace config ConfigMap (server-side apply, so there is no read-modify-
write race), patching ``status`` subresources with merge patches (no resourceVersion, so no 409
conflicts to loop on), posting Events, and TokenReview for sidecars calling the control plane.
Transient failures (429, 5xx, connection errors) are retried a few times with back-off; a
resource that vanished meanwhile (404) is not an error. Everything else is left to the next
reconcile. The official ``kubernetes`` client is synchronous, so calls run in a worker thread.

It never reads Secrets: the operator's RBAC does not allow it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import configmap
from .api import GROUP, VERSION
from .controlplane import TokenUser
from .inject import annotations as ann

log = logging.getLogger(__name__)
T = TypeVar("T")
FIELD_MANAGER = "sluice-operator"
RETRIES = 3


def load_client(*, kubeconfig_only: bool = False) -> client.ApiClient:
    """An API client from the in-cluster service account, or else from KUBECONFIG (only from
    KUBECONFIG when ``kubeconfig_only``: the out-of-cluster mode)."""
    if kubeconfig_only:
        config.load_kube_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (0, 409, 429) or exc.status >= 500
    return isinstance(exc, OSError)


class Kube:
    """Async façade over the writes the operator makes."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.auth = client.AuthenticationV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.requests = 0  # API requests made, for the scale benchmark

    async def _call(self, fn: Callable[[], T]) -> T | None:
        delay = 0.2
        for attempt in range(RETRIES):
            self.requests += 1
            try:
                return await asyncio.to_thread(fn)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                if not _transient(exc) or attempt == RETRIES - 1:
                    raise
                log.warning(
                    "Kubernetes API %s, retrying in %.1fs: %s", exc.status, delay, exc.reason
                )
            except OSError as exc:
                if attempt == RETRIES - 1:
                    raise
                log.warning("Kubernetes API unreachable, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay *= 3
        return None

    async def apply_config(self, namespace: str, config_json: str, config_hash: str) -> None:
        """Create or update the namespace's config ConfigMap (``configmap.NAME``)."""
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": configmap.NAME,
                "namespace": namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "sluice-operator",
                    "app.kubernetes.io/part-of": "sluice",
                },
                "annotations": {ann.CONFIG_HASH.key: config_hash},
            },
            "data": {configmap.KEY: config_json},
        }
        await self._call(
            lambda: self.core.patch_namespaced_config_map(
                configmap.NAME,
                namespace,
                body,
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
            )
        )

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The leader-election Lease (``leader``), or None when it does not exist."""
        self.requests += 1
        try:
            lease = await asyncio.to_thread(
                lambda: self.coordination.read_namespaced_lease(name, namespace)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        got: dict[str, Any] = self.api.sanitize_for_serialization(lease)  # type: ignore[no-untyped-call]
        return got

    async def write_lease(
        self, namespace: str, name: str, spec: dict[str, Any], version: str | None
    ) -> bool:
        """Create the Lease (``version`` None) or replace the one read at ``version``; False when
        another replica wrote first (409: no retry, the election reads again)."""
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if version is not None:
            meta["resourceVersion"] = version
        body: Any = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }  # the client takes a dict in place of a V1Lease
        self.requests += 1
        try:
            if version is None:
                await asyncio.to_thread(
                    lambda: self.coordination.create_namespaced_lease(namespace, body)
                )
            else:
                await asyncio.to_thread(
                    lambda: self.coordination.replace_namespaced_lease(name, namespace, body)
                )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def read_config(self, namespace: str) -> str | None:
        """The config JSON in the namespace's ``sluice-config`` ConfigMap, or None."""
        cm = await self._call(
            lambda: self.core.read_namespaced_config_map(configmap.NAME, namespace)
        )
        data = getattr(cm, "data", None) or {}
        value = data.get(configmap.KEY)
        return value if isinstance(value, str) else None

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        await self._call(
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                {"status": dict(status)},
                _content_type="application/merge-patch+json",
            )
        )

    async def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about ``obj`` (best effort: failures are logged, not raised)."""
        meta = obj.get("metadata") or {}
        now = dt.datetime.now(dt.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{meta.get('name', 'sluice')}.{uuid.uuid4().hex[:12]}",
                namespace=meta.get("namespace"),
            ),
            involved_object=client.V1ObjectReference(
                api_version=obj.get("apiVersion"),
                kind=obj.get("kind"),
                name=meta.get("name"),
                namespace=meta.get("namespace"),
                uid=meta.get("uid"),
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="sluice-operator"),
            reporting_component="sluice.dev/operator",
            reporting_instance="sluice-operator",
        )
        try:
            await self._call(
                lambda: self.core.create_namespaced_event(str(meta.get("namespace")), body)
            )
        except (ApiException, OSError) as exc:
            log.warning("could not post Event %s on %s: %s", reason, meta.get("name"), exc)

    async def list_objects(self, plural: str) -> list[dict[str, Any]]:
        """Every object of one Sluice kind, cluster-wide (the start-up sync)."""
        result = await self._call(
            lambda: self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        )
        items = result.get("items", []) if isinstance(result, dict) else []
        return [dict(i) for i in items]

    async def list_namespaces(self) -> list[tuple[str, dict[str, str]]]:
        """(name, labels) of every namespace (the start-up sync)."""
        result = await self._call(self.core.list_namespace)
        return [
            (str(ns.metadata.name), dict(ns.metadata.labels or {}))
            for ns in (result.items if result is not None else [])
            if ns.metadata is not None
        ]

    async def review_token(self, token: str, audiences: list[str]) -> TokenUser | None:
        """The authenticated user of a bearer token (username and ``extra`` claims, such as the
        pod a projected token is bound to), or None when it is not valid."""
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=audiences))
        result = await self._call(lambda: self.auth.create_token_review(body))
        if result is None or not result.status or not result.status.authenticated:
            return None
        user = result.status.user
        if not user or not user.username:
            return None
        extra = {str(k): tuple(str(v) for v in vs or ()) for k, vs in (user.extra or {}).items()}
        return TokenUser(str(user.username), extra)


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
