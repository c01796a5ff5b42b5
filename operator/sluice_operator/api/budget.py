"""The Budget kind: money, token and request limits over calendar or rolling windows.

Owns the spec and status models. No IO.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from .base import NAME_REGEX, CommonStatus, Rule, Selector, SluiceModel, duration, parse_duration


class Window(StrEnum):
    DAY = "Day"
    WEEK = "Week"
    MONTH = "Month"
    ROLLING = "Rolling"


class Limit(SluiceModel):
    """One limit over one window. Set at least one of usd, tokens, requests."""

    window: Window = Field(description="Day, Week, Month (calendar, in timezone) or Rolling.")
    duration: str | None = duration("Length of a Rolling window, e.g. 1h.", default=None)
    timezone: str = Field(
        default="UTC",
        max_length=64,
        pattern=r"^[A-Za-z0-9_+\-/]+$",
        description="IANA time zone where calendar windows start, e.g. Europe/Berlin.",
    )
    usd: float | None = Field(default=None, gt=0, description="Spend limit in US dollars.")
    tokens: int | None = Field(default=None, ge=1, description="Token limit (input + output).")
    requests: int | None = Field(default=None, ge=1, description="Request limit.")

    rules = (
        Rule(
            cel="has(self.usd) || has(self.tokens) || has(self.requests)",
            message="set at least one of usd, tokens or requests",
            check=lambda x: x.usd is not None or x.tokens is not None or x.requests is not None,
        ),
        Rule(
            cel="self.window == 'Rolling' ? has(self.duration) : !has(self.duration)",
            message="duration is required for a Rolling window and only allowed there",
            check=lambda x: (x.window == Window.ROLLING) == (x.duration is not None),
            field="duration",
        ),
        Rule(
            cel="!has(self.duration) || duration(self.duration) > duration('0s')",
            message="duration must be longer than zero",
            check=lambda x: x.duration is None or parse_duration(x.duration) > 0,
            field="duration",
        ),
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        # The CRD can only check the spelling; the IANA database (the same one the sidecar
        # uses: the `tzdata` package) decides whether the zone exists.
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as UTC, Europe/Berlin or "
                "America/New_York"
            ) from None
        return value


class RateLimits(SluiceModel):
    """Token-bucket rate limits."""

    rpm: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens per minute.")


class PerRun(SluiceModel):
    """Limits on one agent run and all its descendants. A request names its run with the header
    x-sluice-run (or metadata.run) and the run that started it with x-sluice-parent-run (or
    metadata.parentRun); a sub-run's spend counts in every ancestor's envelope."""

    usd: float | None = Field(
        default=None, gt=0, description="Spend limit of one run and its sub-runs, in US dollars."
    )
    tokens: int | None = Field(
        default=None, ge=1, description="Token limit of one run and its sub-runs."
    )
    requests: int | None = Field(
        default=None, ge=1, description="Request limit of one run and its sub-runs."
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        description="Requests one run may make itself (the loop breaker); the next gets a 429 "
        "naming the run.",
    )

    rules = (
        Rule(
            cel="has(self.usd) || has(self.tokens) || has(self.requests) || has(self.maxSteps)",
            message="set at least one of usd, tokens, requests or maxSteps",
            check=lambda x: any(v is not None for v in (x.usd, x.tokens, x.requests, x.max_steps)),
        ),
    )


class Alerts(SluiceModel):
    """Percentages of a limit at which Sluice raises an Event, a condition and a metric."""

    thresholds: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [50, 80, 100],
        max_length=10,
        description="Ascending percentages in 1..100.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    rules = (
        Rule(
            cel="self.thresholds.isSorted()",
            message="thresholds must be in ascending order",
            check=lambda a: a.thresholds == sorted(a.thresholds),
            field="thresholds",
        ),
        Rule(
            cel="self.thresholds.all(a, self.thresholds.exists_one(b, b == a))",
            message="thresholds must be unique",
            check=lambda a: len(set(a.thresholds)) == len(a.thresholds),
            field="thresholds",
        ),
    )


class Action(StrEnum):
    BLOCK = "Block"
    DOWNGRADE = "Downgrade"
    ALERT_ONLY = "AlertOnly"


class OnExceeded(SluiceModel):
    """What happens when a limit is reached."""

    action: Action = Field(
        default=Action.BLOCK,
        description="Block (429 with Retry-After to the window's reset), Downgrade (use route) "
        "or AlertOnly.",
    )
    route: str | None = Field(
        default=None,
        max_length=253,
        pattern=NAME_REGEX,
        description="ModelRoute to downgrade to; required for Downgrade.",
    )

    rules = (
        Rule(
            cel="self.action != 'Downgrade' || has(self.route)",
            message="action Downgrade needs route",
            check=lambda o: o.action != Action.DOWNGRADE or o.route is not None,
            field="route",
        ),
    )


class ControlPlaneLoss(StrEnum):
    BLOCK = "Block"
    ALLOW_LOCAL = "AllowLocal"


class BudgetSpec(SluiceModel):
    """Limits on what selected workloads may spend."""

    selector: Selector | None = Field(
        default=None, description="Workloads and routes the budget covers; empty = namespace."
    )
    limits: list[Limit] | None = Field(
        default=None, max_length=8, description="Limits, all enforced at once."
    )
    rate_limits: RateLimits | None = Field(default=None, description="Rate limits.")
    per_run: PerRun | None = Field(
        default=None, description="Limits per agent run (x-sluice-run), sub-runs included."
    )
    alerts: Alerts | None = Field(default=None, description="Alert thresholds.")
    on_exceeded: OnExceeded | None = Field(default=None, description="Default: Block.")
    on_control_plane_loss: ControlPlaneLoss = Field(
        default=ControlPlaneLoss.BLOCK,
        description="When a sidecar has no live lease (its share of the limits, granted by the "
        "operator) and cannot reach the operator: Block refuses the budget's requests (429) "
        "once the lease it holds is spent or expired; AllowLocal enforces the whole limits in "
        "each sidecar alone until the operator answers again (N replicas may then spend up to N "
        "limits).",
    )

    rules = (
        Rule(
            cel="(has(self.limits) && size(self.limits) > 0) || has(self.rateLimits)"
            " || has(self.perRun)",
            message="a Budget needs at least one entry in limits (or rateLimits, or perRun)",
            check=lambda s: bool(s.limits) or s.rate_limits is not None or s.per_run is not None,
            field="limits",
        ),
    )


class WindowStatus(SluiceModel):
    window: str = Field(
        description="The limit's window: Day/<zone>, Week/<zone>, Month/<zone> or "
        "Rolling/<seconds>."
    )
    start: str | None = Field(default=None, description="Window start (the operator's clock).")
    resets_at: str | None = Field(default=None, description="Next reset (calendar windows).")
    spent_usd: float = Field(default=0.0, alias="spentUSD", description="Spend in the window.")
    tokens: int = Field(default=0, description="Tokens in the window.")
    requests: int = Field(default=0, description="Requests in the window.")
    percent: float = Field(default=0.0, description="Highest share of a limit used, in percent.")
    limit: str | None = Field(default=None, description="The limit, e.g. 25.00 USD.")
    alerted: list[int] = Field(
        default_factory=list, description="Alert thresholds already reported in this window."
    )


class RouteSpend(SluiceModel):
    route: str = Field(description="Route name.")
    model: str | None = Field(default=None, description="Provider model.")
    usd: float = Field(default=0.0, description="Spend.")
    tokens: int = Field(default=0, description="Tokens.")
    requests: int = Field(default=0, description="Requests.")
    since: str | None = Field(
        default=None, description="Start of the window counted (the first calendar limit's)."
    )


class _LedgerAmount(SluiceModel):
    seq: int = Field(description="Sequence number of the report that carried this value.")
    pusd: int = Field(description="Settled spend in picodollars.")
    tokens: int = Field(description="Tokens.")
    requests: int = Field(description="Requests.")


class LedgerWindow(_LedgerAmount):
    window: str = Field(description="Window name.")
    start: float = Field(description="Window start, Unix time.")
    resets_at: float = Field(description="Window end, Unix time.")


class LedgerRoute(_LedgerAmount):
    route: str = Field(description="Route name.")
    model: str = Field(description="Provider model.")
    start: float = Field(description="Window start, Unix time.")


class LedgerEntry(SluiceModel):
    """What one sidecar process reported last: the durable form of the spend (read back when the
    operator starts)."""

    pod: str = Field(description="Pod name (empty for folded entries).")
    instance: str = Field(description="Sidecar process id.")
    last_report: str | None = Field(default=None, description="Time of its latest report.")
    windows: list[LedgerWindow] = Field(default_factory=list, description="Per-window spend.")
    routes: list[LedgerRoute] = Field(default_factory=list, description="Per-route spend.")


class BudgetStatus(CommonStatus):
    """Observed spend, summed over the sidecars' reports."""

    state: str | None = Field(default=None, description="Ok, Warning or Exhausted.")
    spent: str | None = Field(default=None, description="Spend in the most used window.")
    limit: str | None = Field(default=None, description="The limit of the most used window.")
    resets_at: str | None = Field(default=None, description="When the most used window resets.")
    windows: list[WindowStatus] = Field(default_factory=list, description="Per-window usage.")
    spend_by_route: list[RouteSpend] = Field(default_factory=list, description="Spend breakdown.")
    ledger: list[LedgerEntry] = Field(
        default_factory=list,
        description="Per-sidecar settled spend (internal; the source of the totals).",
    )
