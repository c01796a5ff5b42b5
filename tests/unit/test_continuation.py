"""``continuation``: what a resumed stream is built from, without any server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice_sidecar.contract import Provider
from sluice_sidecar.gateway import continuation as cont
from sluice_sidecar.model import Usage


def frame(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)


def chunk(delta: dict[str, Any], *, index: int = 0, finish: str | None = None, **kw: Any) -> Any:
    return {
        "id": kw.get("id", "chatcmpl-1"),
        "object": "chat.completion.chunk",
        "created": kw.get("created", 7),
        "model": kw.get("model", "m1"),
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def events(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(e[6:]) for e in raw.split(b"\n\n") if e]


def test_transcript_keeps_text_chunks_and_identity() -> None:
    t = cont.Transcript()
    t.feed(frame(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"})))
    t.feed(frame(chunk({"content": "lo"}, id="other", model="m2")) + b": comment\n\n")
    assert t.text == "Hello" and t.chunks == 2 and t.resumable
    assert (t.id, t.created, t.model) == ("chatcmpl-1", 7, "m1")


@pytest.mark.parametrize(
    "bad",
    [
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}),
        chunk({"content": "second choice"}, index=1),
        chunk({}, finish="stop"),
        chunk({"refusal": "no"}),
    ],
    ids=["tool-call", "second-choice", "finished", "refusal"],
)
def test_transcript_refuses_what_cannot_be_continued(bad: dict[str, Any]) -> None:
    t = cont.Transcript()
    t.feed(frame(chunk({"content": "Hi"}), bad))
    assert not t.resumable


def test_resume_body_openai_style_asks_to_continue() -> None:
    body = {"model": "r", "messages": [{"role": "user", "content": "q"}], "max_tokens": 10}
    out = cont.resume_body(body, "partial ", Provider.OPENAI_COMPATIBLE, 4, 10)
    assert out["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "partial "},
        {"role": "user", "content": cont.CONTINUE_PROMPT},
    ]
    assert out["max_tokens"] == 6
    assert body["messages"] == [{"role": "user", "content": "q"}]  # the original is untouched


def test_resume_body_anthropic_is_a_trimmed_prefill() -> None:
    body = {"messages": [{"role": "user", "content": "q"}]}
    out = cont.resume_body(body, "partial \n", Provider.ANTHROPIC, 3, 100)
    assert out["messages"][-1] == {"role": "assistant", "content": "partial"}
    assert out["max_tokens"] == 97


def test_resume_body_cap_field_and_floor() -> None:
    base = {"messages": [{"role": "user", "content": "q"}]}
    assert cont.resume_body(base, "", Provider.OPENAI, 5, 8)["max_completion_tokens"] == 3
    assert "max_tokens" not in cont.resume_body(base, "", Provider.OPENAI, 5, 8)
    kept = {**base, "max_completion_tokens": 8}
    out = cont.resume_body(kept, "x", Provider.MISTRAL, 20, 8)
    assert out["max_completion_tokens"] == 1 and "max_tokens" not in out
    # nothing was said yet: the continuation is a plain retry
    assert cont.resume_body(base, "", Provider.GEMINI, 0, 8)["messages"] == base["messages"]


def test_splicer_makes_one_stream() -> None:
    t = cont.Transcript()
    t.feed(frame(chunk({"role": "assistant", "content": "Once upon "})))
    s = cont.Splicer(t, Usage(5, 1, source="estimated"))
    out = events(
        s.rewrite(
            frame(
                chunk({"role": "assistant", "content": ""}, id="x", model="m2", created=9),
                chunk({"content": "  a"}, id="x"),
                chunk({"content": " time"}, id="x"),
                chunk({}, finish="stop", id="x"),
                {"id": "x", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}},
            )
        )
    )
    assert [c["choices"][0]["delta"] for c in out[:-2]] == [{"content": "a"}, {"content": " time"}]
    assert out[-2]["choices"][0]["finish_reason"] == "stop"
    assert {(c["id"], c["model"], c["created"]) for c in out} == {("chatcmpl-1", "m1", 7)}
    assert out[-1]["usage"] == {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17}


def test_splicer_drops_what_is_left_empty() -> None:
    t = cont.Transcript()
    t.feed(frame(chunk({"content": "Hi"})))
    s = cont.Splicer(t, Usage(0, 0))
    assert s.rewrite(frame(chunk({"role": "assistant", "content": None}))) == b""
    assert events(s.rewrite(frame(chunk({"content": " there"})))) == [chunk({"content": " there"})]
