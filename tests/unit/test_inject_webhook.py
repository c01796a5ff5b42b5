"""The injector webhook over real HTTP: AdmissionReview JSON in, AdmissionReview out.

Covers the happy path, dry-run (same answer, nothing recorded), malformed reviews, kube-system,
hostNetwork, non-pod requests, internal errors (fail open, or closed when configured), readiness,
and TLS serving with certificate rotation.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from sluice_cli.devcluster import Pki
from sluice_operator.inject import InjectionCache, InjectorSettings
from sluice_operator.inject import annotations as ann
from sluice_operator.inject.admission import Outcome
from sluice_operator.inject.webhook import PATH, create_webhook_app, start_webhook

SETTINGS = InjectorSettings(sidecar_image="sidecar:test", operator_namespace="sluice-system")


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}], **spec},
    }


def review(
    obj: Any = None,
    *,
    namespace: str = "shop",
    uid: str = "3f0c2a4e-1111-2222-3333-444455556666",
    dry_run: bool = False,
    operation: str = "CREATE",
    kind: str = "Pod",
    resource: str = "pods",
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod() if obj is None else obj,
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


@pytest.fixture
def cache() -> InjectionCache:
    c = InjectionCache()
    c.upsert_namespace("shop", {ann.INJECT.key: "true"})
    c.upsert_namespace("kube-system", {ann.INJECT.key: "true"})
    c.set_secrets("shop", {"openai": ["api-key"]}, "abc123")
    c.mark_synced()
    return c


@pytest.fixture
def recorded() -> list[Outcome]:
    return []


@pytest.fixture
async def client(
    cache: InjectionCache, recorded: list[Outcome]
) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_webhook_app(SETTINGS, cache, recorder=recorded.append)
    async with TestClient(TestServer(app)) as c:
        yield c


async def post(client: TestClient[Any, Any], body: Any) -> dict[str, Any]:
    resp = await client.post(PATH, json=body)
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    assert data["apiVersion"] == "admission.k8s.io/v1"
    assert data["kind"] == "AdmissionReview"
    return data["response"]  # type: ignore[no-any-return]


def apply(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "patch" not in response:
        return obj
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(obj, ops)
    return result


# ------------------------------------------------------------------------------------------------


async def test_opted_in_pod_is_patched(
    client: TestClient[Any, Any], recorded: list[Outcome]
) -> None:
    body = review()
    response = await post(client, body)
    assert response["uid"] == body["request"]["uid"]
    assert response["allowed"] is True
    assert response["auditAnnotations"] == {"decision": "Injected"}
    injected = apply(body["request"]["object"], response)
    assert injected["spec"]["initContainers"][0]["name"] == "sluice-sidecar"
    assert any(v["name"] == "sluice-secret-openai" for v in injected["spec"]["volumes"])
    assert [o.decision.code for o in recorded if o.decision] == ["Injected"]
    assert recorded[0].pod == "web-<generated>"

    # the apiserver re-invokes (reinvocationPolicy IfNeeded): nothing more to add
    again = await post(client, review(injected))
    assert "patch" not in again
    assert again["auditAnnotations"] == {"decision": "AlreadyInjected"}


async def test_dry_run_answers_the_same_and_records_nothing(
    client: TestClient[Any, Any], recorded: list[Outcome]
) -> None:
    real = await post(client, review())
    recorded.clear()
    dry = await post(client, review(dry_run=True))
    assert dry["patch"] == real["patch"]
    assert recorded == []


async def test_kube_system_is_admitted_untouched(client: TestClient[Any, Any]) -> None:
    response = await post(client, review(namespace="kube-system"))
    assert response["allowed"] is True
    assert "patch" not in response
    assert response["auditAnnotations"] == {"decision": "SkippedSystemNamespace"}


async def test_operator_namespace_is_admitted_untouched(client: TestClient[Any, Any]) -> None:
    response = await post(client, review(pod(), namespace="sluice-system"))
    assert "patch" not in response


async def test_host_network_pod_is_annotated_and_warned(client: TestClient[Any, Any]) -> None:
    body = review(pod(hostNetwork=True))
    response = await post(client, body)
    assert response["allowed"] is True
    assert response["auditAnnotations"] == {"decision": "SkippedHostNetwork"}
    assert any("hostNetwork" in w for w in response["warnings"])
    result = apply(body["request"]["object"], response)
    assert result["spec"] == body["request"]["object"]["spec"]
    assert result["metadata"]["annotations"][ann.INJECT_REASON.key].startswith("skipped: hostNet")


async def test_not_a_pod_create_is_admitted_unchanged(client: TestClient[Any, Any]) -> None:
    for body in (
        review(operation="UPDATE"),
        review(kind="Deployment", resource="deployments"),
    ):
        response = await post(client, body)
        assert response == {"uid": body["request"]["uid"], "allowed": True}


async def test_namespace_from_the_object_when_the_request_has_none(
    client: TestClient[Any, Any],
) -> None:
    obj = pod()
    obj["metadata"]["namespace"] = "shop"
    response = await post(client, review(obj, namespace=""))
    assert "patch" in response


@pytest.mark.parametrize(
    ("body", "status_text"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}', "expected"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request is missing"),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}',
            "uid",
        ),
    ],
)
async def test_unanswerable_bodies_get_400(
    client: TestClient[Any, Any], body: bytes, status_text: str
) -> None:
    resp = await client.post(PATH, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert status_text in await resp.text()


async def test_malformed_object_is_admitted_with_a_warning(
    client: TestClient[Any, Any], recorded: list[Outcome]
) -> None:
    body = review()
    body["request"]["object"] = "not a pod"
    response = await post(client, body)
    assert response["allowed"] is True
    assert "patch" not in response
    assert "injector error" in response["warnings"][0]
    assert recorded[-1].error is not None


class BrokenCache(InjectionCache):
    def namespace(self, name: str) -> Any:
        raise RuntimeError("boom")


async def test_internal_error_fails_open_by_default() -> None:
    app = create_webhook_app(SETTINGS, BrokenCache())
    async with TestClient(TestServer(app)) as client:
        response = await post(client, review())
    assert response["allowed"] is True
    assert "RuntimeError: boom" in response["warnings"][0]


async def test_internal_error_fails_closed_when_configured() -> None:
    app = create_webhook_app(dataclasses.replace(SETTINGS, fail_closed=True), BrokenCache())
    async with TestClient(TestServer(app)) as client:
        response = await post(client, review())
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "boom" in response["status"]["message"]


async def test_a_failing_recorder_does_not_change_the_answer(cache: InjectionCache) -> None:
    def explode(outcome: Outcome) -> None:
        raise ValueError("recorder down")

    app = create_webhook_app(SETTINGS, cache, recorder=explode)
    async with TestClient(TestServer(app)) as client:
        response = await post(client, review())
    assert response["allowed"] is True
    assert "patch" in response


async def test_health_and_readiness(cache: InjectionCache) -> None:
    fresh = InjectionCache()
    app = create_webhook_app(SETTINGS, fresh)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 503
        fresh.mark_synced()
        assert (await client.get("/readyz")).status == 200


async def test_unknown_namespace_relies_on_the_selectors(client: TestClient[Any, Any]) -> None:
    response = await post(client, review(namespace="brand-new"))
    assert "patch" in response
    result = apply(review()["request"]["object"], response)
    assert "not in the injector's cache" in result["metadata"]["annotations"][ann.INJECT_REASON.key]


# ------------------------------------------------------------------------------------------------
# TLS


def _issue(pki: Pki, directory: Path) -> tuple[Path, Path]:
    return pki.issue(
        "sluice-webhook.sluice-system.svc",
        directory / "tls.crt",
        directory / "tls.key",
        hosts=("127.0.0.1",),
        server=True,
    )


async def _peer_serial(port: int, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


async def test_serves_https_and_reloads_a_rotated_certificate(
    tmp_path: Path, cache: InjectionCache
) -> None:
    pki = Pki.create(tmp_path / "pki")
    certs = tmp_path / "certs"
    cert, key = _issue(pki, certs)
    first = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    app = create_webhook_app(SETTINGS, cache)
    server = await start_webhook(app, "127.0.0.1", 0, str(cert), str(key), reload_interval=0.05)
    try:
        assert server.port > 0
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        async with aiohttp.ClientSession() as session:
            url = f"https://127.0.0.1:{server.port}{PATH}"
            async with session.post(url, json=review(), ssl=ctx) as resp:
                assert resp.status == 200
                assert "patch" in (await resp.json())["response"]
        assert await _peer_serial(server.port, pki.ca_cert) == first

        # rotate: the kubelet swaps the Secret volume's files; no restart needed
        staging = tmp_path / "staging"
        new_cert, new_key = _issue(pki, staging)
        second = x509.load_pem_x509_certificate(new_cert.read_bytes()).serial_number
        new_key.replace(key)
        new_cert.replace(cert)
        for _ in range(100):
            if await _peer_serial(server.port, pki.ca_cert) == second:
                break
            await asyncio.sleep(0.05)
        assert await _peer_serial(server.port, pki.ca_cert) == second
    finally:
        await server.close()
