"""The budget stage: spend, token and rate limits, reserved before the call and settled after.

Owns the public face of the ``budget`` package and its stage: ``BudgetStage`` (``on_request``
and ``on_finish`` over a ``BudgetPolicy``, plus config swaps and status). ("Budget" here always
means a Budget resource's limits; the retry budget is ``routing``'s, and a request's time is its
deadline.) The parts:

* ``windows`` — Day/Week/Month windows in an IANA zone (DST, month ends), rolling windows as a
  bounded ring of buckets, and the clock-step rule (a window is never reset early or twice).
* ``ledger`` — per budget rule: reservations, settlement, release, TTL expiry, idempotency by
  request id, per-window counters, alert thresholds.
* ``ratelimit`` — rpm/tpm token buckets (continuous refill), with Retry-After.
* ``policy`` — selection, worst-case estimate and imposed output cap, combining budgets, and the
  Block / Downgrade / AlertOnly actions.
* ``leases`` — the sidecar's side of the budget leases: what to ask the control plane for, the
  caps it grants (on each limit's meter), expiry and control-plane loss.
* ``runs`` — agent runs (``x-sluice-run`` / ``metadata.run`` and their parents): nested envelopes
  for ``perRun`` limits, the ``maxSteps`` loop breaker, run totals, a bounded run table.

How it runs on the request path (``stage.Stage``): ``BudgetStage.on_request`` runs after the
route is resolved (and after prompt rendering and input guardrails, which may change the body:
it is declared last, ``app.default_stages``). It reserves the worst case in every budget that
covers the request and either
raises (``BudgetExceeded``/``errors.RateLimited`` → 429 with Retry-After), moves the request to a
downgrade route (``ex.route``), or lets it through; a body without an output cap gets the config's
``defaultMaxTokens`` (a new ``ex.body`` dict). ``BudgetStage.on_finish`` runs once per request and
settles the reservations with ``ex.usage`` at ``ex.backend``'s prices, or releases them when the
request produced no usage. Windows use ``wall()`` (``clock.wall()``, plus the operator's clock
offset when leases are on); rate limits and runs use
``clock.now()``. A request that names a run is tracked even when no budget covers it (its totals
go to the audit record as ``annotations.run``); one that names none and meets no budget costs a
few lookups here.

**Overshoot bound (one sidecar).** At every admission under ``Block``, for every limit and its
current window, ``spent + reserved + worst case ≤ limit``; reservation and check happen in one
synchronous step, so a concurrent burst cannot race past it and a request is never counted
twice (integer picodollars: holds and releases cancel exactly). Committed spend can therefore
exceed a limit only by the settlement error of the requests in flight at the edge: what they
cost beyond their reservation. The output part of a reservation is exact (the cap is in the
request, imposed when absent), so that error is the prompt under-estimate (``policy``: about four
characters per token; dense scripts, big images and audio tokenize to more) times the dearest
input price — zero when callers pass exact prompt counts. Beyond that, by design or by failure:
``AlertOnly`` and downgraded requests are recorded over the limit; a reservation that expires
while its request still runs (TTL = the route's total timeout + 60 s, so only a stuck request or
a forward wall-clock jump of more than the grace) frees room early, by at most that request's
worst case; only the final try's usage is charged (a mid-stream ``Continue`` fallback's first
partial answer is not); and counters live in memory, so a restarted sidecar starts its windows
from zero for enforcement. What it settled is not lost, though: ``BudgetStage.spend`` (per window
and per route and model) goes into every usage report, and the operator keeps the sum over all
sidecars durable in ``Budget.status`` (``sluice_operator.reports.BudgetSpend``).

**Across replicas: leases** (``leases``; DESIGN.md, Doorman-style). In a pod (a control plane
configured: ``enable_leases``), each limit's local cap for a window is the lease the operator
granted this process - its own settled spend plus a slice, sized by recent demand so that the
slices plus everything reported never exceed the limit - not the full limit; admission stays the
same local, synchronous check (no network call on the request path), and
``controlplane_client.LeaseClient`` renews the leases in the background (every third of the TTL,
at once on a refusal or a slice running low). A lease carries its window's start and reset on the
operator's clock, and the stage's windows follow that clock (``wall``: the measured offset), so
replica clock skew cannot reset a window. A request the lease cannot cover gets a 429 naming the
budget and the reason (this sidecar's share is used, no lease yet, or the control plane is lost);
with no live lease and no control plane, ``onControlPlaneLoss`` decides: Block (nothing more) or
AllowLocal (the full limit locally, as without a control plane). Without a control plane
(``sluice run``) nothing changes: every limit is enforced whole, locally. The bound across
replicas: the limit plus the sum of the sidecars' settlement errors (above) plus what processes
that vanished settled after their last delivered report (at most their slices); docs/budget.md
states it precisely.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..clock import Clock
from ..contract import BudgetRouteSpend, BudgetRule, BudgetWindowSpend, Route, SidecarConfig
from ..errors import BudgetExceeded
from ..exchange import Exchange
from ..model import run_trace_id
from ..stage import Stage
from . import runs
from .leases import LeaseKeeper
from .ledger import (
    Alert,
    Amount,
    Exceeded,
    Ledger,
    MeterLease,
    Reservation,
    WindowStatus,
)
from .policy import (
    Admission,
    BudgetPolicy,
    WorstCase,
    check_budgets,
    prompt_tokens,
    selects,
    worst_case,
)
from .ratelimit import RateExceeded, RateLimiter, TokenBucket
from .runs import RunBook, RunExceeded, RunRef
from .windows import CalendarTracker, RollingRing, Window, calendar_window

__all__ = [
    "Admission",
    "Alert",
    "Amount",
    "BudgetExceeded",
    "BudgetPolicy",
    "BudgetStage",
    "CalendarTracker",
    "Exceeded",
    "LeaseKeeper",
    "Ledger",
    "MeterLease",
    "RateExceeded",
    "RateLimiter",
    "Reservation",
    "RollingRing",
    "RunBook",
    "RunExceeded",
    "RunRef",
    "TokenBucket",
    "Window",
    "WindowStatus",
    "WorstCase",
    "calendar_window",
    "check_budgets",
    "prompt_tokens",
    "selects",
    "worst_case",
]

log = logging.getLogger("sluice.budget")
AlertSink = Callable[[Alert], None]
#: Admissions tracked at once; beyond it the oldest is released (on_finish must have been lost).
MAX_TRACKED = 100_000


def _route_map(routes: Mapping[str, Route] | Iterable[Route]) -> dict[str, Route]:
    if isinstance(routes, Mapping):
        return dict(routes)
    return {r.name: r for r in routes}


class BudgetStage(Stage):
    """The budget stage of one sidecar (one pod): ``on_request`` and ``on_finish``."""

    name = "budget"

    def __init__(
        self,
        budgets: Sequence[BudgetRule],
        pod_labels: Mapping[str, str],
        clock: Clock,
        routes: Mapping[str, Route] | Iterable[Route],
        *,
        default_max_tokens: int = 4096,
        on_alert: AlertSink | None = None,
    ) -> None:
        self.clock = clock
        self.on_alert = on_alert
        self.policy = BudgetPolicy(
            budgets,
            pod_labels,
            _route_map(routes),
            default_max_tokens=default_max_tokens,
            mono=clock.now(),
        )
        self._inflight: dict[int, tuple[Exchange, Admission]] = {}
        #: The leases from the control plane (``enable_leases``); None: full limits locally.
        self.leases: LeaseKeeper | None = None

    def enable_leases(self, namespace: str, pod: str, instance: str) -> LeaseKeeper:
        """Enforce each limit with the leases the control plane grants (``budget.leases``)."""
        self.leases = LeaseKeeper(self.policy, namespace, pod, instance, self.clock.now())
        return self.leases

    def wall(self) -> float:
        """The wall clock windows follow: the operator's when leases are on."""
        leases = self.leases
        return self.clock.wall() + (leases.offset if leases is not None else 0.0)

    def on_config(self, config: SidecarConfig) -> None:
        """A ``ConfigSource`` listener: take the budgets, routes and default cap of ``config``
        (counters survive; raises ``ValueError`` for unusable budgets, keeping the old ones)."""
        self.policy.configure(
            config.budgets,
            _route_map(config.routes),
            config.limits.default_max_tokens,
            mono=self.clock.now(),
        )
        if self.leases is not None:
            self.leases.attach()
            if self.leases.missing():  # a new budget or limit: ask for its lease now
                self.leases.need()

    async def on_request(self, ex: Exchange) -> None:
        route = ex.route
        if route is None:
            return
        run: RunRef | None = None
        headers = ex.headers
        if "metadata" in ex.body or runs.HEADER in headers or runs.PARENT_HEADER in headers:
            run, stripped = runs.reference(ex.body, headers)
            if stripped is not None:
                ex.body = stripped
            trace = ex.trace
            if run is not None and trace is not None and trace.received is None:
                # one trace per run (the app's own traceparent, when it sends one, wins)
                ns = ex.config.namespace if ex.config is not None else ""
                ex.trace = dataclasses.replace(trace, trace_id=run_trace_id(ns, run.run))
        if run is None and not self.policy.active:
            return
        leases = self.leases
        if leases is not None:
            leases.tick(self.clock.now())
        try:
            adm = self.policy.admit(
                ex.request_id,
                route,
                ex.body,
                ex.operation,
                wall=self.wall(),
                mono=self.clock.now(),
                fingerprint=(ex.model, ex.operation, ex.bytes_in),
                run=run,
                replayable=ex.client_request_id,
            )
        except BudgetExceeded as err:
            x = err.exceeded
            if isinstance(x, RunExceeded):
                ex.annotations["run"] = {"id": x.run, "refused": f"{x.rule}:{x.metric}"}
            elif leases is not None and getattr(x, "lease", None) is not None:
                ex.annotations["budget"] = {"budgets": [x.rule], "lease": x.lease}
                leases.need()
            raise
        if adm is None:
            return
        if adm.body is not ex.body:
            ex.body = adm.body
        if adm.route is not route:
            ex.route = adm.route
            ex.deadline = ex.started + adm.route.timeouts.total
        if adm.holds or adm.downgraded_from is not None:
            ex.annotations["budget"] = adm.summary()
        if len(self._inflight) >= MAX_TRACKED:
            _, lost = self._inflight.pop(next(iter(self._inflight)))
            self._settle(lost, None)
        self._inflight[id(ex)] = (ex, adm)

    def on_finish(self, ex: Exchange) -> None:
        key = id(ex)
        item = self._inflight.get(key)
        if item is None or item[0] is not ex:
            return
        del self._inflight[key]
        adm = item[1]
        self._settle(adm, ex)
        if adm.run is not None:
            ex.annotations["run"] = runs.totals(adm.run)

    def _settle(self, adm: Admission, ex: Exchange | None) -> None:
        try:
            alerts = self.policy.settle(
                adm,
                ex.usage if ex is not None else None,
                ex.backend if ex is not None else None,
                wall=self.wall(),
                mono=self.clock.now(),
                attempted=ex is None or ex.attempts > 0,
            )
        except Exception:  # settlement must never fail the request's finish
            log.exception("budget settlement failed")
            return
        leases = self.leases
        if leases is not None and adm.holds and leases.running_low(self.clock.wall()):
            leases.need()
        if self.on_alert is not None:
            for a in alerts:
                self.on_alert(a)

    def status(self) -> tuple[WindowStatus, ...]:
        return self.policy.status(self.wall())

    def spend(self) -> tuple[tuple[BudgetWindowSpend, ...], tuple[BudgetRouteSpend, ...]]:
        """This sidecar's settled spend per budget window and per (route, model), for the usage
        report (gauges since the sidecar started; the operator sums them across pods)."""
        return self.policy.spend(self.wall())

    def in_flight(self) -> int:
        return len(self._inflight)
