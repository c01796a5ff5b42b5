"""The ``openai_openai`` stream decoder: the fast path (whole simple events passed on as bytes)
and the full parser give the same frames and the same meter for any split of a stream."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar import errors
from sluice_sidecar.contract import Backend, Route
from sluice_sidecar.translate import Call
from sluice_sidecar.translate.openai_openai import OpenAIStream

BACKEND = Backend(name="b", provider="openai-compatible", model="m", base_url="http://x")
CALL = Call(
    "chat", Route(name="r", source="r", backends=(BACKEND,)), BACKEND, {}, True, True, None, "id"
)


def chunk(content: str | None, finish: str | None = None, **extra: object) -> bytes:
    delta = {} if content is None else {"content": content}
    obj = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    obj.update(extra)
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


STREAM = (
    chunk("Hel")
    + b": keep-alive\n\n"
    + chunk("lo, wörld")
    + chunk(None, "stop")
    + b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    + b"data: [DONE]\n\n"
)


def decode(pieces: list[bytes]) -> tuple[bytes, OpenAIStream]:
    d = OpenAIStream(CALL)
    out: list[bytes] = []
    for piece in pieces:
        d.feed(piece, out)
        if d.finished:
            break
    out += d.end()
    return b"".join(out), d


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), unique=True, max_size=8))
def test_any_split_gives_the_same_frames_and_meter(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    whole, d0 = decode([STREAM])
    split, d1 = decode(pieces)
    assert split == whole
    assert (d1.usage, d1.content_chunks, d1.complete) == (d0.usage, d0.content_chunks, True)
    assert b"keep-alive" not in whole and b"[DONE]" not in whole


def test_the_fast_path_passes_bytes_on_as_they_came() -> None:
    events = chunk("a") + chunk("b", "stop")
    out, d = decode([events, b"data: [DONE]\n\n"])
    assert out == events and d.finished


@pytest.mark.parametrize("bad", [b"data: {not json\n\n", b"data: [1, 2]\n\n"])
def test_a_broken_event_is_a_bad_upstream_response_on_either_path(bad: bytes) -> None:
    for pieces in ([chunk("a") + bad], [chunk("a"), bad[:5], bad[5:]]):
        with pytest.raises(errors.BadUpstreamResponse):
            decode(pieces)


def test_an_in_band_error_keeps_the_frames_before_it() -> None:
    d = OpenAIStream(CALL)
    out: list[bytes] = []
    with pytest.raises(errors.UpstreamStreamError):
        d.feed(chunk("a") + b'data: {"error":{"message":"overloaded"}}\n\n', out)
    assert out == [chunk("a")]
