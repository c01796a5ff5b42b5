"""Output checks on tool-call arguments, ``restore: true`` and the streamed/unary agreement:
any split of an answer (by characters, or of its SSE bytes anywhere, inside UTF-8 sequences
too) gives the text and the tool-call arguments the unary check gives."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar import sse
from sluice_sidecar.contract import (
    GuardAction,
    Guardrail,
    GuardStage,
    PiiRule,
)
from sluice_sidecar.exchange import Exchange
from sluice_sidecar.gateway.filtering import ChunkFilters
from sluice_sidecar.guardrails import Engine, GuardrailStage
from sluice_sidecar.guardrails.detectors import Span
from sluice_sidecar.guardrails.restore import Placeholders, Restorer, restore_text
from sluice_sidecar.stage import DeltaFilter, JsonTextGuard, UnaryAnswer
from tests.unit.test_stream_filtering import BLOCK as CARDS
from tests.unit.test_stream_filtering import REDACT as OUT
from tests.unit.test_stream_filtering import exchange

RESTORE = Guardrail(
    name="keep",
    input=GuardStage(
        pii=PiiRule(entities=("EMAIL", "PHONE"), action=GuardAction.REDACT, restore=True)
    ),
)
CONTENT = "Grüße — I will mail ann.lee@example.org, card 4111 1111 1111 1111, ok?"
ARGS = [
    '{"to": "bo@example.io", "note": "pay 4111 1111 1111 1111 — danke"}',
    '{"cc": ["ann.lee@example.org"], "body": "\\nzed@example.com"}',
]


# --- an answer as a stream and as a whole -------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def stream_chunks(content: list[str], args: list[list[str]]) -> list[dict[str, Any]]:
    out = [_chunk({"role": "assistant", "content": content[0]})]
    out += [_chunk({"content": piece}) for piece in content[1:]]
    for k, pieces in enumerate(args):
        fn = {"name": f"tool{k}", "arguments": pieces[0]}
        out.append(_chunk({"tool_calls": [{"index": k, "id": f"call_{k}", "function": fn}]}))
        out += [
            _chunk({"tool_calls": [{"index": k, "function": {"arguments": piece}}]})
            for piece in pieces[1:]
        ]
    out.append(_chunk({}, "tool_calls" if args else "stop"))
    return out


def completion(content: str, args: list[str]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if args:
        message["tool_calls"] = [
            {
                "id": f"call_{k}",
                "type": "function",
                "function": {"name": f"tool{k}", "arguments": a},
            }
            for k, a in enumerate(args)
        ]
    return {"id": "c", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


def unary(stage: GuardrailStage, ex: Exchange, content: str, args: list[str]) -> dict[str, Any]:
    answer = UnaryAnswer(json.dumps(completion(content, args)).encode())
    stage.on_response(ex, answer)
    out: dict[str, Any] = json.loads(answer.encoded())["choices"][0]
    return out


def chunk_filters(stage: GuardrailStage, ex: Exchange) -> ChunkFilters:
    def make() -> list[DeltaFilter]:
        f = stage.stream_filter(ex)
        return [f] if f is not None else []

    return ChunkFilters(make, make())


def collect(
    cf: ChunkFilters, batches: list[bytes]
) -> tuple[str, dict[int, str], list[str], list[int]]:
    """Content, arguments per tool call, finish reasons, and the order tool calls appeared in."""
    content, args, finishes, order = "", dict[int, str](), list[str](), list[int]()
    for batch in [*batches, None]:
        out = asyncio.run(cf.feed(batch) if batch is not None else cf.close())
        for raw in out.split(b"\n\n"):
            if not raw:
                continue
            for choice in json.loads(raw[6:])["choices"]:
                delta = choice["delta"]
                content += delta.get("content") or ""
                for tc in delta.get("tool_calls") or ():
                    if not order or order[-1] != tc["index"]:
                        order.append(tc["index"])
                    args[tc["index"]] = args.get(tc["index"], "") + tc["function"]["arguments"]
                if choice["finish_reason"]:
                    finishes.append(choice["finish_reason"])
        if cf.blocked is not None:
            break
    return content, args, finishes, order


def split(text: str, cuts: list[int]) -> list[str]:
    points = [0, *sorted({c % len(text) for c in cuts} - {0}), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(points)]


CUTS = st.lists(st.integers(min_value=1, max_value=200), max_size=10)


@settings(max_examples=120, deadline=None)
@given(CUTS, CUTS, CUTS)
def test_any_character_split_of_content_and_tool_arguments_gives_the_unary_answer(
    c0: list[int], c1: list[int], c2: list[int]
) -> None:
    stage = GuardrailStage({})
    expected = unary(stage, exchange(OUT), CONTENT, ARGS)["message"]
    chunks = stream_chunks(split(CONTENT, c0), [split(ARGS[0], c1), split(ARGS[1], c2)])
    frames = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
    content, args, finishes, order = collect(chunk_filters(stage, exchange(OUT)), frames)
    assert content == expected["content"]
    assert [args[0], args[1]] == [tc["function"]["arguments"] for tc in expected["tool_calls"]]
    assert order == [0, 1] and finishes == ["tool_calls"]
    assert "4111" not in content + args[0] + args[1] and "@" not in args[0] + args[1]
    assert json.loads(args[0])["to"] == "[EMAIL]"
    assert json.loads(args[1])["body"] == "\\[EMAIL]"  # the \n went with the match; still JSON


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2000), max_size=25))
def test_any_byte_split_of_the_sse_stream_gives_the_unary_answer(cuts: list[int]) -> None:
    stage = GuardrailStage({})
    expected = unary(stage, exchange(OUT), CONTENT, ARGS)["message"]
    words = split(CONTENT, list(range(5, len(CONTENT), 7)))
    wire = b"".join(
        sse.encode(json.dumps(c, ensure_ascii=False))
        for c in stream_chunks(words, [[a[:9], a[9:]] for a in ARGS])
    )
    points = [0, *sorted({c % len(wire) for c in cuts} - {0}), len(wire)]
    parser = sse.Parser()
    frames = [
        b"data: " + ev.data.encode() + b"\n\n"
        for a, b in itertools.pairwise(points)
        for ev in parser.feed(wire[a:b])
    ]
    content, args, _, _ = collect(chunk_filters(stage, exchange(OUT)), frames)
    assert content == expected["content"]
    assert [args[0], args[1]] == [tc["function"]["arguments"] for tc in expected["tool_calls"]]


def test_a_card_in_tool_arguments_blocks_the_choice_and_the_call() -> None:
    stage = GuardrailStage({})
    words = [w + " " for w in CONTENT.split(" ")]
    safe = "Here you go: "
    chunks = stream_chunks([safe], [[ARGS[0][:20], ARGS[0][20:]]])
    frames = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
    ex = exchange(CARDS)
    content, args, finishes, _ = collect(chunk_filters(stage, ex), frames)
    assert finishes == ["content_filter"] and "4111" not in args.get(0, "")
    assert content == safe
    assert any(v["check"] == "pii" and v["action"] == "Block" for v in ex.verdicts)
    out = unary(stage, exchange(CARDS), safe, [ARGS[0]])
    assert out["finish_reason"] == "content_filter" and "tool_calls" not in out["message"]
    assert words  # the content itself has a card too: blocked as well
    assert unary(stage, exchange(CARDS), CONTENT, [])["finish_reason"] == "content_filter"


def test_json_text_guard_escapes_a_placeholder_after_a_backslash_across_deltas() -> None:
    g = JsonTextGuard()
    assert g.feed('{"a": "x\\') + g.feed('[EMAIL]", "b": "\\\\[ok]"}') == (
        '{"a": "x\\\\[EMAIL]", "b": "\\\\[ok]"}'
    )
    assert json.loads('{"a": "x\\\\[EMAIL]"}') == {"a": "x\\[EMAIL]"}


# --- restore ------------------------------------------------------------------------------------

ORIGINALS = {"[EMAIL_1]": "ann.lee@example.org", "[PHONE_1]": "+1 415 555 0100"}
ANSWER = "Sure [EMAIL_1], I'll call [PHONE_1]; [EMAIL_2] is unknown, [[EMAIL_1]] nested, [EMAIL_"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(ANSWER) - 1), unique=True, max_size=15))
def test_restorer_gives_the_whole_texts_restore_for_any_split(cuts: list[int]) -> None:
    r = Restorer(ORIGINALS)
    out = "".join(r.feed(p) for p in split(ANSWER, cuts)) + r.finish()
    assert out == restore_text(ANSWER, ORIGINALS)
    assert "ann.lee@example.org" in out and "[EMAIL_2]" in out and out.endswith("[EMAIL_")


def test_placeholders_are_typed_numbered_and_consistent_within_a_request() -> None:
    ph = Placeholders()
    assert ph.name(Span(0, 1, "EMAIL"), "a@x.org") == "[EMAIL_1]"
    assert ph.name(Span(0, 1, "EMAIL"), "b@x.org") == "[EMAIL_2]"
    assert ph.name(Span(0, 1, "EMAIL"), "a@x.org") == "[EMAIL_1]"
    assert ph.name(Span(0, 1, "PHONE"), "+1 415 555 0100") == "[PHONE_1]"
    assert ph.name(Span(0, 1, "EMAIL"), 'a"b@x.org') == "[EMAIL]"  # unsafe: not restorable
    assert ph.originals == {
        "[EMAIL_1]": "a@x.org",
        "[EMAIL_2]": "b@x.org",
        "[PHONE_1]": "+1 415 555 0100",
    }


def _restore_request() -> dict[str, Any]:
    return {
        "model": "chat",
        "messages": [
            {"role": "system", "content": "You draft mails."},
            {"role": "user", "content": "Mail ann.lee@example.org and bo@example.io."},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "Again ann.lee@example.org, or call +1 415 555 0100."},
        ],
    }


def test_restore_sends_placeholders_and_puts_the_originals_back_unary_and_streamed() -> None:
    stage = GuardrailStage({})
    ex = exchange(RESTORE)
    ex.body = _restore_request()
    asyncio.run(stage.on_request(ex))
    sent = json.dumps(ex.body)
    assert "ann.lee" not in sent and "bo@example.io" not in sent and "415" not in sent
    texts = [m["content"] for m in ex.body["messages"]]
    assert texts[1] == "Mail [EMAIL_1] and [EMAIL_2]."
    assert texts[3] == "Again [EMAIL_1], or call [PHONE_1]."
    assert ex.native is None
    reply = "Mailed [EMAIL_1] and [EMAIL_2]; will ring [PHONE_1]."
    call = '{"to": "[EMAIL_2]"}'
    got = unary(stage, ex, reply, [call])["message"]
    assert (
        got["content"] == "Mailed ann.lee@example.org and bo@example.io; will ring +1 415 555 0100."
    )
    assert json.loads(got["tool_calls"][0]["function"]["arguments"]) == {"to": "bo@example.io"}
    chunks = stream_chunks(split(reply, [3, 9, 10, 11, 30]), [split(call, [8, 12])])
    frames = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
    content, args, _, _ = collect(chunk_filters(stage, ex), frames)
    assert content == got["content"] and args[0] == got["tool_calls"][0]["function"]["arguments"]
    stage.on_finish(ex)
    assert stage.stream_filter(ex) is None  # the originals are gone with the request
    assert "ann.lee" not in json.dumps(ex.verdicts) and "ann.lee" not in json.dumps(ex.annotations)


def test_restore_runs_after_the_output_checks() -> None:
    both = RESTORE.model_copy(update={"output": OUT.output})
    stage = GuardrailStage({})
    ex = exchange(both)
    ex.body = _restore_request()
    asyncio.run(stage.on_request(ex))
    got = unary(stage, ex, "To [EMAIL_1], cc leak@evil.example.", [])["message"]["content"]
    assert got == "To ann.lee@example.org, cc [EMAIL]."


def test_monitor_never_restores_or_redacts() -> None:
    watch = RESTORE.model_copy(update={"mode": "Monitor"})
    engine = Engine((watch,), {})
    body = _restore_request()
    result = engine.check_input(body, "chat", "chat")
    assert result.body is body and result.placeholders is None
    assert result.verdicts and all(v["enforced"] is False for v in result.verdicts)


@pytest.mark.parametrize("action", [GuardAction.BLOCK, GuardAction.LOG])
def test_restore_applies_only_with_redact(action: GuardAction) -> None:
    guard = Guardrail(
        name="g",
        input=GuardStage(pii=PiiRule(entities=("EMAIL",), action=action, restore=True)),
    )
    result = Engine((guard,), {}).check_input(_restore_request(), "chat", "chat")
    assert result.placeholders is None
