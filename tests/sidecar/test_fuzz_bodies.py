"""Any JSON body, on every client API and through every translator: never a 5xx unless an upstream
failed (FAULTS.md, "Data plane: client → sidecar"). The backends here all answer 400, so every 5xx
would be the sidecar's own failure. Hypothesis bodies are built from valid ones with nested
fields replaced by arbitrary JSON; bounded in examples and time."""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice_sidecar import app as sidecar_app
from sluice_sidecar.contract import BudgetLimit, BudgetRule, Fallback, WindowKind
from sluice_sidecar.metering import MemoryAudit
from tests.sidecar.conftest import backend, config, route

MODELS = ("oai", "ant", "gem", "mock", "embed-only")


async def _refusing_upstream(request: web.Request) -> web.Response:
    await request.read()
    err = {"error": {"message": "no", "type": "invalid_request_error", "code": None}}
    return web.json_response(err, status=400)


class Served:
    """A sidecar (and an upstream that refuses everything) on a loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runners: list[web.AppRunner] = []
        self.port = 0

    def start(self) -> Served:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        up = web.Application()
        up.router.add_post("/{tail:.*}", _refusing_upstream)
        up_port = await self._serve(web.AppRunner(up, access_log=None))
        base = f"http://127.0.0.1:{up_port}"
        once = Fallback(on=())
        rule = BudgetRule(name="day", limits=(BudgetLimit(window=WindowKind.DAY, usd=100.0),))
        cfg = config(
            route("oai", backend("o", base_url=base + "/v1", provider="openai"), fallback=once),
            route("ant", backend("a", base_url=base, provider="anthropic"), fallback=once),
            route("gem", backend("g", base_url=base, provider="gemini"), fallback=once),
            route("mock", backend("m")),
            route("embed-only", backend("e", base_url=base, provider="anthropic"), fallback=once),
        ).model_copy(update={"budgets": (rule,)})
        app = sidecar_app.create_app(cfg, rng=random.Random(1), audit=MemoryAudit())
        self.port = await self._serve(sidecar_app.api_runner(app))

    async def _serve(self, runner: web.AppRunner) -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        assert site._server is not None
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    def stop(self) -> None:
        async def cleanup() -> None:
            for r in reversed(self.runners):
                await r.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    s = Served().start()
    yield s
    s.stop()


# --- bodies --------------------------------------------------------------------------------------
# Rich valid bodies for each API; a case replaces one or two of their values (at any depth) with
# arbitrary JSON, biased towards the wrong types and huge integers, or sends arbitrary JSON.

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**3), max_value=10**3)
    | st.integers(min_value=10**300, max_value=10**320)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.just(1.0)
    | st.text(max_size=8)
)
anything = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
TOOL = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
CHAT = {
    "model": "oai",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:x"}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ],
    "tools": [TOOL],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "metadata": {"k": "v"},
    "max_tokens": 10,
    "n": 1,
    "temperature": 0.5,
    "stop": ["x"],
    "response_format": {"type": "text"},
    "stream": False,
    "stream_options": {"include_usage": True},
    "user": "u",
}
MESSAGES = {
    "model": "ant",
    "max_tokens": 10,
    "system": [{"type": "text", "text": "Be brief."}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "42"}],
                },
                {"type": "image", "source": {"type": "url", "url": "http://x"}},
            ],
        },
    ],
    "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "tool", "name": "f"},
    "metadata": {"user_id": "u"},
    "stop_sequences": ["x"],
    "temperature": 0.5,
    "stream": False,
}
RESPONSES = {
    "model": "oai",
    "instructions": "Be brief.",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ],
    "tools": [{"type": "function", "name": "f", "parameters": {}}],
    "tool_choice": {"type": "function", "name": "f"},
    "max_output_tokens": 10,
    "metadata": {"k": "v"},
    "text": {"format": {"type": "text"}},
    "stream": False,
}
EMBEDDINGS = {"model": "oai", "input": ["a", "b"], "dimensions": 8, "encoding_format": "float"}
BASES = {
    "/v1/chat/completions": CHAT,
    "/v1/messages": MESSAGES,
    "/v1/responses": RESPONSES,
    "/v1/embeddings": EMBEDDINGS,
}


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    path = draw(st.sampled_from(sorted(BASES)))
    body: Any = {
        **BASES[path],
        "model": draw(st.sampled_from(MODELS)),
        "stream": draw(st.booleans()) if path != "/v1/embeddings" else None,
    }
    for _ in range(draw(st.integers(1, 2))):
        where = draw(st.sampled_from(_paths(body)))
        body = _replace(body, where, draw(anything))
    return path, body


cases = mutated() | st.tuples(st.sampled_from(sorted(BASES)), anything)


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(case=cases)
def test_any_json_body_is_never_a_5xx(served: Served, case: tuple[str, Any]) -> None:
    path, body = case
    status, raw = served.post(path, json.dumps(body).encode())
    assert status < 500, (path, body, raw[:500])
    answer = (
        json.loads(raw)
        if raw and not raw.startswith(b"event:") and not raw.startswith(b"data:")
        else None
    )
    if isinstance(answer, dict) and status >= 400:
        assert "error" in answer, answer


M = [{"role": "user", "content": "hi"}]
FINDINGS: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("/v1/chat/completions", {"model": "ant", "messages": M, "tools": ["x"]}, 400, "tools[0]"),
    ("/v1/chat/completions", {"model": "gem", "messages": M, "tools": ["x"]}, 400, "tools[0]"),
    (
        "/v1/chat/completions",
        {"model": "ant", "messages": [{"role": "assistant", "tool_calls": [1]}]},
        400,
        "messages[0].tool_calls[0]",
    ),
    (
        "/v1/chat/completions",
        {"model": "gem", "messages": M, "tool_choice": {"type": "function", "function": "x"}},
        400,
        "tool_choice.function",
    ),
    ("/v1/chat/completions", {"model": "ant", "messages": M, "metadata": [1]}, 400, "metadata"),
    (
        "/v1/chat/completions",
        {"model": "mock", "messages": M, "max_tokens": 10**400},
        400,
        "max_tokens",
    ),
    ("/v1/chat/completions", {"model": "mock", "messages": M, "n": 10**400}, 400, "n"),
    ("/v1/chat/completions", {"model": "mock", "messages": M, "n": 1.0}, 200, None),
    ("/v1/chat/completions", {"model": "", "messages": M}, 400, "model"),
    ("/v1/embeddings", {"model": "embed-only", "input": "hi"}, 400, "model"),
    (
        "/v1/messages",
        {"model": "ant", "max_tokens": 5, "messages": M, "system": [5]},
        400,
        "system[0]",
    ),
    (
        "/v1/messages",
        {"model": "oai", "max_tokens": 5, "messages": M, "metadata": [1]},
        400,
        "metadata",
    ),
    (
        "/v1/messages",
        {"model": "oai", "max_tokens": 5, "messages": M, "tool_choice": "x"},
        400,
        "tool_choice",
    ),
    (
        "/v1/messages",
        {
            "model": "oai",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "x", "content": 5}],
                }
            ],
        },
        400,
        "messages[0].content[0].content",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "param"), FINDINGS)
def test_malformed_nested_fields_are_a_400_naming_the_path(
    served: Served, path: str, body: dict[str, Any], status: int, param: str | None
) -> None:
    got, raw = served.post(path, json.dumps(body).encode())
    assert got == status, raw
    if param is not None:
        assert f"'{param}'" in raw.decode(), raw
        assert "got a string" not in raw.decode() or body.get("model") != ""
