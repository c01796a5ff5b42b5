"""Leader election (``sluice_operator.leader``): the pure decision, and electors racing over one
Lease store that behaves like the apiserver's (resourceVersion checks, 409 on a stale write),
with API failures and replicas stopping at random. The cluster test runs two operator processes
on the real apiserver (tests/cluster/test_leader_election.py)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_operator.leader import Elector, Record, Seen, claimed, decide, observe, record_of


@dataclass
class Store:
    """One Lease, as the apiserver keeps it; ``down`` makes every call fail."""

    lease: dict[str, Any] | None = None
    version: int = 0
    down: set[str] = field(default_factory=set)  # electors whose calls fail now

    def api(self, who: str) -> Api:
        return Api(self, who)


@dataclass
class Api:
    store: Store
    who: str

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.who in self.store.down:
            raise OSError("apiserver unreachable")
        return None if self.store.lease is None else dict(self.store.lease)

    async def write_lease(
        self, namespace: str, name: str, spec: dict[str, Any], version: str | None
    ) -> bool:
        if self.who in self.store.down:
            raise OSError("apiserver unreachable")
        current = self.store.lease
        if (current is None) != (version is None):
            return False  # created meanwhile (409 AlreadyExists) or gone
        if current is not None and current["metadata"]["resourceVersion"] != version:
            return False  # 409 Conflict
        self.store.version += 1
        self.store.lease = {
            "metadata": {"name": name, "resourceVersion": str(self.store.version)},
            "spec": dict(spec),
        }
        return True


def test_a_free_or_own_lease_is_taken_and_another_only_after_a_silent_duration() -> None:
    other = Record("b", 15.0, "t1", "t0", 0, "7")
    assert decide("a", None, None, 0.0)
    assert decide("a", Record(None, 15.0, None, None, 3, "7"), None, 0.0)
    assert decide("a", Record("a", 15.0, "t1", "t0", 0, "7"), None, 0.0)
    seen = observe(None, other, 100.0)
    assert seen == Seen("b", "t1", 100.0)
    assert not decide("a", other, seen, 114.9)
    assert decide("a", other, seen, 115.0)
    # A renewal seen restarts the wait.
    renewed = Record("b", 15.0, "t2", "t0", 0, "8")
    seen = observe(seen, renewed, 110.0)
    assert not decide("a", renewed, seen, 120.0)


def test_a_takeover_counts_a_transition_and_a_renewal_keeps_the_acquire_time() -> None:
    spec = claimed("a", Record("b", 15.0, "t1", "t0", 4, "7"), 15.0, 0.0)
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 5
    mine = record_of({"metadata": {"resourceVersion": "9"}, "spec": spec})
    assert mine is not None and mine.version == "9"
    again = claimed("a", mine, 15.0, 60.0)
    assert again["acquireTime"] == spec["acquireTime"] and again["leaseTransitions"] == 5
    assert again["renewTime"] != spec["renewTime"]


@settings(max_examples=150, deadline=None)
@given(
    rounds=st.lists(
        st.tuples(
            st.floats(0.5, 2.0),  # time passing before the round
            # whose API calls start or stop failing (mostly nobody's: partitions last)
            st.sampled_from([None, None, None, None, "a", "b", "c"]),
            st.permutations(["a", "b", "c"]),  # the order they step in
            # one stopping gracefully (a new process takes its place)
            st.sampled_from([None] * 12 + ["a", "b", "c"]),
        ),
        min_size=20,
        max_size=60,
    )
)
def test_never_two_leaders_and_a_lost_leader_is_replaced(rounds: list[Any]) -> None:
    """Replicas step at least every retry (2 s for a 15 s Lease), as ``Elector.run`` does.
    However the API fails and whoever stops, no instant has two leaders, and once the API
    answers everyone again there is a leader within one duration."""

    async def main() -> None:
        store = Store()
        now = [0.0]
        leaders: dict[str, bool] = {}

        def make(name: str) -> Elector:
            def lead() -> None:
                leaders[name] = True

            def follow() -> None:
                leaders[name] = False

            return Elector(
                store.api(name),
                "ns",
                "lease",
                on_lead=lead,
                on_follow=follow,
                me=name,
                duration=15.0,
                monotonic=lambda: now[0],
                wall=lambda: 1_800_000_000.0 + now[0],
            )

        electors = {n: make(n) for n in "abc"}
        for dt, flip, order, stopping in rounds:
            now[0] += dt
            if flip is not None:  # a partition begins or ends
                store.down ^= {flip}
            if stopping is not None and electors[stopping].leading:
                store.down.discard(stopping)
                task = asyncio.create_task(electors[stopping].run())
                await asyncio.sleep(0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                leaders[stopping] = False
                electors[stopping] = make(stopping)  # a new process
            for name in order:
                await electors[name].step()
                assert sum(e.leading for e in electors.values()) <= 1
                # the callbacks told the reconciler exactly what ``leading`` says
                assert all(leaders.get(n, False) == e.leading for n, e in electors.items())
        store.down = set()
        for _ in range(10):  # 10 rounds of 2 s: more than a 15 s duration
            now[0] += 2.0
            for name in "abc":
                await electors[name].step()
                assert sum(e.leading for e in electors.values()) <= 1
        assert sum(e.leading for e in electors.values()) == 1

    asyncio.run(main())
