"""Provider quotas (backend ``limits{rpm, tpm}``), routing rules by request traits and agent
runs, through the sidecar over loopback with the fake providers."""

from __future__ import annotations

import asyncio
from typing import Any

from sluice_sidecar.contract import (
    BudgetRule,
    RateLimits,
    RoutingRule,
    RuleMatch,
    RunLimits,
    SidecarConfig,
)
from tests.fakes.openai_server import FakeOpenAI
from tests.sidecar.conftest import StartSidecar, backend, config, route


def chat(text: str = "hi", **kw: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": text}], **kw}


async def records(sc: Any) -> list[dict[str, Any]]:
    await asyncio.sleep(0.02)  # the audit record is written just after the answer
    out: list[dict[str, Any]] = sc.audit.records
    return out


# --- provider quotas ----------------------------------------------------------------------------


def quota_on_a(fake: FakeOpenAI, fake_b: FakeOpenAI, limits: RateLimits) -> SidecarConfig:
    """Backend a (first by priority) with a quota, backend b without one."""
    return config(
        route("chat", backend("a", fake, limits=limits), backend("b", fake_b, priority=1))
    )


async def test_a_backend_at_its_rpm_quota_is_skipped_until_it_refills(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    sc = await start_sidecar(quota_on_a(fake, fake_b, RateLimits(rpm=2)))
    for _ in range(3):
        status, _, _ = await sc.post("/v1/chat/completions", chat())
        assert status == 200
    assert (len(fake.requests), len(fake_b.requests)) == (2, 1)
    assert [r["fallbacks"] for r in await records(sc)] == [0, 0, 0]  # steered, not failed over
    sc.clock.advance(30.0)  # half a minute refills one request
    await sc.post("/v1/chat/completions", chat())
    assert (len(fake.requests), len(fake_b.requests)) == (3, 1)


async def test_the_only_backend_at_its_quota_gets_a_local_429_with_retry_after(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake, limits=RateLimits(rpm=1)))))
    assert (await sc.post("/v1/chat/completions", chat()))[0] == 200
    status, headers, body = await sc.post("/v1/chat/completions", chat())
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert "provider quota" in body["error"]["message"]
    assert int(headers["retry-after"]) == 60
    assert len(fake.requests) == 1  # the provider's quota was not spent on a certain 429
    sc.clock.advance(60.0)
    assert (await sc.post("/v1/chat/completions", chat()))[0] == 200


async def test_tpm_counts_the_prompt_and_the_output_cap(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    sc = await start_sidecar(quota_on_a(fake, fake_b, RateLimits(tpm=300)))
    await sc.post("/v1/chat/completions", chat(max_tokens=200))
    await sc.post("/v1/chat/completions", chat(max_tokens=200))
    assert (len(fake.requests), len(fake_b.requests)) == (1, 1)
    await sc.post("/v1/chat/completions", chat(max_tokens=50))  # ~90 tokens left on a
    assert len(fake.requests) == 2


# --- routing rules ------------------------------------------------------------------------------

RULES = (
    RoutingRule(name="tagged", match=RuleMatch(metadata={"tier": "cheap"}), backends=("small",)),
    RoutingRule(
        name="by-header", match=RuleMatch(headers={"x-tier": "cheap"}), backends=("small",)
    ),
    RoutingRule(
        name="short-no-tools",
        match=RuleMatch(max_prompt_tokens=50, tools=False),
        backends=("small",),
    ),
)


async def test_rules_send_simple_requests_to_the_cheaper_backend(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    cfg = config(
        route("chat", backend("big", fake), backend("small", fake_b, priority=1), rules=RULES)
    )
    sc = await start_sidecar(cfg)
    long = "a long question " * 40
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    cases: list[tuple[dict[str, Any], dict[str, str] | None, str, str | None]] = [
        (chat("hi"), None, "small", "short-no-tools"),
        (chat(long), None, "big", None),
        (chat("hi", tools=tools), None, "big", None),
        (chat(long, metadata={"tier": "cheap"}), None, "small", "tagged"),
        (chat(long), {"x-tier": "cheap"}, "small", "by-header"),
    ]
    for body, headers, _, _ in cases:
        status, _, _ = await sc.post("/v1/chat/completions", body, headers=headers)
        assert status == 200
    recs = await records(sc)
    assert [r["backend"] for r in recs] == [c[2] for c in cases]
    assert [(r.get("annotations") or {}).get("routingRule") for r in recs] == [c[3] for c in cases]
    assert fake_b.requests[1]["metadata"] == {"tier": "cheap"}  # user metadata still goes up


async def test_a_rule_narrows_fallback_to_its_backends(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    from tests.fakes.openai_server import status as fail

    fake_b.then(fail(500), fail(500))
    cfg = config(
        route(
            "chat",
            backend("big", fake),
            backend("small", fake_b, priority=1),
            rules=(
                RoutingRule(
                    name="short", match=RuleMatch(max_prompt_tokens=50), backends=("small",)
                ),
            ),
        )
    )
    sc = await start_sidecar(cfg)
    status, _, _ = await sc.post("/v1/chat/completions", chat("hi"))
    assert status >= 500 and len(fake.requests) == 0


# --- agent runs ---------------------------------------------------------------------------------


async def test_a_runaway_run_is_stopped_and_our_metadata_never_goes_upstream(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    rule = BudgetRule(name="agents", per_run=RunLimits(max_steps=2))
    cfg = config(route("chat", backend("a", fake))).model_copy(update={"budgets": (rule,)})
    sc = await start_sidecar(cfg)
    h = {"x-sluice-run": "job-1"}
    assert (await sc.post("/v1/chat/completions", chat(), headers=h))[0] == 200
    body = chat(metadata={"run": "job-1", "user_tag": "x"})
    assert (await sc.post("/v1/chat/completions", body))[0] == 200
    status, headers, err = await sc.post("/v1/chat/completions", chat(), headers=h)
    assert status == 429 and "retry-after" not in headers
    assert "Run 'job-1'" in err["error"]["message"]
    assert err["error"]["code"] == "budget_exceeded"
    assert "x-sluice-run" not in {k.lower() for k in fake.headers[0]}
    assert fake.requests[1]["metadata"] == {"user_tag": "x"}
    recs = await records(sc)
    assert [r["annotations"]["run"].get("step") for r in recs[:2]] == [1, 2]
    assert recs[2]["annotations"]["run"] == {"id": "job-1", "refused": "agents:maxSteps"}
    # A sub-run shares its parent's envelope but has its own steps.
    sub = {"x-sluice-run": "job-1.a", "x-sluice-parent-run": "job-1"}
    assert (await sc.post("/v1/chat/completions", chat(), headers=sub))[0] == 200
    last = (await records(sc))[-1]["annotations"]["run"]
    assert (last["id"], last["parent"], last["root"], last["step"]) == (
        "job-1.a",
        "job-1",
        "job-1",
        1,
    )
