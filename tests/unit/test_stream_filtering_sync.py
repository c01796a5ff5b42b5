"""``ChunkFilters.feed_now`` (the relay's path without a coroutine) against ``feed``: for any
stream of content and tool-call deltas split into any batches of frames, the relay's way
(``feed_now``, then ``await feed`` for what it leaves) writes the same bytes as the general path
alone (every frame through ``_chunk``, as before the fast path), and ``feed_now`` leaves exactly
the events from the first that ends a text on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
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
from sluice_sidecar.stage import DeltaFilter

ROUTE = Route(
    name="chat", source="chat", backends=(Backend(name="b", provider=Provider.MOCK, model="m"),)
)
POLICIES = {
    "redact": Guardrail(
        name="out",
        output=GuardStage(
            pii=PiiRule(entities=("EMAIL", "CREDIT_CARD", "PHONE"), action=GuardAction.REDACT)
        ),
    ),
    "block": Guardrail(
        name="cards",
        output=GuardStage(pii=PiiRule(entities=("CREDIT_CARD",), action=GuardAction.BLOCK)),
    ),
}
TEXTS = [
    "Mail ann.lee@example.org, pay with 4111 1111 1111 1111 and call +44 20 7946 0958.",
    '{"to": "bo@ex.io", "card": "4111 1111 1111 1111"}',
    "no personal data here at all",
]


def _frame(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunk["choices"] = [{"index": index, "delta": delta, "finish_reason": finish}]
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _pieces(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % len(text) for c in cuts if c % len(text)})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def stream(content: str, calls: list[str], cuts: list[int]) -> list[bytes]:
    out = [_frame({"role": "assistant"})] + [_frame({"content": p}) for p in _pieces(content, cuts)]
    for n, args in enumerate(calls):
        for i, p in enumerate(_pieces(args, cuts)):
            call: dict[str, Any] = {"index": n, "function": {"arguments": p}}
            if i == 0:
                call |= {"id": f"call_{n}", "type": "function"}
                call["function"]["name"] = "send"
            out.append(_frame({"tool_calls": [call]}))
    out.append(_frame({}, "tool_calls" if calls else "stop"))
    out.append(b'data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{}}\n\n')
    return out


class GeneralOnly(ChunkFilters):
    """Every frame through the general (async) path, as before ``feed_now``: the reference."""

    def _plain(self, obj: dict[str, Any]) -> bool:
        return False


def filters(policy: str, kind: type[ChunkFilters] = ChunkFilters) -> ChunkFilters:
    stage = GuardrailStage({})
    ex = Exchange(
        "r",
        "chat",
        0.0,
        route=ROUTE,
        config=SidecarConfig(namespace="t", guardrails=(POLICIES[policy],)),
    )

    def make() -> list[DeltaFilter]:
        f = stage.stream_filter(ex)
        return [f] if f is not None else []

    return kind(make, make())


def _ends_a_text(event: bytes) -> bool:
    return b'"finish_reason":"' in event.replace(b": ", b":") or b"tool_calls" in event


def _from_the_end_of_a_text(batch: bytes) -> bytes:
    events = batch.split(b"\n\n")
    ends = [i for i, e in enumerate(events) if _ends_a_text(e)]
    return b"\n\n".join(events[ends[0] :]) if ends else b""


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(POLICIES)),
    st.sampled_from(TEXTS),
    st.lists(st.sampled_from(TEXTS), max_size=2),
    st.lists(st.integers(1, 200), max_size=12),
    st.integers(1, 3),
)
def test_the_relays_way_writes_what_feed_writes(
    policy: str, content: str, calls: list[str], cuts: list[int], per_batch: int
) -> None:
    fr = stream(content, calls, cuts)
    batches = [b"".join(fr[i : i + per_batch]) for i in range(0, len(fr), per_batch)]
    ref, relay = filters(policy, GeneralOnly), filters(policy)

    async def run() -> None:
        for batch in batches:
            want = await ref.feed(batch)
            now, rest = relay.feed_now(batch)
            if relay.blocked is None:  # the events from the first that ends a text are left
                assert rest == _from_the_end_of_a_text(batch)
            got = now + (await relay.feed(rest) if rest else b"")
            assert got == want
            assert (relay.blocked is None) == (ref.blocked is None)
            if ref.blocked is not None:
                return
        assert await relay.close() == await ref.close()

    asyncio.run(run())


def test_content_deltas_go_through_without_a_coroutine_and_are_redacted() -> None:
    cf = filters("redact")
    out = b""
    for piece in ["Mail ann", ".lee@exam", "ple.org now"]:
        got, rest = cf.feed_now(_frame({"content": piece}))
        assert rest == b""
        out += got
    end = _frame({}, "stop")
    got, rest = cf.feed_now(_frame({"content": " and"}) + end)
    assert rest == end.rstrip(b"\n") + b"\n\n"  # the text ends: the async path releases it
    out += got + asyncio.run(cf.feed(rest))
    text = "".join(
        json.loads(raw[6:])["choices"][0]["delta"].get("content") or ""
        for raw in out.split(b"\n\n")
        if raw
    )
    assert text == "Mail [EMAIL] now and"


def test_a_block_on_the_way_without_a_coroutine_ends_the_choice() -> None:
    cf = filters("block")
    text = "card 4111 1111 1111 1111 ok, and more"  # a whole scan batch (32 characters)
    out, rest = cf.feed_now(_frame({"content": text}) + _frame({}, "stop"))
    assert rest == b"" and cf.blocked is not None and b"4111" not in out
    assert json.loads(out[6:])["choices"][0]["finish_reason"] == "content_filter"
