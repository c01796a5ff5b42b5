"""``POST /v1/completions`` (text completions: FIM and autocomplete clients) through the official
``openai`` SDK's ``completions.create``, unary and streamed, against the strict OpenAI fake (it
refuses unknown fields) and Mistral's FIM API; a route that cannot serve it is a 400; the
guardrails see the prompt and the suffix, and check the generated text or refuse."""

from __future__ import annotations

import openai
import pytest

from sluice_sidecar.contract import GuardAction, Guardrail, GuardStage, PiiRule, SidecarConfig
from tests.fakes import openai_server as fo
from tests.fakes.openai_server import FakeOpenAI

from .conftest import Sidecar, StartSidecar, backend, config, route


def _client(sc: Sidecar) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0)


async def _stream(sc: Sidecar, **kw: object) -> tuple[str, list[str], object]:
    text, finishes, usage = "", [], None
    async with _client(sc) as c:
        stream = await c.completions.create(model="m", stream=True, **kw)  # type: ignore[call-overload]
        async for chunk in stream:
            assert chunk.object == "text_completion"
            usage = chunk.usage or usage
            for ch in chunk.choices:
                text += ch.text
                if ch.finish_reason:
                    finishes.append(ch.finish_reason)
    return text, finishes, usage


@pytest.mark.parametrize("provider", ["openai-compatible", "openai"])
async def test_unary_and_stream_pass_the_body_through(
    start_sidecar: StartSidecar, fake: FakeOpenAI, provider: str
) -> None:
    sc = await start_sidecar(config(route("m", backend("b", fake, provider=provider))))
    fake.then(fo.ok("return a + b"), fo.ok("return a + b"))
    async with _client(sc) as c:
        out = await c.completions.create(
            model="m", prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))", max_tokens=20
        )
    assert out.object == "text_completion" and out.choices[0].text == "return a + b"
    assert out.choices[0].finish_reason == "stop" and out.usage is not None
    assert out.usage.prompt_tokens == 3
    sent = fake.requests[-1]
    assert sent["model"] == "b-model" and sent["suffix"] == "\n\nprint(add(1, 2))"
    assert sent["max_tokens"] == 20 and sent["prompt"] == "def add(a, b):\n    "

    text, finishes, usage = await _stream(
        sc, prompt="def add(a, b):", stream_options={"include_usage": True}, temperature=0
    )
    assert text == "return a + b" and finishes == ["stop"] and usage is not None
    sent = fake.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["temperature"] == 0 and sent["max_tokens"] > 0  # the default cap


async def test_several_prompts_and_choices(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    sc = await start_sidecar(config(route("m", backend("b", fake))))
    fake.then(fo.ok("x"), fo.ok("y z"))
    async with _client(sc) as c:
        out = await c.completions.create(model="m", prompt=["a", "b"], n=2)
    assert [ch.index for ch in out.choices] == [0, 1, 2, 3]
    text, finishes, _ = await _stream(sc, prompt="a", n=2)
    assert text == "y zy z" and finishes == ["stop", "stop"]


async def test_a_route_without_a_completions_backend_is_a_400(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    cfg = config(
        route("m", backend("a", provider="anthropic", base_url=fake.base_url, model="claude-x"))
    )
    sc = await start_sidecar(cfg)
    async with _client(sc) as c:
        with pytest.raises(openai.BadRequestError) as exc:
            await c.completions.create(model="m", prompt="x")
    assert "no backend that serves completions" in exc.value.message
    assert exc.value.param == "model" and fake.requests == []


async def test_bad_fields_are_a_400_naming_them(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(config(route("m", backend("b", fake))))
    for body, param in [
        ({"model": "m"}, "prompt"),
        ({"model": "m", "prompt": [{"x": 1}]}, "prompt[0]"),
        ({"model": "m", "prompt": "x", "suffix": 5}, "suffix"),
        ({"model": "m", "prompt": "x", "max_tokens": "10"}, "max_tokens"),
    ]:
        status, _, answer = await sc.post("/v1/completions", body)
        assert status == 400 and answer["error"]["param"] == param, answer
    assert fake.requests == []


async def test_mistral_fim(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    sc = await start_sidecar(config(route("m", backend("b", fake, provider="mistral"))))
    fake.then(fo.ok("return a + b"), fo.ok("return a + b"))
    async with _client(sc) as c:
        out = await c.completions.create(model="m", prompt="def f(", suffix=")", seed=7)
        assert out.choices[0].text == "return a + b" and out.object == "text_completion"
        sent = fake.requests[-1]
        assert sent["random_seed"] == 7 and sent["suffix"] == ")" and "seed" not in sent
        text, finishes, _ = await _stream(sc, prompt="def f(")
        assert text == "return a + b" and finishes == ["stop"]
        with pytest.raises(openai.BadRequestError) as exc:
            await c.completions.create(model="m", prompt="x", logprobs=2)
        assert exc.value.param == "logprobs"
    assert len(fake.requests) == 2


# --- guardrails ---------------------------------------------------------------------------------

EMAIL = "Write to ann.lee@example.org"


def _guarded(fake: FakeOpenAI, stage: GuardStage, where: str = "input") -> SidecarConfig:
    g = Guardrail(name="g", **{where: stage})  # type: ignore[arg-type]
    return config(route("m", backend("b", fake))).model_copy(update={"guardrails": (g,)})


async def test_input_checks_see_prompt_and_suffix(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    redact = GuardStage(pii=PiiRule(entities=("EMAIL",), action=GuardAction.REDACT))
    sc = await start_sidecar(_guarded(fake, redact), pod_labels={})
    async with _client(sc) as c:
        await c.completions.create(model="m", prompt=[EMAIL, "x"], suffix=EMAIL)
    sent = fake.requests[-1]
    assert "ann.lee" not in str(sent) and sent["prompt"][1] == "x"

    block = GuardStage(pii=PiiRule(entities=("EMAIL",), action=GuardAction.BLOCK))
    sc = await start_sidecar(_guarded(fake, block), pod_labels={})
    async with _client(sc) as c:
        for kw in ({"prompt": EMAIL}, {"prompt": "x", "suffix": EMAIL}):
            with pytest.raises(openai.APIStatusError):
                await c.completions.create(model="m", **kw)  # type: ignore[call-overload]
    assert len(fake.requests) == 1


async def test_output_checks_on_the_stream_and_a_400_for_a_whole_answer(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    out = GuardStage(pii=PiiRule(entities=("EMAIL",), action=GuardAction.REDACT))
    sc = await start_sidecar(_guarded(fake, out, "output"), pod_labels={})
    fake.then(fo.ok("mail jane.doe@example.com today"))
    text, finishes, _ = await _stream(sc, prompt="x")
    assert "jane.doe" not in text and text.startswith("mail ") and text.endswith(" today")
    assert finishes == ["stop"]
    async with _client(sc) as c:
        with pytest.raises(openai.BadRequestError) as exc:
            await c.completions.create(model="m", prompt="x")
        assert exc.value.param == "stream" and "output checks" in exc.value.message
        with pytest.raises(openai.BadRequestError) as exc:
            await c.completions.create(model="m", prompt="x", stream=True, logprobs=1)
        assert exc.value.param == "logprobs"
    assert len(fake.requests) == 1

    block = GuardStage(pii=PiiRule(entities=("EMAIL",), action=GuardAction.BLOCK))
    sc = await start_sidecar(_guarded(fake, block, "output"), pod_labels={})
    fake.then(fo.ok("mail jane.doe@example.com today"))
    text, finishes, _ = await _stream(sc, prompt="x")
    assert "jane.doe" not in text and finishes == ["content_filter"]
