"""The fast path of the OpenAI stream decoder (whole simple events, passed on as slices of the
chunk they came in) meters and passes on exactly what the full parser does, event by event.

Whatever the JSON style (compact, or Python's default separators) and whatever a chunk says
(content, a finish reason, usage, an error, tool calls, several choices), the two paths agree."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar import errors
from sluice_sidecar.contract import Backend, Route
from sluice_sidecar.translate import Call, openai_openai
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


#: Texts a stream may carry: quotes, backslashes, control characters, non-ASCII, empty.
texts = st.text(alphabet=st.sampled_from(["a", " ", '"', "\\", "\n", "\x01", "é", "€", "😀", "/"]))
shapes = st.sampled_from(
    [
        lambda t: {"choices": [_choice({"content": t})]},
        lambda t: {"choices": [_choice({"role": "assistant", "content": t})]},
        lambda t: {"choices": [_choice({"content": t}, "stop")]},
        lambda t: {"choices": [_choice({"content": t})], "usage": None},
        lambda t: {"choices": [_choice({"content": t})], "x": {"content": "y"}},
        lambda t: {"choices": [_choice({"content": t})], "role": "content"},
        lambda t: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(t)}},
        lambda t: {"choices": [_choice({"content": None})]},
    ]
)
#: Byte edits of an encoded event (inside its text, where the template puts its string).
edits = st.sampled_from([None, b'"', b"\\", b"\x01", b"\xff", b"\xed\xa0\x80", b"\t"])


def _raw(obj: dict[str, Any], style: str, edit: bytes | None) -> bytes:
    data = _event(obj, style)
    if edit is not None and b"zz" in data:
        data = data.replace(b"zz", edit, 1)
    return data + b"\n\n"


def _outcome(pieces: list[bytes]) -> Any:
    try:
        return _meter(pieces)
    except errors.UpstreamError as err:
        return type(err).__name__, err.message


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.tuples(shapes, texts, st.sampled_from(list(STYLES)), edits), max_size=12),
    st.booleans(),
)
def test_a_templated_middle_event_meters_as_a_parsed_one(
    events: list[tuple[Any, str, str, bytes | None]], one_read: bool
) -> None:
    """Events taken by the template (the last middle event with another string as its text)
    are metered, passed on and refused exactly as when every event is parsed, whatever the
    strings hold (quotes, escapes, control characters, invalid UTF-8 put in by hand) and
    whatever else the events say."""
    raws = [_raw(shape(text + "zz"), style, edit) for shape, text, style, edit in events]
    pieces = [b"".join(raws)] if one_read else raws  # whole simple events: the byte-level path
    templated = _outcome(pieces)
    with mock.patch.object(openai_openai._Template, "of", return_value=None):
        parsed = _outcome(pieces)
    assert templated == parsed


def _middle(text: str, *, ascii_only: bool = True) -> bytes:
    obj = {**HEAD, "choices": [_choice({"content": text})]}
    return b"data: " + json.dumps(obj, ensure_ascii=ascii_only).encode() + b"\n\n"


def test_a_run_takes_the_templates_events_in_a_row_up_to_the_first_other() -> None:
    """``_Template.run``: the events from a point of a read on that are the template with
    another plain string as their text, not empty; how many and their bytes."""
    first = _middle("Hi")
    template = openai_openai._Template.of(first[6:-2], "Hi")
    assert template is not None
    run = [_middle("a"), _middle("b c"), _middle("d")]
    size = len(b"".join(run))
    finish = _event(KINDS["finish"], "compact") + b"\n\n"
    assert template.run(b"".join(run), 0) == (3, size)
    assert template.run(first + b"".join(run) + finish, len(first)) == (3, size)
    assert template.run(b"".join(run[1:]) + _middle(""), 0) == (2, size - len(run[0]))
    for other in (_middle('say "x"'), _middle("é"), _middle(""), finish, b"data: [DONE]\n\n"):
        assert template.run(other + b"".join(run), 0) is None
    assert template.run(_middle("é", ascii_only=False) + b"".join(run), 0) == (
        4,
        size + len(_middle("é", ascii_only=False)),
    )
    bad = _middle("zz").replace(b"zz", b"\xff")  # not UTF-8: the run ends before it
    assert template.run(b"".join(run) + bad + b"".join(run), 0) == (3, size)


#: Mostly texts a run takes (plain when encoded, unless ``ensure_ascii`` escapes them).
run_texts = st.text(alphabet=st.sampled_from(["a", " ", "é", "😀", "/"]), max_size=5) | texts


@settings(max_examples=800, deadline=None)
@given(
    st.lists(
        st.tuples(run_texts, st.none() | st.none() | edits, st.booleans()), min_size=1, max_size=14
    ),
    st.sampled_from(list(KINDS)),
    st.booleans(),
    st.integers(min_value=1, max_value=5),
)
def test_runs_of_templated_events_meter_as_parsed_ones(
    middles: list[tuple[str, bytes | None, bool]], last: str, ascii_only: bool, reads: int
) -> None:
    """Reads with several of the template's events in a row (``_Template.run``) are metered,
    passed on and refused exactly as when every event is parsed, whatever the strings hold
    (empty, quotes, escapes, control characters, non-ASCII, invalid UTF-8 put in by hand),
    whatever event ends the run and however the stream is cut into reads."""
    raws = [_middle("Hi", ascii_only=ascii_only)]
    for text, edit, marked in middles:
        raw = _middle(text + "zz" if marked else text, ascii_only=ascii_only)
        if edit is not None and marked:
            raw = raw.replace(b"zz", edit, 1)
        raws.append(raw)
    raws += [_event(KINDS[last], "compact") + b"\n\n", b"data: [DONE]\n\n"]
    size = -(-len(raws) // reads)
    pieces = [b"".join(raws[i : i + size]) for i in range(0, len(raws), size)]
    templated = _outcome(pieces)
    with mock.patch.object(openai_openai._Template, "of", return_value=None):
        parsed = _outcome(pieces)
    assert templated == parsed
