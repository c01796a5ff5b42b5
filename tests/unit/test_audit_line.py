"""``metering.audit_line`` (the fast path of the JSON-lines audit sink) writes exactly what
encoding ``audit_record`` would, for any exchange."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar import errors, metering
from sluice_sidecar.contract import Backend, Pricing, Route
from sluice_sidecar.exchange import Exchange, Try
from sluice_sidecar.model import Usage
from sluice_sidecar.tracing import TraceContext
from sluice_sidecar.translate import ANTHROPIC

text = st.text(max_size=12)  # any unicode: quotes, controls, surrogate-free
maybe_text = st.none() | text
small = st.integers(min_value=0, max_value=10**9)
#: 1, 0, 0: a request that worked at its first try (``audit_line`` remembers those fields)
counts = st.sampled_from([0, 1]) | small
finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def exchanges(draw: Any) -> tuple[Exchange, dict[str, Any]]:
    b = Backend(
        name=draw(text) or "b",
        provider=draw(st.sampled_from(["openai", "anthropic", "mock"])),
        model=draw(text),
        pricing=Pricing(input_per_mtok=draw(finite), output_per_mtok=draw(finite)),
    )
    route = Route(name=draw(text), source=draw(text), backends=(b,))
    ex = Exchange(draw(text), draw(st.sampled_from(["chat", "embeddings"])), draw(finite))
    ex.model = draw(text)
    if draw(st.booleans()):
        ex.route, ex.backend = route, b
    ex.stream = draw(st.booleans())
    ex.status = draw(st.sampled_from([0, 200, 400, 499, 502]))
    ex.outcome = draw(st.sampled_from(["ok", "error", "stream_error", "truncated"]))
    if draw(st.booleans()):
        ex.error = errors.UpstreamStatusError(draw(st.sampled_from([400, 429, 503])), draw(text))
    if draw(st.booleans()):
        ex.error = errors.SluiceError(draw(text))
    ex.attempts, ex.retries, ex.fallbacks = draw(counts), draw(counts), draw(counts)
    for _ in range(draw(st.integers(0, 3))):
        t = Try(b, draw(finite))
        t.duration = draw(finite)
        t.result = draw(st.sampled_from(["ok", "5xx", "timeout", "fatal", "abandoned"]))
        t.status = draw(st.none() | st.sampled_from([429, 500]))
        t.reason = draw(maybe_text)
        ex.tries.append(t)
    if draw(st.booleans()):
        source = draw(st.sampled_from(["provider", "estimated"]))
        ex.usage = Usage(draw(small), draw(small), draw(small), source)
    ex.ttft = draw(st.none() | finite)
    ex.bytes_in = draw(small)
    ex.prompt_ref, ex.prompt_version = draw(maybe_text), draw(st.none() | small)
    if draw(st.booleans()):
        ex.verdicts.append({"policy": draw(text), "action": "redact", "score": draw(finite)})
    if draw(st.booleans()):
        ex.annotations["gaveUp"] = draw(text)
        ex.annotations["continued"] = draw(small)
    if draw(st.booleans()):
        ex.trace = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", None, None)
    if draw(st.booleans()):
        ex.client = ANTHROPIC
    ex.body = {"messages": [{"role": "user", "content": draw(text)}]}
    kw = {
        "now_wall": draw(finite) + 1.7e9,
        "now": draw(finite),
        "config_hash": draw(maybe_text),
        "who": draw(st.none() | st.fixed_dictionaries({"namespace": maybe_text, "pod": text})),
        "include_prompt": draw(st.booleans()),
    }
    return ex, kw


@settings(max_examples=300, deadline=None)
@given(exchanges())
def test_audit_line_is_the_encoded_record(case: tuple[Exchange, dict[str, Any]]) -> None:
    ex, kw = case
    expected = json.dumps(metering.audit_record(ex, **kw), separators=(",", ":"))
    assert metering.audit_line(ex, **kw) == expected


def test_json_lines_sink_writes_batches_and_on_flush() -> None:
    import io

    out = io.StringIO()
    sink = metering.JsonLinesAudit(out, batch=3)
    sink.write({"a": "é"})
    sink.write_line('{"b":1}')
    assert out.getvalue() == ""  # pending until the batch is full or the ticker flushes
    sink.write_line('{"c":2}')
    assert out.getvalue().splitlines() == ['{"a":"\\u00e9"}', '{"b":1}', '{"c":2}']
    sink.write_line('{"d":3}')
    sink.flush()
    assert out.getvalue().splitlines()[-1] == '{"d":3}'
    sink.flush()
    assert len(out.getvalue().splitlines()) == 4


def test_json_lines_sink_batches_are_bounded_in_characters() -> None:
    """Long records (guardrail verdicts, annotations) are written once their batch reaches
    ``batch_chars`` characters, before it has ``batch`` lines: a batch is held three times
    while it is written, so its size is the sink's peak memory."""
    import io

    out = io.StringIO()
    sink = metering.JsonLinesAudit(out, batch=256, batch_chars=100)
    line = '{"x":"' + "a" * 40 + '"}'
    sink.write_line(line)
    sink.write_line(line)
    assert out.getvalue() == ""
    sink.write_line(line)  # 144 characters pending: written
    assert out.getvalue().splitlines() == [line] * 3
    sink.write_line(line)
    assert out.getvalue().splitlines() == [line] * 3  # the count starts again
    sink.flush()
    assert out.getvalue().splitlines() == [line] * 4


def test_first_try_fields_are_remembered_per_stream_status_and_outcome() -> None:
    """The fields from ``stream`` to ``fallbacks`` of a request that worked at its first try
    are formatted once per (stream, status, outcome): each combination, asked twice, is still
    its own record."""
    b = Backend(name="b", provider="openai", model="m")
    route = Route(name="r", source="r", backends=(b,))
    for _ in range(2):
        for stream in (False, True):
            for status, outcome in (
                (200, "ok"),
                (200, "truncated"),
                (200, "client_disconnected"),  # after its commit point
                (499, "client_disconnected"),
            ):
                ex = Exchange("rid", "chat", 1.0)
                ex.route, ex.backend, ex.model = route, b, "r"
                ex.stream, ex.status, ex.outcome, ex.attempts = stream, status, outcome, 1
                ex.tries.append(Try(b, 1.0))
                kw: dict[str, Any] = {"now_wall": 1.7e9, "now": 2.0, "config_hash": None}
                expected = json.dumps(metering.audit_record(ex, **kw), separators=(",", ":"))
                assert metering.audit_line(ex, **kw) == expected
