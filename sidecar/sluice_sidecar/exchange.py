"""One client request as it moves along the request path: the record every stage reads and extends.

Owns the ``Exchange`` data class and the ``Try`` record of each upstream attempt: pure data, no
behaviour, no IO. The stages (prompts, guardrails, budget) receive it in each phase; metering and
tracing turn it into metrics, the audit record and spans when the request ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .contract import Backend, Limits, Route, SidecarConfig
from .errors import SluiceError
from .model import Operation, TraceContext, Usage
from .translate import OPENAI, ClientAPI

_DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Try:
    """One attempt against one backend: what the audit record and the trace show."""

    backend: Backend
    started: float
    span_id: str | None = None
    duration: float = 0.0
    #: "ok", a failure class ("5xx", "429", …) or "fatal" (not retryable), or "abandoned";
    #: a stream that failed after its first frame gets the failure class too.
    result: str = "ok"
    #: The provider's HTTP status when it answered with an error.
    status: int | None = None
    #: The error code (never the provider's message, which may quote the request).
    reason: str | None = None


@dataclass(slots=True)
class Exchange:
    request_id: str
    operation: Operation
    started: float
    #: The client sent ``request_id`` (``x-request-id``): it may send it again in a retry.
    #: A sidecar-made id can never be replayed, so nothing needs to remember it.
    client_request_id: bool = False
    #: Monotonic seconds; ``started`` + the route's total timeout.
    deadline: float = 0.0
    #: The config this request started with (a config swap applies to the next request).
    config: SidecarConfig | None = None
    #: The limits of the config this request started with.
    limits: Limits = _DEFAULT_LIMITS
    #: The most output tokens the answer may have: the client's ``max_completion_tokens`` or
    #: ``max_tokens``, else ``limits.defaultMaxTokens`` (what a budget reservation is computed
    #: from; a stage that lowers the request's cap should lower this too).
    output_cap: int = 0
    body: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    stream: bool = False
    client_wants_usage: bool = False
    route: Route | None = None
    backend: Backend | None = None
    attempts: int = 0
    fallbacks: int = 0
    retries: int = 0
    status: int = 0
    #: ok | error | client_disconnected | stream_error | truncated (cut at maxStreamBytes)
    outcome: str = "ok"
    error: SluiceError | None = None
    usage: Usage | None = None
    ttft: float | None = None
    bytes_in: int = 0
    committed: bool = False
    #: Free-form facts later stages add to the audit record (e.g. prompt version, verdicts).
    annotations: dict[str, Any] = field(default_factory=dict)
    #: The API the client speaks (``translate.OPENAI``, or ``translate.ANTHROPIC`` for
    #: ``POST /v1/messages``), and its own body while no stage rewrote the request (then it can
    #: be passed through as it is).
    client: ClientAPI = OPENAI
    native: dict[str, Any] | None = None
    #: The client's request headers (case-insensitive in the running sidecar), read by stages
    #: that take a setting from a header (the budget stage's ``x-sluice-run``).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The client's headers its API forwards to the backend (``ClientAPI.forward_headers``).
    client_headers: dict[str, str] = field(default_factory=dict)
    #: Every upstream attempt, in order.
    tries: list[Try] = field(default_factory=list)
    #: W3C trace context when the request is traced or propagated.
    trace: TraceContext | None = None
    #: The prompt that was rendered (``name@label``) and its version (prompt stage).
    prompt_ref: str | None = None
    prompt_version: int | None = None
    #: Guardrail verdicts (guardrail stage): ``{"policy", "stage", "action", …}``.
    verdicts: list[dict[str, Any]] = field(default_factory=list)
