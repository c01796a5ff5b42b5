"""Request bodies with ``Content-Encoding`` (decoded, the size limit applied after decoding) and
key files that cannot be used as they are (FAULTS.md, "Data plane" and "Config, secrets")."""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from pathlib import Path

import pytest

from sluice_sidecar.contract import CredentialRef, Limits
from tests.fakes.openai_server import FakeOpenAI
from tests.sidecar.conftest import StartSidecar, backend, config, route

BODY = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.mark.parametrize(
    ("encoding", "data"),
    [("gzip", gzip.compress(BODY)), ("deflate", zlib.compress(BODY))],
)
async def test_a_compressed_body_is_decoded(
    start_sidecar: StartSidecar, encoding: str, data: bytes
) -> None:
    sc = await start_sidecar(config(route("chat", backend("m"))))
    status, _, body = await sc.post(
        "/v1/chat/completions",
        data=data,
        headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
    )
    assert status == 200, body


async def test_an_undecodable_body_is_a_400(
    start_sidecar: StartSidecar, caplog: pytest.LogCaptureFixture
) -> None:
    sc = await start_sidecar(config(route("chat", backend("m"))))
    with caplog.at_level(logging.ERROR):
        for enc in ("gzip", "deflate"):
            status, _, body = await sc.post(
                "/v1/chat/completions",
                data=b"\x1f\x8bthis is not gzip at all" * 3,
                headers={"Content-Encoding": enc, "Content-Type": "application/json"},
            )
            assert status == 400, body
            assert "could not be decoded" in body["error"]["message"]
    assert not caplog.records


async def test_a_gzip_bomb_is_refused_after_decoding(start_sidecar: StartSidecar) -> None:
    limit = 1 << 20
    bomb = gzip.compress(b'{"model": "chat", "messages": [], "x": "' + b"0" * (64 << 20) + b'"}')
    assert len(bomb) < limit
    sc = await start_sidecar(
        config(route("chat", backend("m")), limits=Limits(max_request_bytes=limit))
    )
    status, _, body = await sc.post(
        "/v1/chat/completions",
        data=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert status == 413, body


@pytest.mark.parametrize(
    "content",
    ["sk-first\nsk-second\n", "sk-with\x00nul", "\n\n  \n"],
    ids=("two-lines", "control", "blank"),
)
async def test_an_unusable_key_file_falls_over_to_the_next_backend(
    start_sidecar: StartSidecar,
    fake: FakeOpenAI,
    fake_b: FakeOpenAI,
    tmp_path: Path,
    content: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "bad").write_text(content)
    (tmp_path / "good").write_text("sk-good-key\n")
    bad = backend("a", fake, credentials=CredentialRef(secret_name="s", key="a", file="bad"))
    good = backend("b", fake_b, credentials=CredentialRef(secret_name="s", key="b", file="good"))
    sc = await start_sidecar(config(route("chat", bad, good)), secrets_dir=str(tmp_path))
    with caplog.at_level(logging.ERROR):
        status, headers, body = await sc.post("/v1/chat/completions", json.loads(BODY))
    assert status == 200, body
    assert headers["x-sluice-backend"] == "b"
    assert fake.requests == [] and fake_b.headers[0]["Authorization"] == "Bearer sk-good-key"
    assert sc.audit.records[-1]["tries"][0]["reason"] == "missing_credential"
    assert not caplog.records
