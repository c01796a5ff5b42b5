"""Running evaluation cases through the sidecar's own request path.

Owns ``run``: the sidecar app (``sluice_sidecar.app.create_app``: prompt rendering, routing,
retries, fallback, translators, guardrails and budgets, exactly as a pod runs them) built from
the compiled config and served on a loopback port for the duration of the run; each case is one
``POST /v1/chat/completions`` naming the template version (``"messages": []`` plus
``metadata.prompt``), at most ``concurrency`` at a time; judge checks call the judge route the
same way. Cost comes from the sidecar's audit records, latency is measured per request. A judge
route that does not answer ends the run (``JudgeUnavailableError``, exit 2): a missing judge is
not a failing prompt.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sluice_operator.api.prompttemplate import Case, Judge
from sluice_sidecar import app as sidecar_app
from sluice_sidecar.contract import SidecarConfig

from . import checks as ck


class JudgeUnavailableError(RuntimeError):
    """The judge route failed to answer: the run cannot be scored."""


@dataclass(frozen=True)
class Plan:
    """Everything one evaluation run needs (built and checked by ``sluice_cli.evaluate``)."""

    template: str
    version: int
    route: str
    cases: Sequence[tuple[str, Case]]  # (name, case)
    checks: Sequence[ck.Compiled]
    judge: Judge | None
    pass_score: int
    config: SidecarConfig


@dataclass
class CaseResult:
    case: str
    run: int
    answer: str
    latency_ms: float
    outcomes: list[ck.Outcome] = field(default_factory=list)
    cost_usd: float = 0.0
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.outcomes)


class _Audit:
    def __init__(self) -> None:
        self.cost: dict[str, float] = {}

    def write(self, record: dict[str, Any]) -> None:
        self.cost[str(record.get("requestId"))] = float(record.get("costUSD") or 0.0)

    def flush(self) -> None:
        pass


async def run(
    plan: Plan,
    *,
    repeat: int,
    concurrency: int,
    secrets_dir: Path,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[CaseResult]:
    """Every case ``repeat`` times; results in (run, case) order."""
    audit = _Audit()
    api = sidecar_app.create_app(
        plan.config, secrets_dir=secrets_dir, audit=audit, pod_labels={}, who={}
    )
    runner = sidecar_app.api_runner(api)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    limit = asyncio.Semaphore(concurrency)
    total = repeat * len(plan.cases)
    done = 0
    judge_ids: dict[str, list[str]] = {}

    async def one(session: aiohttp.ClientSession, run_no: int, name: str, case: Case) -> CaseResult:
        nonlocal done
        async with limit:
            result = await _case(session, url, plan, run_no, name, case, judge_ids)
        done += 1
        progress(done, total)
        return result

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            tasks = [
                asyncio.ensure_future(one(session, r, name, case))
                for r in range(1, repeat + 1)
                for name, case in plan.cases
            ]
            try:
                results = await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        await asyncio.sleep(0)  # the gateway writes audit records just after each answer
    finally:
        await runner.cleanup()
    for r in results:
        r.cost_usd = audit.cost.get(_request_id(r.run, r.case), 0.0) + sum(
            audit.cost.get(i, 0.0) for i in judge_ids.get(_request_id(r.run, r.case), [])
        )
    return list(results)


def _request_id(run_no: int, case: str) -> str:
    return f"eval-{run_no}-{case}"


async def _case(  # noqa: PLR0917
    session: aiohttp.ClientSession,
    url: str,
    plan: Plan,
    run_no: int,
    name: str,
    case: Case,
    judge_ids: dict[str, list[str]],
) -> CaseResult:
    rid = _request_id(run_no, name)
    body = {
        "model": plan.route,
        "messages": [],
        "metadata": {
            "prompt": f"{plan.template}@{plan.version}",
            "variables": dict(case.variables or {}),
        },
    }
    started = time.monotonic()
    status, answer, error = await _post(session, url, body, rid)
    latency = (time.monotonic() - started) * 1000
    result = CaseResult(name, run_no, answer, round(latency, 1))
    if status != 200:
        result.error = f"the template's route answered {status}: {error}"
        return result
    for check in plan.checks:
        if check.type != "judge":
            result.outcomes.append(ck.apply(check, case, answer))
            continue
        assert plan.judge is not None
        jid = f"{rid}-judge-{check.index}-{os.urandom(3).hex()}"
        judge_ids.setdefault(rid, []).append(jid)
        jstatus, reply, jerror = await _post(
            session,
            url,
            {
                "model": plan.judge.route,
                "messages": ck.judge_messages(plan.judge, case, answer),
                "temperature": 0,
            },
            jid,
        )
        if jstatus != 200:
            raise JudgeUnavailableError(
                f"the judge route {plan.judge.route!r} answered {jstatus}: {jerror}"
            )
        result.outcomes.append(ck.parse_judge(reply, plan.judge.scale, plan.pass_score))
    return result


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], rid: str
) -> tuple[int, str, str]:
    """(status, answer text, error text) of one chat request to the in-process sidecar."""
    async with session.post(url, json=body, headers={"x-request-id": rid}) as resp:
        try:
            data = await resp.json(content_type=None)
        except ValueError:
            return resp.status, "", (await resp.text())[:200]
    if resp.status != 200:
        err = data.get("error") if isinstance(data, dict) else None
        message = err.get("message") if isinstance(err, dict) else str(data)[:200]
        return resp.status, "", str(message)[:300]
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return 502, "", "the answer has no choices[0].message.content"
    return 200, content if isinstance(content, str) else "", ""
