"""The lease wiring end to end, without sockets: sidecar processes (``BudgetPolicy`` with a
``LeaseKeeper``, skewed clocks) and the operator (``LeaseDesk`` over a durable ``BudgetSpend``)
exchange lease requests, answers (some lost) and usage reports in any order, while requests are
admitted and settled, time passes, leases expire, sidecars are killed and replaced and the operator
restarts. Property: the spend every process really settled in the window stays within the limit,
plus what killed processes settled and never reported (the documented bound: requests here cost
exactly what they reserved, so there is no settlement error). Also: the operator's windows are the
sidecar's, DST and month ends included."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_operator import leases as op_leases
from sluice_operator.leases import LeaseDesk
from sluice_operator.reports import BudgetSpend
from sluice_sidecar.budget import BudgetPolicy, LeaseKeeper
from sluice_sidecar.budget.policy import Admission
from sluice_sidecar.budget.windows import calendar_window, zone
from sluice_sidecar.contract import (
    Backend,
    BudgetLimit,
    BudgetRule,
    Pricing,
    Provider,
    Route,
    UsageReport,
    WindowKind,
)
from sluice_sidecar.errors import BudgetExceeded
from sluice_sidecar.model import Usage, cost_usd

NS = "team-a"
PICO = 10**12
NOON = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC).timestamp()
BACKEND = Backend(
    name="m",
    provider=Provider.MOCK,
    model="m",
    pricing=Pricing(input_per_mtok=1000.0, output_per_mtok=2000.0),
)
ROUTE = Route(name="chat", source="chat", backends=(BACKEND,))
RULE = BudgetRule(
    name="team",
    limits=(
        BudgetLimit(window=WindowKind.DAY, usd=0.5, requests=25),
        BudgetLimit(window=WindowKind.ROLLING, rolling_seconds=600, tokens=4000),
    ),
)
LIMIT_PUSD, LIMIT_REQUESTS, LIMIT_TOKENS = round(0.5 * PICO), 25, 4000


@dataclass
class Process:
    """One sidecar process: its budget policy and lease keeper, its clocks, what it settled."""

    pod: str
    instance: str
    skew: float
    policy: BudgetPolicy
    keeper: LeaseKeeper
    inflight: list[Admission] = field(default_factory=list)
    settled_pusd: int = 0
    settled_requests: int = 0
    settled_tokens: list[tuple[float, int]] = field(default_factory=list)  # (time, tokens)
    reported: tuple[int, int] = (0, 0)  # pusd, requests the operator last heard of
    seq: int = 0
    alive: bool = True


@dataclass
class World:
    t: float = NOON
    desk: LeaseDesk = field(default_factory=lambda: LeaseDesk(ttl=10.0, skew=2.0))
    spend: BudgetSpend = field(default_factory=BudgetSpend)
    procs: list[Process] = field(default_factory=list)
    ids: Any = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.desk.saw(NS, self.t - 3600)

    def start(self, slot: int, skew: float) -> Process:
        policy = BudgetPolicy((RULE,), {}, {"chat": ROUTE}, mono=self.t)
        n = next(self.ids)
        keeper = LeaseKeeper(policy, NS, f"pod-{slot}", f"i{n}", self.t)
        p = Process(f"pod-{slot}", f"i{n}", skew, policy, keeper)
        self.procs.append(p)
        return p

    def live(self, slot: int) -> Process:
        mine = [p for p in self.procs if p.pod == f"pod-{slot}" and p.alive]
        return mine[-1] if mine else self.start(slot, 0.0)

    def wall(self, p: Process) -> float:
        return self.t + p.skew + p.keeper.offset

    def admit(self, p: Process, max_tokens: int) -> None:
        p.keeper.tick(self.t)
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
        try:
            adm = p.policy.admit(
                f"r{next(self.ids)}", ROUTE, body, "chat", wall=self.wall(p), mono=self.t
            )
        except BudgetExceeded:
            return
        assert adm is not None
        p.inflight.append(adm)

    def settle(self, p: Process, which: int, fraction: float) -> None:
        if not p.inflight:
            return
        adm = p.inflight.pop(which % len(p.inflight))
        out = round(adm.worst.output_tokens * fraction)
        usage = Usage(adm.worst.prompt_tokens, out)  # never more than reserved: no error
        p.policy.settle(adm, usage, BACKEND, wall=self.wall(p), mono=self.t)
        p.settled_pusd += round(cost_usd(BACKEND, usage) * PICO)
        p.settled_requests += 1
        p.settled_tokens.append((self.t, usage.input_tokens + usage.output_tokens))

    def exchange(self, p: Process, deliver: bool) -> None:
        request = p.keeper.request(self.wall(p))
        answer = self.desk.answer(request, (RULE,), self.spend, self.t)
        if answer is not None and deliver:
            p.keeper.take(answer, self.t, self.t + p.skew, self.t + p.skew)

    def report(self, p: Process) -> None:
        windows, routes = p.policy.spend(self.wall(p))
        p.seq += 1
        self.spend.add(
            UsageReport(
                namespace=NS,
                pod=p.pod,
                config_hash="h",
                seq=p.seq,
                window_start=0,
                window_end=1,
                instance=p.instance,
                budgets=windows,
                budget_routes=routes,
            ),
            self.t,
        )
        p.reported = (p.settled_pusd, p.settled_requests)

    def restart_operator(self) -> None:
        self.desk = LeaseDesk(ttl=10.0, skew=2.0)
        self.desk.saw(NS, self.t)  # the Budget existed before: the grace applies

    def check(self) -> None:
        dead = [p for p in self.procs if not p.alive]
        lost_pusd = sum(p.settled_pusd - p.reported[0] for p in dead)
        lost_requests = sum(p.settled_requests - p.reported[1] for p in dead)
        assert sum(p.settled_pusd for p in self.procs) <= LIMIT_PUSD + lost_pusd
        assert sum(p.settled_requests for p in self.procs) <= LIMIT_REQUESTS + lost_requests
        # The rolling window counts the lease holders' own spend (see docs/budget.md); dead ones
        # that never reported are the bound again.
        recent = sum(
            tokens
            for p in self.procs
            for when, tokens in p.settled_tokens
            if when > self.t - 600 and p.alive
        )
        assert recent <= LIMIT_TOKENS


slot = st.integers(0, 2)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), slot, st.integers(1, 40)),
        st.tuples(st.just("settle"), slot, st.tuples(st.integers(0, 9), st.floats(0.0, 1.0))),
        st.tuples(st.just("exchange"), slot, st.booleans()),
        st.tuples(st.just("report"), slot, st.none()),
        st.tuples(st.just("tick"), slot, st.floats(0.0, 15.0)),
        st.tuples(st.just("kill"), slot, st.floats(-30.0, 30.0)),
        st.tuples(st.just("restart"), slot, st.none()),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_settled_spend_stays_within_the_limit_under_any_interleaving(
    plan: list[tuple[str, int, Any]],
) -> None:
    w = World()
    for op, i, arg in plan:
        if op == "admit":
            w.admit(w.live(i), arg)
        elif op == "settle":
            w.settle(w.live(i), *arg)
        elif op == "exchange":
            w.exchange(w.live(i), arg)
        elif op == "report":
            w.report(w.live(i))
        elif op == "tick":
            w.t += arg
        elif op == "kill":
            w.live(i).alive = False  # its reservations vanish; what it settled stays spent
            w.start(i, arg)
        else:
            w.restart_operator()
        w.check()


def test_a_busy_fleet_spends_the_limit_and_no_more() -> None:
    """Three well-behaved sidecars that renew and report: the whole limit gets spent."""
    w = World()
    procs = [w.start(i, skew) for i, skew in enumerate((-20.0, 0.0, 25.0))]
    for _ in range(400):
        for p in procs:
            w.exchange(p, True)
            for _ in range(3):
                w.admit(p, 10)
            while p.inflight:
                w.settle(p, 0, 1.0)
            w.report(p)
        w.t += 1.0
        w.check()
    total = sum(p.settled_requests for p in procs)
    assert total == LIMIT_REQUESTS or sum(p.settled_pusd for p in procs) > LIMIT_PUSD * 0.9


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([WindowKind.DAY, WindowKind.WEEK, WindowKind.MONTH]),
    st.sampled_from(
        ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
    ),
    st.floats(1.6e9, 2.2e9),
)
def test_the_operator_and_the_sidecar_agree_on_every_window(
    kind: WindowKind, tz: str, t: float
) -> None:
    w = calendar_window(kind, zone(tz), t)
    assert op_leases.calendar_window(kind, tz, t) == (w.start, w.resets_at)
