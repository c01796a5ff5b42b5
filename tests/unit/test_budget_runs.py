"""Agent runs (pure, fake clock): reading the run from headers and metadata, the maxSteps loop
breaker, nested envelopes (a sub-run cannot outspend its parent), concurrent steps of one run,
bounded memory, and a property test of the envelope arithmetic."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar.budget import BudgetExceeded, BudgetStage, RunBook, RunExceeded, RunRef, runs
from sluice_sidecar.contract import (
    Backend,
    BudgetRule,
    ExceededAction,
    Pricing,
    Provider,
    Route,
    RunLimits,
)
from sluice_sidecar.errors import InvalidField
from sluice_sidecar.exchange import Exchange
from sluice_sidecar.model import Usage
from tests.fakes.clock import FakeClock

CHAT = Route(
    name="chat",
    source="chat",
    backends=(
        Backend(
            name="b",
            provider=Provider.MOCK,
            model="m",
            pricing=Pricing(input_per_mtok=1000.0, output_per_mtok=1000.0),
        ),
    ),
)
ROUTES = {"chat": CHAT}


def stage(per_run: RunLimits | None = None, **kw: Any) -> BudgetStage:
    rules = [] if per_run is None else [BudgetRule(name="agents", per_run=per_run, **kw)]
    return BudgetStage(rules, {}, FakeClock(start=1000.0, wall=1.7e9), ROUTES)


def exchange(
    rid: str, run: str | None = None, parent: str | None = None, meta: dict[str, Any] | None = None
) -> Exchange:
    b: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    b["max_tokens"] = 10
    if meta:
        b["metadata"] = meta
    ex = Exchange(rid, "chat", started=1000.0, body=b, model="chat", route=CHAT)
    ex.bytes_in = len(json.dumps(b))
    headers = {}
    if run is not None:
        headers[runs.HEADER] = run
    if parent is not None:
        headers[runs.PARENT_HEADER] = parent
    ex.headers = headers
    return ex


def finish(ex: Exchange, inp: int = 5, out: int = 5) -> None:
    assert ex.route is not None
    ex.backend = ex.route.backends[0]
    ex.usage = Usage(inp, out)
    ex.attempts = 1


async def step(e: BudgetStage, rid: str, run: str, parent: str | None = None) -> Exchange:
    ex = exchange(rid, run, parent)
    await e.on_request(ex)
    finish(ex)
    e.on_finish(ex)
    return ex


# --- names --------------------------------------------------------------------------------------


def test_run_from_headers_and_metadata_and_our_keys_are_removed() -> None:
    assert runs.reference({"model": "x"}, {}) == (None, None)
    ref, body = runs.reference({"model": "x"}, {runs.HEADER: "r1", runs.PARENT_HEADER: "p"})
    assert ref == RunRef("r1", "p") and body is None
    b = {"model": "x", "metadata": {"run": "r2", "parentRun": "p2", "user": "u"}}
    ref, body = runs.reference(b, {runs.HEADER: "ignored"})
    assert ref == RunRef("r2", "p2")
    assert body == {"model": "x", "metadata": {"user": "u"}}
    assert b["metadata"]["run"] == "r2"  # the client's body is left alone
    ref, body = runs.reference({"metadata": {"run": "r3"}}, {})
    assert ref == RunRef("r3") and body == {}
    assert runs.reference({}, {runs.HEADER: "same", runs.PARENT_HEADER: "same"})[0] == RunRef(
        "same"
    )


@pytest.mark.parametrize(
    ("body", "headers", "param"),
    [
        ({"metadata": {"run": 3}}, {}, "metadata.run"),
        ({}, {runs.HEADER: "x" * 129}, runs.HEADER),
        ({}, {runs.HEADER: "tab\there"}, runs.HEADER),
        ({}, {runs.PARENT_HEADER: "p"}, runs.PARENT_HEADER),
    ],
)
def test_malformed_run_ids_are_refused(
    body: dict[str, Any], headers: dict[str, str], param: str
) -> None:
    with pytest.raises(InvalidField) as err:
        runs.reference(body, headers)
    assert err.value.param == param


async def test_metadata_keys_do_not_go_upstream_and_totals_reach_the_audit() -> None:
    e = stage()  # no budget at all: the run is still counted
    ex = exchange("q1", meta={"run": "job-7", "tag": "t"})
    await e.on_request(ex)
    assert ex.body["metadata"] == {"tag": "t"}
    finish(ex, 100, 20)
    e.on_finish(ex)
    run = ex.annotations["run"]
    assert run["id"] == "job-7" and run["step"] == 1 and run["tokens"] == 120
    assert run["spentUSD"] == pytest.approx(120 * 1000 / 1e6)
    assert "budget" not in ex.annotations


async def test_no_run_and_no_budget_leaves_the_request_alone() -> None:
    e = stage()
    ex = exchange("q1")
    body = ex.body
    await e.on_request(ex)
    assert ex.body is body and not ex.annotations and e.in_flight() == 0


# --- the loop breaker ---------------------------------------------------------------------------


async def test_a_run_with_max_steps_5_stops_at_step_6() -> None:
    e = stage(RunLimits(max_steps=5))
    for i in range(5):
        ex = await step(e, f"s{i}", "agent-1")
        assert ex.annotations["run"]["step"] == i + 1
    ex = exchange("s5", "agent-1")
    with pytest.raises(BudgetExceeded) as err:
        await e.on_request(ex)
    assert err.value.status == 429 and err.value.retry_after is None
    assert "Run 'agent-1'" in str(err.value) and "maxSteps" in str(err.value)
    assert "step 6" in str(err.value)
    assert ex.annotations["run"] == {"id": "agent-1", "refused": "agents:maxSteps"}
    # Another run is not affected; failed steps count too (a loop of errors is a loop).
    await step(e, "o1", "agent-2")
    failed = exchange("o2", "agent-2")
    await e.on_request(failed)
    e.on_finish(failed)
    run = e.policy.runs.get("agent-2")
    assert run is not None and run.steps == 2 and run.requests == 1


async def test_alert_only_records_the_run_over_its_limit() -> None:
    e = stage(RunLimits(max_steps=1), on_exceeded=ExceededAction.ALERT_ONLY)
    await step(e, "a", "r")
    ex = await step(e, "b", "r")
    assert ex.annotations["run"]["overLimit"] == ["agents:maxSteps"]


# --- nested envelopes ---------------------------------------------------------------------------


async def test_a_sub_run_cannot_outspend_its_parent() -> None:
    worst = 10 + (3 + 4 + 1) + 1  # output cap + the prompt estimate: 19 tokens at most
    e = stage(RunLimits(tokens=45))
    await step(e, "p1", "parent")  # 10 tokens settled
    await step(e, "c1", "child", "parent")
    await step(e, "c2", "child", "parent")
    parent = e.policy.runs.get("parent")
    child = e.policy.runs.get("child")
    assert parent is not None and child is not None and child.parent is parent
    assert (parent.tokens, child.tokens) == (30, 20)
    assert 30 + worst > 45  # the parent's envelope has no room for another worst case
    with pytest.raises(BudgetExceeded) as err:
        await e.on_request(exchange("c3", "child", "parent"))
    x = err.value.exceeded
    assert isinstance(x, RunExceeded) and (x.metric, x.envelope) == ("tokens", "parent")
    assert "within its ancestor run 'parent'" in str(err.value)
    # A grandchild draws from the same ceiling.
    with pytest.raises(BudgetExceeded):
        await e.on_request(exchange("g1", "grandchild", "child"))
    assert parent.reserved_tokens == 0 and child.reserved_tokens == 0


async def test_usd_envelope_and_requests_envelope() -> None:
    e = stage(RunLimits(usd=0.05, requests=10))
    ex = await step(e, "a", "r")  # 10 tokens at $1000/M = $0.01; worst case $0.019
    assert ex.annotations["run"]["spentUSD"] == pytest.approx(0.01)
    await step(e, "b", "r")
    await step(e, "c", "r")
    with pytest.raises(BudgetExceeded) as err:  # 0.03 + 0.019 ≤ 0.05, then 0.04 + 0.019 > 0.05
        await step(e, "d", "r")
        await step(e, "e", "r")
    assert err.value.exceeded.metric == "usd"
    e2 = stage(RunLimits(requests=2))
    await step(e2, "a", "r")
    await step(e2, "b", "r2", "r")
    with pytest.raises(BudgetExceeded):
        await step(e2, "c", "r")


async def test_concurrent_steps_of_one_run_cannot_race_past_its_limit() -> None:
    e = stage(RunLimits(tokens=19 * 7))  # room for exactly 7 worst cases

    async def one(i: int) -> bool:
        ex = exchange(f"r{i}", "swarm" if i % 2 else f"sub{i % 3}", "swarm" if i % 2 == 0 else None)
        try:
            await e.on_request(ex)
        except BudgetExceeded:
            return False
        await asyncio.sleep(0)  # in flight while the others reserve
        finish(ex, 9, 10)  # uses its whole worst case
        e.on_finish(ex)
        return True

    results = await asyncio.gather(*(one(i) for i in range(200)))
    run = e.policy.runs.get("swarm")
    assert run is not None
    assert sum(results) == 7 and run.tokens == 7 * 19 and run.reserved_tokens == 0


# --- memory -------------------------------------------------------------------------------------


def test_runs_expire_after_inactivity_and_the_table_is_bounded() -> None:
    book = RunBook(max_runs=3, idle_seconds=10.0)
    book.admit(RunRef("a"), [], 0.0, 0, 0.0)
    book.admit(RunRef("b", "p"), [], 0.0, 0, 1.0)
    assert len(book) == 3
    book.admit(RunRef("c"), [], 0.0, 0, 2.0)  # full: "a", the least recently used, goes
    assert book.get("a") is None and book.get("p") is not None and len(book) == 3
    book.admit(RunRef("d"), [], 0.0, 0, 20.0)  # everything else idled out
    assert len(book) == 1 and book.get("d") is not None


def test_nesting_is_bounded() -> None:
    book = RunBook()
    for i in range(runs.MAX_DEPTH):
        book.admit(RunRef(f"r{i + 1}", f"r{i}"), [], 0.0, 0, 0.0)
    with pytest.raises(InvalidField):
        book.admit(RunRef("deep", f"r{runs.MAX_DEPTH}"), [], 0.0, 0, 0.0)


# --- the envelope arithmetic, as a property ----------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["root", "a", "b", "a1", "a2"]),
        st.integers(min_value=0, max_value=40),  # worst-case tokens
        st.integers(min_value=0, max_value=50),  # used tokens (may exceed the worst case)
        st.sampled_from(["settle", "release", "hold"]),
    ),
    max_size=60,
)
PARENTS = {"root": None, "a": "root", "b": "root", "a1": "a", "a2": "a"}


@settings(max_examples=300, deadline=None)
@given(OPS, st.integers(min_value=1, max_value=200))
def test_envelope_arithmetic(ops: list[tuple[str, int, int, str]], limit: int) -> None:
    """Whatever the order of steps, settlements and releases: a step is admitted exactly when
    every envelope on its chain has room for its worst case (so right after an admission spent
    plus reserved stays within the limit everywhere), a run's totals are its own use plus its
    descendants', and reservations cancel exactly. A run's parent is the one its first request
    names (a parent first seen that way has none)."""
    book = RunBook()
    lim = [("b", RunLimits(tokens=limit), True)]
    held: list[tuple[runs.RunHold, int]] = []
    own: dict[str, int] = dict.fromkeys(PARENTS, 0)
    parent_of: dict[str, str | None] = {}

    def chain(name: str) -> list[str]:
        out = [name]
        p = parent_of[name] if name in parent_of else PARENTS[name]
        while p is not None:
            out.append(p)
            p = parent_of.get(p)
        return out

    for name, worst, used, then in ops:
        before = {n: (r.tokens + r.reserved_tokens) for n in PARENTS if (r := book.get(n))}
        fits = all(before.get(n, 0) + worst <= limit for n in chain(name))
        try:
            hold = book.admit(RunRef(name, PARENTS[name]), lim, 0.0, worst, 0.0)
        except runs.RunRefused:
            assert not fits
            continue
        assert fits
        if name not in parent_of:
            parent_of[name] = PARENTS[name]
            if (p := PARENTS[name]) is not None and p not in parent_of:
                parent_of[p] = None
        assert [r.id for r in hold.run.chain()] == chain(name)
        for r in hold.run.chain():
            assert r.tokens + r.reserved_tokens <= limit
        if then == "settle":
            book.settle(hold, 0.0, used)
            own[name] += used
        elif then == "release":
            book.release(hold)
        else:
            held.append((hold, used))
    for hold, used in held:
        book.settle(hold, 0.0, used)
        own[hold.run.id] += used
    for name in parent_of:
        r = book.get(name)
        assert r is not None
        assert r.reserved_tokens == 0 and r.reserved_requests == 0 and r.reserved_pusd == 0
        assert r.tokens == sum(own[n] for n in parent_of if name in chain(n))
