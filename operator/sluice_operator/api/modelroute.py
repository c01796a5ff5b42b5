"""The ModelRoute kind: a virtual model name that apps send, resolved to provider backends.

Owns the spec and status models; they are the CRD schema (see ``crdgen``) and ``kubectl explain``
text. Purely declarative: no IO.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from sluice_sidecar.contract import FailureClass, Provider, Strategy

from .base import (
    DNS_LABEL,
    CommonStatus,
    Rule,
    Selector,
    SluiceModel,
    duration,
    parse_duration,
    text,
)

# The enums are the sidecar contract's own: a value the API accepts is a value the sidecar knows.
KEYLESS_PROVIDERS = (Provider.MOCK, Provider.OPENAI_COMPATIBLE)


class SecretKeyRef(SluiceModel):
    """A key of a Secret in the route's namespace."""

    name: str = Field(max_length=253, pattern=DNS_LABEL, description="Name of the Secret.")
    key: str = Field(
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key inside the Secret whose value is the provider API key.",
    )


class Credentials(SluiceModel):
    """Where the provider API key comes from. Keys are never written inline."""

    secret_ref: SecretKeyRef = Field(
        description="The Secret key holding the API key; mounted read-only into the sidecar."
    )


class Pricing(SluiceModel):
    """USD per million tokens. Omitted prices come from Sluice's built-in price table."""

    input_per_mtok: float | None = Field(
        default=None, ge=0, alias="inputPerMTok", description="USD per million input tokens."
    )
    output_per_mtok: float | None = Field(
        default=None, ge=0, alias="outputPerMTok", description="USD per million output tokens."
    )
    cached_input_per_mtok: float | None = Field(
        default=None,
        ge=0,
        alias="cachedInputPerMTok",
        description="USD per million cached input tokens.",
    )


class BackendLimits(SluiceModel):
    """Provider-side quotas of this backend; the sidecar stays under them."""

    rpm: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens per minute.")


class MockSettings(SluiceModel):
    """Behaviour of the built-in `mock` provider, for demos and tests."""

    latency: str | None = duration("Delay before the answer, e.g. 50ms.", default=None)
    failure_rate: float | None = Field(
        default=None, ge=0, le=1, description="Fraction of requests answered with HTTP 500."
    )
    completion_tokens: int | None = Field(
        default=None, ge=1, le=100000, description="Tokens in each answer."
    )
    reply: str | None = text(
        2048, "Fixed answer text; by default the mock echoes the prompt.", default=None
    )


class Backend(SluiceModel):
    """One provider model that can serve the route."""

    name: str = Field(
        max_length=63, pattern=DNS_LABEL, description="Unique name of the backend within the route."
    )
    provider: Provider = Field(
        description="openai, anthropic, gemini, mistral, openai-compatible or mock."
    )
    model: str = text(253, "The provider's model name, e.g. gpt-4o-mini or claude-sonnet-4-5.")
    base_url: str | None = text(
        2048,
        "API base URL. Defaults per provider; required for openai-compatible.",
        default=None,
        alias="baseURL",
        pattern=r"^https?://",
    )
    credentials: Credentials | None = Field(
        default=None,
        description="The API key's Secret. Required except for mock and openai-compatible.",
    )
    weight: int | None = Field(
        default=None, ge=1, le=1000, description="Relative share of traffic; required for Weighted."
    )
    priority: int = Field(
        default=0, ge=0, le=1000, description="Failover order: lower is tried first."
    )
    pricing: Pricing | None = Field(default=None, description="Price override for cost metering.")
    limits: BackendLimits | None = Field(default=None, description="Provider quotas to respect.")
    context_window: int | None = Field(
        default=None, ge=1, description="Max prompt+completion tokens the model accepts."
    )
    mock: MockSettings | None = Field(default=None, description="Settings of the mock provider.")

    rules = (
        Rule(
            cel="self.provider != 'openai-compatible' || has(self.baseURL)",
            message="provider openai-compatible needs baseURL",
            check=lambda b: b.provider != Provider.OPENAI_COMPATIBLE or b.base_url is not None,
            field="baseURL",
        ),
        Rule(
            cel="self.provider in ['mock', 'openai-compatible'] || has(self.credentials)",
            message="this provider needs credentials.secretRef naming the Secret with its API key",
            check=lambda b: b.provider in KEYLESS_PROVIDERS or b.credentials is not None,
            field="credentials",
        ),
    )


class Retry(SluiceModel):
    """Retries of a failed attempt (on the same or the next backend)."""

    attempts: int = Field(default=2, ge=1, le=10, description="Total attempts per request.")
    backoff: str = duration("Base of the jittered exponential back-off.", default="100ms")
    retry_on: list[FailureClass] | None = Field(
        default=None,
        max_length=6,
        description="Failure classes that are retried; default connectError, timeout, 5xx, 429.",
    )


class Fallback(SluiceModel):
    """When to move on to the next backend."""

    on: list[FailureClass] | None = Field(
        default=None,
        max_length=6,
        description="Failure classes that fall back; default connectError, timeout, 5xx, 429.",
    )
    respect_retry_after: bool = Field(
        default=True, description="Wait for a provider's Retry-After when the deadline allows."
    )
    max_retry_after: str = duration("Cap on an honoured Retry-After.", default="10s")


def _positive(attr: str) -> Callable[[Any], bool]:
    """A check that the duration field ``attr`` is longer than zero."""
    return lambda model: parse_duration(getattr(model, attr)) > 0


class Timeouts(SluiceModel):
    """Deadlines; `total` spans every attempt."""

    connect: str = duration("Connect timeout per attempt.", default="5s")
    first_token: str = duration("Time to the first byte of the answer.", default="30s")
    idle: str = duration("Longest silence inside a streamed answer.", default="30s")
    total: str = duration("Deadline over all attempts of one request.", default="120s")

    rules = tuple(
        Rule(
            cel=f"duration(self.{name}) > duration('0s')",
            message=f"{name} must be longer than zero",
            check=_positive(attr),
            field=name,
        )
        for name, attr in (
            ("connect", "connect"),
            ("firstToken", "first_token"),
            ("idle", "idle"),
            ("total", "total"),
        )
    )


class CircuitBreaker(SluiceModel):
    """Per-backend ejection after consecutive failures, with a half-open probe."""

    consecutive_failures: int = Field(
        default=5, ge=1, le=1000, description="Failures in a row that eject the backend."
    )
    base_ejection: str = duration(
        "First ejection time; grows with each re-ejection.", default="30s"
    )
    max_ejection: str = duration("Cap on the ejection time.", default="5m")


class Streaming(SluiceModel):
    """Behaviour of streamed answers."""

    mid_stream_failure: str = Field(
        default="Error",
        pattern="^(Error|Continue)$",
        description="Error ends the stream with an error event; Continue resumes on the next "
        "backend with the partial answer as prefill.",
    )


class RuleMatch(SluiceModel):
    """Request traits; every trait that is set must hold for the rule to match."""

    min_prompt_tokens: int | None = Field(
        default=None, ge=1, description="The prompt is at least this many tokens (estimated)."
    )
    max_prompt_tokens: int | None = Field(
        default=None, ge=1, description="The prompt is at most this many tokens (estimated)."
    )
    tools: bool | None = Field(
        default=None, description="true: the request defines tools; false: it defines none."
    )
    metadata: dict[str, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict,
        max_length=8,
        description="Entries the request's metadata must carry, e.g. {tier: simple}.",
    )
    headers: dict[str, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict,
        max_length=8,
        description="Request headers (case-insensitive names) and the values they must have.",
    )


class RoutingRule(SluiceModel):
    """Requests that match are served only by the named backends (ordered by the strategy)."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Name of the rule (audit).")
    match: RuleMatch = Field(description="The request traits the rule matches.")
    backends: list[Annotated[str, Field(max_length=63)]] = Field(
        min_length=1, max_length=16, description="Backends (by name) that serve matching requests."
    )


class ModelRouteSpec(SluiceModel):
    """A virtual model name and the backends that serve it."""

    model: str | None = text(
        253,
        "The model name apps send; defaults to the resource's name.",
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
    )
    strategy: Strategy = Field(
        default=Strategy.FAILOVER,
        description="Failover (by priority), Weighted, LeastLatency or LeastCost.",
    )
    backends: list[Backend] = Field(
        min_length=1, max_length=16, description="Provider models that can serve this route."
    )
    retry: Retry | None = Field(default=None, description="Retry policy.")
    fallback: Fallback | None = Field(default=None, description="Fallback policy.")
    timeouts: Timeouts | None = Field(default=None, description="Deadlines.")
    circuit_breaker: CircuitBreaker | None = Field(default=None, description="Ejection policy.")
    streaming: Streaming | None = Field(default=None, description="Streaming behaviour.")
    workload_selector: Selector | None = Field(
        default=None, description="Pods that may use this route; empty means all injected pods."
    )
    routing_rules: list[RoutingRule] | None = Field(
        default=None,
        max_length=16,
        description="Backends chosen by request traits (prompt size, tools, metadata, a "
        "header): evaluated in order, the first match wins; no match uses every backend.",
    )

    rules = (
        Rule(
            cel="!has(self.routingRules) || self.routingRules.all(r, r.backends.all(n, "
            "self.backends.exists(b, b.name == n)))",
            message="every backend a routing rule names must be one of spec.backends",
            check=lambda s: all(
                n in {b.name for b in s.backends} for r in s.routing_rules or () for n in r.backends
            ),
            field="routingRules",
        ),
        Rule(
            cel="!has(self.routingRules) || self.routingRules.all(r, "
            "self.routingRules.exists_one(q, q.name == r.name))",
            message="routing rule names must be unique",
            check=lambda s: (
                len({r.name for r in s.routing_rules or ()}) == len(s.routing_rules or ())
            ),
            field="routingRules",
        ),
        Rule(
            cel="self.backends.all(b, self.backends.exists_one(c, c.name == b.name))",
            message="backend names must be unique",
            check=lambda s: len({b.name for b in s.backends}) == len(s.backends),
            field="backends",
            message_cel="'backend name %s is used more than once; backend names must be unique'"
            ".format([self.backends.filter(b, !self.backends.exists_one(c, c.name == b.name))"
            "[0].name])",
            explain=lambda s: (
                "backend name "
                + next(b.name for b in s.backends if [c.name for c in s.backends].count(b.name) > 1)
                + " is used more than once; backend names must be unique"
            ),
        ),
        Rule(
            cel="self.strategy != 'Weighted' || self.backends.all(b, has(b.weight))",
            message="strategy Weighted needs a weight (> 0) on every backend",
            check=lambda s: (
                s.strategy != Strategy.WEIGHTED or all(b.weight is not None for b in s.backends)
            ),
            field="backends",
            message_cel="'strategy Weighted needs a weight (> 0) on every backend; without one: "
            "%s'.format([self.backends.filter(b, !has(b.weight)).map(b, b.name)])",
            explain=lambda s: (
                "strategy Weighted needs a weight (> 0) on every backend; without one: "
                + json.dumps([b.name for b in s.backends if b.weight is None])
            ),
        ),
    )


class QuotaStatus(SluiceModel):
    """A limited backend's provider quota as the operator shares it out among the sidecar
    processes serving the route (the leader's books; granted totals are rounded to 5% of the
    limit, the operator's sluice_quota_* metrics have exact values)."""

    rpm: int | None = Field(default=None, description="The requests-per-minute limit.")
    tpm: int | None = Field(default=None, description="The tokens-per-minute limit.")
    granted_rpm: int | None = Field(
        default=None,
        description="Requests per minute granted now, summed over the live shares.",
    )
    granted_tpm: int | None = Field(
        default=None,
        description="Tokens per minute granted now, summed over the live shares.",
    )
    holders: int = Field(
        default=0, description="Sidecar processes holding a live share (lease not expired)."
    )


class BackendStatus(SluiceModel):
    """What the sidecars report about one backend over a recent window."""

    name: str = Field(description="Backend name.")
    state: str = Field(description="Healthy, Ejected or CoolingDown.")
    until: str | None = Field(default=None, description="When an ejection or cool-down ends.")
    requests: int = Field(default=0, description="Requests in the window.")
    errors: int = Field(default=0, description="Failed attempts in the window.")
    fallbacks: int = Field(default=0, description="Requests that fell back away from it.")
    p50_latency_ms: float | None = Field(
        default=None, alias="p50LatencyMs", description="Median latency."
    )
    p50_ttft_ms: float | None = Field(
        default=None, alias="p50TTFTMs", description="Median time to first token."
    )
    credentials: str | None = Field(
        default=None,
        description="Missing when a sidecar serving the route cannot read this backend's API key "
        "(the Secret or key does not exist, or the value is empty or has a line break); the "
        "CredentialsAvailable condition names the Secret, key and pods.",
    )
    quota: QuotaStatus | None = Field(
        default=None,
        description="Its provider quota (limits) as the operator shares it among the sidecar "
        "processes serving the route; only on a backend with limits. Granted totals are rounded "
        "to 5% of the limit (exact values: the operator's sluice_quota_* metrics).",
    )


class ModelRouteStatus(CommonStatus):
    """Observed state of a ModelRoute."""

    model: str | None = Field(default=None, description="The resolved virtual model name.")
    prices_as_of: str | None = Field(
        default=None, description="Date of the built-in price table that fills in missing prices."
    )
    backends: list[BackendStatus] = Field(default_factory=list, description="Backend health.")
