"""The completions translators, without servers: the body passed through (model, cap, usage on
streams), Mistral's FIM mapping and refusals, and ``text_completion`` ↔ canonical chat shapes
both ways without losing a field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice_sidecar import errors
from sluice_sidecar.contract import Backend, Route
from sluice_sidecar.translate import COMPLETIONS, Call, pick
from sluice_sidecar.translate.completions_openai import (
    DIALECT,
    MISTRAL,
    RESHAPE,
    from_chat,
    to_chat,
)


def _call(body: dict[str, Any], provider: str = "openai", stream: bool = False) -> Call:
    b = Backend(name="b", provider=provider, model="bm", base_url="http://x/v1")
    route = Route(name="r", source="r", backends=(b,))
    return Call("completions", route, b, body, stream, False, "k", "id")


def _sent(dialect: Any, call: Call) -> tuple[str, dict[str, Any]]:
    url, payload, headers = dialect.request(call)
    assert headers["Authorization"] == "Bearer k"
    return url, json.loads(payload)


def test_pairs_exist_only_for_openai_style_providers() -> None:
    for provider in ("openai", "openai-compatible", "mistral"):
        assert pick(COMPLETIONS, provider, native=True) is not None  # type: ignore[arg-type]
    for provider in ("anthropic", "gemini", "mock"):
        assert pick(COMPLETIONS, provider, native=True) is None  # type: ignore[arg-type]


def test_the_body_is_passed_through_with_model_and_cap() -> None:
    body = {"model": "m", "prompt": "a", "suffix": "b", "echo": False, "best_of": 2}
    url, sent = _sent(DIALECT, _call(body))
    assert url == "http://x/v1/completions"
    assert sent == {**body, "model": "bm", "max_tokens": 4096}
    _, sent = _sent(DIALECT, _call({"prompt": "a", "max_completion_tokens": 9}, stream=True))
    assert sent["max_tokens"] == 9 and "max_completion_tokens" not in sent
    assert sent["stream_options"] == {"include_usage": True}


def test_mistral_fim_mapping_and_refusals() -> None:
    body = {"model": "m", "prompt": "a", "suffix": "b", "seed": 3, "n": 1, "echo": False}
    url, sent = _sent(MISTRAL, _call(body, "mistral"))
    assert url == "http://x/v1/fim/completions"
    assert sent == {
        "model": "bm",
        "prompt": "a",
        "suffix": "b",
        "random_seed": 3,
        "max_tokens": 4096,
    }
    for field, value in [("n", 2), ("echo", True), ("logprobs", 1), ("user", "u")]:
        with pytest.raises(errors.InvalidField) as exc:
            MISTRAL.request(_call({"prompt": "a", field: value}, "mistral"))
        assert exc.value.param == field
    with pytest.raises(errors.InvalidField) as exc:
        MISTRAL.request(_call({"prompt": ["a", "b"]}, "mistral"))
    assert exc.value.param == "prompt"


def test_shapes_round_trip() -> None:
    whole = {
        "id": "c",
        "object": "text_completion",
        "created": 1,
        "model": "bm",
        "choices": [{"text": "hi", "index": 0, "logprobs": {"x": 1}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    chat = to_chat(whole, "chat.completion")
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    assert from_chat(chat) == whole
    assert json.loads(RESHAPE.answer(json.dumps(chat).encode())) == whole
    chunk = {
        **whole,
        "choices": [{"text": "", "index": 1, "logprobs": None, "finish_reason": None}],
    }
    canonical = to_chat(chunk, "chat.completion.chunk")
    assert canonical["choices"][0]["delta"] == {}
    reshape = RESHAPE.stream()
    out = reshape.feed(b"data: " + json.dumps(canonical).encode() + b"\n\n")
    assert json.loads(out[6:]) == chunk
