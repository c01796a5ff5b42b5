"""Budget policy: which budgets apply to a request, its worst case, and what to do when one says no.

Owns:

* **Selection.** A budget applies when the pod's labels include all of its ``matchLabels`` and
  the route is one of its ``routes`` (or it names none).
* **The worst case** of a request, reserved before the call: prompt tokens (estimated at
  ``CHARS_PER_TOKEN`` characters per token, plus per-message overhead, tool definitions and a
  flat ``IMAGE_TOKENS`` per image part) plus the output cap (``max_completion_tokens`` or
  ``max_tokens``, times ``n``), priced at the route's most expensive backend. A chat request
  without a cap gets the config's ``defaultMaxTokens`` written into its body, so the reservation
  is a real bound: ``max_completion_tokens`` when every backend of the route is OpenAI's
  (reasoning models refuse ``max_tokens``), else ``max_tokens`` (the Anthropic and Gemini
  adapters read either). Embeddings have no output.
* **Combining budgets**: every applicable budget must admit. All are reserved in one synchronous
  pass; if any refuses, the others are released before anything else can run.
* **Actions**: ``Block`` → ``BudgetExceeded`` (HTTP 429, OpenAI-style body naming the budget,
  the window and its reset, ``Retry-After`` = seconds to the window's reset, or about a second
  when only in-flight reservations stand in the way). ``Downgrade`` → the request moves to
  ``onExceeded.route`` (once; the budgets of that route are then evaluated, and a Downgrade
  budget that is still over its limit records the request instead of refusing it: the budget
  bounds the expensive route, put a Block budget on the cheap one to bound it too; an unknown
  downgrade route blocks). ``AlertOnly`` → admitted and recorded, even over the limit.
  Rate limits (rpm/tpm) refuse with a plain ``RateLimited`` under Block and Downgrade (a cheaper
  route does not lower the rate) and only record under AlertOnly; every attempt counts, client
  retries included.

The estimate is the one source of settlement error: a prompt that tokenizes to more than the
estimate (dense non-Latin scripts, large images, audio) can make a request cost more than it
reserved. Settlement charges the real cost anyway, so that difference, summed over the requests
in flight at the edge of a window, is how far one sidecar can overshoot a limit.

Pure: instants (wall for windows, monotonic for rate limits) are passed in; no IO.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import errors
from ..contract import (
    Backend,
    BudgetRouteSpend,
    BudgetRule,
    BudgetWindowSpend,
    ExceededAction,
    Provider,
    Route,
    Selector,
    WindowKind,
)
from ..errors import BudgetExceeded
from ..model import Usage, cost_usd
from .ledger import ZERO, Alert, Amount, Exceeded, Ledger, Reservation, WindowStatus
from .ratelimit import RateExceeded, RateLimiter
from .runs import RunBook, RunHold, RunRef, RunRefused
from .windows import Window, calendar_window, zone

#: (route, model) rows of one budget's spend breakdown kept per window.
MAX_ROUTE_ROWS = 64

CHARS_PER_TOKEN = 4
#: Tokens per message (role and framing) and for the reply's priming, as OpenAI counts them.
MESSAGE_OVERHEAD = 4
REPLY_OVERHEAD = 3
#: Flat charge per image part: above a high-detail 1024x1024 image at OpenAI and Anthropic.
IMAGE_TOKENS = 1600
#: Extra life of a reservation beyond the route's total timeout before it expires.
TTL_GRACE = 60.0


def labels_match(selector: Selector, pod_labels: Mapping[str, str]) -> bool:
    return all(pod_labels.get(k) == v for k, v in selector.match_labels.items())


def selects(selector: Selector, pod_labels: Mapping[str, str], route: str) -> bool:
    """Whether a budget with ``selector`` covers a request of this pod to ``route``."""
    return labels_match(selector, pod_labels) and (not selector.routes or route in selector.routes)


def _chars(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def prompt_tokens(body: Mapping[str, Any], operation: str = "chat") -> int:
    """Estimated input tokens of a canonical (OpenAI-shaped) request body. A pure function."""
    chars = 0
    tokens = 0
    if operation == "embeddings":
        inp = body.get("input")
        items = inp if isinstance(inp, list) else [inp]
        for x in items:
            if isinstance(x, str):
                chars += len(x)
            elif isinstance(x, list):  # token ids
                tokens += len(x)
            elif isinstance(x, int):
                tokens += 1
        return tokens + math.ceil(chars / CHARS_PER_TOKEN)
    messages = body.get("messages")
    for m in messages if isinstance(messages, list) else ():
        tokens += MESSAGE_OVERHEAD
        if not isinstance(m, Mapping):
            continue
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, Mapping):
                    continue
                if isinstance(part.get("text"), str):
                    chars += len(part["text"])
                elif part.get("type") in ("image_url", "image", "input_image"):
                    tokens += IMAGE_TOKENS
                else:
                    chars += _chars(part)
        for extra in ("tool_calls", "function_call", "name"):
            if m.get(extra) is not None:
                chars += _chars(m[extra])
    for extra in ("tools", "functions", "response_format"):
        if body.get(extra) is not None:
            chars += _chars(body[extra])
    return tokens + REPLY_OVERHEAD + math.ceil(chars / CHARS_PER_TOKEN)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def cap_field(route: Route) -> str:
    """The body field that carries the output cap the sidecar imposes on ``route``."""
    if route.backends and all(b.provider is Provider.OPENAI for b in route.backends):
        return "max_completion_tokens"
    return "max_tokens"


@dataclass(frozen=True, slots=True)
class WorstCase:
    """What a request can cost at most, and the cap the sidecar had to add to make it so."""

    prompt_tokens: int
    output_tokens: int
    usd: float
    #: (field, value) written into the body because the client set no cap; else None.
    imposed: tuple[str, int] | None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


def worst_case_usd(backends: Sequence[Backend], input_tokens: int, output_tokens: int) -> float:
    """The price of ``input_tokens`` in and ``output_tokens`` out at the dearest backend."""
    usage = Usage(input_tokens, output_tokens)
    return max((cost_usd(b, usage) for b in backends), default=0.0)


def worst_case(
    route: Route,
    body: Mapping[str, Any],
    operation: str,
    default_max_tokens: int,
    *,
    prompt: int | None = None,
) -> WorstCase:
    """The worst case of ``body`` on ``route`` (``prompt``: a known prompt token count)."""
    p = prompt_tokens(body, operation) if prompt is None else prompt
    imposed: tuple[str, int] | None = None
    if operation == "embeddings":
        out = 0
    else:
        cap = _int(body.get("max_completion_tokens")) or _int(body.get("max_tokens"))
        if cap is None:
            cap = default_max_tokens
            imposed = (cap_field(route), cap)
        out = cap * (_int(body.get("n")) or 1)
    return WorstCase(p, out, worst_case_usd(route.backends, p, out), imposed)


def with_cap(body: Mapping[str, Any], worst: WorstCase) -> dict[str, Any]:
    """A new body carrying the imposed output cap (``body`` itself is left alone)."""
    out = dict(body)
    if worst.imposed is not None:
        out[worst.imposed[0]] = worst.imposed[1]
    return out


# --- errors -------------------------------------------------------------------------------------


def _amount(metric: str, value: float, *, unit: bool = True) -> str:
    if metric == "usd":
        return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.6f}"
    n = round(value)
    if not unit:
        return f"{n:,}"
    return f"{n:,} {metric if n != 1 else metric[:-1]}"


def _duration(seconds: float) -> str:
    s = max(0, math.ceil(seconds))
    if s < 60:
        return f"{s}s"
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m = rem // 60
    parts = [f"{d}d"] if d else []
    if h:
        parts.append(f"{h}h")
    if m and not d:
        parts.append(f"{m}m")
    return " ".join(parts) or "1m"


def window_name(x: Exceeded) -> str:
    if x.window is WindowKind.ROLLING:
        return f"rolling {_duration(x.rolling_seconds or 0)} window"
    return f"{x.window.value} window ({x.timezone})"


def lease_message(x: Exceeded) -> str:
    """The message of a refusal by the lease (``x.lease`` set). Pure."""
    retry = _duration(x.retry_after or 0)
    if x.lease == "share":
        unit = x.metric == "usd"
        return (
            f"Budget '{x.rule}' has no room left for this sidecar in its {window_name(x)}: its "
            f"lease from the control plane allows {_amount(x.metric, x.lease_cap or 0)} here "
            f"({_amount(x.metric, x.used, unit=unit)} spent or reserved), this request may need "
            f"up to {_amount(x.metric, x.requested)}, and the other replicas hold or have spent "
            f"the rest of the {_amount(x.metric, x.limit)} limit "
            f"({_amount(x.metric, x.spent_everywhere or 0, unit=unit)} settled across replicas). "
            f"The lease is being renewed; retry in {retry}."
        )
    if x.lease == "lost":
        return (
            f"Budget '{x.rule}' cannot admit this request: the control plane is unreachable and "
            f"this sidecar holds no live lease for its {window_name(x)}, so it cannot know what "
            "the other replicas spent (the budget's onControlPlaneLoss is Block). "
            f"Retry in {retry}."
        )
    return (
        f"Budget '{x.rule}' cannot admit this request yet: this sidecar holds no lease from the "
        f"control plane for its {window_name(x)} (one has been asked for); retry in {retry}."
    )


def exceeded_message(x: Exceeded, now: float, *, note: str = "") -> str:
    """The OpenAI-style message for a refusal: budget, window, limit, use, reset. Pure."""
    if x.lease is not None:
        return lease_message(x) + (f" {note}" if note else "")
    if x.retry_after is None:
        text = (
            f"This request may need up to {_amount(x.metric, x.requested)}, more than budget "
            f"'{x.rule}' allows in its whole {window_name(x)} ({_amount(x.metric, x.limit)}); "
            "lower max_tokens or shorten the prompt."
        )
    else:
        when = datetime.fromtimestamp(x.resets_at, zone(x.timezone)).isoformat(timespec="seconds")
        head = (
            f"Budget '{x.rule}' is exhausted for its {window_name(x)}: "
            f"{_amount(x.metric, x.used, unit=x.metric == 'usd')} of its "
            f"{_amount(x.metric, x.limit)} is spent or reserved ({x.percent:.1f}%), and this "
            f"request may need up to {_amount(x.metric, x.requested)}."
        )
        if x.in_flight:
            tail = f" Requests in flight hold the rest; retry in {_duration(x.retry_after)}."
        elif x.window is WindowKind.ROLLING:
            tail = f" Enough of it frees up in {_duration(x.retry_after)}."
        else:
            tail = f" The window resets at {when}, in {_duration(x.resets_at - now)}."
        text = head + tail
    return text + (f" {note}" if note else "")


def rate_message(rule: str, rx: RateExceeded) -> str:
    unit = "requests" if rx.which == "rpm" else "tokens"
    return (
        f"Rate limit of budget '{rule}' reached: {rx.limit:,} {unit} per minute "
        f"(rateLimits.{rx.which}). Retry after {rx.retry_after:.1f}s."
    )


# --- the policy ---------------------------------------------------------------------------------


class RuleState:
    """One budget rule's ledger and rate buckets (kept across config changes by name)."""

    __slots__ = ("by_route", "ledger", "rates", "routes_start", "rule")

    def __init__(self, rule: BudgetRule, mono: float) -> None:
        self.rule = rule
        self.ledger = Ledger(rule)
        self.rates = RateLimiter(rule.rate_limits, mono)
        #: Settled spend per (route, provider model) in the window starting at ``routes_start``.
        self.by_route: dict[tuple[str, str], Amount] = {}
        self.routes_start = float("-inf")

    def breakdown_window(self, wall: float) -> Window:
        """The window ``by_route`` counts in: the first calendar limit's (else the UTC day)."""
        lim = next((x for x in self.rule.limits if x.window is not WindowKind.ROLLING), None)
        if lim is None:
            return calendar_window(WindowKind.DAY, zone("UTC"), wall)
        return calendar_window(lim.window, zone(lim.timezone), wall)

    def charge_route(self, route: str, model: str, spent: Amount, wall: float) -> None:
        start = self.breakdown_window(wall).start
        if start > self.routes_start:
            self.by_route, self.routes_start = {}, start
        elif start < self.routes_start:
            return  # a late settle of a window already left behind
        if len(self.by_route) < MAX_ROUTE_ROWS or (route, model) in self.by_route:
            self.by_route[(route, model)] = self.by_route.get((route, model), ZERO) + spent


@dataclass(slots=True)
class Admission:
    """What ``admit`` granted: the route to use (changed by a downgrade), the body to send
    (changed when a cap was imposed), and the reservations to settle or release."""

    route: Route
    body: dict[str, Any]
    worst: WorstCase
    holds: tuple[tuple[RuleState, Reservation], ...]
    downgraded_from: str | None = None
    #: Limits broken by requests admitted anyway (AlertOnly, or the downgraded request).
    over: tuple[Exceeded, ...] = ()
    settled: bool = False
    #: The step's reservation in its agent run's envelopes (``runs``), when it names a run.
    run: RunHold | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-safe facts for the audit record."""
        out: dict[str, Any] = {
            "budgets": [r.rule.name for r, _ in self.holds],
            "reservedUSD": round(self.worst.usd, 8),
            "reservedTokens": self.worst.tokens,
        }
        if self.worst.imposed is not None:
            out["imposedMaxTokens"] = self.worst.imposed[1]
        if self.downgraded_from is not None:
            out["downgradedFrom"] = self.downgraded_from
        if self.over:
            out["overBudget"] = sorted({x.rule for x in self.over})
        if any(res.replay for _, res in self.holds):
            out["replay"] = True
        return out


def _binds_longer(a: Exceeded, b: Exceeded) -> bool:
    if a.retry_after is None:
        return b.retry_after is not None
    return b.retry_after is not None and a.retry_after > b.retry_after


def check_budgets(budgets: Sequence[BudgetRule]) -> list[str]:
    """Problems that make budgets unusable, each with its field path in the ``SidecarConfig``
    (unknown zone, Rolling without a duration, a limit that limits nothing, duplicate names,
    non-positive limits). A pure function; empty when all is well."""
    problems: list[str] = []
    seen: set[str] = set()
    for i, b in enumerate(budgets):
        where = f"budgets[{i}]"
        if b.name in seen:
            problems.append(f"{where}.name: duplicate budget '{b.name}'")
        seen.add(b.name)
        if b.on_exceeded is ExceededAction.DOWNGRADE and not b.downgrade_route:
            problems.append(f"{where}.downgradeRoute: required for onExceeded Downgrade")
        for field_name, rate in (("rpm", b.rate_limits.rpm), ("tpm", b.rate_limits.tpm)):
            if rate is not None and rate < 1:
                problems.append(f"{where}.rateLimits.{field_name}: must be positive")
        pr = b.per_run
        if pr is not None and (
            (pr.usd is not None and pr.usd <= 0)
            or any(v is not None and v < 1 for v in (pr.tokens, pr.requests, pr.max_steps))
        ):
            problems.append(f"{where}.perRun: usd, tokens, requests and maxSteps must be positive")
        for j, lim in enumerate(b.limits):
            lw = f"{where}.limits[{j}]"
            if lim.window is WindowKind.ROLLING:
                if not lim.rolling_seconds or lim.rolling_seconds <= 0:
                    problems.append(f"{lw}.rollingSeconds: a Rolling window needs a duration")
            else:
                try:
                    zone(lim.timezone)
                except ValueError as err:
                    problems.append(f"{lw}.timezone: {err}")
            if lim.usd is None and lim.tokens is None and lim.requests is None:
                problems.append(f"{lw}: sets none of usd, tokens, requests")
            if (lim.usd is not None and lim.usd <= 0) or any(
                v is not None and v < 1 for v in (lim.tokens, lim.requests)
            ):
                problems.append(f"{lw}: usd, tokens and requests must be positive")
    return problems


class BudgetPolicy:
    """Every budget of one sidecar: selection, admission and settlement. Pure: callers pass
    ``wall`` (UTC epoch seconds, for windows) and ``mono`` (monotonic seconds, for rate limits)."""

    def __init__(
        self,
        budgets: Sequence[BudgetRule],
        pod_labels: Mapping[str, str],
        routes: Mapping[str, Route],
        *,
        default_max_tokens: int = 4096,
        mono: float = 0.0,
        ttl_grace: float = TTL_GRACE,
    ) -> None:
        self.pod_labels = dict(pod_labels)
        self.ttl_grace = ttl_grace
        self._rules: dict[str, RuleState] = {}
        self._by_route: dict[str, tuple[RuleState, ...]] = {}
        self.routes: Mapping[str, Route] = {}
        self.default_max_tokens = default_max_tokens
        self.runs = RunBook()
        self.configure(budgets, routes, default_max_tokens, mono=mono)

    def configure(
        self,
        budgets: Sequence[BudgetRule],
        routes: Mapping[str, Route],
        default_max_tokens: int | None = None,
        *,
        mono: float = 0.0,
    ) -> None:
        """Swap in a new config. A budget keeps its counters across the swap (matched by name;
        see ``Ledger.reconfigure``) and its rate buckets while its rate limits are unchanged.
        Raises ``ValueError`` (and changes nothing) when ``check_budgets`` finds problems."""
        problems = check_budgets(budgets)
        if problems:
            raise ValueError("; ".join(problems))
        rules: dict[str, RuleState] = {}
        for b in budgets:
            if not labels_match(b.selector, self.pod_labels):
                continue  # this pod is never covered: keep no state for it
            st = self._rules.get(b.name)
            if st is None:
                st = RuleState(b, mono)
            else:
                st.ledger.reconfigure(b)
                if st.rule.rate_limits != b.rate_limits:
                    st.rates = RateLimiter(b.rate_limits, mono)
                st.rule = b
            rules[b.name] = st
        self._rules = rules
        self._by_route = {}
        self.routes = dict(routes)
        if default_max_tokens is not None:
            self.default_max_tokens = default_max_tokens

    @property
    def active(self) -> bool:
        return bool(self._rules)

    def states(self) -> tuple[RuleState, ...]:
        """The budgets covering this pod, in config order."""
        return tuple(self._rules.values())

    def applicable(self, route: str) -> tuple[RuleState, ...]:
        """The budgets covering this pod's requests to ``route``, in config order."""
        found = self._by_route.get(route)
        if found is None:
            found = self._by_route[route] = tuple(
                st
                for st in self._rules.values()
                if not st.rule.selector.routes or route in st.rule.selector.routes
            )
        return found

    def admit(
        self,
        request_id: str,
        route: Route,
        body: dict[str, Any],
        operation: str,
        *,
        wall: float,
        mono: float,
        fingerprint: Hashable = None,
        prompt: int | None = None,
        run: RunRef | None = None,
        replayable: bool = True,
    ) -> Admission | None:
        """Reserve the request in every budget that covers it, or raise ``BudgetExceeded`` /
        ``errors.RateLimited``. None when no budget covers it and it names no ``run`` (nothing
        to settle). A request of a ``run`` is also reserved in the run's envelopes (``runs``):
        the ``perRun`` limits of the budgets that cover it, checked in the same synchronous
        step, refuse under Block and Downgrade (a cheaper route does not end a loop) and only
        record under AlertOnly.

        ``fingerprint`` (e.g. body size and model) is folded into the idempotency key, so a
        client that sends different requests under one ``x-request-id`` is not undercounted.
        ``replayable`` says the id may come again (the client sent it); a key that cannot is
        forgotten once settled instead of being remembered for replays (memory).
        """
        key = request_id if fingerprint is None else f"{request_id}#{hash(fingerprint):x}"
        downgraded_from: str | None = None
        while True:
            rules = self.applicable(route.name)
            if not rules and downgraded_from is None and run is None:
                return None
            worst = worst_case(route, body, operation, self.default_max_tokens, prompt=prompt)
            if not rules:
                hold = self._run_step(run, rules, worst, mono)
                return Admission(route, with_cap(body, worst), worst, (), downgraded_from, run=hold)
            holds: list[tuple[RuleState, Reservation]] = []
            refused: list[tuple[RuleState, Exceeded]] = []
            ttl = route.timeouts.total + self.ttl_grace
            for st in rules:
                action = st.rule.on_exceeded
                enforce = action is ExceededAction.BLOCK or (
                    action is ExceededAction.DOWNGRADE and downgraded_from is None
                )
                got = st.ledger.reserve(
                    key,
                    worst.usd,
                    worst.tokens,
                    wall,
                    enforce=enforce,
                    ttl=ttl,
                    replayable=replayable,
                )
                if isinstance(got, Exceeded):
                    refused.append((st, got))
                else:
                    holds.append((st, got))
            if refused:
                for st, res in holds:
                    st.ledger.release(res)
                down = next(
                    (s for s, _ in refused if s.rule.on_exceeded is ExceededAction.DOWNGRADE), None
                )
                note = ""
                if down is not None:
                    target = self.routes.get(down.rule.downgrade_route or "")
                    if target is not None and target.name != route.name:
                        downgraded_from, route = route.name, target
                        continue
                    note = (
                        f"Its downgrade route '{down.rule.downgrade_route}' is not available, so "
                        "the request is refused."
                    )
                worst_x = refused[0][1]
                for _, x in refused[1:]:
                    if _binds_longer(x, worst_x):
                        worst_x = x
                raise BudgetExceeded(worst_x, exceeded_message(worst_x, wall, note=note))
            blocking = [
                (st, rx)
                for st in rules
                if (rx := st.rates.check(worst.tokens, mono)) is not None
                and st.rule.on_exceeded is not ExceededAction.ALERT_ONLY
            ]
            if blocking:
                for st, res in holds:
                    st.ledger.release(res)
                st, rx = max(blocking, key=lambda p: p[1].retry_after)
                raise errors.RateLimited(rate_message(st.rule.name, rx), retry_after=rx.retry_after)
            try:
                hold = self._run_step(run, rules, worst, mono)
            except BudgetExceeded:
                for st, res in holds:
                    st.ledger.release(res)
                raise
            for st in rules:
                st.rates.take(worst.tokens, mono)
            over = tuple(res.over for _, res in holds if res.over is not None)
            new_body = with_cap(body, worst) if worst.imposed is not None else body
            return Admission(route, new_body, worst, tuple(holds), downgraded_from, over, run=hold)

    def _run_step(
        self, run: RunRef | None, rules: Sequence[RuleState], worst: WorstCase, mono: float
    ) -> RunHold | None:
        if run is None:
            return None
        limits = [
            (st.rule.name, st.rule.per_run, st.rule.on_exceeded is not ExceededAction.ALERT_ONLY)
            for st in rules
            if st.rule.per_run is not None
        ]
        try:
            return self.runs.admit(run, limits, worst.usd, worst.tokens, mono)
        except RunRefused as refused:
            raise BudgetExceeded(refused.exceeded, str(refused)) from None

    def settle(
        self,
        admission: Admission,
        usage: Usage | None,
        backend: Backend | None,
        *,
        wall: float,
        mono: float,
        attempted: bool = True,
    ) -> tuple[Alert, ...]:
        """Charge what the request used (``usage`` at ``backend``'s prices) in place of its
        reservations, or release them when it used nothing. Once per admission; returns the
        alert thresholds crossed. ``attempted``: a backend was called (the request still
        counts against rpm even though it produced no usage)."""
        if admission.settled:
            return ()
        admission.settled = True
        alerts: list[Alert] = []
        reserved = admission.worst.tokens
        if usage is None or backend is None:
            for st, res in admission.holds:
                st.ledger.release(res)
                st.rates.give_back(0 if attempted else 1, reserved, mono)
            if admission.run is not None:
                self.runs.release(admission.run)
            return ()
        cost = cost_usd(backend, usage)
        tokens = usage.input_tokens + usage.output_tokens
        if admission.run is not None:
            self.runs.settle(admission.run, cost, tokens)
        for st, res in admission.holds:
            alerts.extend(st.ledger.settle(res, cost, tokens, wall))
            st.rates.correct(reserved, tokens, mono)
            st.charge_route(admission.route.name, backend.model, Amount.of(cost, tokens, 1), wall)
        return tuple(alerts)

    def status(self, wall: float) -> tuple[WindowStatus, ...]:
        """Every limit's current window, for ``Budget.status`` and metrics."""
        return tuple(s for st in self._rules.values() for s in st.ledger.status(wall))

    def spend(
        self, wall: float
    ) -> tuple[tuple[BudgetWindowSpend, ...], tuple[BudgetRouteSpend, ...]]:
        """Committed spend per budget window and per (route, model), as usage reports carry it."""
        windows = tuple(
            BudgetWindowSpend(
                budget=w.rule,
                window=w.window,
                start=w.start,
                resets_at=w.resets_at,
                pusd=w.spent.pusd,
                tokens=w.spent.tokens,
                requests=w.spent.requests,
            )
            for st in self._rules.values()
            for w in st.ledger.spend(wall)
        )
        routes = tuple(
            BudgetRouteSpend(
                budget=st.rule.name,
                route=route,
                model=model,
                start=st.routes_start,
                pusd=a.pusd,
                tokens=a.tokens,
                requests=a.requests,
            )
            for st in self._rules.values()
            if st.routes_start == st.breakdown_window(wall).start
            for (route, model), a in sorted(st.by_route.items())
        )
        return windows, routes
