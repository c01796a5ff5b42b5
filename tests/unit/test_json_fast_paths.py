"""The JSON fast paths give what the full paths give: ``validate.parse_object`` (orjson for the
usual body) against ``_parse_checked`` (the standard library's decoder alone), ``validate.chat``
(``_plain_chat`` first) against ``_chat_checked`` — the same value, or the same error — and
``translate.base.loads_json`` against the standard library's ``json.loads``."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sluice_sidecar import validate
from sluice_sidecar.errors import SluiceError
from sluice_sidecar.translate.base import loads_json


def _outcome(fn: Any, arg: Any) -> tuple[str, Any]:
    try:
        value = fn(arg)
    except SluiceError as err:
        return "error", (type(err).__name__, err.message, getattr(err, "param", None))
    return "ok", (repr(value), repr(arg))


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
role_content = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]), "content": st.text(max_size=8)}
)
messages = st.lists(
    role_content | st.dictionaries(st.sampled_from(["role", "content", "name"]), values), max_size=3
)
fields = st.sampled_from(
    [
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "tools",
        "metadata",
        "response_format",
        "user",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "x_unknown",
    ]
)
field_values = (
    values
    | st.integers(min_value=-2, max_value=2**31 + 2)
    | st.sampled_from([1.0, 64.0, 0.5, True, {}, {"prompt": "p"}])
)


@st.composite
def chat_bodies(draw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        body["model"] = draw(st.sampled_from(["bench", ""]) | values)
    if draw(st.integers(0, 9)):
        body["messages"] = draw(messages | values)
    for name in draw(st.lists(fields, max_size=5)):
        body[name] = draw(field_values)
    return body


@settings(max_examples=3000, deadline=None)
@given(chat_bodies())
@example({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64})
@example({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64.0})
@example({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": 1})
@example({"model": "m", "messages": [], "metadata": {"prompt": "p"}})
def test_chat_fast_path_is_the_full_check(body: dict[str, Any]) -> None:
    fast, full = copy.deepcopy(body), copy.deepcopy(body)
    assert _outcome(validate.chat, fast) == _outcome(validate._chat_checked, full)


def _json_texts() -> st.SearchStrategy[bytes]:
    return values.map(lambda v: json.dumps(v, ensure_ascii=False).encode()) | values.map(
        lambda v: json.dumps({"model": "m", "v": v}).encode()
    )


raw_bodies = (
    _json_texts()
    | st.binary(max_size=40)
    | st.sampled_from(
        [
            b'{"a": 18446744073709551616}',
            b'{"a": -9223372036854775809}',
            b'{"a": 9223372036854775807}',
            b'{"a": 1e400}',
            b'{"a": 0.1000000000000000055511151231257827}',
            b'{"a": NaN}',
            b'{"a": "\\ud800"}',
            b'{"a": "\\ud83d\\ude00"}',
            b'\xef\xbb\xbf{"a": 1}',
            b'{"a": 1}{}',
            b'{"b": 1, "a": 2, "b": 3}',
            b"[1]",
            b'"x"',
            b'{"a": "\x01"}',
            b"\xff{}",
            b"[" * 3000 + b"]" * 3000,
            b'{"a":' * 1100 + b"1" + b"}" * 1100,
        ]
    )
)


@settings(max_examples=3000, deadline=None)
@given(raw_bodies)
def test_parse_fast_path_is_the_standard_decoder(raw: bytes) -> None:
    assert _outcome(validate.parse_object, raw) == _outcome(validate._parse_checked, raw)


@pytest.mark.parametrize("raw", [b'{"n": 18446744073709551616}', b'{"n": -9223372036854775809}'])
def test_huge_integers_stay_integers(raw: bytes) -> None:
    assert type(validate.parse_object(raw)["n"]) is int


def _stdlib(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


@settings(max_examples=3000, deadline=None)
@given(raw_bodies)
def test_loads_json_reads_as_the_standard_library(raw: bytes) -> None:
    expected = repr(_stdlib(raw))
    assert repr(loads_json(raw)) == expected
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    assert repr(loads_json(text)) == expected
