"""OpenAI chat ↔ Anthropic Messages, without servers: every content kind, stop reasons, usage with
cache tokens, errors, and the stream translator fed at every byte boundary. Anthropic-side values
are checked against the official anthropic SDK's types, OpenAI-side values against the openai
SDK's."""

from __future__ import annotations

import json
from typing import Any

import anthropic.types as at
import openai.types.chat as oc
import pytest
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from pydantic import TypeAdapter

from sluice_sidecar import errors, sse
from sluice_sidecar.contract import FailureClass
from sluice_sidecar.model import Usage
from sluice_sidecar.translate import anthropic_anthropic
from sluice_sidecar.translate import openai_anthropic as tr
from tests.fakes import anthropic_server as fa

CREATE = TypeAdapter(MessageCreateParamsNonStreaming)
PNG = "data:image/png;base64,iVBORw0KGgo="


def req(*messages: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out = tr.to_messages_request({"messages": list(messages), **kw}, "claude-x", 1000)
    CREATE.validate_python(out)  # a valid Anthropic request, by the SDK's own types
    return out


USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"role": "user", "content": "plain"}, {"role": "user", "content": "plain"}),
        (
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
        ),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": "iVBORw0KGgo=",
                        },
                    }
                ],
            },
        ),
        (
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": "https://x.test/a.jpg"}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}}
                ],
            },
        ),
        (
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBE",
                        },
                    }
                ],
            },
        ),
    ],
    ids=["text", "text-parts", "image-base64", "image-url", "pdf"],
)
def test_user_content_kinds(message: dict[str, Any], expected: dict[str, Any]) -> None:
    assert req(message)["messages"] == [expected]


def test_system_string_parts_and_developer() -> None:
    out = req({"role": "system", "content": "A"}, {"role": "developer", "content": "B"}, USER)
    assert out["system"] == "A\n\nB" and out["messages"] == [USER]
    out = req({"role": "system", "content": [{"type": "text", "text": "A"}]}, USER)
    assert out["system"] == [{"type": "text", "text": "A"}]


def test_tool_calls_and_results_merge_into_alternating_turns() -> None:
    out = req(
        USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                {"id": "t2", "type": "function", "function": {"name": "g", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "one"},
        {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "two"}]},
        {"role": "user", "content": "thanks"},
    )
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
            {"type": "tool_use", "id": "t2", "name": "g", "input": {}},
        ],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "one"},
            {
                "type": "tool_result",
                "tool_use_id": "t2",
                "content": [{"type": "text", "text": "two"}],
            },
            {"type": "text", "text": "thanks"},
        ],
    }


def test_params_tools_and_choice() -> None:
    tool = {
        "type": "function",
        "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
    }
    out = req(
        USER,
        max_completion_tokens=77,
        temperature=1.7,
        top_p=0.9,
        stop="X",
        user="u1",
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "f"}},
        parallel_tool_calls=False,
    )
    assert out["max_tokens"] == 77 and out["temperature"] == 1.0 and out["top_p"] == 0.9
    assert out["stop_sequences"] == ["X"] and out["metadata"] == {"user_id": "u1"}
    assert out["tools"] == [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}
    assert req(USER)["max_tokens"] == 1000
    for choice, expected in (("auto", "auto"), ("required", "any"), ("none", "none")):
        assert req(USER, tools=[tool], tool_choice=choice)["tool_choice"]["type"] == expected


def test_unknown_blocks_and_tools_pass_through() -> None:
    block = {"type": "search_result", "source": "s", "title": "t", "content": []}
    server_tool = {"type": "web_search_20250305", "name": "web_search"}
    out = tr.to_messages_request(
        {"messages": [{"role": "user", "content": [block]}], "tools": [server_tool]}, "m", 9
    )
    assert out["messages"][0]["content"] == [block] and out["tools"] == [server_tool]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
            "messages[0].content[0]",
        ),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]},
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{x"}}],
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"role": "robot", "content": "x"}, "messages[0].role"),
    ],
)
def test_untranslatable_requests_are_400_with_a_path(message: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.InvalidField) as exc:
        tr.to_messages_request({"messages": [message]}, "m", 9)
    assert exc.value.param == param


def test_build_request_headers_url_and_native() -> None:
    from sluice_sidecar.contract import Backend, Route
    from sluice_sidecar.translate import Call

    b = Backend(name="c", provider="anthropic", model="claude-x", base_url="https://h.test/v1")
    r = Route(name="r", source="r", backends=(b,))
    call = Call("chat", r, b, {"messages": [USER]}, True, False, "k", "rid")
    url, payload, headers = tr.DIALECT.request(call)
    assert url == "https://h.test/v1/messages"
    assert headers["x-api-key"] == "k" and headers["anthropic-version"] == "2023-06-01"
    assert json.loads(payload)["stream"] is True
    call.native = {"model": "route", "max_tokens": 5, "messages": [USER], "top_k": 2}
    native = anthropic_anthropic.DIALECT.request(call)
    assert json.loads(native[1]) == {**call.native, "model": "claude-x"}
    assert tr.url_of(None) == "https://api.anthropic.com/v1/messages"


# --- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    msg = fa.message(fa.Step(stop_reason=stop), "claude-x")
    body, _ = tr.to_chat_completion(msg, 1)
    assert oc.ChatCompletion.model_validate(body).choices[0].finish_reason == finish


def test_answer_text_tools_thinking_and_cache_usage() -> None:
    msg = fa.message(fa.tool_use("f", {"a": [1, 2]}, text="Sure."), "claude-x")
    msg["content"].insert(0, {"type": "thinking", "thinking": "hmm", "signature": "sig"})
    msg["usage"] = {
        "input_tokens": 10,
        "output_tokens": 4,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 20,
    }
    at.Message.model_validate(msg)
    body, usage = tr.to_chat_completion(msg, 1)
    out = oc.ChatCompletion.model_validate(body)
    m = out.choices[0].message
    assert m.content == "Sure." and m.tool_calls is not None
    tc: Any = m.tool_calls[0]
    assert (tc.id, tc.function.name, json.loads(tc.function.arguments)) == (
        "toolu_01",
        "f",
        {"a": [1, 2]},
    )
    assert usage == Usage(33, 4, 20)
    assert out.usage is not None and out.usage.prompt_tokens == 33
    assert out.usage.prompt_tokens_details is not None
    assert out.usage.prompt_tokens_details.cached_tokens == 20


@pytest.mark.parametrize(
    ("status", "etype", "message", "failure", "code"),
    [
        (529, "overloaded_error", "Overloaded", FailureClass.SERVER_ERROR, "overloaded"),
        (429, "rate_limit_error", "slow", FailureClass.RATE_LIMITED, "rate_limit_exceeded"),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 1 > 0",
            FailureClass.CONTEXT_WINDOW_EXCEEDED,
            "context_length_exceeded",
        ),
        (
            400,
            "invalid_request_error",
            "Output blocked by content filtering policy",
            FailureClass.CONTENT_FILTER,
            "content_filter",
        ),
        (401, "authentication_error", "invalid x-api-key", None, "invalid_api_key"),
        (403, "permission_error", "no", None, "permission_denied"),
        (500, "api_error", "oops", FailureClass.SERVER_ERROR, None),
    ],
)
def test_errors_normalised_to_classes(
    status: int, etype: str, message: str, failure: FailureClass | None, code: str | None
) -> None:
    st, c, t = tr.normalise_error(status, None, etype, message)
    err = errors.UpstreamStatusError(st, message, upstream_code=c, upstream_type=t)
    assert err.failure == failure
    if status < 500 and status != 429:
        assert err.code == code
    if status in (401, 403):
        assert not err.retry_same_backend


@pytest.mark.parametrize(
    ("etype", "failure"),
    [
        ("overloaded_error", FailureClass.SERVER_ERROR),
        ("rate_limit_error", FailureClass.RATE_LIMITED),
        ("api_error", FailureClass.SERVER_ERROR),
        ("invalid_request_error", None),
    ],
)
def test_stream_error_event_classes(etype: str, failure: FailureClass | None) -> None:
    err = tr.stream_error(fa.error_body(etype, "x"), "c")
    assert err.failure == failure and etype in err.message


# --- streams ------------------------------------------------------------------------------------


def ev_(kind: str | None, data: dict[str, Any]) -> sse.Event:
    return sse.Event(json.dumps(data), kind)


def sse_bytes(step: fa.Step) -> bytes:
    return b"".join(fa.encode(kind, data) for kind, data in fa.events(step, "claude-x"))


def run(chunks: list[bytes], *, wants_usage: bool = True) -> tuple[bytes, tr.StreamTranslator]:
    t = tr.StreamTranslator("c", 1, wants_usage)
    parser = sse.Parser()
    out = []
    for chunk in chunks:
        for ev in parser.feed(chunk):
            out += t.event(ev)
    assert not parser.has_partial
    return b"".join(out), t


STREAMS = [
    fa.ok("Hello wide world, ünïcödé ✓"),
    fa.tool_use("lookup", {"q": "a b", "n": 1}, text="Let me see."),
]


@pytest.mark.parametrize("step", STREAMS, ids=["text", "tool"])
def test_stream_any_split_gives_the_same_frames(step: fa.Step) -> None:
    data = sse_bytes(step).replace(b"\n", b"\r\n")
    whole, t = run([data])
    assert t.complete and t.finished and t.usage == Usage(12, 5, 0)
    for i in range(1, len(data)):
        assert run([data[:i], data[i:]])[0] == whole, i
    assert run([data[i : i + 1] for i in range(len(data))])[0] == whole


def test_stream_frames_are_valid_openai_chunks() -> None:
    frames, t = run([sse_bytes(STREAMS[1])])
    chunks = [
        oc.ChatCompletionChunk.model_validate_json(ev.data) for ev in sse.Parser().feed(frames)
    ]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Let me see."
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == "toolu_01" and calls[0].function and calls[0].function.name == "lookup"
    args = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert json.loads(args) == {"q": "a b", "n": 1}
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 17
    assert t.content_chunks == 6


def test_stream_emits_nothing_before_content_so_errors_stay_retryable() -> None:
    t = tr.StreamTranslator("c", 1, False)
    evs = fa.events(fa.ok(), "claude-x")
    assert [t.event(ev_(kind, data)) for kind, data in evs[:3]] == [[], [], []]
    with pytest.raises(errors.UpstreamStreamError) as exc:
        t.event(ev_("error", fa.error_body("overloaded_error", "Overloaded")))
    assert exc.value.failure is FailureClass.SERVER_ERROR


def test_stream_usage_from_message_delta_with_input_tokens() -> None:
    t = tr.StreamTranslator("c", 1, True)
    evs = fa.events(fa.ok("x"), "m")
    for kind, data in evs[:-2]:
        t.event(ev_(kind, data))
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {"input_tokens": 100, "cache_read_input_tokens": 50, "output_tokens": 9},
    }
    out = t.event(ev_("message_delta", delta))
    assert t.usage == Usage(150, 9, 50) and b'"finish_reason":"length"' in out[0]


def test_native_stream_holds_events_until_content() -> None:
    n = anthropic_anthropic.NativeStream("c")
    evs = [sse.Event(json.dumps(data), kind) for kind, data in fa.events(fa.ok("a b"), "m")]
    held = [n.event(ev) for ev in evs[:3]]
    assert held == [[], [], []]
    released = n.event(evs[3])
    assert [sse.Parser().feed(f)[0].event for f in released] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
    ]
    for ev in evs[4:]:
        n.event(ev)
    assert n.finished and n.usage == Usage(12, 5, 0)


def test_native_passthrough_any_split_gives_the_same_events() -> None:
    data = sse_bytes(STREAMS[1])

    def native(chunks: list[bytes]) -> bytes:
        n = anthropic_anthropic.NativeStream("c")
        parser = sse.Parser()
        out = []
        for chunk in chunks:
            for ev in parser.feed(chunk):
                out += n.event(ev)
        return b"".join(out)

    whole = native([data])
    assert whole == data  # canonical input comes out byte for byte
    for i in range(1, len(data)):
        assert native([data[:i], data[i:]]) == whole, i
