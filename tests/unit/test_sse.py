"""The SSE parser against the WHATWG rules, and the property that matters most for a proxy:
however the bytes are split, the events are the same."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar import sse
from sluice_sidecar.sse import Event


def parse_all(chunks: list[bytes]) -> tuple[list[Event], bool]:
    p = sse.Parser()
    out: list[Event] = []
    for c in chunks:
        out.extend(p.feed(c))
    return out, p.has_partial


def test_line_ends_crlf_lf_cr_are_equivalent() -> None:
    for nl in (b"\n", b"\r\n", b"\r"):
        events, partial = parse_all([b"data: a" + nl + b"data: b" + nl + nl + b"data: c" + nl + nl])
        assert events == [Event("a\nb"), Event("c")]
        assert not partial


def test_bom_comments_fields_and_spaces() -> None:
    raw = (
        b"\xef\xbb\xbf: comment\n"
        b"event: ping\nid: 7\nretry: 300\ndata:no-space\ndata:  two spaces\n\n"
        b"data\n\n"  # a field without colon: empty data → one empty line appended
        b"id: a\x00b\ndata: x\n\n"  # id with NUL ignored
        b"retry: 1.5\ndata: y\n\n"  # non-digit retry ignored
        b"unknown: z\n\n"
    )  # no data: no event
    events, _ = parse_all([raw])
    assert events == [
        Event("no-space\n two spaces", "ping", "7", 300),
        Event("", None, "7", 300),
        Event("x", None, "7", 300),
        Event("y", None, "7", 300),
    ]


def test_only_the_first_bom_is_dropped() -> None:
    events, _ = parse_all([b"\xef\xbb", b"\xbf", b"data: a\n\n\xef\xbb\xbfdata: b\n\n"])
    assert events == [Event("a")]  # the second BOM makes "\ufeffdata" an unknown field


def test_unterminated_event_is_discarded_and_reported() -> None:
    events, partial = parse_all([b"data: a\n\ndata: half"])
    assert events == [Event("a")] and partial
    events, partial = parse_all([b"data: a\n\ndata: complete line\n"])
    assert events == [Event("a")] and partial


def test_utf8_split_inside_a_character() -> None:
    raw = "data: héllo €\n\n".encode()
    i = raw.index("€".encode()) + 1
    events, _ = parse_all([raw[:i], raw[i:]])
    assert events == [Event("héllo €")]


def test_invalid_utf8_becomes_replacement_character() -> None:
    events, _ = parse_all([b"data: \xff\n\n"])
    assert events == [Event("\ufffd")]


def test_encode_round_trip() -> None:
    for ev in (Event("plain"), Event("multi\nline\nvalue", "update"), Event("")):
        events, _ = parse_all([sse.encode(ev.data, ev.event)])
        assert events == [ev]
    assert sse.encode_data(b'{"a":1}') == b'data: {"a":1}\n\n'


_field = st.sampled_from([b"data", b"event", b"id", b"retry", b"", b":", b"x"])
_value = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_nl = st.sampled_from([b"\n", b"\r\n", b"\r"])
_line = st.tuples(_field, st.sampled_from([b"", b":", b": "]), _value, _nl).map(
    lambda t: t[0] + t[1] + t[2] + t[3]
)
_stream = st.tuples(st.booleans(), st.lists(_line, max_size=25)).map(
    lambda t: (b"\xef\xbb\xbf" if t[0] else b"") + b"".join(t[1])
)


@settings(max_examples=400, deadline=None)
@given(raw=_stream, data=st.data())
def test_any_split_gives_the_same_events(raw: bytes, data: st.DataObject) -> None:
    whole = parse_all([raw])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert parse_all(pieces) == whole
    assert parse_all([bytes([b]) for b in raw]) == whole


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(max_size=30),
            st.none()
            | st.text(
                alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]),
                min_size=1,
                max_size=8,
            ),
        ),
        max_size=6,
    )
)
def test_writer_output_parses_back(events: list[tuple[str, str | None]]) -> None:
    clean = [(d.replace("\r\n", "\n").replace("\r", "\n"), e) for d, e in events]
    clean = [(d, e) for d, e in clean if "\ud800" not in d]
    raw = b"".join(sse.encode(d, e) for d, e in clean)
    parsed, partial = parse_all([raw])
    assert [(ev.data, ev.event) for ev in parsed] == clean
    assert not partial


# --- the fast path for simple events ------------------------------------------------------------


def test_simple_events_are_what_feed_would_dispatch() -> None:
    chunk = b'data: {"a":1}\n\ndata: [DONE]\n\n'
    fast = sse.Parser().simple_events(chunk)
    assert fast == [b'{"a":1}', b"[DONE]"]
    assert [e.data for e in sse.Parser().feed(chunk)] == [b.decode() for b in fast]


@pytest.mark.parametrize(
    "chunk",
    [
        b'data: {"a":1}\n\ndata: {"b"',  # ends inside an event
        b'data: {"a":1}\r\n\r\n',  # CR line ends
        b": keep-alive\n\ndata: x\n\n",  # a comment
        b"event: message\ndata: x\n\n",  # another field
        b"data: a\ndata: b\n\n",  # multi-line data
        b"data:x\n\n",  # no space after the colon
        b"data: \n\n",  # empty data (not dispatched)
        b"\xef\xbb\xbfdata: x\n\n",  # a BOM
        b"data: a\n\ndata: \n\n",  # an empty one after a simple one
        b"data: a\n\n\n",  # a blank line too many
        b"data: a\n\n\ndata: b\n\n",  # a blank line too many between two
        b"data: a\n\nevent: x\ndata: b\n\n",  # another field in the second event
        b"data: a\n\n: comment\n\n",  # a comment after a simple one
    ],
)
def test_anything_else_takes_the_full_parser(chunk: bytes) -> None:
    assert sse.Parser().simple_events(chunk) is None


def test_no_fast_path_while_an_event_is_pending() -> None:
    p = sse.Parser()
    assert p.feed(b"data: par") == []
    assert p.simple_events(b'data: {"a":1}\n\n') is None


fragments = st.sampled_from(
    [b"data: ", b"data:", b"data: x", b'{"a":1}', b"\n", b"\n\n", b"\r", b": c", b"event: e", b" "]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(fragments, max_size=12))
def test_simple_events_say_what_feed_says(parts: list[bytes]) -> None:
    """Whenever the fast path takes a chunk, its payloads are exactly the data of the events
    the full parser dispatches from it, with nothing left pending."""
    chunk = b"".join(parts)
    fast = sse.Parser().simple_events(chunk)
    if fast is None:
        return
    full = sse.Parser()
    events = full.feed(chunk)
    assert [(e.data, e.event) for e in events] == [(p.decode(), None) for p in fast]
    assert not full.has_partial
    assert chunk == b"".join(b"data: " + p + b"\n\n" for p in fast)
