"""Every mainstream client, unchanged, against the sidecar over an openai-compatible, an Anthropic
and a Gemini backend (strict fakes: they refuse unknown fields as the real APIs do). Each test is
one cell of ``clients_matrix.MATRIX``, the table docs/sidecar.md shows."""

from __future__ import annotations

import asyncio
import importlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.fakes import anthropic_server as fa
from tests.fakes import gemini_server as fg
from tests.fakes import openai_server as fo
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import FakeOpenAI

from .clients_matrix import BACKENDS
from .conftest import Sidecar, StartSidecar, backend, config, route

CITY = '{"city": "Oslo"}'
NODE_DIR = Path(__file__).resolve().parents[1] / "node"


class City(BaseModel):
    city: str


@dataclass
class Stack:
    kind: str
    sidecar: Sidecar
    fake: Any

    @property
    def requests(self) -> list[dict[str, Any]]:
        reqs: list[dict[str, Any]] = self.fake.requests
        return reqs

    def text(self, text: str) -> None:
        makers: dict[str, Any] = {"openai-compatible": fo.ok, "anthropic": fa.ok, "gemini": fg.ok}
        self.fake.then(makers[self.kind](text))

    def tool(self, name: str, args: dict[str, Any]) -> None:
        if self.kind == "openai-compatible":
            self.fake.then(fo.tool_call(name, args))
        elif self.kind == "anthropic":
            self.fake.then(fa.tool_use(name, args))
        else:
            self.fake.then(fg.function_call(name, args))


@pytest.fixture(params=BACKENDS)
async def stack(
    request: pytest.FixtureRequest, start_sidecar: StartSidecar
) -> AsyncIterator[Stack]:
    kind: str = request.param
    fake: Any
    if kind == "openai-compatible":
        fake = await FakeOpenAI().start()
        b = backend("b", fake)
    elif kind == "anthropic":
        fake = await FakeAnthropic().start()
        b = backend("b", provider="anthropic", base_url=fake.base_url, model="claude-x")
    else:
        fake = await FakeGemini().start()
        b = backend("b", provider="gemini", base_url=fake.base_url, model="gemini-x")
    sc = await start_sidecar(config(route("m", b)))
    yield Stack(kind, sc, fake)
    await fake.stop()


def oai(sc: Sidecar) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0)


def ant(sc: Sidecar) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sc.url, api_key="x", max_retries=0)


# --- openai -----------------------------------------------------------------------------------


async def test_openai_chat_and_stream(stack: Stack) -> None:
    stack.text("Hello there")
    stack.text("Hello there")
    async with oai(stack.sidecar) as c:
        out = await c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hi"}]
        )
        assert out.choices[0].message.content == "Hello there"
        stream = await c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        finishes, text = [], ""
        async for chunk in stream:
            for ch in chunk.choices:
                text += ch.delta.content or ""
                if ch.finish_reason:
                    finishes.append(ch.finish_reason)
    assert text == "Hello there" and finishes == ["stop"]


async def test_openai_parse_structured_output(stack: Stack) -> None:
    stack.text(CITY)
    async with oai(stack.sidecar) as c:
        out = await c.chat.completions.parse(
            model="m", messages=[{"role": "user", "content": "Where?"}], response_format=City
        )
    assert out.choices[0].message.parsed == City(city="Oslo")
    sent = stack.requests[-1]
    if stack.kind == "anthropic":
        assert sent["output_config"]["format"]["type"] == "json_schema"
        assert sent["output_config"]["format"]["schema"]["properties"]["city"]
    elif stack.kind == "gemini":
        config = sent["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseJsonSchema"]["properties"]["city"]
    else:
        assert sent["response_format"]["type"] == "json_schema"


async def test_openai_responses_unary_and_stream(stack: Stack) -> None:
    stack.text("Hello there")
    stack.text("Hello there")
    async with oai(stack.sidecar) as c:
        out = await c.responses.create(model="m", input="Hi", instructions="Be brief.")
        assert out.output_text == "Hello there" and out.status == "completed"
        assert out.usage is not None and out.usage.output_tokens > 0
        kinds, text = [], ""
        async with c.responses.stream(model="m", input="Hi") as stream:
            async for ev in stream:
                kinds.append(ev.type)
                if ev.type == "response.output_text.delta":
                    text += ev.delta
            final = await stream.get_final_response()
    assert text == "Hello there" and final.output_text == "Hello there"
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.usage is not None


async def test_openai_responses_function_tools_round_trip(stack: Stack) -> None:
    stack.tool("weather", {"city": "Oslo"})
    stack.text("Sunny")
    tools: Any = [
        {
            "type": "function",
            "name": "weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": False,
        }
    ]
    async with oai(stack.sidecar) as c:
        first = await c.responses.create(model="m", input="Weather in Oslo?", tools=tools)
        call: Any = next(i for i in first.output if i.type == "function_call")
        assert json.loads(call.arguments) == {"city": "Oslo"} and call.name == "weather"
        assert len(call.call_id) <= 40 and call.call_id.replace("_", "").replace("-", "").isalnum()
        items: Any = [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": "weather",
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ]
        second = await c.responses.create(model="m", input=items, tools=tools)
    assert second.output_text == "Sunny"
    if stack.kind == "gemini":  # the thought signature kept by the sidecar goes back to Gemini
        parts = stack.requests[-1]["contents"][1]["parts"]
        assert parts[0]["thoughtSignature"] == "c2ln"


async def test_openai_responses_previous_response_id_is_a_clear_400(stack: Stack) -> None:
    async with oai(stack.sidecar) as c:
        with pytest.raises(openai.BadRequestError) as exc:
            await c.responses.create(model="m", input="Hi", previous_response_id="resp_1")
    err: Any = exc.value.body
    assert err["param"] == "previous_response_id" and "stateless" in err["message"]
    assert stack.requests == []


async def test_openai_n2(stack: Stack) -> None:
    async with oai(stack.sidecar) as c:
        if stack.kind == "anthropic":
            with pytest.raises(openai.BadRequestError) as exc:
                await c.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "Hi"}], n=2
                )
            assert exc.value.param == "n"
            assert stack.requests == []
            return
        stack.text("Hi")
        await c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hi"}], n=2
        )
    sent = stack.requests[-1]
    assert sent.get("n") == 2 or sent["generationConfig"]["candidateCount"] == 2


async def test_openai_embeddings(stack: Stack) -> None:
    async with oai(stack.sidecar) as c:
        if stack.kind == "openai-compatible":
            out = await c.embeddings.create(model="m", input="hi")
            assert out.data[0].embedding == [0.1, 0.2]
            return
        with pytest.raises(openai.APIStatusError) as exc:
            await c.embeddings.create(model="m", input="hi")
    # a route none of whose backends serves embeddings: the client's mistake, not a 502
    assert exc.value.status_code == 400 and "no backend that serves embeddings" in exc.value.message


async def test_openai_completions(stack: Stack) -> None:
    async with oai(stack.sidecar) as c:
        if stack.kind != "openai-compatible":
            with pytest.raises(openai.BadRequestError) as exc:
                await c.completions.create(model="m", prompt="def f(", suffix=")")
            assert "no backend that serves completions" in exc.value.message
            assert stack.requests == []
            return
        stack.text("x + 1")
        stack.text("x + 1")
        out = await c.completions.create(model="m", prompt="def f(x):\n    return ", suffix="\n")
        assert out.choices[0].text == "x + 1"
        text = ""
        async for chunk in await c.completions.create(model="m", prompt="def f(", stream=True):
            text += "".join(ch.text for ch in chunk.choices)
    assert text == "x + 1" and stack.requests[0]["suffix"] == "\n"


async def test_openai_responses_pass_through_to_openai(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(config(route("m", backend("o", fake, provider="openai"))))
    async with oai(sc) as c:
        out = await c.responses.create(
            model="m", input="Hi", previous_response_id="resp_0", store=True
        )
        assert out.output_text == "Hello from the fake." and out.previous_response_id == "resp_0"
        async with c.responses.stream(model="m", input="Hi") as stream:
            final = await stream.get_final_response()
    assert final.output_text == "Hello from the fake."
    assert fake.requests[0]["previous_response_id"] == "resp_0"
    assert fake.requests[0]["model"] == "o-model"


# --- anthropic --------------------------------------------------------------------------------


async def test_anthropic_messages_stream_and_tools(stack: Stack) -> None:
    stack.text("Hello there")
    stack.text("Hello there")
    stack.tool("weather", {"city": "Oslo"})
    msgs: Any = [{"role": "user", "content": "Hi"}]
    async with ant(stack.sidecar) as c:
        out = await c.messages.create(model="m", max_tokens=50, messages=msgs)
        assert out.content[0].type == "text" and out.content[0].text == "Hello there"
        async with c.messages.stream(model="m", max_tokens=50, messages=msgs) as stream:
            text = "".join([t async for t in stream.text_stream])
        assert text == "Hello there"
        tools: Any = [{"name": "weather", "input_schema": {"type": "object", "properties": {}}}]
        used = await c.messages.create(model="m", max_tokens=50, messages=msgs, tools=tools)
    block: Any = next(b for b in used.content if b.type == "tool_use")
    assert block.name == "weather" and block.input == {"city": "Oslo"}
    assert used.stop_reason == "tool_use"


async def test_anthropic_parse_structured_output(stack: Stack) -> None:
    stack.text(CITY)
    async with ant(stack.sidecar) as c:
        out = await c.messages.parse(
            model="m",
            max_tokens=50,
            messages=[{"role": "user", "content": "Where?"}],
            output_format=City,
        )
    assert out.parsed_output == City(city="Oslo")
    sent = stack.requests[-1]
    if stack.kind == "openai-compatible":
        assert sent["response_format"]["json_schema"]["schema"]["properties"]["city"]
    elif stack.kind == "gemini":
        assert sent["generationConfig"]["responseJsonSchema"]["properties"]["city"]
    else:
        assert sent["output_config"]["format"]["type"] == "json_schema"


async def test_anthropic_count_tokens(stack: Stack) -> None:
    async with ant(stack.sidecar) as c:
        out = await c.messages.count_tokens(
            model="m",
            messages=[{"role": "user", "content": "Hello, world, how are you?"}],
            extra_headers={"anthropic-beta": "token-counting-2024-11-01"},
        )
    if stack.kind == "anthropic":
        assert out.input_tokens == 42
        assert stack.fake.headers[-1]["anthropic-beta"] == "token-counting-2024-11-01"
    else:
        assert 1 <= out.input_tokens < 42 and stack.requests == []


async def test_anthropic_beta_and_version_forwarded(start_sidecar: StartSidecar) -> None:
    claude = await FakeAnthropic().start()
    try:
        b = backend("c", provider="anthropic", base_url=claude.base_url, model="claude-x")
        sc = await start_sidecar(config(route("m", b)))
        async with ant(sc) as c:
            await c.messages.create(
                model="m",
                max_tokens=5,
                messages=[{"role": "user", "content": "Hi"}],
                extra_headers={
                    "anthropic-beta": "interleaved-thinking-2025-05-14",
                    "anthropic-version": "2099-01-01",
                },
            )
    finally:
        await claude.stop()
    assert claude.headers[0]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert claude.headers[0]["anthropic-version"] == "2099-01-01"  # the client's, not ours


async def test_anthropic_529_stays_overloaded(start_sidecar: StartSidecar) -> None:
    claude = await FakeAnthropic().start()
    claude.default = fa.overloaded()
    try:
        b = backend("c", provider="anthropic", base_url=claude.base_url, model="claude-x")
        sc = await start_sidecar(config(route("m", b)))
        async with ant(sc) as c:
            with pytest.raises(anthropic.OverloadedError) as exc:
                await c.messages.create(
                    model="m", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
                )
    finally:
        await claude.stop()
    assert exc.value.status_code == 529
    body: Any = exc.value.body
    assert body["error"]["type"] == "overloaded_error"


# --- openai-agents ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["responses", "chat"])
async def test_openai_agents_tool_and_output_type(stack: Stack, mode: str) -> None:
    agents: Any = importlib.import_module("agents")  # the [dev] extra installs it
    stack.tool("weather", {"city": "Oslo"})
    stack.text(CITY)
    calls: list[str] = []

    @agents.function_tool  # type: ignore[untyped-decorator]
    def weather(city: str) -> str:
        """The weather of a city."""
        calls.append(city)
        return "sunny"

    client = oai(stack.sidecar)
    model: Any = (
        agents.OpenAIResponsesModel("m", client)
        if mode == "responses"
        else agents.OpenAIChatCompletionsModel("m", client)
    )
    agent = agents.Agent(
        name="a", instructions="Help.", tools=[weather], output_type=City, model=model
    )
    result = await agents.Runner.run(
        agent, "Where is it sunny?", run_config=agents.RunConfig(tracing_disabled=True)
    )
    await client.close()
    assert calls == ["Oslo"] and result.final_output == City(city="Oslo")


# --- langchain-openai -------------------------------------------------------------------------


@pytest.mark.parametrize("responses_api", [False, True])
async def test_langchain_invoke_and_structured_output(stack: Stack, responses_api: bool) -> None:
    lc: Any = importlib.import_module("langchain_openai")  # the [dev] extra installs it
    stack.text("Hello there")
    stack.text(CITY)
    async with httpx.AsyncClient() as http:  # LangChain's default client outlives the loop
        llm = lc.ChatOpenAI(
            model="m",
            base_url=stack.sidecar.base_url,
            api_key="x",
            max_retries=0,
            use_responses_api=responses_api,
            http_async_client=http,
        )
        out = await llm.ainvoke("Hi")
        parsed = await llm.with_structured_output(City).ainvoke("Where?")
    assert out.text == "Hello there"
    assert parsed == City(city="Oslo")


# --- the Vercel AI SDK (Node) -----------------------------------------------------------------


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """``tests/node`` with its packages installed from the lock file (once; then cached)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "node and npm are needed for the Vercel AI SDK tests: apt-get install nodejs npm"
        )
    if not (NODE_DIR / "node_modules" / "ai").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=NODE_DIR,
            check=True,
            timeout=600,
        )
    return NODE_DIR / "clients.mjs"


async def test_ai_sdk_generate_stream_object(stack: Stack, node_clients: Path) -> None:
    for _ in range(3):
        stack.text(CITY)
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(node_clients),
        stack.sidecar.base_url,
        "m",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result == {"generateText": CITY, "streamText": CITY, "generateObject": {"city": "Oslo"}}
