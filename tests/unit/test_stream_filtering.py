"""The stages' filters over canonical chunk streams (gateway.filtering): any split of an answer
into chunks gives the text the unary check gives; a block ends the choice with content_filter."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar.contract import (
    Backend,
    GuardAction,
    Guardrail,
    GuardStage,
    PiiRule,
    Provider,
    Route,
    SidecarConfig,
)
from sluice_sidecar.exchange import Exchange
from sluice_sidecar.gateway.filtering import ChunkFilters
from sluice_sidecar.guardrails import GuardrailStage
from sluice_sidecar.stage import DeltaFilter, UnaryAnswer

ROUTE = Route(
    name="chat", source="chat", backends=(Backend(name="b", provider=Provider.MOCK, model="m"),)
)
REDACT = Guardrail(
    name="out",
    output=GuardStage(pii=PiiRule(entities=("EMAIL", "CREDIT_CARD"), action=GuardAction.REDACT)),
)
BLOCK = Guardrail(
    name="cards",
    output=GuardStage(pii=PiiRule(entities=("CREDIT_CARD",), action=GuardAction.BLOCK)),
)
ANSWER = "Mail ann.lee@example.org, pay with 4111 1111 1111 1111 and mail bo@ex.io again."


def exchange(*guards: Guardrail) -> Exchange:
    return Exchange(
        "r", "chat", 0.0, route=ROUTE, config=SidecarConfig(namespace="t", guardrails=guards)
    )


def frames(pieces: list[str], finish: str = "stop") -> list[bytes]:
    out = []
    for i, text in enumerate(pieces):
        delta: dict[str, Any] = {"content": text}
        if i == 0:
            delta["role"] = "assistant"
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
        out.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    end = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    end["choices"] = [{"index": 0, "delta": {}, "finish_reason": finish}]
    out.append(b"data: " + json.dumps(end).encode() + b"\n\n")
    return out


def run(ex: Exchange, batches: list[bytes]) -> tuple[str, list[str], ChunkFilters]:
    stage = GuardrailStage({})

    def make() -> list[DeltaFilter]:
        f = stage.stream_filter(ex)
        return [f] if f is not None else []

    cf = ChunkFilters(make, make())
    text, finishes = "", []
    for batch in [*batches, None]:
        out = asyncio.run(cf.feed(batch) if batch is not None else cf.close())
        for raw in out.split(b"\n\n"):
            if raw:
                for choice in json.loads(raw[6:])["choices"]:
                    text += choice["delta"].get("content") or ""
                    if choice["finish_reason"]:
                        finishes.append(choice["finish_reason"])
        if cf.blocked is not None:
            break
    return text, finishes, cf


def unary(ex: Exchange, text: str) -> dict[str, Any]:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    answer = UnaryAnswer(json.dumps(body).encode())
    GuardrailStage({}).on_response(ex, answer)
    out: dict[str, Any] = json.loads(answer.encoded())["choices"][0]
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=len(ANSWER) - 1), unique=True, max_size=12),
    st.integers(min_value=1, max_value=4),
)
def test_any_split_gives_the_unary_text(cuts: list[int], per_batch: int) -> None:
    points = [0, *sorted(cuts), len(ANSWER)]
    pieces = [ANSWER[a:b] for a, b in itertools.pairwise(points)]
    fr = frames(pieces)
    batches = [b"".join(fr[i : i + per_batch]) for i in range(0, len(fr), per_batch)]
    text, finishes, _ = run(exchange(REDACT), batches)
    expected = unary(exchange(REDACT), ANSWER)["message"]["content"]
    assert text == expected
    assert "ann.lee" not in text and "4111" not in text
    assert finishes == ["stop"]


def test_a_block_ends_the_choice_with_content_filter_and_sends_nothing_of_the_match() -> None:
    words = ANSWER.split(" ")
    pieces = [w + " " for w in words[:-1]] + words[-1:]
    text, finishes, cf = run(exchange(BLOCK), frames(pieces))
    assert finishes == ["content_filter"] and cf.blocked is not None
    assert "4111" not in text and text.startswith("Mail ann.lee@example.org")
    assert unary(exchange(BLOCK), ANSWER)["finish_reason"] == "content_filter"


def test_no_policy_means_no_filter_and_frames_pass_unchanged() -> None:
    assert GuardrailStage({}).stream_filter(exchange()) is None
    fr = frames(["a", "b"])
    cf = ChunkFilters(list, [])
    assert [json.loads(asyncio.run(cf.feed(f))[6:]) for f in fr] == [json.loads(f[6:]) for f in fr]


def test_held_text_is_released_when_the_stream_ends_without_a_finish_reason() -> None:
    fr = frames(["write to ann", ".lee@example.org"])[:-1]
    text, finishes, _ = run(exchange(REDACT), fr)
    assert text == "write to [EMAIL]" and finishes == []


def test_a_frame_the_checks_cannot_read_ends_the_stream_instead_of_passing() -> None:
    stage = GuardrailStage({})
    ex = exchange(REDACT)
    first = stage.stream_filter(ex)
    assert first is not None
    cf = ChunkFilters(lambda: [], [first])
    out = asyncio.run(cf.feed(b"data: {not json, mail ann.lee@example.org}\n\n"))
    assert cf.blocked is not None and b"ann.lee" not in out
    assert json.loads(out.split(b"\n\n")[0][6:])["choices"][0]["finish_reason"] == "content_filter"
