"""Lease arithmetic: granted + spent <= limit under any interleaving of grants, reports within
the caps, expiries, releases and restarts (new holders)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_operator.leases import LeaseBook, Values

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
