"""OpenAI chat ↔ Gemini generateContent, without servers: roles, system instruction, every content
kind, function calls and responses (with thought signatures), generation config, finish reasons,
safety blocks, usage metadata, errors, and the stream translator fed at every byte boundary."""

from __future__ import annotations

import json
import re
from typing import Any

import openai.types.chat as oc
import pytest

from sluice_sidecar import errors, sse
from sluice_sidecar.contract import FailureClass
from sluice_sidecar.model import Usage
from sluice_sidecar.translate import openai_gemini as tr
from sluice_sidecar.translate.signatures import SignatureStore
from tests.fakes import gemini_server as fg

USER = {"role": "user", "content": "hi"}


def req(*messages: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return tr.to_generate_request({"messages": list(messages), **kw})


@pytest.mark.parametrize(
    ("content", "parts"),
    [
        ("plain", [{"text": "plain"}]),
        (
            [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            [{"text": "a"}, {"text": "b"}],
        ),
        (
            [{"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklG"}}],
            [{"inlineData": {"mimeType": "image/webp", "data": "UklG"}}],
        ),
        (
            [{"type": "image_url", "image_url": {"url": "https://x.test/cat.png?s=1"}}],
            [{"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/cat.png?s=1"}}],
        ),
        (
            [{"type": "input_audio", "input_audio": {"data": "UklG", "format": "mp3"}}],
            [{"inlineData": {"mimeType": "audio/mp3", "data": "UklG"}}],
        ),
        (
            [{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}],
            [{"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}],
        ),
    ],
    ids=["text", "text-parts", "image-inline", "image-url", "audio", "pdf"],
)
def test_user_content_kinds(content: Any, parts: list[dict[str, Any]]) -> None:
    assert req({"role": "user", "content": content})["contents"] == [
        {"role": "user", "parts": parts}
    ]


def test_roles_system_and_merging() -> None:
    out = req(
        {"role": "system", "content": "S"},
        {"role": "developer", "content": [{"type": "text", "text": "D"}]},
        USER,
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "A"},
    )
    assert out["systemInstruction"] == {"parts": [{"text": "S"}, {"text": "D"}]}
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]},
        {"role": "model", "parts": [{"text": "A"}]},
    ]


def test_function_calls_responses_and_signatures() -> None:
    out = req(
        USER,
        {
            "role": "assistant",
            "content": "Checking",
            "tool_calls": [
                {
                    "id": "call_1~c2ln",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"c":"Oslo"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "t", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1~c2ln", "content": '{"temp": -3}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
    )
    assert out["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Checking"},
            {"functionCall": {"name": "w", "args": {"c": "Oslo"}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "t", "args": {}}},
        ],
    }
    assert out["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "w", "response": {"temp": -3}}},
            {"functionResponse": {"name": "t", "response": {"result": "12:00"}}},
        ],
    }


def test_generation_config_tools_and_choice() -> None:
    tool = {
        "type": "function",
        "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
    }
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    out = req(
        USER,
        temperature=0.2,
        top_p=0.8,
        max_tokens=10,
        stop="Z",
        n=2,
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "f"}},
    )
    assert out["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.8,
        "candidateCount": 2,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "seed": 7,
        "maxOutputTokens": 10,
        "stopSequences": ["Z"],
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {"name": "f", "description": "d", "parametersJsonSchema": {"type": "object"}}
            ]
        }
    ]
    assert out["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}
    }
    for choice, mode in (("auto", "AUTO"), ("required", "ANY"), ("none", "NONE")):
        assert req(USER, tool_choice=choice)["toolConfig"]["functionCallingConfig"]["mode"] == mode
    assert "generationConfig" not in req(USER)


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (
            {"role": "user", "content": [{"type": "refusal", "refusal": "x"}]},
            "messages[0].content[0]",
        ),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]},
            "messages[0].content[0].image_url.url",
        ),
        ({"role": "narrator", "content": "x"}, "messages[0].role"),
    ],
)
def test_untranslatable_requests_are_400(message: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.InvalidField) as exc:
        req(message)
    assert exc.value.param == param


def test_urls() -> None:
    assert tr.url_of(None, "models/gemini-2.5-flash", False) == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert (
        tr.url_of("http://h:1/v1", "g", True)
        == "http://h:1/v1/models/g:streamGenerateContent?alt=sse"
    )


# --- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    body, _ = tr.to_chat_completion(fg.response(fg.Step(finish=reason), "g"), 1, "g", "b")
    assert oc.ChatCompletion.model_validate(body).choices[0].finish_reason == finish


def test_answer_text_thoughts_calls_and_usage() -> None:
    resp = fg.response(fg.function_call("w", {"c": "Oslo"}, text="Sure."), "gemini-x")
    resp["candidates"][0]["content"]["parts"].insert(0, {"text": "thinking…", "thought": True})
    resp["usageMetadata"] = {
        "promptTokenCount": 40,
        "candidatesTokenCount": 5,
        "thoughtsTokenCount": 7,
        "cachedContentTokenCount": 30,
        "totalTokenCount": 52,
    }
    store = SignatureStore()
    body, usage = tr.to_chat_completion(resp, 1, "fallback", "b", store)
    out = oc.ChatCompletion.model_validate(body)
    m = out.choices[0].message
    assert m.content == "Sure." and out.choices[0].finish_reason == "tool_calls"
    tc: Any = m.tool_calls[0]  # type: ignore[index]
    # a short id every provider accepts; the signature stays in the sidecar
    assert re.fullmatch(r"call_[0-9a-f]{24}", tc.id) and store.get(tc.id) == "c2ln"
    assert json.loads(tc.function.arguments) == {"c": "Oslo"}
    assert usage == Usage(40, 12, 30) and out.model == "gemini-x"


def test_answer_round_trips_into_the_next_request() -> None:
    store = SignatureStore()
    resp = fg.response(fg.function_call("w", {"c": 1}), "g")
    body, _ = tr.to_chat_completion(resp, 1, "g", "b", store)
    msg = body["choices"][0]["message"]
    tool = {"role": "tool", "tool_call_id": msg["tool_calls"][0]["id"], "content": "{}"}
    chat_body = {"model": "m", "messages": [USER, msg, tool]}
    nxt = tr.to_generate_request(chat_body, 0, store)
    assert nxt["contents"][1]["parts"][0] == {
        "functionCall": {"name": "w", "args": {"c": 1}},
        "thoughtSignature": "c2ln",
    }
    assert nxt["contents"][2]["parts"][0]["functionResponse"]["name"] == "w"


def test_blocked_prompt_is_a_content_filter_failure() -> None:
    with pytest.raises(errors.UpstreamStatusError) as exc:
        tr.to_chat_completion(fg.response(fg.blocked("PROHIBITED_CONTENT"), "g"), 1, "g", "b")
    assert exc.value.failure is FailureClass.CONTENT_FILTER and exc.value.status == 400
    assert "PROHIBITED_CONTENT" in exc.value.message


@pytest.mark.parametrize(
    ("step", "status", "failure", "code"),
    [
        (fg.key_invalid(), 401, None, "invalid_api_key"),
        (fg.too_long(), 400, FailureClass.CONTEXT_WINDOW_EXCEEDED, "context_length_exceeded"),
        (
            fg.status(429, "Resource has been exhausted"),
            429,
            FailureClass.RATE_LIMITED,
            "rate_limit_exceeded",
        ),
        (
            fg.status(503, "The model is overloaded."),
            502,
            FailureClass.SERVER_ERROR,
            "upstream_503",
        ),
        (fg.status(404, "models/x is not found"), 404, None, "model_not_found"),
    ],
)
def test_errors_normalised(
    step: fg.Step, status: int, failure: FailureClass | None, code: str
) -> None:
    body = fg.error_body(step.status, step.message, step.reason)
    st, c, t = tr.normalise_error(step.status, str(step.status), None, body["error"]["message"])
    err = errors.UpstreamStatusError(st, step.message, upstream_code=c, upstream_type=t)
    assert (err.status, err.failure, err.code) == (status, failure, code)


def test_in_band_stream_error() -> None:
    err = tr.in_band_error(fg.error_body(503, "overloaded"), "b")
    assert err is not None and err.failure is FailureClass.SERVER_ERROR
    err = tr.in_band_error(fg.error_body(429, "quota"), "b")
    assert err is not None and err.failure is FailureClass.RATE_LIMITED


# --- streams ------------------------------------------------------------------------------------


def sse_bytes(step: fg.Step) -> bytes:
    return b"".join(fg.encode(ev) for ev in fg.stream_events(step, "gemini-x"))


def run(chunks: list[bytes]) -> tuple[bytes, tr.StreamTranslator]:
    t = tr.StreamTranslator("b", 1, "gemini-x", True)
    parser = sse.Parser()
    out = []
    for chunk in chunks:
        for ev in parser.feed(chunk):
            out += t.event(ev)
    out += t.end()
    assert not parser.has_partial
    return b"".join(out), t


@pytest.mark.parametrize(
    "step",
    [fg.ok("Grüße aus Gemini ✓ heute"), fg.function_call("f", {"a": "b"}, text="Calling")],
    ids=["text", "call"],
)
def test_stream_any_split_gives_the_same_frames(step: fg.Step) -> None:
    data = sse_bytes(step)
    whole, t = run([data])
    assert t.complete and t.usage == Usage(9, 4, 0)
    for i in range(1, len(data)):
        assert run([data[:i], data[i:]])[0] == whole, i
    chunks = [oc.ChatCompletionChunk.model_validate_json(e.data) for e in sse.Parser().feed(whole)]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == step.text


def test_stream_call_finish_and_multiple_candidates() -> None:
    frames, _ = run([sse_bytes(fg.function_call("f", {"a": 1}))])
    chunks = [oc.ChatCompletionChunk.model_validate_json(e.data) for e in sse.Parser().feed(frames)]
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].function is not None and json.loads(calls[0].function.arguments or "") == {
        "a": 1
    }
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    two = tr.StreamTranslator("b", 1, "g", False)
    ev: dict[str, Any] = {
        "candidates": [
            {"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
            {"index": 1, "content": {"parts": [{"text": "b"}]}},
        ]
    }
    two.event(sse.Event(json.dumps(ev)))
    assert not two.complete
    last = {"candidates": [{"index": 1, "content": {"parts": []}, "finishReason": "MAX_TOKENS"}]}
    two.event(sse.Event(json.dumps(last)))
    assert two.complete


def test_stream_blocked_prompt_raises_before_any_frame() -> None:
    t = tr.StreamTranslator("b", 1, "g", False)
    with pytest.raises(errors.UpstreamStatusError) as exc:
        t.event(sse.Event(json.dumps(fg.stream_events(fg.blocked(), "g")[0])))
    assert exc.value.failure is FailureClass.CONTENT_FILTER
