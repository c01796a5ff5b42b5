"""Config files (hot reload, last good config, ..data symlink swaps), secrets (missing, rotated,
reported to the operator), the admin port (health, readiness, metrics) and the audit record."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import yaml

from sluice_sidecar.config_source import FileConfig
from sluice_sidecar.contract import BackendState, CredentialRef, Pricing, SidecarConfig
from sluice_sidecar.controlplane_client import Identity, UsageReporter
from sluice_sidecar.credentials import Credentials
from tests.fakes.clock import FakeClock
from tests.fakes.openai_server import FakeOpenAI

from .conftest import StartSidecar, backend, config, route

MSG = [{"role": "user", "content": "a secret prompt that must never be logged"}]


def dump(cfg: SidecarConfig) -> str:
    return json.dumps(cfg.model_dump(mode="json", by_alias=True))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_not_ready_without_valid_config(start_sidecar: StartSidecar, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("routes: [this is: not valid")
    sc = await start_sidecar(str(path))
    status, text = await sc.get(sc.admin_url + "/readyz")
    assert status == 503
    assert "not valid JSON/YAML" in json.loads(text)["configError"]
    assert (await sc.get(sc.admin_url + "/healthz"))[0] == 200
    code, _, body = await sc.post("/v1/chat/completions", {"model": "m", "messages": MSG})
    assert code == 503 and body["error"]["code"] == "config_not_loaded"
    assert "sluice_config_loaded 0.0" in await sc.metrics()


async def test_hot_reload_and_last_good_config(start_sidecar: StartSidecar, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(dump(config(route("one", backend("mock")))))
    source = FileConfig(path, interval=3600)
    sc = await start_sidecar(source)
    assert (await sc.post("/v1/chat/completions", {"model": "one", "messages": MSG}))[0] == 200

    write_atomic(
        path,
        yaml.safe_dump(
            config(route("two", backend("mock"))).model_dump(mode="json", by_alias=True)
        ),
    )
    assert source.reload()
    assert (await sc.post("/v1/chat/completions", {"model": "two", "messages": MSG}))[0] == 200
    assert (await sc.post("/v1/chat/completions", {"model": "one", "messages": MSG}))[0] == 404

    path.write_text('{"namespace": "test", "routes": [{"name": "half')  # a partial write
    assert not source.reload()
    assert (await sc.post("/v1/chat/completions", {"model": "two", "messages": MSG}))[0] == 200
    status, text = await sc.get(sc.admin_url + "/readyz")
    ready = json.loads(text)
    assert status == 200 and ready["configError"] and ready["configHash"]
    metrics = await sc.metrics()
    assert "sluice_config_valid 0.0" in metrics
    assert "sluice_config_reload_failures_total 1.0" in metrics


async def test_semantically_invalid_config_is_rejected(
    start_sidecar: StartSidecar, tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    path.write_text(dump(config(route("ok", backend("mock")))))
    source = FileConfig(path, interval=3600)
    sc = await start_sidecar(source)
    bad: dict[str, Any] = json.loads(dump(config(route("ok", backend("mock")))))
    bad["routes"].append(bad["routes"][0])
    bad["routes"][0]["backends"].append(
        {"name": "x", "provider": "openai-compatible", "model": "m"}
    )
    write_atomic(path, json.dumps(bad))
    assert not source.reload()
    assert source.error is not None
    assert "duplicate route 'ok'" in source.error
    assert "routes[0].backends[1].baseUrl: required" in source.error
    assert (await sc.post("/v1/chat/completions", {"model": "ok", "messages": MSG}))[0] == 200


async def test_kubelet_data_symlink_swap_is_seen(tmp_path: Path) -> None:
    def version(name: str, cfg: SidecarConfig) -> None:
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(dump(cfg))

    version("..2026_a", config(route("one", backend("mock"))))
    os.symlink("..2026_a", tmp_path / "..data")
    os.symlink("..data/config.json", tmp_path / "config.json")
    source = FileConfig(tmp_path / "config.json", interval=3600)
    assert source.current is not None and source.current.routes[0].name == "one"
    version("..2026_b", config(route("two", backend("mock"))))
    os.symlink("..2026_b", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert source.reload()
    assert source.current.routes[0].name == "two"


async def test_missing_secret_fails_that_backend_only(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI, tmp_path: Path
) -> None:
    (tmp_path / "b-key").write_text("sk-b\n")
    a = backend("a", fake, credentials=CredentialRef(secret_name="s", key="a", file="a-key"))
    b = backend("b", fake_b, credentials=CredentialRef(secret_name="s", key="b", file="b-key"))
    sc = await start_sidecar(
        config(route("chat", a, b), route("only-a", a)), secrets_dir=str(tmp_path)
    )
    code, headers, _ = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert code == 200 and headers["x-sluice-backend"] == "b"
    assert fake_b.headers[0]["Authorization"] == "Bearer sk-b"
    assert fake.requests == []
    code, _, body = await sc.post("/v1/chat/completions", {"model": "only-a", "messages": MSG})
    assert code == 503
    assert body["error"]["code"] == "missing_credential"
    assert "a-key" in body["error"]["message"] and "sk-" not in body["error"]["message"]


async def test_rotated_secret_is_used_without_restart(
    start_sidecar: StartSidecar, fake: FakeOpenAI, tmp_path: Path
) -> None:
    key = tmp_path / "key"
    key.write_text("sk-old")
    a = backend("a", fake, credentials=CredentialRef(secret_name="s", key="k", file="key"))
    sc = await start_sidecar(config(route("chat", a)), secrets_dir=str(tmp_path))
    await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    write_atomic(key, "sk-new")
    sc.clock.advance(1.5)
    await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert [h["Authorization"] for h in fake.headers] == ["Bearer sk-old", "Bearer sk-new"]


async def test_secret_path_cannot_escape_the_secrets_dir(
    start_sidecar: StartSidecar, fake: FakeOpenAI, tmp_path: Path
) -> None:
    (tmp_path / "outside").write_text("sk-outside")
    inner = tmp_path / "secrets"
    inner.mkdir()
    a = backend("a", fake, credentials=CredentialRef(secret_name="s", key="k", file="../outside"))
    sc = await start_sidecar(config(route("chat", a)), secrets_dir=str(inner))
    code, _, _ = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert code == 503 and fake.requests == []


async def test_metrics_headers_and_audit(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    priced = backend("a", fake, pricing=Pricing(input_per_mtok=1_000_000, output_per_mtok=2e6))
    sc = await start_sidecar(config(route("chat", priced)))
    code, headers, _ = await sc.post(
        "/v1/chat/completions",
        {"model": "chat", "messages": MSG},
        headers={"x-request-id": "req-1"},
    )
    assert code == 200
    assert headers["x-sluice-route"] == "chat"
    assert headers["x-sluice-backend"] == "a"
    assert headers["x-sluice-attempts"] == "1"
    assert headers["x-request-id"] == "req-1"
    async with (
        __import__("aiohttp").ClientSession() as s,
        s.post(
            sc.url + "/v1/chat/completions",
            json={"model": "chat", "messages": MSG, "stream": True},
        ) as r,
    ):
        await r.read()
    m = await sc.metrics()
    for needle in (
        'gen_ai_client_token_usage_bucket{gen_ai_operation_name="chat",'
        'gen_ai_provider_name="openai-compatible",gen_ai_request_model="chat",'
        'gen_ai_token_type="input",le="16.0",sluice_backend="a"} 2.0',
        "gen_ai_client_operation_duration_seconds_count",
        "gen_ai_server_time_to_first_token_seconds_count",
        'sluice_cost_usd_total{backend="a",route="chat"} 40.0',  # (11 + 2x5) + (11 + 2x4) USD
        'sluice_requests_total{code="200",outcome="ok",route="chat"} 2.0',
        'sluice_upstream_attempts_total{backend="a",result="ok",route="chat"} 2.0',
        'sluice_backend_state{backend="a",route="chat"} 0.0',
        "sluice_config_loaded 1.0",
    ):
        assert needle in m, needle
    rec = sc.audit.records[0]
    assert rec["requestId"] == "req-1"
    assert rec["route"] == "chat" and rec["backend"] == "a" and rec["backendModel"] == "a-model"
    assert rec["inputTokens"] == 11 and rec["outputTokens"] == 5 and rec["costUSD"] == 21.0
    assert rec["status"] == 200 and rec["attempts"] == 1 and rec["configHash"]
    assert "secret prompt" not in json.dumps(sc.audit.records)


async def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    import signal
    import sys

    from tests.fakes.openai_server import free_port

    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(config(route("m", backend("mock"))).model_dump(mode="json", by_alias=True))
    )
    port, admin = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sluice_sidecar",
        "--config",
        str(path),
        "--port",
        str(port),
        "--admin-port",
        str(admin),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    import aiohttp

    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(200):
                try:
                    async with s.get(f"http://127.0.0.1:{admin}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            async with s.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "m", "messages": MSG}
            ) as r:
                assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    record = json.loads(out.decode().splitlines()[0])
    assert record["route"] == "m" and record["outcome"] == "ok"


def test_the_usage_report_names_the_backends_whose_key_cannot_be_read(tmp_path: Path) -> None:
    """The operator cannot read Secrets: the sidecar's report says which keys it cannot read
    (missing, empty, two keys in one file), and a key that appears later clears it."""
    (tmp_path / "good").write_text("sk-good\n")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "two").write_text("sk-one\nsk-two\n")

    def keyed(name: str, file: str) -> Any:
        return backend(name, credentials=CredentialRef(secret_name="s", key=name, file=file))

    cfg = config(
        route("chat", keyed("good", "good"), keyed("gone", "gone"), backend("mock")),
        route("other", keyed("empty", "empty"), keyed("two", "two")),
    )
    clock = FakeClock()
    creds = Credentials(tmp_path, clock)
    missing = creds.missing(cfg.routes)
    assert missing == {("chat", "gone"), ("other", "empty"), ("other", "two")}

    health = [(r.name, b.name, BackendState.HEALTHY, 0) for r in cfg.routes for b in r.backends]
    reporter = UsageReporter(
        Identity(url="https://op", namespace="ns", pod="p", token_file=tmp_path / "t"),
        config_hash=lambda: "h",
        health=lambda: health,
        missing_credentials=lambda: creds.missing(cfg.routes),
    )
    sent = json.loads(reporter.build().model_dump_json(by_alias=True))
    flagged = {(h["route"], h["backend"]) for h in sent["health"] if h.get("credentialsMissing")}
    assert flagged == missing
    # Only a missing key adds the field: a healthy fleet sends what older operators read.
    assert all("credentialsMissing" not in h for h in sent["health"] if h["backend"] == "good")

    (tmp_path / "gone").write_text("sk-now-here")
    assert ("chat", "gone") in creds.missing(cfg.routes)  # re-checked at most once a second
    clock.advance(1.5)
    assert creds.missing(cfg.routes) == {("other", "empty"), ("other", "two")}
