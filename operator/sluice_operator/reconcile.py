"""The namespace reconciler: watch events in, ConfigMap + status + Events out.

Owns the in-memory view of every Sluice object (fed by kopf's watch events), the set of namespaces
that need a pass, and one pass: validate → the evaluation gate (a gated PromptTemplate label
keeps its version until the new one passed, ``evaluation.decide``) → compile (pure; an invalid
object keeps its last valid compiled form from the config in force, read back from the ConfigMap
after a restart) → apply the ConfigMap and publish to connected sidecars when the hash changed →
patch each object's status (with the rollout the sidecars' reports show) only where it changed →
post an Event when an object's readiness changes.

Passes are debounced (a burst of events costs one pass per namespace), a failing pass is retried
with growing back-off (never a hot loop), and report-driven status refreshes are rate-limited per
namespace. Nothing here talks to the API except through ``kube.Kube``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from sluice_sidecar.contract import LeaseRequest, LeaseResponse, Route, SidecarConfig, UsageReport

from . import evaluation, manifests, reports, status
from .api import KINDS, Kind
from .api.prompttemplate import PromptTemplateSpec
from .compile import CompileResult, Held, Problem, compile_namespace
from .guardstats import GuardStats
from .leases import LeaseDesk, NotServingError
from .quotas import QuotaView
from .reports import BudgetSpend, Crossing

log = logging.getLogger(__name__)

KIND_BY_PLURAL: dict[str, Kind] = {k.plural: k for k in KINDS}
_PROMPTS = next(k.plural for k in KINDS if k.kind == "PromptTemplate")
_BUDGETS = next(k.plural for k in KINDS if k.kind == "Budget")


class Writer(Protocol):
    """What the reconciler needs from ``kube.Kube`` (a protocol so tests can count calls)."""

    async def apply_config(self, namespace: str, config_json: str, config_hash: str) -> None: ...

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...

    async def event(
        self, obj: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None: ...


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _no_stored_config(namespace: str) -> str | None:
    return None


@dataclass
class Reconciler:
    writer: Writer
    # The config JSON of a namespace's ConfigMap (``kube.Kube.read_config``): after a restart,
    # where the last valid generation of an object that is invalid now is found.
    stored_config: Callable[[str], Awaitable[str | None]] = _no_stored_config
    publish: Callable[[str, CompileResult], None] = lambda ns, result: None
    debounce: float = 0.1
    report_interval: float = 5.0
    now: Callable[[], str] = utcnow
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    results: dict[str, CompileResult] = field(default_factory=dict)
    reports: reports.Reports = field(default_factory=reports.Reports)
    spend: BudgetSpend = field(default_factory=BudgetSpend)
    #: The budget leases granted to sidecars (``POST /v1/leases``).
    leases: LeaseDesk = field(default_factory=LeaseDesk)
    #: Alert thresholds crossed: (namespace, budget, window, threshold) -> count (a metric).
    crossings: dict[tuple[str, str, str, int], int] = field(default_factory=dict)
    #: Each Budget's windows as last computed, for the metrics: (namespace, budget) -> samples.
    budget_windows: dict[tuple[str, str], list[BudgetSample]] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _failures: dict[str, int] = field(default_factory=dict)
    _report_due: dict[str, float] = field(default_factory=dict)
    passes: int = 0
    parallel_namespaces: int = 4
    parallel_writes: int = 8
    #: Guardrail verdict counts from the reports (GuardrailPolicy status).
    guard: GuardStats = field(default_factory=GuardStats)
    #: Budgets created while this operator watched (no lease grace: ``LeaseDesk.in_grace``).
    born: dict[str, set[str]] = field(default_factory=dict)
    #: Whether this replica is the leader (``leader``): only the leader writes to the API, takes
    #: reports and grants leases; a follower compiles the same configs for its sidecars and
    #: webhook. True without leader election (one replica).
    leading: bool = True
    #: The config hash this replica applied to each namespace's ConfigMap while leading.
    applied: dict[str, str] = field(default_factory=dict)

    # --- inputs --------------------------------------------------------------------------------

    def observe(self, plural: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Take a watch event for one of the four kinds."""
        meta = body.get("metadata") or {}
        key = (plural, str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self.objects.pop(key, None)
            if plural == _BUDGETS:
                self.spend.forget(key[1], key[2])
                self.leases.forget(key[1], key[2])
                self.budget_windows.pop((key[1], key[2]), None)
                self.born.get(key[1], set()).discard(key[2])
        else:
            new = event_type == "ADDED" and key not in self.objects
            if plural == _BUDGETS and new and self.leading:
                # Created while this operator watched as the leader (a listing, initial or
                # after a watch gap, has no type): no other operator granted leases for it.
                self.born.setdefault(key[1], set()).add(key[2])
            self.objects[key] = _plain(body)
            if plural == _BUDGETS:  # the durable spend, read back (max seq per key wins)
                self.spend.seed(key[1], key[2], (body.get("status") or {}).get("ledger"))
        self.mark(key[1])

    def lead(self) -> None:
        """This replica became the leader: a full pass writes every ConfigMap and status again
        (they may be a predecessor's), and leases start over with the restart grace (the
        predecessor's leases and the spend it had not written yet are unknown here)."""
        self.leading = True
        self.applied.clear()
        self.born.clear()
        self.leases = LeaseDesk(ttl=self.leases.ttl, skew=self.leases.skew)
        self.leases.open(self.wall())
        for namespace in {key[1] for key in self.objects} | set(self.results):
            self.mark(namespace)

    def follow(self) -> None:
        """This replica stopped leading: no more writes, reports or leases (answers 503)."""
        self.leading = False

    def mark(self, namespace: str) -> None:
        self._dirty.add(namespace)
        self._wake.set()

    def take_report(self, report: UsageReport) -> bool:
        """Record a sidecar report; refreshes status at most every ``report_interval``.
        ``NotServingError`` on a follower (the sidecar sends it again, to the leader)."""
        if not self.leading:
            raise NotServingError(report.namespace)
        fresh = self.reports.add(report, self.wall())
        # Budget spend is idempotent on its own terms (gauges, highest seq per instance).
        spent = self.spend.add(report, self.wall())
        guarded = self.guard.add(report, self.wall())
        if fresh or spent or guarded:
            self._refresh(report.namespace)
        return fresh

    def _refresh(self, namespace: str) -> None:
        """A status pass for what reports changed, at most every ``report_interval``."""
        due = self._report_due.get(namespace, 0.0)
        if self.monotonic() >= due:
            self._report_due[namespace] = self.monotonic() + self.report_interval
            self.mark(namespace)

    def answer_leases(self, request: LeaseRequest) -> LeaseResponse | None:
        """A sidecar's lease request, against the budgets compiled for its namespace and the
        spend every sidecar reported (``leases.LeaseDesk``)."""
        result = self.results.get(request.namespace)
        if result is None or not self.leading:
            raise NotServingError(request.namespace)
        born = self.born.get(request.namespace, set())
        config = result.config  # the routes too: their backends' quotas (``quotas``)
        answer = self.leases.answer(
            request, config.budgets, self.spend, self.wall(), born, routes=config.routes
        )
        if self.leases.touched:  # spend the reports had not carried yet: refresh the status
            self.leases.touched.clear()
            self._refresh(request.namespace)
        return answer

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile dirty namespaces forever (cancel the task to stop)."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.debounce)
            self._wake.clear()
            batch, self._dirty = sorted(self._dirty), set()
            limit = asyncio.Semaphore(self.parallel_namespaces)
            await asyncio.gather(*(self._guarded(namespace, limit) for namespace in batch))

    async def _guarded(self, namespace: str, limit: asyncio.Semaphore) -> None:
        async with limit:
            try:
                await self.reconcile(namespace)
                self._failures.pop(namespace, None)
            except Exception:
                failures = self._failures.get(namespace, 0) + 1
                self._failures[namespace] = failures
                delay = min(60.0, 0.5 * 2**failures)
                log.exception("reconciling %s failed; retrying in %.1fs", namespace, delay)
                asyncio.get_running_loop().call_later(delay, self.mark, namespace)

    def idle(self) -> bool:
        """No namespace waits for a pass (for tests and benchmarks to poll)."""
        return not self._dirty and not self._wake.is_set()

    # --- one pass ------------------------------------------------------------------------------

    async def reconcile(self, namespace: str) -> CompileResult:
        self.passes += 1
        mine = {k: v for k, v in self.objects.items() if k[1] == namespace}
        resources: list[manifests.Resource] = []
        invalid: dict[tuple[str, str, str], list[str]] = {}
        held: list[Held] = []
        for key, obj in sorted(mine.items()):
            kind = KIND_BY_PLURAL[key[0]]
            parsed = manifests.parse_object(obj, f"{kind.kind} {key[1]}/{key[2]}")
            if isinstance(parsed, manifests.Resource):
                resources.append(parsed)
            elif parsed:
                invalid[key] = [f"{e.path}: {e.message}" if e.path else e.message for e in parsed]
                created = (obj.get("metadata") or {}).get("creationTimestamp") or ""
                held.append(Held(kind.kind, key[2], str(created)))
        gates: dict[str, evaluation.Gate] = {}
        for i, res in enumerate(resources):
            if isinstance(res.spec, PromptTemplateSpec):
                obj = mine[(res.kind.plural, namespace, res.name)]
                gate = evaluation.decide(res.spec, _annotations(obj), _history(obj))
                gates[res.name] = gate
                if gate.held:  # the gated labels keep the versions they serve
                    spec = res.spec.model_copy(update={"labels": gate.labels})
                    resources[i] = dataclasses.replace(res, spec=spec)
        previous = self.results.get(namespace)
        in_force = previous.config if previous is not None else None
        if held and in_force is None:
            in_force = await self._stored_config(namespace)  # first pass since start-up
        result = compile_namespace(namespace, resources, held=held, previous=in_force)
        result = dataclasses.replace(
            result,
            problems=result.problems
            + tuple(
                Problem("PromptTemplate", name, f"spec.labels.{h.label}", h.reason, h.message)
                for name, gate in sorted(gates.items())
                for h in gate.held
            ),
        )
        if self.leading and self.applied.get(namespace) != result.hash:
            await self.writer.apply_config(namespace, result.config.canonical_json(), result.hash)
            self.applied[namespace] = result.hash
            log.info("namespace %s: config %s", namespace, result.hash)
        self.results[namespace] = result
        self.leases.saw(namespace, self.wall())
        self.publish(namespace, result)

        now = self.now()
        evaluations = {
            res.name: evaluation.results(
                res.spec, _annotations(mine[(_PROMPTS, namespace, res.name)])
            )
            for res in resources
            if isinstance(res.spec, PromptTemplateSpec)
        }
        limit = asyncio.Semaphore(self.parallel_writes)
        await asyncio.gather(
            *(
                self._write_status(
                    key,
                    obj=obj,
                    invalid=invalid.get(key, []),
                    result=result,
                    now=now,
                    limit=limit,
                    evaluations=evaluations.get(key[2]) if key[0] == _PROMPTS else None,
                )
                for key, obj in sorted(mine.items())
            )
        )
        return result

    async def _write_status(
        self,
        key: tuple[str, str, str],
        *,
        obj: dict[str, Any],
        invalid: list[str],
        result: CompileResult,
        now: str,
        limit: asyncio.Semaphore,
        evaluations: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        plural, namespace, name = key
        kind = KIND_BY_PLURAL[plural]
        route = next((r for r in result.config.routes if r.source == name), None)
        observed = (
            self.reports.route_status(namespace, route.name, result.hash, self.wall())
            if kind.kind == "ModelRoute" and not invalid and route is not None
            else None
        )
        desired = status.desired_status(
            kind.kind,
            obj,
            invalid,
            result,
            now,
            evaluations=evaluations,
            keys=status.KeysSeen(**observed["keys"]) if observed else status.KeysSeen(),
        )
        if observed is not None and route is not None:
            desired = self._with_reports(namespace, route, desired, observed)
        else:  # the config is namespace-wide: its rollout is every reporting pod's
            desired["rollout"] = self.reports.rollout(namespace, result.hash, self.wall())
        if kind.kind == "GuardrailPolicy":
            desired.update(self.guard.status(namespace, name, self.wall()))
        crossings: list[Crossing] = []
        rule = next((b for b in result.config.budgets if b.name == name), None)
        if kind.kind == "Budget" and rule is not None:
            fields, crossings = self.spend.status(
                namespace, rule, obj.get("status") or {}, self.wall()
            )
            desired.update(fields)
            self.budget_windows[(namespace, name)] = [
                BudgetSample(
                    w["window"],
                    w["spentUSD"],
                    w["percent"],
                    lim.usd,
                    reports.window_seconds(lim),
                )
                for w, lim in zip(fields["windows"], rule.limits, strict=True)
            ]
            desired["conditions"] = status.conditions(
                desired["conditions"],
                [status.threshold_verdict(fields["windows"], rule.alert_thresholds)],
                int((obj.get("metadata") or {}).get("generation") or 1),
                now,
            )
        old = obj.get("status")
        patch = status.status_patch(old, desired)
        if patch is None or not self.leading:
            return  # (a follower computes, for its metrics, and leaves the writing to the leader)
        async with limit:
            await self.writer.patch_status(plural, namespace, name, patch)
            obj["status"] = desired  # what we wrote; the watch event will confirm it
            change = status.event_worthy(old, desired)
            if change is not None:
                await self.writer.event(
                    obj, "Normal" if change.ok else "Warning", change.reason, change.message
                )
            for c in crossings:  # once per threshold and window: ``alerted`` is in the status
                k = (namespace, name, c.window, c.threshold)
                self.crossings[k] = self.crossings.get(k, 0) + 1
                reason = "BudgetExhausted" if c.threshold >= 100 else "BudgetThreshold"
                await self.writer.event(obj, "Warning", reason, c.message)

    async def _stored_config(self, namespace: str) -> SidecarConfig | None:
        """The config in the namespace's ConfigMap (what sidecars run), or None: after a restart
        it is where the last valid generation of an object that is invalid now lives."""
        text = await self.stored_config(namespace)
        if not text:
            return None
        try:
            return SidecarConfig.model_validate_json(text)
        except ValidationError:
            log.warning("namespace %s: the stored config is unreadable; not reusing it", namespace)
            return None

    def _with_reports(
        self, namespace: str, route: Route, desired: dict[str, Any], observed: dict[str, Any]
    ) -> dict[str, Any]:
        merged = reports.merge_route_status(desired, observed)
        if self.leading:  # only the leader grants quota shares: a follower's books are empty
            views = self.leases.quotas.views(namespace, (route,), self.wall())
            merged["backends"] = status.with_quotas(merged["backends"], route.name, views)
        return merged

    def quota_views(self) -> list[tuple[str, QuotaView]]:
        """(namespace, view) for every limited backend of every compiled route, from this
        replica's quota books (the metrics; none on a follower, which grants no shares)."""
        if not self.leading:
            return []
        now = self.wall()
        return [
            (namespace, view)
            for namespace, result in sorted(self.results.items())
            for view in self.leases.quotas.views(namespace, result.config.routes, now)
        ]


@dataclass(frozen=True)
class BudgetSample:
    """One Budget window's numbers for the metrics."""

    window: str
    spent_usd: float
    percent: float
    limit_usd: float | None
    seconds: float


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _history(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("labelHistory") or [])


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A mutable deep copy of a kopf body (which is a read-only view)."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        out[key] = _plain(value) if isinstance(value, Mapping) else _copy(value)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) if isinstance(v, Mapping) else _copy(v) for v in value]
    return value
