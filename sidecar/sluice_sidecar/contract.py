"""The versioned contract between the operator and the sidecar.

Owns two documents and nothing else:

* ``SidecarConfig`` - what the operator compiles from a namespace's resources and hands to every
  sidecar of that namespace (as a ConfigMap file and over the control-plane push). It carries no
  secret values, only where to read them (``CredentialRef.file`` relative to the sidecar's secrets
  directory).
* ``UsageReport`` - what a sidecar sends back: usage counters, backend health and the config hash it
  runs.

This is the only module of the sidecar that the operator imports. It must stay free of IO and of
any import from the operator, kopf or kubernetes. Durations are seconds (floats); money is USD.
JSON field names are camelCase (Kubernetes style); Python attributes are snake_case.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

CONFIG_API_VERSION: Final = "sluice.dev/sidecar-config/v1"
REPORT_API_VERSION: Final = "sluice.dev/usage-report/v1"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class _Sent(_Model):
    """A document a sidecar sends to the operator: unknown fields are ignored on reading, so an
    operator accepts what a newer sidecar adds (version skew; the config it receives stays
    strict)."""

    model_config = ConfigDict(extra="ignore")


class Provider(StrEnum):
    """Upstream provider kinds the sidecar can talk to."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    MISTRAL = "mistral"
    OPENAI_COMPATIBLE = "openai-compatible"
    MOCK = "mock"


class Strategy(StrEnum):
    """How a route picks among its healthy backends."""

    FAILOVER = "Failover"
    WEIGHTED = "Weighted"
    LEAST_LATENCY = "LeastLatency"
    LEAST_COST = "LeastCost"


class FailureClass(StrEnum):
    """The classes every upstream failure is sorted into; retry and fallback rules name them."""

    CONNECT_ERROR = "connectError"
    TIMEOUT = "timeout"
    SERVER_ERROR = "5xx"
    RATE_LIMITED = "429"
    CONTEXT_WINDOW_EXCEEDED = "contextWindowExceeded"
    CONTENT_FILTER = "contentFilter"


class MidStreamFailure(StrEnum):
    ERROR = "Error"
    CONTINUE = "Continue"


class CredentialRef(_Model):
    """Where a backend's API key lives: a Secret key, mounted as a file."""

    secret_name: str
    key: str
    file: str = Field(description="Path relative to the sidecar's secrets directory.")


class Pricing(_Model):
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float = 0.0


class RateLimits(_Model):
    rpm: int | None = None
    tpm: int | None = None


class MockBehaviour(_Model):
    """Behaviour of the built-in ``mock`` provider (demos and tests)."""

    latency_ms: float = 0.0
    failure_rate: float = 0.0
    completion_tokens: int = 16
    reply: str | None = None


class Backend(_Model):
    name: str
    provider: Provider
    model: str
    base_url: str | None = None
    credentials: CredentialRef | None = None
    weight: int = 1
    priority: int = 0
    pricing: Pricing = Pricing()
    limits: RateLimits = RateLimits()
    context_window: int | None = None
    mock: MockBehaviour | None = None


class Retry(_Model):
    attempts: int = 2
    backoff_base: float = 0.1
    backoff_max: float = 2.0
    retry_on: tuple[FailureClass, ...] = (
        FailureClass.CONNECT_ERROR,
        FailureClass.SERVER_ERROR,
        FailureClass.RATE_LIMITED,
        FailureClass.TIMEOUT,
    )
    budget_ratio: float = 0.2
    budget_min_per_second: float = 3.0


class Fallback(_Model):
    on: tuple[FailureClass, ...] = (
        FailureClass.CONNECT_ERROR,
        FailureClass.TIMEOUT,
        FailureClass.SERVER_ERROR,
        FailureClass.RATE_LIMITED,
    )
    respect_retry_after: bool = True
    max_retry_after: float = 10.0


class Timeouts(_Model):
    connect: float = 5.0
    first_token: float = 30.0
    idle: float = 30.0
    total: float = 120.0


class CircuitBreaker(_Model):
    consecutive_failures: int = 5
    base_ejection: float = 30.0
    max_ejection: float = 300.0


class RuleMatch(_Model):
    """Request traits a routing rule matches; every trait that is set must hold."""

    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    #: True: the request defines tools; False: it defines none.
    tools: bool | None = None
    #: ``metadata`` entries the request must carry (string values, all of them).
    metadata: dict[str, str] = Field(default_factory=dict)
    #: Request headers (lower-case names) and the values they must have (all of them).
    headers: dict[str, str] = Field(default_factory=dict)


class RoutingRule(_Model):
    """Requests that match ``match`` are served only by ``backends`` (the route's strategy
    orders them); rules are evaluated in order and the first match wins."""

    name: str
    match: RuleMatch = RuleMatch()
    backends: tuple[str, ...]


class Route(_Model):
    """One ModelRoute, compiled: the virtual model name apps send, and how to serve it."""

    name: str = Field(description="The virtual model name apps put in the request's `model`.")
    source: str = Field(description="Name of the ModelRoute resource this came from.")
    strategy: Strategy = Strategy.FAILOVER
    backends: tuple[Backend, ...]
    retry: Retry = Retry()
    fallback: Fallback = Fallback()
    timeouts: Timeouts = Timeouts()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    mid_stream_failure: MidStreamFailure = MidStreamFailure.ERROR
    workload_selector: dict[str, str] = Field(default_factory=dict)
    #: Left out of the JSON when empty, so configs without rules hash as before.
    rules: tuple[RoutingRule, ...] = Field(default=(), exclude_if=lambda v: not v)


class PromptVariable(_Model):
    required: bool = False
    default: str | None = None
    max_length: int | None = None


class PromptMessage(_Model):
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class PromptVersion(_Model):
    version: int
    hash: str
    messages: tuple[PromptMessage, ...]
    variables: dict[str, PromptVariable] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    route: str | None = None


class Prompt(_Model):
    """A PromptTemplate, compiled: its versions and which version each label points at."""

    name: str
    versions: tuple[PromptVersion, ...]
    labels: dict[str, int] = Field(default_factory=dict)
    split: dict[str, int] = Field(
        default_factory=dict,
        description="label -> percent of `production` traffic that goes to that label instead.",
    )


class Selector(_Model):
    """Which traffic a Budget or GuardrailPolicy applies to. Empty matches everything."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    routes: tuple[str, ...] = ()


class WindowKind(StrEnum):
    DAY = "Day"
    WEEK = "Week"
    MONTH = "Month"
    ROLLING = "Rolling"


class BudgetLimit(_Model):
    window: WindowKind
    rolling_seconds: float | None = None
    timezone: str = "UTC"
    usd: float | None = None
    tokens: int | None = None
    requests: int | None = None

    def window_id(self) -> str:
        """The window's name in usage reports: ``Day/Europe/Berlin``, ``Rolling/3600``."""
        if self.window is WindowKind.ROLLING:
            return f"Rolling/{self.rolling_seconds or 0:g}"
        return f"{self.window.value}/{self.timezone}"


class ExceededAction(StrEnum):
    BLOCK = "Block"
    DOWNGRADE = "Downgrade"
    ALERT_ONLY = "AlertOnly"


class ControlPlaneLoss(StrEnum):
    BLOCK = "Block"
    ALLOW_LOCAL = "AllowLocal"


class RunLimits(_Model):
    """Limits on one agent run and all its descendants (``x-sluice-run``); ``max_steps`` bounds
    the requests of the run itself (the loop breaker)."""

    usd: float | None = None
    tokens: int | None = None
    requests: int | None = None
    max_steps: int | None = None


class BudgetRule(_Model):
    name: str
    selector: Selector = Selector()
    limits: tuple[BudgetLimit, ...] = ()
    rate_limits: RateLimits = RateLimits()
    alert_thresholds: tuple[int, ...] = (50, 80, 100)
    on_exceeded: ExceededAction = ExceededAction.BLOCK
    downgrade_route: str | None = None
    #: Left out of the JSON when unset, so configs without it hash as before.
    per_run: RunLimits | None = Field(default=None, exclude_if=lambda v: v is None)
    #: Without a live lease from the control plane: refuse (Block) or enforce the whole limit
    #: locally (AllowLocal). Left out of the JSON when Block (the default).
    on_control_plane_loss: ControlPlaneLoss = Field(
        default=ControlPlaneLoss.BLOCK, exclude_if=lambda v: v is ControlPlaneLoss.BLOCK
    )


class GuardAction(StrEnum):
    REDACT = "Redact"
    BLOCK = "Block"
    LOG = "Log"


class PiiRule(_Model):
    entities: tuple[str, ...]
    action: GuardAction = GuardAction.REDACT
    #: Input only, with Redact: numbered placeholders go upstream, originals come back.
    #: Left out of the JSON when false, so configs without it read the same in older sidecars.
    restore: bool = Field(default=False, exclude_if=lambda v: not v)


class InjectionRule(_Model):
    action: GuardAction = GuardAction.BLOCK
    threshold: float = 0.5


class DenyRule(_Model):
    regex: str
    action: GuardAction = GuardAction.BLOCK


class ExternalCheck(_Model):
    url: str
    timeout: float = 1.0
    failure_mode: Literal["Open", "Closed"] = "Closed"


class GuardStage(_Model):
    pii: PiiRule | None = None
    prompt_injection: InjectionRule | None = None
    deny: tuple[DenyRule, ...] = ()
    max_chars: int | None = None
    external: ExternalCheck | None = None


class Guardrail(_Model):
    name: str
    selector: Selector = Selector()
    mode: Literal["Enforce", "Monitor"] = "Enforce"
    input: GuardStage = GuardStage()
    output: GuardStage = GuardStage()
    streaming_mode: Literal["Holdback", "Buffer", "Audit"] = "Holdback"
    holdback_chars: int = 64


class Limits(_Model):
    """Sidecar-wide request limits."""

    max_request_bytes: int = 10 * 1024 * 1024
    #: ``max_tokens`` sent upstream when a chat request has none (a reservation needs a bound).
    default_max_tokens: int = 4096
    #: Seconds to receive a request body once its headers are in; a slower client gets 408 and
    #: its connection is closed (slowloris).
    body_timeout: float = 30.0
    #: Bytes of a non-streamed answer read from a provider (held in memory); over it: 502.
    max_response_bytes: int = 32 * 1024 * 1024
    #: Bytes of one streamed answer relayed to the client; at the limit the stream is cut.
    max_stream_bytes: int = 64 * 1024 * 1024


class SidecarConfig(_Model):
    """Everything one namespace's sidecars need; produced by the operator's compiler."""

    api_version: Literal["sluice.dev/sidecar-config/v1"] = CONFIG_API_VERSION
    namespace: str
    routes: tuple[Route, ...] = ()
    prompts: tuple[Prompt, ...] = ()
    budgets: tuple[BudgetRule, ...] = ()
    guardrails: tuple[Guardrail, ...] = ()
    limits: Limits = Limits()
    #: The date of the operator's built-in price table, which fills in the prices a backend's
    #: ``pricing`` leaves out (set when a route has a backend other than a mock).
    prices_as_of: str | None = Field(default=None, exclude_if=lambda v: v is None)

    def canonical_json(self) -> str:
        """Stable JSON (sorted keys, aliases, no whitespace): the input of ``content_hash``."""
        return json.dumps(
            self.model_dump(mode="json", by_alias=True),
            sort_keys=True,
            separators=(",", ":"),
        )

    def content_hash(self) -> str:
        """A short, stable hash of the config's content; the same config gives the same hash."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]


class BackendState(StrEnum):
    HEALTHY = "Healthy"
    EJECTED = "Ejected"
    COOLING_DOWN = "CoolingDown"


class BackendHealth(_Sent):
    route: str
    backend: str
    state: BackendState
    until: float | None = Field(default=None, description="Unix time the ejection/cool-down ends.")
    #: The backend reads an API key and this sidecar cannot: the mounted file is missing (no such
    #: Secret or key), empty or unusable. Left out when false (what older operators accept).
    credentials_missing: bool = Field(default=False, exclude_if=lambda v: not v)


class UsageEntry(_Sent):
    route: str
    backend: str
    prompt: str | None = None
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_p50_ms: float | None = None
    ttft_p50_ms: float | None = None


class _Settled(_Sent):
    """Settled spend: integer picodollars (exact sums), tokens and requests."""

    pusd: int = Field(default=0, ge=0)
    tokens: int = Field(default=0, ge=0)
    requests: int = Field(default=0, ge=0)


class BudgetWindowSpend(_Settled):
    """What one sidecar process settled in one window of one Budget limit since it started.

    A gauge, not a delta: a later report of the same process replaces an earlier one, so a lost,
    repeated or reordered report changes no total (the highest ``seq`` of an ``instance`` wins).
    ``window`` names the limit's window (``BudgetLimit.window_id``: ``Day/Europe/Berlin``,
    ``Rolling/3600``); ``start`` and ``resets_at`` (Unix time) key the window."""

    budget: str
    window: str
    start: float
    resets_at: float


class BudgetRouteSpend(_Settled):
    """What one sidecar process settled for one Budget on one route and provider model in the
    window of the Budget's first calendar limit that starts at ``start`` (a gauge, like
    ``BudgetWindowSpend``)."""

    budget: str
    route: str
    model: str
    start: float


class GuardrailCount(_Sent):
    """One GuardrailPolicy's verdicts on one entity (``EMAIL``, ``deny[0]``,
    ``PROMPT_INJECTION``, ``EXTERNAL``, …) in the five-minute bucket starting at ``start`` (Unix
    time), counted by one sidecar process since it started: a gauge like
    ``BudgetWindowSpend`` (the highest ``seq`` of an ``instance`` wins). Never any text."""

    policy: str
    entity: str
    start: float
    blocked: int = Field(default=0, ge=0)
    redacted: int = Field(default=0, ge=0)
    flagged: int = Field(default=0, ge=0)


class UsageReport(_Sent):
    """What one sidecar reports: idempotent by ``(pod, seq)``.

    ``instance`` (random per sidecar process) and the budget fields are additive: left out of the
    JSON when empty, so a sidecar without budgets sends what older operators accept."""

    api_version: Literal["sluice.dev/usage-report/v1"] = REPORT_API_VERSION
    namespace: str
    pod: str
    config_hash: str
    seq: int
    window_start: float
    window_end: float
    usage: tuple[UsageEntry, ...] = ()
    health: tuple[BackendHealth, ...] = ()
    instance: str = Field(default="", exclude_if=lambda v: not v)
    budgets: tuple[BudgetWindowSpend, ...] = Field(default=(), exclude_if=lambda v: not v)
    budget_routes: tuple[BudgetRouteSpend, ...] = Field(default=(), exclude_if=lambda v: not v)
    #: Guardrail verdict counts of the last hour (``GuardrailCount``); additive like the above.
    guardrails: tuple[GuardrailCount, ...] = Field(default=(), exclude_if=lambda v: not v)


# --- budget leases (POST /v1/leases) -------------------------------------------------------------

LEASE_API_VERSION: Final = "sluice.dev/lease/v1"


class LeaseAmount(_Sent):
    """Picodollars, tokens and requests; in a cap, None leaves the metric without a limit."""

    pusd: int | None = Field(default=None, ge=0)
    tokens: int | None = Field(default=None, ge=0)
    requests: int | None = Field(default=None, ge=0)


class LeaseAsk(_Sent):
    """One window of one Budget limit a sidecar process holds or wants a lease for.

    ``spent`` is what the process settled in the window ``start`` (the sidecar's view, on the
    operator's clock) since it started; ``cap`` the lease cap it holds now and promises not to
    exceed until it hears back (None: it holds none; lower than the cap it was granted: it gives
    the rest back); ``want`` how much more it would like on top of ``spent`` (its recent demand);
    ``least`` the smallest slice on top of ``spent`` that admits the request a lease refused
    (granted whole when the room allows, even beyond an even share: no slice too small to use)."""

    budget: str
    window: str
    start: float
    spent: LeaseAmount = LeaseAmount()
    cap: LeaseAmount | None = None
    want: LeaseAmount = LeaseAmount()
    least: LeaseAmount = LeaseAmount()


class QuotaShare(_Sent):
    """A share of one backend's provider quota (``Backend.limits``) on one route, per minute:
    in a ``QuotaAsk`` the share the process holds now, in a ``LeaseResponse`` the share granted
    (until the next renewal; None: the metric has no limit)."""

    route: str
    backend: str
    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)


class QuotaAsk(_Sent):
    """One backend with ``limits`` on one route this process serves: its recent demand per
    minute (tries sent plus tries steered away for lack of quota room) and the share it holds
    (None: none granted yet)."""

    route: str
    backend: str
    rpm: int = Field(default=0, ge=0)
    tpm: int = Field(default=0, ge=0)
    held: QuotaShare | None = None


class LeaseRequest(_Sent):
    """A sidecar process's lease renewal, for every budget window that covers it; ``seq`` grows
    per request of one ``instance`` (an older request arriving late is ignored). ``release``:
    the process is stopping and gives every slice back. ``quotas`` (additive: left out when
    empty, ignored by an operator that does not share quotas): the provider quotas it serves."""

    api_version: Literal["sluice.dev/lease/v1"] = LEASE_API_VERSION
    namespace: str
    pod: str
    instance: str
    seq: int
    asks: tuple[LeaseAsk, ...] = ()
    release: bool = False
    quotas: tuple[QuotaAsk, ...] = Field(default=(), exclude_if=lambda v: not v)


class Lease(_Sent):
    """A grant: the process may have settled up to ``cap`` in the window (``start``,
    ``resets_at``: the operator's clock; None for a rolling window) until ``ttl`` seconds after it
    sent its request. ``exhausted``: nothing is left to grant in a limited metric (the budget's
    spend plus the other replicas' leases take the rest); ``spent`` is the budget's settled spend
    in the window across replicas as the operator knows it."""

    budget: str
    window: str
    start: float
    resets_at: float | None = None
    cap: LeaseAmount
    spent: LeaseAmount = LeaseAmount()
    exhausted: bool = False


class LeaseResponse(_Sent):
    """The operator's answer: its wall clock ``now`` (windows follow it), the leases' ``ttl`` in
    seconds, and one lease per ask (an ask for a budget or window the operator does not know gets
    none). ``quotas``: the granted share of each asked provider quota the operator knows
    (additive; a sidecar that gets none for a backend enforces its whole limit locally)."""

    api_version: Literal["sluice.dev/lease/v1"] = LEASE_API_VERSION
    now: float
    ttl: float
    leases: tuple[Lease, ...] = ()
    quotas: tuple[QuotaShare, ...] = Field(default=(), exclude_if=lambda v: not v)
