"""The reconciler's pass logic with a recording writer (the cluster tests use the real API)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice_operator.reconcile import Reconciler

from .test_api_models import PROMPT, ROUTE


@dataclass
class Recorder:
    configs: list[tuple[str, str]] = field(default_factory=list)
    statuses: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    fail_next: int = 0

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
    assert ready(st) == "InvalidSpec"


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
