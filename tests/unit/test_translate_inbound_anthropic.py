"""The ``/v1/messages`` dialect without servers: Anthropic request → canonical OpenAI body →
Anthropic request round trips for every representable content kind; OpenAI answers and chunk
streams → Anthropic messages and events (checked with the anthropic SDK's types, and accumulated
the way the SDK's stream helper does); errors in Anthropic's shape."""

from __future__ import annotations

import json
from typing import Any

import openai.types.chat as oc
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from sluice_sidecar import errors, sse
from sluice_sidecar.translate import anthropic_openai as ib
from sluice_sidecar.translate import openai_anthropic as out_tr

EVENT = TypeAdapter(RawMessageStreamEvent)
B64 = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def round_trip(body: dict[str, Any]) -> dict[str, Any]:
    ib.check(body)
    canonical = ib.to_chat_request(body)
    back = out_tr.to_messages_request(canonical, body["model"], 1)
    back.pop("stream", None)
    return back


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "plain"}],
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ],
        [
            {
                "role": "user",
                "content": [{"type": "image", "source": B64}, {"type": "text", "text": "?"}],
            }
        ],
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/i.png"}}
                ],
            }
        ],
        [
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
            }
        ],
        [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {"c": "Oslo"}},
                    {"type": "tool_use", "id": "t2", "name": "w", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "-3C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t2",
                        "content": [{"type": "text", "text": "ok"}],
                    },
                    {"type": "text", "text": "and?"},
                ],
            },
            {"role": "assistant", "content": "Cold."},
        ],
        [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "image", "source": B64}],
                    }
                ],
            },
        ],
    ],
    ids=["text", "text-blocks", "image-base64", "image-url", "pdf", "tools", "tool-image-result"],
)
def test_content_round_trips(messages: list[dict[str, Any]]) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": messages}
    assert round_trip(body) == body


def test_params_system_and_tools_round_trip() -> None:
    tools = [
        {"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}},
        {"name": "g", "input_schema": {"type": "object"}},
    ]
    for choice in (
        {"type": "auto"},
        {"type": "any"},
        {"type": "tool", "name": "f"},
        {"type": "auto", "disable_parallel_tool_use": True},
    ):
        body = {
            "model": "m",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "S1"}, {"type": "text", "text": "S2"}],
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 0.5,
            "top_p": 0.9,
            "stop_sequences": ["a", "b"],
            "metadata": {"user_id": "u"},
            "tools": tools,
            "tool_choice": choice,
        }
        assert round_trip(body) == body
    plain = {
        "model": "m",
        "max_tokens": 3,
        "system": "S",
        "messages": [{"role": "user", "content": "x"}],
    }
    assert round_trip(plain) == plain


def test_lossy_parts_are_documented_ones() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "top_k": 3,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "y"},
                ],
            },
        ],
    }
    back = round_trip(body)
    assert back["top_k"] == 3  # carried for the backend dialect to translate or refuse
    assert back["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "x"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "y"}]},
    ]


def test_stream_flag_asks_for_usage() -> None:
    body = {
        "model": "m",
        "max_tokens": 1,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    c = ib.to_chat_request(body)
    assert c["stream"] is True and c["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            {"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
        ),
        ({"model": "m", "max_tokens": 1, "messages": []}, "messages"),
        (
            {"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]},
            "messages[0].role",
        ),
        (
            {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
        ),
        (
            {
                "model": "m",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": [{"text": "x"}]}],
            },
            "messages[0].content[0]",
        ),
        (
            {
                "model": "m",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "x"}],
                "stream": "yes",
            },
            "stream",
        ),
        (
            {
                "model": "m",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "x"}],
                "stop_sequences": "x",
            },
            "stop_sequences",
        ),
    ],
)
def test_check_rejects_with_field_path(body: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.InvalidField) as exc:
        ib.check(body)
    assert exc.value.param == param


# --- answers ----------------------------------------------------------------------------------


def completion(**message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, **message},
                "finish_reason": message.pop("finish", "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 4,
            "total_tokens": 34,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    }


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_completion_to_message(finish: str, stop: str) -> None:
    c = completion(
        content="Hi",
        tool_calls=[
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
        ],
    )
    c["choices"][0]["finish_reason"] = finish
    oc.ChatCompletion.model_validate(c)
    msg = Message.model_validate(ib.to_message(c))
    assert msg.stop_reason == stop
    assert [b.type for b in msg.content] == ["text", "tool_use"]
    assert msg.content[1].input == {"a": 1}  # type: ignore[union-attr]
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (
        20,
        10,
        4,
    )


def test_anthropic_answer_round_trips_through_openai() -> None:
    original = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "text", "text": "Sure."},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": [1, "two"]}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 3},
    }
    openai_body, _ = out_tr.to_chat_completion(original, 1)
    assert ib.to_message(openai_body) == original


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "choices": choices,
        **extra,
    }


def accumulate(frames: list[bytes]) -> dict[str, Any]:
    """What the anthropic SDK's stream helper builds from the events (same rules)."""
    msg: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for ev in sse.Parser().feed(b"".join(frames)):
        data = json.loads(ev.data)
        assert ev.event == data["type"]
        EVENT.validate_python(data)
        if data["type"] == "message_start":
            msg = data["message"]
        elif data["type"] == "content_block_start":
            assert data["index"] == len(msg["content"])
            msg["content"].append(data["content_block"])
        elif data["type"] == "content_block_delta":
            d = data["delta"]
            block = msg["content"][data["index"]]
            if d["type"] == "text_delta":
                block["text"] += d["text"]
            else:
                partial[data["index"]] = partial.get(data["index"], "") + d["partial_json"]
        elif data["type"] == "content_block_stop" and data["index"] in partial:
            msg["content"][data["index"]]["input"] = json.loads(partial[data["index"]])
        elif data["type"] == "message_delta":
            msg["stop_reason"] = data["delta"]["stop_reason"]
            msg["usage"].update(data["usage"])
    Message.model_validate(msg)
    return msg


def test_chunks_to_events() -> None:
    w = ib.EventWriter()
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "g", "arguments": "{}"},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
        chunk(usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}),
    ]
    frames: list[bytes] = []
    for c in chunks:
        oc.ChatCompletionChunk.model_validate(c)
        frames += w.feed(c)
    frames += w.end()
    msg = accumulate(frames)
    assert msg["content"] == [
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
    ]
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"]["input_tokens"] == 9 and msg["usage"]["output_tokens"] == 3
    stops = [e for e in sse.Parser().feed(b"".join(frames)) if e.event == "content_block_stop"]
    assert len(stops) == 3


def test_empty_stream_still_makes_a_valid_message() -> None:
    msg = accumulate(ib.EventWriter().end())
    assert msg["content"] == [] and msg["stop_reason"] == "end_turn"


@pytest.mark.parametrize(
    ("err", "status", "etype"),
    [
        (errors.InvalidJSON("bad"), 400, "invalid_request_error"),
        (errors.UnknownModel("x", []), 404, "not_found_error"),
        (errors.PayloadTooLarge(5), 413, "request_too_large"),
        (errors.UpstreamStatusError(429, "slow"), 429, "rate_limit_error"),
        (errors.UpstreamStatusError(401, "key"), 401, "authentication_error"),
        (errors.UpstreamStatusError(529, "busy"), 503, "overloaded_error"),  # 529 to this API
        (errors.NoBackendAvailable("none"), 503, "overloaded_error"),
        (errors.UpstreamTimeout("slow"), 504, "timeout_error"),
    ],
)
def test_error_shapes(err: errors.SluiceError, status: int, etype: str) -> None:
    assert err.status == status
    body = json.loads(ib.API.error_body(err))
    assert body == {"type": "error", "error": {"type": etype, "message": err.message}}
    ev = sse.Parser().feed(ib.API.stream_error(err))[0]
    assert ev.event == "error" and json.loads(ev.data) == body
