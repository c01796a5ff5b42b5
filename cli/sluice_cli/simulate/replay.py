"""Replaying audit records against a compiled config: what each request would meet under it.

Owns ``Env`` (one namespace's ``SidecarConfig`` as one workload sees it), ``Outcome`` (what
happened to one request: route and backend, refusal, guardrail effect, cost), ``recorded`` (the
outcome the record itself tells) and ``replay`` (the outcome of every record under a config,
computed with the sidecar's own pure code):

* **Routing** — the virtual model's route among the routes whose ``workloadSelector`` matches the
  pod's labels (``podinfo.matches``), an unknown model is the sidecar's 404; routing rules by
  ``routing.match_rule``'s order (prompt-size traits from the recorded usage or the recorded
  prompt; rules on tools, metadata or headers are only known when the record names the rule that
  matched: else the request's backend is "undetermined"); the backend is the first the strategy
  picks with every backend healthy (``routing.order``), or the recorded one when the request fell
  back or the strategy is random.
* **Guardrails** — the input checks (``guardrails.Engine.check_input``) on the recorded prompt
  (``--audit-prompts``). Without text nothing is re-checked; a prompt that was redacted when
  recorded is not re-checked either (the record holds the redacted text). Answers are never
  recorded, so output checks are never replayed.
* **Budgets** — one ``budget.BudgetPolicy`` per pod (each sidecar enforces what it sees),
  admissions at each request's start and settlements at its end, in time order, with the
  recorded usage priced at the backend the request would use. The worst case reserved is the
  recorded prompt tokens plus the output cap: the one the sidecar imposed or reserved when the
  record shows it, else ``assume_cap`` or, by default, the tokens the answer used.
* **Spend** — the recorded usage at the new backend's prices (``model.cost_usd``).

Pure: no IO, no clock (time is the records').
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sluice_sidecar import podinfo, routing
from sluice_sidecar.budget import BudgetPolicy, prompt_tokens
from sluice_sidecar.budget.policy import cap_field, window_name
from sluice_sidecar.contract import Backend, Route, SidecarConfig, Strategy
from sluice_sidecar.errors import BudgetExceeded, RateLimited
from sluice_sidecar.guardrails import Engine
from sluice_sidecar.model import Usage, cost_usd

from .records import Record

#: Strategies whose first choice does not depend on chance or on measured latency.
_DETERMINISTIC = (Strategy.FAILOVER, Strategy.LEAST_COST)


@dataclass(frozen=True)
class Env:
    """One namespace's config as one workload sees it (``labels`` None: selectors ignored)."""

    config: SidecarConfig
    routes: Mapping[str, Route]
    engine: Engine
    labels: Mapping[str, str]

    @classmethod
    def of(cls, config: SidecarConfig, labels: Mapping[str, str] | None) -> Env:
        if labels is None:  # the pods' labels are unknown: every selector matches
            config = _unselected(config)
        seen = dict(labels or {})
        routes = {r.name: r for r in config.routes if podinfo.matches(r.workload_selector, seen)}
        return cls(config, routes, Engine(config.guardrails, seen), seen)


def _unselected(config: SidecarConfig) -> SidecarConfig:
    def sel(obj: Any) -> Any:
        return obj.model_copy(
            update={"selector": obj.selector.model_copy(update={"match_labels": {}})}
        )

    return config.model_copy(
        update={
            "routes": tuple(r.model_copy(update={"workload_selector": {}}) for r in config.routes),
            "budgets": tuple(sel(b) for b in config.budgets),
            "guardrails": tuple(sel(g) for g in config.guardrails),
        }
    )


@dataclass
class Outcome:
    """What happened (or would happen) to one request."""

    #: Not replayed at all, and why (no config for its namespace, model not recorded).
    skipped: str | None = None
    resolved: str | None = None  # the route the model resolves to (before a downgrade)
    route: str | None = None  # the route that served it (after a downgrade)
    backend: str | None = None
    backend_model: str | None = None
    #: "unknown model", "guardrail", "budget", or None (served, or failed upstream).
    refused: str | None = None
    detail: str = ""  # which budget and limit, which policy
    at: float | None = None  # when a budget refused it
    downgraded_from: str | None = None
    #: Input guardrail effect ("allow", "log", "redact", "block"), None when not replayed.
    guard: str | None = None
    guard_keys: frozenset[tuple[str, str, str]] = frozenset()
    #: Why the guardrails were not replayed ("no prompt text", "redacted when recorded").
    guard_unknown: str | None = None
    #: Why the backend could not be decided (a routing rule on traits the record lacks).
    undetermined: str | None = None
    #: Output guardrails cover the route (answers are not recorded: never replayed).
    output_checks: bool = False
    cost: float = 0.0


def guard_effect(
    verdicts: Sequence[Mapping[str, Any]],
) -> tuple[str, frozenset[tuple[str, str, str]]]:
    """The effect of input verdicts on the request, and their (policy, check, action) keys."""
    mine = [v for v in verdicts if v.get("stage") == "input"]
    keys = frozenset(
        (str(v.get("policy")), str(v.get("check")), str(v.get("action"))) for v in mine
    )
    actions = {v.get("action") for v in mine if v.get("enforced")}
    if "Block" in actions:
        return "block", keys
    if "Redact" in actions:
        return "redact", keys
    return ("log" if any(v.get("action") != "Allow" for v in mine) else "allow"), keys


def recorded(rec: Record) -> Outcome:
    """The outcome the record tells."""
    if rec.model is None:
        return Outcome(skipped="model not recorded (the request named an unknown model)")
    effect, keys = guard_effect(rec.verdicts)
    down = rec.budget_note.get("downgradedFrom")
    out = Outcome(
        resolved=down if isinstance(down, str) else rec.route,
        route=rec.route,
        backend=rec.backend,
        backend_model=rec.backend_model,
        downgraded_from=down if isinstance(down, str) else None,
        guard=effect,
        guard_keys=keys,
        cost=rec.cost_usd,
    )
    if rec.budget_refused:
        out.refused, out.at = "budget", rec.start
        out.detail = f"recorded {rec.error_code}"
    elif effect == "block" and rec.status == 400:
        out.refused = "guardrail"
    return out


def _never_tried(rec: Record) -> bool:
    """Refused before any try for a reason other than a budget (a bad request, a guardrail)."""
    return rec.attempts == 0 and 400 <= rec.status < 500 and not rec.budget_refused


def pick_rule(route: Route, rec: Record) -> tuple[Route, str | None]:
    """``route`` narrowed by its first matching routing rule, and why that is undecidable
    from the record (None when decided)."""
    if not route.rules:
        return route, None

    def tokens() -> int:
        if rec.messages is not None:
            return prompt_tokens({"messages": rec.messages})
        return rec.input_tokens

    for rule in route.rules:
        m = rule.match
        size_only = rule.model_copy(
            update={"match": m.model_copy(update={"tools": None, "metadata": {}, "headers": {}})}
        )
        probe = route.model_copy(update={"rules": (size_only,)})
        if routing.match_rule(probe, prompt_tokens=tokens, body={}, headers={}) is None:
            continue  # its prompt-size traits rule it out
        unknown = [
            name
            for name, on in (
                ("tools", m.tools is not None),
                ("metadata", bool(m.metadata)),
                ("headers", bool(m.headers)),
            )
            if on
        ]
        if unknown and rec.annotations.get("routingRule") != rule.name:
            return route, (
                f"routing rule {rule.name!r} of route {route.name!r} matches on "
                f"{', '.join(unknown)}, which audit records do not carry"
            )
        return routing.rule_route(route, routing.new_state(route), rule), None
    return route, None


def pick_backend(route: Route, rec: Record) -> Backend | None:
    """The backend the request would use on ``route`` with every backend healthy."""
    ordered = routing.order(route, routing.new_state(route), 0.0, random.Random(0))  # noqa: S311
    if not ordered:
        return None
    if route.strategy in _DETERMINISTIC and rec.fallbacks == 0:
        return ordered[0]
    return next((b for b in route.backends if b.name == rec.backend), ordered[0])


@dataclass
class _Pending:
    index: int
    rec: Record
    route: Route
    backend: Backend | None
    usage: bool = True


@dataclass
class _Pod:
    policy: BudgetPolicy
    env: Env
    admissions: dict[int, Any] = field(default_factory=dict)


def output_cap(rec: Record, assume_cap: int | None) -> int | None:
    """The output cap the request is assumed to have sent (None: it sent none)."""
    note = rec.budget_note
    if isinstance(note.get("imposedMaxTokens"), int):
        return None
    reserved = note.get("reservedTokens")
    if isinstance(reserved, int):
        return max(rec.output_tokens, reserved - rec.input_tokens, 1)
    if assume_cap is not None:
        return assume_cap
    return max(rec.output_tokens, 1)


def replay(
    records: Sequence[Record],
    env_for: Mapping[str | None, Env],
    *,
    assume_cap: int | None = None,
) -> list[Outcome]:
    """The outcome of every record (in the order given, which must be start order) under the
    configs of ``env_for`` (namespace → Env; key None for records without a namespace)."""
    outcomes: list[Outcome] = []
    pending: list[_Pending] = []
    for i, rec in enumerate(records):
        out, item = _resolve(i, rec, env_for)
        outcomes.append(out)
        if item is not None:
            pending.append(item)
    _budgets(pending, outcomes, env_for, assume_cap)
    return outcomes


def _resolve(
    i: int, rec: Record, env_for: Mapping[str | None, Env]
) -> tuple[Outcome, _Pending | None]:
    env = env_for.get(rec.namespace) or env_for.get(None)
    if env is None:
        return Outcome(skipped=f"namespace {rec.namespace!r} is not in the manifests"), None
    if rec.model is None:
        return Outcome(skipped="model not recorded (the request named an unknown model)"), None
    route = env.routes.get(rec.model)
    if route is None:
        return Outcome(refused="unknown model", detail=f"no route {rec.model!r}"), None
    out = Outcome(resolved=route.name, route=route.name)
    narrowed, out.undetermined = pick_rule(route, rec)
    backend = pick_backend(narrowed, rec)
    if out.undetermined is not None:  # keep what the record says
        backend = next((b for b in route.backends if b.name == rec.backend), backend)
    out.backend = backend.name if backend is not None else None
    out.backend_model = backend.model if backend is not None else None
    out.output_checks = not env.engine.plan("output", route.name, route.source).empty
    _guard(out, rec, env, route)
    if out.refused is not None:
        return out, None
    if _never_tried(rec) and out.guard is None:
        return out, None  # refused before any try, and nothing here says it would not be
    return out, _Pending(i, rec, route, backend)


def _guard(out: Outcome, rec: Record, env: Env, route: Route) -> None:
    recorded_effect, _ = guard_effect(rec.verdicts)
    if rec.messages is None:
        out.guard_unknown = "no prompt text (recorded without --audit-prompts)"
    elif recorded_effect == "redact":
        out.guard_unknown = "the recorded prompt is the redacted one"
    else:
        result = env.engine.check_input(
            {"messages": rec.messages}, route.name, route.source, rec.operation
        )
        out.guard, out.guard_keys = guard_effect(result.verdicts)
        if result.blocked is not None:
            out.refused, out.detail = "guardrail", f"policy {result.blocked.policy!r}"
        return
    if recorded_effect == "block" and rec.status == 400:
        out.refused = "guardrail"  # still refused, as far as anything here can tell


def _budgets(
    pending: Sequence[_Pending],
    outcomes: list[Outcome],
    env_for: Mapping[str | None, Env],
    assume_cap: int | None,
) -> None:
    pods: dict[tuple[str | None, str | None], _Pod] = {}
    # at one instant: settlements first, then admissions, then the settlements of requests that
    # took no time (each after its own admission)
    events = sorted(
        [(p.rec.start, 1, n) for n, p in enumerate(pending)]
        + [(p.rec.ts, 2 if p.rec.ts <= p.rec.start else 0, n) for n, p in enumerate(pending)]
    )
    for when, kind, n in events:
        p = pending[n]
        out = outcomes[p.index]
        key = (p.rec.namespace, p.rec.pod)
        pod = pods.get(key)
        if pod is None:
            env = env_for.get(p.rec.namespace) or env_for[None]
            cfg = env.config
            policy = BudgetPolicy(
                cfg.budgets,
                env.labels,
                env.routes,
                default_max_tokens=cfg.limits.default_max_tokens,
                mono=when,
            )
            pod = pods[key] = _Pod(policy, env)
        if kind == 1:
            _admit(pod, p, out, when, assume_cap)
        else:
            _settle(pod, p, when)


def _admit(pod: _Pod, p: _Pending, out: Outcome, when: float, assume_cap: int | None) -> None:
    rec = p.rec
    cap = output_cap(rec, assume_cap)
    body: dict[str, Any] = {"messages": []}
    if cap is not None and rec.operation != "embeddings":
        body[cap_field(p.route)] = cap
    prompt = rec.input_tokens
    if not rec.has_usage and rec.messages is not None:
        prompt = prompt_tokens({"messages": rec.messages}, rec.operation)
    try:
        adm = pod.policy.admit(
            f"sim#{p.index}", p.route, body, rec.operation, wall=when, mono=when, prompt=prompt
        )
    except BudgetExceeded as err:
        x = err.exceeded
        out.refused, out.at = "budget", when
        window = window_name(x) if hasattr(x, "window") else "run"
        out.detail = f"{x.rule!r}: {x.metric} in its {window}"
        return
    except RateLimited as err:
        out.refused, out.at, out.detail = "budget", when, str(err).split(" Retry")[0]
        return
    if adm is None:
        _charge(out, p)
        return
    pod.admissions[p.index] = adm
    if adm.downgraded_from is not None:
        out.downgraded_from, out.route = adm.downgraded_from, adm.route.name
        p.backend = pick_backend(adm.route, rec)
    _charge(out, p)


def _charge(out: Outcome, p: _Pending) -> None:
    b = p.backend
    out.backend = b.name if b is not None else None
    out.backend_model = b.model if b is not None else None
    if b is not None and p.rec.has_usage:
        usage = Usage(p.rec.input_tokens, p.rec.output_tokens, p.rec.cached_input_tokens)
        out.cost = round(cost_usd(b, usage), 8)


def _settle(pod: _Pod, p: _Pending, when: float) -> None:
    adm = pod.admissions.pop(p.index, None)
    if adm is None:
        return
    rec = p.rec
    usage = None
    if rec.has_usage and p.backend is not None:
        usage = Usage(rec.input_tokens, rec.output_tokens, rec.cached_input_tokens)
    pod.policy.settle(adm, usage, p.backend, wall=when, mono=when)
