"""Provider quota shares across replicas: the operator's arithmetic (``quotas``: the live shares
never exceed a backend's quota under any interleaving of asks, expiries, releases and restart
graces; fair shares by demand with a floor), its desk inside ``LeaseDesk.answer``, and the
sidecar's half (``routing.QuotaKeeper``, the buckets resized to a share). Over sockets:
tests/sidecar/test_quota_leases.py."""

from __future__ import annotations

import copy
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_operator.leases import LeaseDesk, holder_name
from sluice_operator.quotas import QuotaBook, fair_targets, floor_of, target
from sluice_operator.reconcile import Reconciler
from sluice_sidecar import routing
from sluice_sidecar.contract import (
    Backend,
    LeaseRequest,
    LeaseResponse,
    Provider,
    QuotaAsk,
    QuotaShare,
    RateLimits,
    Route,
)

from .test_api_models import ROUTE
from .test_reconcile import Recorder

# --- the operator's arithmetic ------------------------------------------------------------------

capacities = st.tuples(st.one_of(st.none(), st.integers(0, 500)), st.integers(0, 20_000))
wants = st.tuples(st.integers(0, 2_000), st.integers(0, 50_000))
ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("ask"),
            st.integers(0, 5),
            wants,
            st.booleans(),  # in the grace
            st.one_of(st.none(), st.tuples(st.integers(0, 600), st.integers(0, 30_000))),
        ),
        st.tuples(st.just("tick"), st.integers(0, 5), st.floats(0, 20), st.none(), st.none()),
        st.tuples(st.just("release"), st.integers(0, 5), st.none(), st.none(), st.none()),
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(capacities, ops)
def test_the_live_shares_never_exceed_the_quota(
    capacity: tuple[int | None, int], steps: list[tuple[object, ...]]
) -> None:
    book = QuotaBook(capacity, ttl=10.0, skew=2.0)
    now = 0.0
    for kind, who, arg, grace, held in steps:
        name = f"p{who}"
        if kind == "ask":
            assert isinstance(arg, tuple) and isinstance(grace, bool)
            got = book.grant(name, arg, now, held=held, grace=grace)  # type: ignore[arg-type]
            assert (got[0] is None) == (capacity[0] is None)
            assert got[1] is not None and got[1] <= capacity[1]
        elif kind == "tick":
            assert isinstance(arg, float)
            now += arg
        else:
            book.release(name)
        rpm, tpm = book.live_total(now)
        assert rpm <= (capacity[0] or 0) and tpm <= capacity[1]
        # Stronger: every share the book still remembers fits, live or not yet forgotten.
        assert sum(h.share[1] for h in book.holders.values()) <= capacity[1]


@given(st.integers(0, 10_000), st.lists(st.integers(0, 5_000), min_size=1, max_size=30))
def test_fair_targets_are_max_min_fair(pool: int, demand: list[int]) -> None:
    out = fair_targets(pool, demand)
    assert sum(out) == min(pool, sum(demand))  # nothing idle while somebody wants more
    assert all(0 <= o <= w for o, w in zip(out, demand, strict=True))
    for i, (o, w) in enumerate(zip(out, demand, strict=True)):
        if o < w:  # short of its demand: nobody gets more than it (integer rounding aside)
            assert all(other <= o + 1 for j, other in enumerate(out) if j != i)


def renew_round(book: QuotaBook, demand: dict[str, tuple[int, int]], now: float) -> None:
    for name, want in demand.items():
        book.grant(name, want, now)


def test_one_busy_holder_gets_most_of_the_quota_and_idle_ones_keep_a_floor() -> None:
    book = QuotaBook((60, 100_000), ttl=30.0, skew=5.0)
    demand = {"busy": (600, 1_000_000), "idle1": (0, 0), "idle2": (0, 0)}
    for r in range(3):
        renew_round(book, demand, float(r))
    shares = {n: h.share for n, h in book.holders.items()}
    floor_rpm, floor_tpm = floor_of(60, 3), floor_of(100_000, 3)
    assert (floor_rpm, floor_tpm) == (3, 5_000)
    assert shares["idle1"] == shares["idle2"] == (floor_rpm, floor_tpm)
    # Everything else but one floor kept for a process that starts.
    assert shares["busy"] == (60 - 3 * floor_rpm, 100_000 - 3 * floor_tpm)
    assert book.live_total(3.0) == (60 - floor_rpm, 100_000 - floor_tpm)
    # A newcomer gets its floor at once, from the floor kept free.
    assert book.grant("new", (50, 0), 3.0) == (floor_rpm, floor_tpm)
    assert book.live_total(3.0) == (60, 100_000)


def test_shares_follow_the_demand_as_holders_renew() -> None:
    book = QuotaBook((100, None), ttl=30.0, skew=5.0)
    renew_round(book, {"a": (1_000, 0), "b": (0, 0)}, 0.0)
    renew_round(book, {"a": (1_000, 0), "b": (0, 0)}, 1.0)
    assert book.holders["a"].share[0] > 80
    # b gets busy, a idle: b takes what a gave back on a's renewal.
    for r in range(3):
        renew_round(book, {"a": (0, 0), "b": (1_000, 0)}, 2.0 + r)
    assert book.holders["b"].share[0] > 80
    assert book.holders["a"].share[0] == floor_of(100, 2)
    # Both busy: an even split (one floor kept free).
    for r in range(3):
        renew_round(book, {"a": (1_000, 0), "b": (1_000, 0)}, 10.0 + r)
    assert book.holders["a"].share[0] == book.holders["b"].share[0] == (100 - floor_of(100, 2)) // 2


def test_a_holder_gets_at_most_what_it_wants_the_rest_stays_free() -> None:
    book = QuotaBook((100, None), ttl=30.0, skew=5.0)
    assert book.grant("a", (20, 0), 0.0) == (20, None)
    assert book.grant("b", (30, 0), 0.0) == (30, None)
    # b's demand grows: the free rest is granted at once, without waiting for a's renewal.
    assert book.grant("b", (75, 0), 0.5) == (75, None)
    assert book.live_total(0.5)[0] == 95


def test_an_expired_holder_stops_counting_after_ttl_and_skew() -> None:
    book = QuotaBook((100, None), ttl=10.0, skew=2.0)
    assert book.grant("a", (1_000, 0), 0.0)[0] == 95
    assert book.grant("b", (1_000, 0), 1.0)[0] == 5  # the floor kept free; a has the rest
    assert book.live_total(11.9)[0] == book.holders["a"].share[0] + book.holders["b"].share[0]
    assert book.live_total(12.5)[0] == book.holders["b"].share[0]  # a is gone (b: till 13)
    assert book.grant("b", (1_000, 0), 12.5)[0] == target(100, [1_000], 0)


def test_the_grace_keeps_what_a_holder_presents_and_grows_nothing() -> None:
    book = QuotaBook((100, None), ttl=10.0, skew=2.0)
    assert book.grant("a", (1_000, 0), 0.0, held=(70, None), grace=True) == (70, None)
    # One without a share gets a floor; nobody gets more than the others leave.
    assert book.grant("b", (1_000, 0), 0.0, grace=True) == (floor_of(100, 2), None)
    assert book.grant("c", (1_000, 0), 0.0, held=(90, None), grace=True)[0] == 100 - 70 - 5


# --- the desk, inside LeaseDesk.answer ----------------------------------------------------------


def routes(rpm: int | None = 60, tpm: int | None = None) -> tuple[Route, ...]:
    backends = (
        Backend(name="a", provider=Provider.MOCK, model="m", limits=RateLimits(rpm=rpm, tpm=tpm)),
        Backend(name="b", provider=Provider.MOCK, model="m"),
    )
    return (Route(name="chat", source="chat", backends=backends),)


def ask(pod: str, seq: int, rpm: int, *, release: bool = False) -> LeaseRequest:
    return LeaseRequest(
        namespace="ns",
        pod=pod,
        instance=f"{pod}-1",
        seq=seq,
        quotas=(QuotaAsk(route="chat", backend="a", rpm=rpm),),
        release=release,
    )


def test_the_desk_shares_the_quotas_of_the_compiled_routes() -> None:
    desk = LeaseDesk(ttl=30.0)
    desk.saw("ns", -1_000.0)  # no restart grace
    r = routes()
    one = desk.answer(ask("p", 1, 500), (), None, 0.0, routes=r)
    two = desk.answer(ask("q", 1, 0), (), None, 0.0, routes=r)
    assert one is not None and two is not None
    # p wants more than all: it gets all but one floor, kept for a process that starts: q.
    assert one.quotas == (QuotaShare(route="chat", backend="a", rpm=57, tpm=None),)
    assert two.quotas[0].rpm == floor_of(60, 2) == 3
    book = desk.quotas.book("ns", "chat", "a")
    assert book is not None
    assert holder_name("p", "p-1") in book.holders
    # p renews under two holders: a floor is kept free again.
    desk.answer(ask("p", 2, 500), (), None, 1.0, routes=r)
    assert book.live_total(1.0) == (57, 0)
    # A release frees p's share at once.
    desk.answer(ask("p", 3, 0, release=True), (), None, 2.0, routes=r)
    assert holder_name("p", "p-1") not in book.holders
    # A backend without limits, or a route the operator does not know: no share (whole limit).
    none = desk.answer(ask("q", 3, 10), (), None, 3.0, routes=routes(rpm=None))
    assert none is not None and none.quotas == ()
    assert desk.quotas.book("ns", "chat", "a") is None
    assert (desk.answer(ask("q", 4, 10), (), None, 3.0) or LeaseResponse(now=0, ttl=1)).quotas == ()


def test_the_quota_fields_are_additive_on_the_wire() -> None:
    plain = LeaseRequest(namespace="ns", pod="p", instance="i", seq=1)
    assert "quotas" not in plain.model_dump_json(by_alias=True)
    assert "quotas" not in LeaseResponse(now=0.0, ttl=30.0).model_dump_json(by_alias=True)
    # An answer of an operator that does not share quotas: none, and nothing fails.
    assert LeaseResponse.model_validate_json('{"now": 1, "ttl": 30, "leases": []}').quotas == ()
    newer = '{"namespace":"ns","pod":"p","instance":"i","seq":1,"quotas":[{"route":"r",'
    newer += '"backend":"b","rpm":3,"tpm":4,"priority":1}]}'
    assert LeaseRequest.model_validate_json(newer).quotas[0].tpm == 4


# --- the sidecar's half -------------------------------------------------------------------------


def test_a_bucket_resized_keeps_its_fill_proportionally() -> None:
    b = routing.Bucket(60, 0.0)
    b.take(30, 0.0)  # half full
    b.resize(20, 0.0)
    assert (b.capacity, b.level, b.rate) == (20.0, 10.0, 20 / 60)
    b.resize(0, 0.0)
    assert b.wait(1, 0.0) == routing.EMPTY_SHARE_WAIT  # a share of nothing: ask again soon
    b.resize(10, 1.0)
    assert b.level == 10.0  # from nothing: full, as a new bucket


def test_a_limiter_never_grows_beyond_the_full_limit() -> None:
    lim = routing.BackendLimiter(RateLimits(rpm=60, tpm=1_000), 0.0)
    lim.resize((600, None), 0.0)
    assert lim.rpm is not None and lim.tpm is not None
    assert (lim.rpm.capacity, lim.tpm.capacity) == (60.0, 1_000.0)
    lim.resize((6, 100), 0.0)
    assert (lim.rpm.capacity, lim.tpm.capacity) == (6.0, 100.0)
    lim.resize(None, 0.0)
    assert (lim.rpm.capacity, lim.tpm.capacity) == (60.0, 1_000.0)


def keeper_over(lim: routing.BackendLimiter) -> routing.QuotaKeeper:
    return routing.QuotaKeeper(lambda now: iter((("chat", "a", lim),)))


def test_the_keeper_asks_for_the_demand_per_minute_and_takes_the_share() -> None:
    lim = routing.BackendLimiter(RateLimits(rpm=60, tpm=6_000), 0.0)
    keeper = keeper_over(lim)
    first = keeper.asks(0.0)
    assert first == (QuotaAsk(route="chat", backend="a", rpm=0, tpm=0),)
    keeper.take((QuotaShare(route="chat", backend="a", rpm=6, tpm=600),), 0.0, 30.0)
    assert lim.share == (6, 600)
    for _ in range(6):
        lim.take(50, 1.0)  # sent
    for _ in range(4):
        lim.steered(50)  # steered away for lack of room
    again = keeper.asks(10.0)[0]
    assert (again.rpm, again.tpm) == (60, 3_000)  # 10 tries, 500 tokens in 10 s
    assert again.held == QuotaShare(route="chat", backend="a", rpm=6, tpm=600)
    # An answer without a share for it (an operator that does not share quotas): whole limit.
    keeper.take((), 10.0, 30.0)
    assert lim.share is None and lim.rpm is not None and lim.rpm.capacity == 60.0
    # Idle since: demand decays by half per renewal, it does not vanish at once.
    assert keeper.asks(20.0)[0].rpm == 30
    keeper.take((), 20.0, 30.0)
    assert keeper.asks(30.0)[0].rpm == 15


def test_a_short_share_asks_for_one_early_renewal_per_gap() -> None:
    lim = routing.BackendLimiter(RateLimits(rpm=60), 0.0)
    keeper = keeper_over(lim)
    fired: list[int] = []
    keeper.on_need = lambda: fired.append(1)
    keeper.asks(0.0)
    keeper.take((QuotaShare(route="chat", backend="a", rpm=1),), 0.0, 30.0)
    lim.steered(1)
    lim.steered(1)
    assert fired == [1]  # once, not per steered try
    keeper.asks(0.5)  # the early renewal
    keeper.take((QuotaShare(route="chat", backend="a", rpm=1),), 0.5, 30.0)
    lim.steered(1)
    assert fired == [1]  # within need_gap (TTL / 6) of it: no other
    keeper.asks(10.0)  # the regular renewal
    keeper.take((QuotaShare(route="chat", backend="a", rpm=1),), 10.0, 30.0)
    lim.steered(1)
    assert fired == [1, 1]


def test_order_counts_a_try_steered_away_for_lack_of_room() -> None:
    (route,) = routes(rpm=1)
    state = routing.new_state(route)
    rng = random.Random(1)
    assert [b.name for b in routing.order(route, state, 0.0, rng)] == ["a", "b"]
    routing.consume(state, route.backends[0], 0, 0.0)
    assert [b.name for b in routing.order(route, state, 0.0, rng)] == ["b"]
    lim = state.limiters["a"]
    assert (lim.wanted_requests, lim.wanted_tokens) == (2, 0)  # one sent, one steered away


@pytest.mark.parametrize("edited", [RateLimits(rpm=120), RateLimits(rpm=30)])
def test_an_edited_limit_keeps_the_share_and_the_counters(edited: RateLimits) -> None:
    (route,) = routes(rpm=60)
    state = routing.new_state(route)
    lim = routing.limiter(state, route.backends[0], 0.0)
    assert lim is not None
    lim.resize((40, None), 0.0)
    lim.take(0, 0.0)
    b = route.backends[0].model_copy(update={"limits": edited})
    new = routing.limiter(state, b, 1.0)
    assert new is not None and new is not lim
    assert new.wanted_requests == 1 and new.share == (40, None)
    assert new.rpm is not None and new.rpm.capacity == min(40, edited.rpm or 0)


async def test_the_reconciler_answers_quota_asks_from_the_compiled_model_route() -> None:
    """``Reconciler.answer_leases``: the capacity is the ModelRoute's ``limits``, compiled."""
    r = Reconciler(writer=Recorder())
    obj = copy.deepcopy(ROUTE)
    obj["spec"]["backends"][1]["limits"] = {"rpm": 100, "tpm": 20_000}
    r.observe("modelroutes", None, obj)
    await r.reconcile("team-a")

    def request(seq: int) -> LeaseRequest:
        return LeaseRequest(
            namespace="team-a",
            pod="p",
            instance="i",
            seq=seq,
            quotas=(QuotaAsk(route="chat", backend="local", rpm=40, tpm=50_000),),
        )

    # A fresh operator is in its restart grace: a floor, nothing grows.
    first = r.answer_leases(request(1))
    assert first is not None
    assert first.quotas == (QuotaShare(route="chat", backend="local", rpm=5, tpm=1_000),)
    r.leases.since["team-a"] = r.wall() - 3_600  # the grace is over
    answer = r.answer_leases(request(2))
    assert answer is not None
    assert answer.quotas == (
        QuotaShare(route="chat", backend="local", rpm=40, tpm=20_000 - floor_of(20_000, 1)),
    )
