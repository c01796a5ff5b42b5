"""Compile the validated resources of one namespace into the sidecar's ``SidecarConfig``.

A purely computational function with no side-effects; the caller performs the IO. Schema-level
validity is already guaranteed (``manifests`` / the CRD); what is checked here is what needs more
than one object: references between resources (a PromptTemplate naming an unknown ModelRoute, a
Budget selecting nothing, two routes claiming the same model name: the oldest keeps it). Each such
problem names the resource, the field path, a machine reason for conditions, and what to do. A
resource with a problem still compiles where that is safe (the broken reference is simply not
followed), so one typo does not take a namespace's traffic down; an object whose spec is invalid
keeps its last valid compiled form (``Held``), so a bad edit never lifts its rules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

from sluice_sidecar import contract as c

from ..api.base import parse_duration
from ..api.budget import BudgetSpec
from ..api.guardrailpolicy import GuardrailPolicySpec, Stage
from ..api.modelroute import Backend, ModelRouteSpec
from ..api.prompttemplate import PromptTemplateSpec, PromptVersion
from ..manifests import Resource
from . import prices
from .prices import default_price


@dataclass(frozen=True)
class Problem:
    """Something that keeps a resource from being fully in effect."""

    kind: str
    name: str
    path: str
    reason: str  # CamelCase, becomes the condition reason
    message: str

    def __str__(self) -> str:
        return f'{self.kind} "{self.name}": {self.path}: {self.message}'


@dataclass(frozen=True)
class Held:
    """An object whose current spec is invalid: its last valid compiled form stays in force."""

    kind: str
    name: str
    created: str = ""  # metadata.creationTimestamp, for the oldest-route-wins rule


@dataclass(frozen=True)
class CompileResult:
    config: c.SidecarConfig
    hash: str
    problems: tuple[Problem, ...] = ()
    # (kind, name) of every resource compiled, for status writers
    compiled: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # (kind, name) of held objects whose last valid form is still in the config
    kept: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def problems_for(self, kind: str, name: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind and p.name == name]

    def keeps(self, kind: str, name: str) -> bool:
        """Whether an invalid object's last valid generation is still in force."""
        return (kind, name) in self.kept

    def in_effect(self, kind: str, name: str) -> bool:
        """Whether the object has rules in the config (a route that lost its model name, or an
        invalid object with no valid past, has none)."""
        return (kind, name) in self._sources

    @cached_property
    def _sources(self) -> set[tuple[str, str]]:
        return _sources(self.config)


def _route(res: Resource, spec: ModelRouteSpec) -> c.Route:
    retry = spec.retry
    fallback = spec.fallback
    timeouts = spec.timeouts
    breaker = spec.circuit_breaker
    defaults_retry = c.Retry()
    defaults_fallback = c.Fallback()
    return c.Route(
        name=spec.model or res.name,
        source=res.name,
        strategy=c.Strategy(spec.strategy.value),
        backends=tuple(_backend(b) for b in spec.backends),
        retry=c.Retry(
            attempts=retry.attempts,
            backoff_base=parse_duration(retry.backoff),
            retry_on=tuple(c.FailureClass(x.value) for x in retry.retry_on)
            if retry.retry_on is not None
            else defaults_retry.retry_on,
        )
        if retry
        else defaults_retry,
        fallback=c.Fallback(
            on=tuple(c.FailureClass(x.value) for x in fallback.on)
            if fallback.on is not None
            else defaults_fallback.on,
            respect_retry_after=fallback.respect_retry_after,
            max_retry_after=parse_duration(fallback.max_retry_after),
        )
        if fallback
        else defaults_fallback,
        timeouts=c.Timeouts(
            connect=parse_duration(timeouts.connect),
            first_token=parse_duration(timeouts.first_token),
            idle=parse_duration(timeouts.idle),
            total=parse_duration(timeouts.total),
        )
        if timeouts
        else c.Timeouts(),
        circuit_breaker=c.CircuitBreaker(
            consecutive_failures=breaker.consecutive_failures,
            base_ejection=parse_duration(breaker.base_ejection),
            max_ejection=parse_duration(breaker.max_ejection),
        )
        if breaker
        else c.CircuitBreaker(),
        mid_stream_failure=c.MidStreamFailure(spec.streaming.mid_stream_failure)
        if spec.streaming
        else c.MidStreamFailure.ERROR,
        workload_selector=dict(spec.workload_selector.match_labels)
        if spec.workload_selector
        else {},
        rules=tuple(
            c.RoutingRule(
                name=r.name,
                match=c.RuleMatch(
                    min_prompt_tokens=r.match.min_prompt_tokens,
                    max_prompt_tokens=r.match.max_prompt_tokens,
                    tools=r.match.tools,
                    metadata=dict(r.match.metadata),
                    headers={k.lower(): v for k, v in r.match.headers.items()},
                ),
                backends=tuple(r.backends),
            )
            for r in spec.routing_rules or ()
        ),
    )


def _priced_by_table(b: c.Backend) -> bool:
    """Whether ``b``'s prices may come from the built-in table (any backend but a mock)."""
    return b.provider is not c.Provider.MOCK


def _backend(b: Backend) -> c.Backend:
    price_in, price_out, price_cached = default_price(b.model)
    pricing = b.pricing
    secret = b.credentials.secret_ref if b.credentials else None
    mock = b.mock
    return c.Backend(
        name=b.name,
        provider=c.Provider(b.provider.value),
        model=b.model,
        base_url=b.base_url,
        credentials=c.CredentialRef(
            secret_name=secret.name, key=secret.key, file=f"{secret.name}/{secret.key}"
        )
        if secret
        else None,
        weight=b.weight or 1,
        priority=b.priority,
        pricing=c.Pricing(
            input_per_mtok=price_in
            if not pricing or pricing.input_per_mtok is None
            else pricing.input_per_mtok,
            output_per_mtok=price_out
            if not pricing or pricing.output_per_mtok is None
            else pricing.output_per_mtok,
            cached_input_per_mtok=price_cached
            if not pricing or pricing.cached_input_per_mtok is None
            else pricing.cached_input_per_mtok,
        ),
        limits=c.RateLimits(rpm=b.limits.rpm, tpm=b.limits.tpm) if b.limits else c.RateLimits(),
        context_window=b.context_window,
        mock=c.MockBehaviour(
            latency_ms=parse_duration(mock.latency) * 1000 if mock.latency else 0.0,
            failure_rate=mock.failure_rate or 0.0,
            completion_tokens=mock.completion_tokens or 16,
            reply=mock.reply,
        )
        if mock
        else (c.MockBehaviour() if b.provider.value == "mock" else None),
    )


def version_hash(version: PromptVersion) -> str:
    """Content hash of one prompt version (stable across key order)."""
    body = json.dumps(version.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def _prompt(res: Resource, spec: PromptTemplateSpec) -> c.Prompt:
    return c.Prompt(
        name=res.name,
        versions=tuple(
            c.PromptVersion(
                version=v.version,
                hash=version_hash(v),
                messages=tuple(c.PromptMessage(role=m.role, content=m.content) for m in v.messages),
                variables={
                    k: c.PromptVariable(
                        required=x.required, default=x.default, max_length=x.max_length
                    )
                    for k, x in (v.variables or {}).items()
                },
                params=dict(v.params or {}),
                route=v.route,
            )
            for v in sorted(spec.versions, key=lambda v: v.version)
        ),
        labels=dict(spec.labels or {}),
        split=dict(spec.split or {}),
    )


def _selector(sel: object) -> c.Selector:
    if sel is None:
        return c.Selector()
    match_labels = getattr(sel, "match_labels", {})
    routes = getattr(sel, "routes", [])
    return c.Selector(match_labels=dict(match_labels), routes=tuple(routes))


def _budget(res: Resource, spec: BudgetSpec) -> c.BudgetRule:
    exceeded = spec.on_exceeded
    return c.BudgetRule(
        name=res.name,
        selector=_selector(spec.selector),
        limits=tuple(
            c.BudgetLimit(
                window=c.WindowKind(lim.window.value),
                rolling_seconds=parse_duration(lim.duration) if lim.duration else None,
                timezone=lim.timezone,
                usd=lim.usd,
                tokens=lim.tokens,
                requests=lim.requests,
            )
            for lim in spec.limits or ()
        ),
        rate_limits=c.RateLimits(rpm=spec.rate_limits.rpm, tpm=spec.rate_limits.tpm)
        if spec.rate_limits
        else c.RateLimits(),
        alert_thresholds=tuple(spec.alerts.thresholds) if spec.alerts else (50, 80, 100),
        on_exceeded=c.ExceededAction(exceeded.action.value) if exceeded else c.ExceededAction.BLOCK,
        downgrade_route=exceeded.route if exceeded else None,
        on_control_plane_loss=c.ControlPlaneLoss(spec.on_control_plane_loss.value),
        per_run=c.RunLimits(
            usd=spec.per_run.usd,
            tokens=spec.per_run.tokens,
            requests=spec.per_run.requests,
            max_steps=spec.per_run.max_steps,
        )
        if spec.per_run
        else None,
    )


def _stage(stage: Stage | None) -> c.GuardStage:
    if stage is None:
        return c.GuardStage()
    return c.GuardStage(
        pii=c.PiiRule(
            entities=tuple(e.value for e in stage.pii.entities),
            action=c.GuardAction(stage.pii.action.value),
            restore=stage.pii.restore,
        )
        if stage.pii
        else None,
        prompt_injection=c.InjectionRule(
            action=c.GuardAction(stage.prompt_injection.action.value),
            threshold=stage.prompt_injection.threshold,
        )
        if stage.prompt_injection
        else None,
        deny=tuple(
            c.DenyRule(regex=d.regex, action=c.GuardAction(d.action.value))
            for d in stage.deny or ()
        ),
        max_chars=stage.max_chars,
        external=c.ExternalCheck(
            url=stage.external.url,
            timeout=parse_duration(stage.external.timeout),
            failure_mode=stage.external.failure_mode,
        )
        if stage.external
        else None,
    )


def _guardrail(res: Resource, spec: GuardrailPolicySpec) -> c.Guardrail:
    return c.Guardrail(
        name=res.name,
        selector=_selector(spec.selector),
        mode=spec.mode,
        input=_stage(spec.input),
        output=_stage(spec.output),
        streaming_mode=spec.streaming.mode if spec.streaming else "Holdback",
        holdback_chars=spec.streaming.holdback_chars if spec.streaming else 64,
    )


def _route_refs(
    res: Resource, routes: set[str], refs: Iterable[tuple[str, str | None]]
) -> list[Problem]:
    """A problem for each (path, route name) whose route does not exist."""
    return [
        Problem(
            res.kind.kind,
            res.name,
            path,
            "RouteNotFound",
            f'ModelRoute "{name}" not found in namespace "{res.namespace}"; create it or fix the '
            f"name (existing: {', '.join(sorted(routes)) or 'none'})",
        )
        for path, name in refs
        if name is not None and name not in routes
    ]


def _selection(
    res: Resource, routes: set[str], selected: Sequence[str], what: str
) -> list[Problem]:
    """``SelectsNothing`` when every route a selector names is missing (the object then does
    nothing at all), else ``RouteNotFound`` for each missing one."""
    refs = [(f"spec.selector.routes[{i}]", name) for i, name in enumerate(selected)]
    if selected and all(name not in routes for name in selected):
        return [
            Problem(
                res.kind.kind,
                res.name,
                "spec.selector.routes",
                "SelectsNothing",
                f"none of the selected routes ({', '.join(selected)}) exist in namespace "
                f'"{res.namespace}", so this {what}; fix spec.selector.routes (existing: '
                f"{', '.join(sorted(routes)) or 'none'}) or remove it to cover every route",
            )
        ]
    return _route_refs(res, routes, refs)


def _claim_models(
    candidates: list[tuple[str, str, c.Route, bool]], namespace: str
) -> tuple[list[c.Route], list[Problem]]:
    """Give each virtual model name to the oldest route claiming it (creationTimestamp, then
    name: Gateway API's rule), so a newly applied route never takes a live name from another.
    ``candidates`` are (created, ModelRoute name, compiled route, held)."""
    claimed: dict[str, tuple[str, str]] = {}  # model name -> (ModelRoute, created)
    routes: list[c.Route] = []
    problems: list[Problem] = []
    for created, name, route, held in sorted(candidates, key=lambda x: (x[0], x[1])):
        owner = claimed.get(route.name)
        if owner is None:
            claimed[route.name] = (name, created)
            routes.append(route)
            continue
        if held:
            continue  # its status already says it is invalid; its old form simply drops out
        since = f" (created {owner[1]})" if owner[1] else ""
        problems.append(
            Problem(
                "ModelRoute",
                name,
                "spec.model",
                "ModelConflict",
                f'model name "{route.name}" is already served by ModelRoute "{owner[0]}"'
                f"{since} in namespace {namespace!r}; the oldest route keeps a model name. Give "
                "this route another spec.model, or delete the other route",
            )
        )
    return sorted(routes, key=lambda r: r.source), problems


def compile_namespace(
    namespace: str,
    resources: Sequence[Resource],
    *,
    held: Sequence[Held] = (),
    previous: c.SidecarConfig | None = None,
) -> CompileResult:
    """Compile the resources of ``namespace`` (others are ignored) into a sidecar config.

    ``held`` names objects whose current spec is invalid: their compiled form in ``previous``
    (the config in force, i.e. their last valid generation) is carried over unchanged, so a bad
    edit never lifts a guardrail or a budget. A held object absent from ``previous`` (it never
    had a valid generation) is left out. Only deleting an object removes its rules.
    """
    mine = sorted(
        (r for r in resources if r.namespace == namespace), key=lambda r: (r.kind.kind, r.name)
    )
    by_kind: dict[str, list[Resource]] = {}
    for res in mine:
        by_kind.setdefault(res.kind.kind, []).append(res)
    held_by_kind: dict[str, list[Held]] = {}
    for h in held:
        held_by_kind.setdefault(h.kind, []).append(h)
    old = previous if previous is not None and previous.namespace == namespace else None

    problems: list[Problem] = []
    candidates: list[tuple[str, str, c.Route, bool]] = []
    route_names: set[str] = set()
    for res in by_kind.get("ModelRoute", []):
        assert isinstance(res.spec, ModelRouteSpec)
        route_names.add(res.name)
        candidates.append((res.created, res.name, _route(res, res.spec), False))
    for h in held_by_kind.get("ModelRoute", []):
        for route in old.routes if old else ():
            if route.source == h.name:
                route_names.add(h.name)
                candidates.append((h.created, h.name, route, True))
    routes, conflicts = _claim_models(candidates, namespace)
    problems.extend(conflicts)

    prompts = {
        p.name: p for p in _carried(held_by_kind, "PromptTemplate", old.prompts if old else ())
    }
    for res in by_kind.get("PromptTemplate", []):
        assert isinstance(res.spec, PromptTemplateSpec)
        refs: list[tuple[str, str | None]] = [
            (f"spec.versions[{i}].route", v.route) for i, v in enumerate(res.spec.versions)
        ]
        if res.spec.evaluation and res.spec.evaluation.judge:
            refs.append(("spec.evaluation.judge.route", res.spec.evaluation.judge.route))
        problems.extend(_route_refs(res, route_names, refs))
        prompts[res.name] = _prompt(res, res.spec)

    budgets = {b.name: b for b in _carried(held_by_kind, "Budget", old.budgets if old else ())}
    for res in by_kind.get("Budget", []):
        assert isinstance(res.spec, BudgetSpec)
        selected = res.spec.selector.routes if res.spec.selector else []
        problems.extend(_selection(res, route_names, selected, "budget limits nothing"))
        if res.spec.on_exceeded:
            problems.extend(
                _route_refs(
                    res, route_names, [("spec.onExceeded.route", res.spec.on_exceeded.route)]
                )
            )
        budgets[res.name] = _budget(res, res.spec)

    guardrails = {
        g.name: g for g in _carried(held_by_kind, "GuardrailPolicy", old.guardrails if old else ())
    }
    for res in by_kind.get("GuardrailPolicy", []):
        assert isinstance(res.spec, GuardrailPolicySpec)
        selected = res.spec.selector.routes if res.spec.selector else []
        problems.extend(_selection(res, route_names, selected, "policy filters nothing"))
        guardrails[res.name] = _guardrail(res, res.spec)

    config = c.SidecarConfig(
        namespace=namespace,
        routes=tuple(routes),
        prompts=tuple(prompts[k] for k in sorted(prompts)),
        budgets=tuple(budgets[k] for k in sorted(budgets)),
        guardrails=tuple(guardrails[k] for k in sorted(guardrails)),
        prices_as_of=prices.AS_OF
        if any(_priced_by_table(b) for r in routes for b in r.backends)
        else None,
    )
    valid = {(r.kind.kind, r.name) for r in mine}
    kept = {(h.kind, h.name) for h in held if (h.kind, h.name) not in valid} & _sources(config)
    return CompileResult(
        config=config,
        hash=config.content_hash(),
        problems=tuple(problems),
        compiled=tuple((r.kind.kind, r.name) for r in mine),
        kept=tuple(sorted(kept)),
    )


_Named = TypeVar("_Named", c.Prompt, c.BudgetRule, c.Guardrail)


def _carried(held: Mapping[str, list[Held]], kind: str, previous: Sequence[_Named]) -> list[_Named]:
    """The previous compiled entries of the held objects of ``kind``."""
    names = {h.name for h in held.get(kind, [])}
    return [x for x in previous if x.name in names]


def _sources(config: c.SidecarConfig) -> set[tuple[str, str]]:
    """(kind, name) of every object that has rules in ``config``."""
    return (
        {("ModelRoute", r.source) for r in config.routes}
        | {("PromptTemplate", p.name) for p in config.prompts}
        | {("Budget", b.name) for b in config.budgets}
        | {("GuardrailPolicy", g.name) for g in config.guardrails}
    )
