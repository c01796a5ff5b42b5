"""The fast path of the OpenAI stream decoder (whole simple events, passed on as slices of the
chunk they came in) meters and passes on exactly what the full parser does, event by event.

Whatever the JSON style (compact, or Python's default separators) and whatever a chunk says
(content, a finish reason, usage, an error, tool calls, several choices), the two paths agree."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice_sidecar import errors
from sluice_sidecar.contract import Backend, Route
from sluice_sidecar.translate import Call
from sluice_sidecar.translate.openai_openai import OpenAIStream

BACKEND = Backend(name="b", provider="openai-compatible", model="m", base_url="http://x")
CALL = Call(
    "chat", Route(name="r", source="r", backends=(BACKEND,)), BACKEND, {}, True, True, None, "id"
)
STYLES = {"compact": (",", ":"), "python": (", ", ": ")}
HEAD = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


KINDS: dict[str, dict[str, Any]] = {
    "content": {"choices": [_choice({"content": "Hi"})]},
    "role and content": {"choices": [_choice({"role": "assistant", "content": "Hi"})]},
    "usage null": {"choices": [_choice({"content": "Hi"})], "usage": None},
    "empty content": {"choices": [_choice({"content": ""})]},
    "finish": {"choices": [_choice({"content": "Hi"}, "stop")]},
    "finish only": {"choices": [_choice({}, "length")]},
    "usage": {
        "choices": [_choice({"content": "Hi"})],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    },
    "usage beyond 64 bits": {
        "choices": [],
        "usage": {"prompt_tokens": 2**64, "completion_tokens": 2},
    },
    "two choices": {
        "choices": [_choice({"content": "Hi"}), {**_choice({"content": "Ho"}), "index": 1}]
    },
    "no choices": {"choices": []},
    "tool call": {
        "choices": [
            _choice(
                {
                    "content": "Hi",
                    "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{}"}}],
                }
            )
        ]
    },
}


def _event(obj: dict[str, Any], style: str) -> bytes:
    return b"data: " + json.dumps({**HEAD, **obj}, separators=STYLES[style]).encode()


def _meter(pieces: list[bytes]) -> tuple[bytes, Any, int, bool]:
    d = OpenAIStream(CALL)
    out: list[bytes] = []
    for piece in pieces:
        d.feed(piece, out)
    return b"".join(out), d.usage, d.content_chunks, d.complete


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", KINDS)
def test_the_fast_path_meters_as_the_full_parser(kind: str, style: str) -> None:
    event = _event(KINDS[kind], style) + b"\n\n"
    whole = _meter([event])  # whole simple events: the byte-level path
    split = _meter([event[:7], event[7:]])  # split: the full parser, field by field
    assert whole == split


def test_a_whole_read_of_unchanged_events_goes_on_as_it_came() -> None:
    events = b"".join(_event(KINDS[k], "compact") + b"\n\n" for k in ("content", "finish"))
    d = OpenAIStream(CALL)
    out: list[bytes] = []
    d.feed(events + b"data: [DONE]\n\n", out)
    assert out == [events] and d.finished


def test_a_dropped_event_splits_the_run_around_it() -> None:
    before, after = (_event(KINDS[k], "compact") + b"\n\n" for k in ("content", "finish"))
    dropped = _event(KINDS["no choices"], "compact") + b"\n\n"  # nothing for the client
    out, _, chunks, complete = _meter([before + dropped + after])
    assert out == before + after and (chunks, complete) == (2, True)


@pytest.mark.parametrize("style", STYLES)
def test_an_in_band_error_is_raised_in_either_style(style: str) -> None:
    error = {"choices": [_choice({"content": "Hi"})], "error": {"message": "overloaded"}}
    with pytest.raises(errors.UpstreamStreamError):
        _meter([_event(error, style) + b"\n\n"])


def test_done_ends_the_stream_on_the_byte_path() -> None:
    event = _event(KINDS["finish"], "compact") + b"\n\n"
    out, _, _, complete = _meter([event + b"data: [DONE]\n\n"])
    assert out == event and complete
