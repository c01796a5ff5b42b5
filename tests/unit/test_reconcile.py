"""The reconciler's pass logic with a recording writer (the cluster tests use the real API)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice_operator.reconcile import Reconciler

from .test_api_models import GUARD, PROMPT, ROUTE


@dataclass
class Recorder:
    configs: list[tuple[str, str]] = field(default_factory=list)
    statuses: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    fail_next: int = 0
    stored: dict[str, str] = field(default_factory=dict)  # namespace -> ConfigMap config.json
    reads: int = 0

    async def apply_config(self, namespace: str, config_json: str, config_hash: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("apiserver unreachable")
        self.configs.append((namespace, config_hash))

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        self.statuses.append((plural, name, dict(status)))

    async def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["name"], reason))

    async def read_config(self, namespace: str) -> str | None:
        self.reads += 1
        return self.stored.get(namespace)


def ready(st: Mapping[str, Any]) -> str:
    return next(c["reason"] for c in st["conditions"] if c["type"] == "Ready")


async def test_pass_writes_config_once_and_status_only_on_change() -> None:
    rec = Recorder()
    r = Reconciler(writer=rec)
    r.observe("prompttemplates", None, PROMPT)
    await r.reconcile("team-a")
    assert len(rec.configs) == 1
    (plural, name, st) = rec.statuses[-1]
    assert (plural, name, ready(st)) == ("prompttemplates", "support", "RouteNotFound")
    assert rec.events == [("support", "RouteNotFound")]

    # The same pass again writes nothing at all.
    await r.reconcile("team-a")
    assert len(rec.configs) == 1 and len(rec.statuses) == 1

    # Creating the route fixes the reference: new config, Ready flips, an Event says so.
    r.observe("modelroutes", "ADDED", ROUTE)
    await r.reconcile("team-a")
    assert len(rec.configs) == 2
    prompt_status = [s for p, n, s in rec.statuses if n == "support"][-1]
    assert ready(prompt_status) == "Compiled"
    assert ("support", "Compiled") in rec.events


async def test_deleting_last_resource_writes_empty_config() -> None:
    rec = Recorder()
    r = Reconciler(writer=rec)
    r.observe("modelroutes", None, ROUTE)
    first = await r.reconcile("team-a")
    r.observe("modelroutes", "DELETED", ROUTE)
    second = await r.reconcile("team-a")
    assert first.hash != second.hash
    assert second.config.routes == ()


async def test_invalid_object_from_the_api_gets_valid_false() -> None:
    rec = Recorder()
    r = Reconciler(writer=rec)
    bad = copy.deepcopy(ROUTE)
    bad["spec"]["backends"] = []
    r.observe("modelroutes", None, bad)
    result = await r.reconcile("team-a")
    assert result.config.routes == ()
    (_, _, st) = rec.statuses[-1]
    assert ready(st) == "InvalidBackends"


async def test_background_loop_debounces_and_retries_failures() -> None:
    rec = Recorder(fail_next=1)
    r = Reconciler(writer=rec, debounce=0.01)
    task = asyncio.create_task(r.run())
    try:
        for _ in range(5):
            r.observe("modelroutes", None, ROUTE)
        for _ in range(200):
            if rec.configs:
                break
            await asyncio.sleep(0.05)
        assert rec.configs == [("team-a", rec.configs[0][1])]
        # one failed pass, then one successful retry: no hot loop
        assert r.passes == 2
    finally:
        task.cancel()


FILTERS = ("guardrailpolicies", "team-a", "filters")


def edit(r: Reconciler, plural: str, doc: dict[str, Any]) -> None:
    """A MODIFIED watch event: the new spec, with the status the apiserver holds (ours)."""
    key = (plural, doc["metadata"]["namespace"], doc["metadata"]["name"])
    r.observe(plural, "MODIFIED", {**doc, "status": r.objects[key].get("status", {})})


def broken(doc: dict[str, Any], generation: int) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["metadata"]["generation"] = generation
    out["spec"]["input"]["deny"] = [{"regex": "([unclosed"}]
    return out


def at(doc: dict[str, Any], generation: int) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["metadata"]["generation"] = generation
    return out


async def test_invalid_edit_keeps_the_last_valid_generation_until_deleted() -> None:
    rec = Recorder()
    r = Reconciler(writer=rec)
    r.observe("guardrailpolicies", None, at(GUARD, 1))
    r.observe("modelroutes", None, ROUTE)
    good = await r.reconcile("team-a")
    assert [g.name for g in good.config.guardrails] == ["filters"]

    # A typo in an edit: the policy's rules stay in force, the rest of the namespace compiles.
    edit(r, "guardrailpolicies", broken(GUARD, 2))
    changed_route = at(ROUTE, 2)
    changed_route["spec"]["retry"]["attempts"] = 5
    edit(r, "modelroutes", changed_route)
    held = await r.reconcile("team-a")
    assert held.config.guardrails == good.config.guardrails
    assert held.config.routes[0].retry.attempts == 5
    st = r.objects[FILTERS]["status"]  # what the reconciler last wrote
    assert ready(st) == "InvalidRegex"
    assert "Still enforcing generation 1" in next(
        c["message"] for c in st["conditions"] if c["type"] == "Ready"
    )
    assert (st["observedGeneration"], st["enforcedGeneration"]) == (2, 1)
    assert ("filters", "InvalidRegex") in rec.events

    # Fixing it applies the new generation.
    fixed = at(GUARD, 3)
    fixed["spec"]["input"]["maxChars"] = 5
    edit(r, "guardrailpolicies", fixed)
    again = await r.reconcile("team-a")
    assert again.config.guardrails[0].input.max_chars == 5

    # Only deleting the object removes its rules.
    edit(r, "guardrailpolicies", broken(GUARD, 4))
    assert (await r.reconcile("team-a")).config.guardrails == again.config.guardrails
    r.observe("guardrailpolicies", "DELETED", GUARD)
    assert (await r.reconcile("team-a")).config.guardrails == ()


async def test_after_a_restart_the_last_valid_generation_comes_from_the_configmap() -> None:
    first = Recorder()
    r1 = Reconciler(writer=first)
    r1.observe("guardrailpolicies", None, at(GUARD, 1))
    good = await r1.reconcile("team-a")
    written = r1.objects[FILTERS]["status"]

    # A new operator process: nothing in memory, the object is invalid by now.
    rec = Recorder(stored={"team-a": good.config.canonical_json()})
    r2 = Reconciler(writer=rec, stored_config=rec.read_config)
    obj = broken(GUARD, 2)
    obj["status"] = written
    r2.observe("guardrailpolicies", None, obj)
    result = await r2.reconcile("team-a")
    assert result.config.guardrails == good.config.guardrails
    assert rec.reads == 1
    st = r2.objects[FILTERS]["status"]
    assert (st["observedGeneration"], st["enforcedGeneration"]) == (2, 1)


async def test_an_object_that_was_never_valid_is_left_out_and_others_compile() -> None:
    rec = Recorder()
    r = Reconciler(writer=rec)
    r.observe("guardrailpolicies", None, broken(GUARD, 1))
    r.observe("modelroutes", None, ROUTE)
    result = await r.reconcile("team-a")
    assert result.config.guardrails == ()
    assert [x.source for x in result.config.routes] == ["chat"]
    st = r.objects[FILTERS]["status"]
    message = next(c["message"] for c in st["conditions"] if c["type"] == "Ready")
    assert "Not in effect" in message


async def test_a_follower_compiles_and_publishes_but_writes_nothing_until_it_leads() -> None:
    """Leader election (``leader``): every replica serves configs from its own compile; only the
    leader applies ConfigMaps, patches status, posts Events, takes reports and grants leases."""
    from sluice_operator.leases import NotServingError
    from sluice_sidecar.contract import LeaseRequest, UsageReport

    rec = Recorder()
    published: list[str] = []
    r = Reconciler(writer=rec, leading=False, publish=lambda ns, res: published.append(res.hash))
    r.observe("modelroutes", None, ROUTE)
    r.observe("prompttemplates", None, PROMPT)
    await r.reconcile("team-a")
    assert published and not rec.configs and not rec.statuses and not rec.events
    report = UsageReport(
        namespace="team-a", pod="p", config_hash="h", seq=1, window_start=0, window_end=1
    )
    for call in (
        lambda: r.take_report(report),
        lambda: r.answer_leases(LeaseRequest(namespace="team-a", pod="p", instance="i", seq=1)),
    ):
        try:
            call()
        except NotServingError:
            pass
        else:
            raise AssertionError("a follower took what only the leader may")
    # Elected: the next pass writes the ConfigMap and every status (a predecessor's may differ).
    r.lead()
    await r.reconcile("team-a")
    assert rec.configs == [("team-a", published[-1])]
    assert {name for _, name, _ in rec.statuses} == {"support", ROUTE["metadata"]["name"]}
    assert r.take_report(report) is True
    # Stepping down stops the writing again.
    r.follow()
    r.observe(
        "modelroutes", "MODIFIED", {**ROUTE, "metadata": {**ROUTE["metadata"], "generation": 2}}
    )
    before = len(rec.statuses)
    await r.reconcile("team-a")
    assert len(rec.statuses) == before
