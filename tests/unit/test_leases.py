"""Lease arithmetic: granted + spent <= limit under any interleaving of grants, reports within
the caps, expiries, releases and restarts (new holders); and the operator's desk that answers the
sidecars' lease requests (windows on its clock, stale requests, release, the restart grace, spend
from reports). The wiring end to end is tests/unit/test_lease_wiring.py."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_operator.leases import LeaseBook, LeaseDesk, Values
from sluice_operator.reconcile import Reconciler
from sluice_operator.reports import BudgetSpend
from sluice_sidecar.contract import (
    BudgetLimit,
    BudgetRule,
    BudgetWindowSpend,
    LeaseAmount,
    LeaseAsk,
    LeaseRequest,
    UsageReport,
    WindowKind,
)
from sluice_sidecar.controlplane_client import NO_LEASES_RETRY, lease_wait

from .test_reconcile import Recorder

LIMIT = (1_000, 500, None)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.integers(0, 4), st.tuples(*[st.integers(0, 400)] * 3)),
        st.tuples(st.just("spend"), st.integers(0, 4), st.tuples(*[st.integers(0, 100)] * 3)),
        st.tuples(st.just("tick"), st.integers(0, 4), st.floats(0, 40)),
        st.tuples(st.just("release"), st.integers(0, 4), st.none()),
    ),
    max_size=60,
)


def within_limit(book: LeaseBook, now: float) -> None:
    charged = book.charged(now)
    for i, lim in enumerate(book.limit):
        if lim is not None:
            assert charged[i] <= lim, (charged, book.holders)


@settings(max_examples=400, deadline=None)
@given(ops)
def test_granted_plus_spent_never_exceeds_the_limit(steps: list[tuple[str, int, object]]) -> None:
    book = LeaseBook(LIMIT, ttl=10.0, skew=2.0)
    now = 0.0
    caps: dict[str, tuple[Values, float]] = {}  # what each holder was told, and until when
    spent: dict[str, Values] = {}
    for op, who, arg in steps:
        name = f"h{who}"
        if op == "grant":
            assert isinstance(arg, tuple)
            before = book.holders[name].cap if name in book.holders else None
            live = name in book.holders and book.holders[name].live(now)
            g = book.grant(name, arg, now)
            if live and before is not None:
                assert all(g.cap[i] >= before[i] for i in range(3))  # a live lease never shrinks
            assert all(s >= 0 for s in g.slice)
            caps[name] = (g.cap, g.expires)
        elif op == "spend":
            # A well-behaved sidecar spends only under a lease it holds, up to its cap.
            assert isinstance(arg, tuple)
            cap, until = caps.get(name, ((0, 0, 0), float("-inf")))
            if now >= until:
                continue
            had = spent.get(name, (0, 0, 0))
            new = tuple(min(cap[i], had[i] + arg[i]) for i in range(3))
            spent[name] = (new[0], new[1], new[2])
            book.report(name, spent[name])
        elif op == "tick":
            assert isinstance(arg, float)
            now += arg
        else:
            book.release(name)
            caps.pop(name, None)
        within_limit(book, now)
        # Every holder's true spend is what it reported here (reports are immediate in this
        # model), so the true total is bounded by the limit too.
        for i, lim in enumerate(LIMIT):
            if lim is not None:
                assert sum(s[i] for s in spent.values()) <= lim


def test_an_expired_lease_frees_its_unspent_slice() -> None:
    book = LeaseBook((100, None, None), ttl=10.0, skew=0.0)
    a = book.grant("a", (80, 0, 0), 0.0)
    assert a.slice[0] == 80
    # a wants more too: b gets an even share of the 20 that a leaves
    assert book.grant("b", (80, 0, 0), 1.0).slice[0] == 10
    book.report("a", (30, 0, 0))
    assert book.grant("b", (80, 0, 0), 11.0).slice[0] == 70  # a expired: only its 30 counts
    book.release("b")
    assert book.room(11.0)[0] == 70


# --- the desk: requests in, leases out -----------------------------------------------------------

DAY_RULE = BudgetRule(
    name="team", limits=(BudgetLimit(window=WindowKind.DAY, usd=1.0, requests=10),)
)
NOON = 1_800_000_000.0 - 1_800_000_000.0 % 86400 + 43200  # 12:00 UTC


def ask(
    seq: int,
    *,
    pod: str = "p",
    spent: int = 0,
    want: int = 5,
    cap: int | None = None,
    start: float = NOON - 43200,
    release: bool = False,
) -> LeaseRequest:
    return LeaseRequest(
        namespace="ns",
        pod=pod,
        instance=f"{pod}-i",
        seq=seq,
        release=release,
        asks=(
            LeaseAsk(
                budget="team",
                window="Day/UTC",
                start=start,
                spent=LeaseAmount(requests=spent),
                cap=None if cap is None else LeaseAmount(requests=cap),
                want=LeaseAmount(requests=want),
            ),
        ),
    )


def desk(since: float = NOON - 3600) -> LeaseDesk:
    d = LeaseDesk(ttl=10.0)
    d.saw("ns", since)
    return d


def test_a_lease_is_for_the_window_of_the_operators_clock() -> None:
    got = desk().answer(ask(1), (DAY_RULE,), None, NOON)
    assert got is not None and got.now == NOON and got.ttl == 10.0
    (lease,) = got.leases
    assert (lease.start, lease.resets_at) == (NOON - 43200, NOON + 43200)
    assert lease.cap.requests == 5 and lease.cap.pusd == 0  # usd: nothing wanted yet
    assert lease.cap.tokens is None  # not limited


def test_an_older_request_of_the_same_process_is_ignored() -> None:
    d = desk()
    assert d.answer(ask(2), (DAY_RULE,), None, NOON) is not None
    assert d.answer(ask(1), (DAY_RULE,), None, NOON) is None
    assert d.answer(ask(2), (DAY_RULE,), None, NOON) is None
    assert d.stale == 2


def test_a_sidecar_in_another_window_gets_the_operators_and_its_spend_is_not_taken() -> None:
    d = desk()
    got = d.answer(ask(1, spent=9, start=NOON + 43200), (DAY_RULE,), None, NOON)
    assert got is not None and got.leases[0].start == NOON - 43200
    assert got.leases[0].cap.requests == 5  # its 9 belong to a day the operator has not begun


def test_a_release_gives_the_slice_back_and_unknown_budgets_get_nothing() -> None:
    d = desk()
    d.answer(ask(1, pod="a", want=8), (DAY_RULE,), None, NOON)
    got = d.answer(ask(1, pod="b", want=8), (DAY_RULE,), None, NOON)
    assert got is not None and got.leases[0].cap.requests == 1  # a wants more too: half of 2
    d.answer(ask(2, pod="a", spent=1, release=True), (DAY_RULE,), None, NOON)
    got = d.answer(ask(2, pod="b", want=10, cap=1), (DAY_RULE,), None, NOON)
    assert got is not None and got.leases[0].cap.requests == 9  # all but a's one request
    other = BudgetRule(name="other", limits=DAY_RULE.limits)
    got = d.answer(ask(3, pod="b"), (other,), None, NOON)
    assert got is not None and got.leases == ()


def test_after_a_restart_presented_leases_are_kept_and_nothing_new_is_granted() -> None:
    d = desk(since=NOON)  # this operator compiled the namespace just now
    got = d.answer(ask(1, pod="a", spent=2, cap=6, want=4), (DAY_RULE,), None, NOON + 1)
    assert got is not None and got.leases[0].cap.requests == 6  # adopted, not grown
    got = d.answer(ask(1, pod="b", want=4), (DAY_RULE,), None, NOON + 1)
    assert got is not None and got.leases[0].cap.requests == 0
    assert got.leases[0].exhausted is False
    # After TTL + skew every lease of the old operator has expired: b gets what a leaves.
    got = d.answer(ask(2, pod="b", want=10), (DAY_RULE,), None, NOON + 20)
    assert got is not None and got.leases[0].cap.requests == 8
    # A Budget this operator saw being created (a watch ADDED event) has no grace at all ...
    fresh = desk(since=NOON)
    got = fresh.answer(ask(1), (DAY_RULE,), None, NOON + 1, {"team"})
    assert got is not None and got.leases[0].cap.requests == 5
    # ... but one it found by listing has, however recently it was created: the operator before
    # may have granted leases for it a moment before it stopped.
    listed = desk(since=NOON)
    got = listed.answer(ask(1), (DAY_RULE,), None, NOON + 1, {"other"})
    assert got is not None and got.leases[0].cap.requests == 0


def test_the_grace_lasts_a_ttl_after_the_control_plane_opens() -> None:
    """Sidecars can only tell a new operator their spend once it listens: a namespace compiled
    long before that (a slow start) still waits a whole TTL + skew after the opening."""
    d = desk(since=NOON)
    d.open(NOON + 30)  # ttl 10, skew 10/6: the grace runs to NOON + 41.7, not NOON + 11.7
    got = d.answer(ask(1, pod="a", spent=3, want=4), (DAY_RULE,), None, NOON + 31)
    assert got is not None and got.leases[0].cap.requests == 3  # its spend, nothing on top
    got = d.answer(ask(2, pod="a", spent=3, want=4), (DAY_RULE,), None, NOON + 41.5)
    assert got is not None and got.leases[0].cap.requests == 3
    got = d.answer(ask(3, pod="a", spent=3, want=4), (DAY_RULE,), None, NOON + 42)
    assert got is not None and got.leases[0].cap.requests == 7


def test_the_reports_spend_counts_and_lease_requests_raise_it() -> None:
    spend = BudgetSpend()
    spend.add(
        UsageReport(
            namespace="ns",
            pod="gone",
            config_hash="h",
            seq=1,
            window_start=0,
            window_end=1,
            instance="g",
            budgets=(
                BudgetWindowSpend(
                    budget="team",
                    window="Day/UTC",
                    start=NOON - 43200,
                    resets_at=NOON + 43200,
                    requests=7,
                ),
            ),
        ),
        NOON,
    )
    d = desk()
    got = d.answer(ask(1, want=10), (DAY_RULE,), spend, NOON)
    assert got is not None and got.leases[0].cap.requests == 3  # the gone pod spent 7
    assert got.leases[0].spent.requests == 7
    d.answer(ask(2, spent=2, want=10, cap=3), (DAY_RULE,), spend, NOON)
    inst = spend.budgets[("ns", "team")][("p", "p-i")]
    assert inst.windows[("Day/UTC", NOON - 43200)].values[2] == 2
    assert d.touched == {("ns", "team")}


def test_a_process_folded_in_the_durable_spend_is_not_counted_twice() -> None:
    spend = BudgetSpend()
    d = desk()
    d.answer(ask(1, pod="old", spent=4, want=0), (DAY_RULE,), spend, NOON)
    later = NOON + 2 * 3600  # silent for more than an hour: folded into one anonymous entry
    spend.prune("ns", "team", later, keep=3600)
    assert ("old", "old-i") not in spend.budgets[("ns", "team")]
    got = d.answer(ask(1, pod="new", want=10), (DAY_RULE,), spend, later)
    assert got is not None and got.leases[0].cap.requests == 6  # 10 - the 4 counted once


@given(
    outcomes=st.lists(st.booleans(), min_size=1, max_size=40),
    ttl=st.floats(min_value=1.0, max_value=600.0),
)
def test_a_sidecar_asks_at_least_every_third_of_a_ttl_failing_or_not(
    outcomes: list[bool], ttl: float
) -> None:
    """The restart grace (TTL + skew) hears from every live sidecar only if none backs off
    longer than a third of a TTL (``controlplane_client.lease_wait``)."""
    backoff = 0.5
    for ok in outcomes:
        wait, backoff = lease_wait(ok, backoff, ttl, unsupported=False)
        assert 0 < wait <= ttl / 3
    assert lease_wait(False, backoff, ttl, unsupported=True)[0] == NO_LEASES_RETRY


async def test_only_a_budget_seen_being_created_skips_the_restart_grace() -> None:
    """A listing (initial, or after a watch gap) has no event type: the Budgets in it may have
    leases of an operator before this one, however recently they were created."""
    r = Reconciler(writer=Recorder())
    listed = {"metadata": {"namespace": "ns", "name": "old"}, "spec": {}}
    added = {"metadata": {"namespace": "ns", "name": "new"}, "spec": {}}
    r.observe("budgets", None, listed)
    r.observe("budgets", "ADDED", added)
    r.observe("budgets", "ADDED", listed)  # a second sight of a listed one changes nothing
    assert r.born == {"ns": {"new"}}
    r.observe("budgets", "DELETED", added)
    assert r.born == {"ns": set()}
