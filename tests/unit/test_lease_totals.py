"""The lease book's running totals (issue #12: a lease answer is O(1) amortised in the holders):
under any interleaving of grants, reports, offers, adoptions, releases, forgetting and a clock that
moves both ways, the totals equal a recount from scratch (``LeaseBook.recount``, the walk they
replace), and every grant equals what the former walking implementation (``reference_grant``
below, kept verbatim) would have granted."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_operator.leases import ZERO, Holder, LeaseBook, Values, _add, _max, _sync, holder_name
from sluice_operator.reports import BudgetSpend
from sluice_sidecar.contract import BudgetWindowSpend, UsageReport

values = st.tuples(*[st.integers(0, 300)] * 3)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.integers(0, 5), st.tuples(values, values)),
        st.tuples(st.just("report"), st.integers(0, 5), st.tuples(values, st.booleans())),
        st.tuples(st.just("offer"), st.integers(0, 5), values),
        st.tuples(st.just("adopt"), st.integers(0, 5), values),
        st.tuples(st.just("release"), st.integers(0, 5), st.none()),
        st.tuples(st.just("forget"), st.integers(0, 5), st.sets(st.integers(0, 5))),
        st.tuples(st.just("tick"), st.integers(0, 5), st.floats(-15, 40)),
    ),
    max_size=80,
)


def reference_grant(
    book: LeaseBook, holder: str, want: Values, now: float, least: Values
) -> tuple[Values, Values]:
    """The former ``LeaseBook.grant``'s (cap, slice), walking every holder (on a copy)."""
    holders = copy.deepcopy(book.holders)
    h = holders.setdefault(holder, Holder())
    h.want = (max(0, want[0]), max(0, want[1]), max(0, want[2]))
    others = ZERO
    for name, o in holders.items():
        if name != holder:
            others = _add(others, o.charged(now))
    floor = h.charged(now)
    cap = []
    for i in range(3):
        lim = book.limit[i]
        wanted = h.spent[i] + h.want[i]
        if lim is None:
            cap.append(max(floor[i], wanted))
            continue
        free = max(0, lim - others[i] - floor[i])
        need = max(0, wanted - floor[i])
        rivals = sum(
            1 for name, o in holders.items() if name != holder and o.live(now) and o.want[i] > 0
        )
        share = -(-free // (rivals + 1))
        minimum = max(0, h.spent[i] + max(0, least[i]) - floor[i])
        share = 0 if minimum > free else max(share, minimum)
        cap.append(floor[i] + min(max(need, minimum), share))
    new: Values = (cap[0], cap[1], cap[2])
    return new, (new[0] - h.spent[0], new[1] - h.spent[1], new[2] - h.spent[2])


@settings(max_examples=400, deadline=None)
@given(ops, st.sampled_from([(1_000, 500, None), (200, None, 3), (None, None, None)]))
def test_running_totals_equal_a_recount_and_grants_the_former_walk(
    steps: list[tuple[str, int, object]], limit: tuple[int | None, int | None, int | None]
) -> None:
    book = LeaseBook(limit, ttl=10.0, skew=2.0)
    now = 0.0
    for op, who, arg in steps:
        name = f"h{who}"
        if op == "grant":
            assert isinstance(arg, tuple)
            want, least = arg
            expected = reference_grant(book, name, want, now, least)
            g = book.grant(name, want, now, least)
            assert (g.cap, g.slice) == expected
        elif op == "report":
            assert isinstance(arg, tuple)
            book.report(name, arg[0], replace=arg[1])
        elif op == "offer":
            assert isinstance(arg, tuple)
            book.offer(name, arg, now)
        elif op == "adopt":
            assert isinstance(arg, tuple)
            h = book.holders.get(name)
            before = (h.spent, h.cap, h.live(now)) if h is not None else None
            book.adopt(name, arg, now)
            h = book.holders[name]
            if before is None or not before[2]:
                assert h.cap == _max(h.spent, arg) and h.live(now)
            else:
                assert (h.spent, h.cap) == before[:2]
        elif op == "release":
            book.release(name)
        elif op == "forget":
            assert isinstance(arg, set)
            keep = {f"h{k}" for k in arg}
            gone = {n for n, h in book.holders.items() if n not in keep and not h.live(now)}
            book.forget_expired(keep.__contains__, now)
            assert not gone & set(book.holders)
        else:
            assert isinstance(arg, float)
            now = max(0.0, now + arg)  # backwards too: a wall clock stepped back
        assert book.totals(now) == book.recount(now), (op, name, now, book.holders)
        assert book.spent() == book.recount(now)[1]
        assert book.charged(now, without=name) == tuple(
            c - m
            for c, m in zip(
                book.recount(now)[0],
                book.holders[name].charged(now) if name in book.holders else ZERO,
                strict=True,
            )
        )


def test_expiries_are_taken_lazily_once_the_clock_passes_them() -> None:
    book = LeaseBook((100, None, None), ttl=10.0, skew=0.0)
    book.grant("a", (40, 0, 0), 0.0)
    book.grant("b", (30, 0, 0), 5.0)
    book.report("a", (10, 0, 0))
    assert book.charged(9.9) == (70, 0, 0)
    assert book.charged(10.0) == (40, 0, 0)  # a's lease is gone: its spend stays
    assert book.charged(15.0) == (10, 0, 0)
    assert book.charged(1.0) == (70, 0, 0)  # the clock stepped back: recounted
    assert book.totals(20.0) == book.recount(20.0)


def reference_sync(book: LeaseBook, spend: BudgetSpend, start: float, now: float) -> None:
    """The former ``_sync``: take every durable entry, forget expired holders it does not name."""
    named: set[str] = set()
    for (pod, instance), inst in (spend.budgets.get(("ns", "team")) or {}).items():
        s = inst.windows.get(("Day/UTC", start))
        if s is not None:
            name = holder_name(pod, instance)
            named.add(name)
            book.report(name, s.values)
    book.forget_expired(lambda n: n in named, now)


sync_ops = st.lists(
    st.one_of(
        st.tuples(st.just("report"), st.integers(0, 4), st.integers(0, 50)),
        st.tuples(st.just("lease_spend"), st.integers(0, 4), st.integers(0, 50)),
        st.tuples(st.just("grant"), st.integers(0, 6), st.integers(0, 50)),
        st.tuples(st.just("sync"), st.integers(0, 0), st.integers(0, 0)),
        st.tuples(st.just("prune"), st.integers(0, 0), st.integers(0, 0)),
        st.tuples(st.just("tick"), st.integers(0, 0), st.integers(0, 3000)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(sync_ops)
def test_sync_takes_only_changed_entries_and_forgets_like_the_former_walk(
    steps: list[tuple[str, int, int]],
) -> None:
    start = 1_800_000_000.0 - 1_800_000_000.0 % 86400
    now = start + 60.0
    spend = BudgetSpend()
    book = LeaseBook((None, None, 100), ttl=10.0, skew=2.0)
    ref = LeaseBook((None, None, 100), ttl=10.0, skew=2.0)
    seqs: dict[int, int] = {}
    for op, who, n in steps:
        pod = f"p{who}"
        if op == "report":
            seqs[who] = seqs.get(who, 0) + 1
            window = BudgetWindowSpend(
                budget="team", window="Day/UTC", start=start, resets_at=start + 86400, requests=n
            )
            report = UsageReport(
                namespace="ns",
                pod=pod,
                config_hash="h",
                seq=seqs[who],
                window_start=0,
                window_end=1,
                instance=f"{pod}-i",
                budgets=(window,),
            )
            spend.add(report, now)
        elif op == "lease_spend":
            spend.lease_spend(
                "ns",
                "team",
                (pod, f"{pod}-i"),
                window=("Day/UTC", start, start + 86400),
                values=(0, 0, n),
                now=now,
            )
        elif op == "grant":
            for b in (book, ref):
                b.grant(holder_name(pod, f"{pod}-i"), (0, 0, n), now)
        elif op == "sync":
            _sync(book, spend, "ns", "team", window="Day/UTC", start=start, now=now)
            reference_sync(ref, spend, start, now)
        elif op == "prune":
            spend.prune("ns", "team", now, 86400.0)
        else:
            now += n
        assert {k: (h.spent, h.cap, h.expires) for k, h in book.holders.items()} == {
            k: (h.spent, h.cap, h.expires) for k, h in ref.holders.items()
        }
        assert book.totals(now) == ref.totals(now) == book.recount(now)
