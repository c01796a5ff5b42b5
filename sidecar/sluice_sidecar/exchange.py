"""One client request as it moves through the pipeline: the record every stage reads and extends.

Owns the ``Exchange`` data class, the ``Try`` record of each upstream attempt, and the
``Dialect`` protocol (the API shape a client speaks when it is not OpenAI's): pure data, no
behaviour, no IO. Pipeline hooks (prompt rendering, guardrails, budgets — later work) receive it;
metering and tracing turn it into metrics, the audit record and spans when the request ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .contract import Backend, Limits, Route
from .errors import SluiceError
from .providers.base import Operation, Upstream, Usage

if TYPE_CHECKING:
    from .tracing import TraceContext


class Dialect(Protocol):
    """A client API other than OpenAI's (``inbound_anthropic``): requests are translated to the
    canonical OpenAI body at the door, answers and errors back to the client's shape."""

    name: str
    #: What ends a successful stream (``b""`` when the last event is enough).
    done: bytes

    def parse(self, obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(model, canonical OpenAI chat body) for the client's checked body."""

    def error_body(self, err: SluiceError) -> bytes: ...

    def stream_error(self, err: SluiceError) -> bytes: ...

    def adapt(self, up: Upstream) -> Upstream:
        """``up`` (which answers in OpenAI's shape) answering in this dialect."""

    def length_stop(self, output_tokens: int) -> bytes:
        """What ends a stream the sidecar cut at ``limits.maxStreamBytes`` (the dialect's
        "stopped at the token limit"), after ``output_tokens``."""


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
    #: Monotonic seconds; ``started`` + the route's total timeout.
    deadline: float = 0.0
    #: The limits of the config this request started with.
    limits: Limits = _DEFAULT_LIMITS
    #: The most output tokens the answer may have: the client's ``max_completion_tokens`` or
    #: ``max_tokens``, else ``limits.defaultMaxTokens`` (what a budget reservation is computed
    #: from; a hook that lowers the request's cap should lower this too).
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
    prompt_chars: int = 0
    committed: bool = False
    #: Free-form facts later stages add to the audit record (e.g. prompt version, verdicts).
    annotations: dict[str, Any] = field(default_factory=dict)
    #: The client's API when it is not OpenAI's (``POST /v1/messages``), and its own body.
    dialect: Dialect | None = None
    native: dict[str, Any] | None = None
    #: Every upstream attempt, in order.
    tries: list[Try] = field(default_factory=list)
    #: W3C trace context when the request is traced or propagated.
    trace: TraceContext | None = None
    #: The prompt that was rendered (``name@label``) and its version (prompt stage, later work).
    prompt_ref: str | None = None
    prompt_version: int | None = None
    #: Guardrail verdicts (guardrail stage, later work): ``{"policy", "stage", "action", …}``.
    verdicts: list[dict[str, Any]] = field(default_factory=list)
