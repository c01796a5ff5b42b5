"""The shared vocabulary of the sidecar: what one request uses and costs, and its trace context.

Owns ``Operation`` (the kinds of request), ``Usage`` (tokens one answer used, and whether the
provider said so or the sidecar estimated it), ``cost_usd`` (the only cost arithmetic) and
``TraceContext`` (the W3C trace context a request carries; ``run_trace_id``: one trace per agent
run). Every layer may import this module;
it imports only the contract. Pure data and arithmetic: no IO.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from .contract import Backend

#: ``completions``: the legacy text completions API (``POST /v1/completions``: FIM, autocomplete).
Operation = Literal["chat", "embeddings", "completions"]


@dataclass(slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    #: "provider" when the provider reported it, "estimated" when the sidecar counted.
    source: str = "provider"


def total_usage(usages: list[Usage]) -> Usage:
    """The sum of several tries' usage (provider-reported only when every part was)."""
    if len(usages) == 1:
        return usages[0]
    return Usage(
        sum(u.input_tokens for u in usages),
        sum(u.output_tokens for u in usages),
        sum(u.cached_input_tokens for u in usages),
        "provider" if all(u.source == "provider" for u in usages) else "estimated",
    )


def cost_usd(backend: Backend, usage: Usage) -> float:
    """USD for ``usage`` at ``backend``'s prices. A pure function."""
    p = backend.pricing
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    return (
        (usage.input_tokens - cached) * p.input_per_mtok
        + cached * p.cached_input_per_mtok
        + usage.output_tokens * p.output_per_mtok
    ) / 1_000_000


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    #: The caller's span (None when the sidecar started the trace).
    parent_id: str | None
    #: The sidecar's own span for this request (None when spans are not exported).
    span_id: str | None
    flags: str = "01"
    state: str | None = None
    #: The ``traceparent`` as received, passed upstream unchanged when not exporting.
    received: str | None = None

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)

    def upstream_headers(self, span_id: str | None) -> dict[str, str]:
        """``traceparent`` (and ``tracestate``) for one try upstream whose client span is
        ``span_id`` (None when spans are not exported: the caller's header goes on as it is)."""
        if span_id is None:
            value = self.received or f"00-{self.trace_id}-{self.parent_id}-{self.flags}"
        else:
            value = f"00-{self.trace_id}-{span_id}-{self.flags}"
        out = {"traceparent": value}
        if self.state:
            out["tracestate"] = self.state
        return out


def run_trace_id(namespace: str, run: str) -> str:
    """The trace id of agent run ``run`` in ``namespace``: every step of the run whose trace the
    sidecar starts (no ``traceparent`` came with it) joins this one trace, in whichever pod the
    step runs, so a tracing backend shows the run step by step. A sub-run has a trace of its own
    (its spans name the parent: ``sluice.run.parent``)."""
    return hashlib.sha256(f"sluice-run\x00{namespace}\x00{run}".encode()).hexdigest()[:32]
