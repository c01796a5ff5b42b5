"""The wire as providers really send it, in the projects' own fixtures written from the providers'
documented formats: Mistral tool-call deltas without ``index``, older Gemini streams with ``STOP``
on every event and a recitation stop after them, Gemini signatures behind short ids, and the
Responses translator's request checks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice_sidecar import errors, sse
from sluice_sidecar.contract import Backend, Route
from sluice_sidecar.translate import openai_gemini, openai_openai, responses_chat
from sluice_sidecar.translate.base import Call
from sluice_sidecar.translate.signatures import SignatureStore, portable


def call(provider: str = "mistral", **kw: Any) -> Call:
    b = Backend(name="b", provider=provider, model="m")
    r = Route(name="r", source="r", backends=(b,))
    return Call("chat", r, b, kw.pop("body", {}), True, False, None, "rid", **kw)


def frames(out: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(ev.data) for ev in sse.Parser().feed(b"".join(out)) if ev.data != "[DONE]"]


def test_mistral_tool_call_deltas_get_an_index() -> None:
    # Mistral's documented stream: the whole call in one chunk, without "index"
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "mistral-large-latest",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "content": None,
                    "tool_calls": [
                        {"id": "a1", "function": {"name": "f", "arguments": "{}"}},
                        {"id": "a2", "function": {"name": "g", "arguments": "{}"}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    dec = openai_openai.OpenAIStream(call())
    out: list[bytes] = []
    dec.feed(b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n", out)
    calls = frames(out)[0]["choices"][0]["delta"]["tool_calls"]
    assert [c["index"] for c in calls] == [0, 1]


def gemini_event(text: str | None, finish: str | None) -> bytes:
    cand: dict[str, Any] = {"index": 0}
    if text is not None:
        cand["content"] = {"role": "model", "parts": [{"text": text}]}
    if finish:
        cand["finishReason"] = finish
    return b"data: " + json.dumps({"candidates": [cand]}).encode() + b"\r\n\r\n"


def test_gemini_stop_on_every_event_then_recitation_gives_one_finish_reason() -> None:
    dec = openai_gemini.StreamTranslator("g", 1, "gemini-x", False)
    out: list[bytes] = []
    for ev in (
        gemini_event("A", "STOP"),
        gemini_event("B", "STOP"),
        gemini_event(None, "RECITATION"),
    ):
        dec.feed(ev, out)
    out += dec.end()
    finishes = [c["finish_reason"] for f in frames(out) for c in f["choices"] if c["finish_reason"]]
    assert finishes == ["content_filter"]


def test_gemini_signature_kept_behind_a_short_id_in_streams() -> None:
    store = SignatureStore()
    sig = "Cq0B" + "x/+=" * 120  # ~480 characters of base64, as Gemini sends them
    part = {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": sig}
    ev = {"candidates": [{"index": 0, "content": {"parts": [part]}, "finishReason": "STOP"}]}
    dec = openai_gemini.StreamTranslator("g", 1, "gemini-x", False, store)
    out: list[bytes] = []
    dec.feed(b"data: " + json.dumps(ev).encode() + b"\r\n\r\n", out)
    out += dec.end()
    tc = frames(out)[0]["choices"][0]["delta"]["tool_calls"][0]
    assert portable(tc["id"]) and store.get(tc["id"]) == sig


def test_signature_store_is_bounded() -> None:
    store = SignatureStore(capacity=2)
    for k in range(3):
        store.put(f"c{k}", "s")
    assert len(store) == 2 and store.get("c0") is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": [{"type": "reasoning"}]}, "input[0].type"),
        ({"model": "m", "input": "x", "n": 2}, "n"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format"),
    ],
)
def test_responses_bad_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.InvalidField) as exc:
        responses_chat.to_chat_request(body)
    assert exc.value.param == param


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"store": True}, "store"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ],
)
def test_responses_stateful_fields_are_refused_on_translated_tries(
    extra: dict[str, Any], param: str
) -> None:
    _, body = responses_chat.to_chat_request({"model": "m", "input": "x", **extra})
    dialect = responses_chat.Stateless(openai_gemini.DIALECT)
    with pytest.raises(errors.InvalidField) as exc:
        dialect.request(call("gemini", body=body))
    assert exc.value.param == param


def test_responses_items_become_chat_messages() -> None:
    _, body = responses_chat.to_chat_request(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            "max_output_tokens": 9,
        }
    )
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    assert body["response_format"]["json_schema"]["name"] == "x" and body["max_tokens"] == 9
