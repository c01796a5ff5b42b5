"""aiohttp's own refusals (a bad request line, method, header; a head that is too large) in the
API's error shape, without a traceback in the log; echoed values truncated (FAULTS.md, "Data
plane: client → sidecar")."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.sidecar.conftest import StartSidecar, backend, config, route


async def _raw(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


BAD = [
    b"FO\x01O /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/chat/completions HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GARBAGE\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", BAD, ids=range(len(BAD)))
async def test_aiohttp_refusals_are_openai_errors_without_tracebacks(
    start_sidecar: StartSidecar, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    sc = await start_sidecar(config(route("chat", backend("m"))))
    with caplog.at_level(logging.INFO):
        status, headers, body = await _raw(sc.url, request_bytes)
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and len(err["message"]) < 400
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


async def test_echoed_values_are_truncated(start_sidecar: StartSidecar) -> None:
    sc = await start_sidecar(config(route("chat", backend("m"))))
    status, _, body = await sc.post(
        "/v1/chat/completions",
        {"model": "m" * 10_000, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 404 and len(body["error"]["message"]) < 400
    status, _, body = await sc.post("/v1/" + "x" * 10_000, {})
    assert status in (400, 404) and len(body["error"]["message"]) < 600
