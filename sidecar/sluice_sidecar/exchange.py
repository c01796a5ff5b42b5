"""One client request as it moves through the pipeline: the record every stage reads and extends.

Owns the ``Exchange`` data class and nothing else: pure data, no behaviour, no IO. Pipeline hooks
(prompt rendering, guardrails, budgets — later work) receive it; metering turns it into metrics
and the audit record when the request ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .contract import Backend, Route
from .errors import SluiceError
from .providers.base import Operation, Usage


@dataclass(slots=True)
class Exchange:
    request_id: str
    operation: Operation
    started: float
    #: Monotonic seconds; ``started`` + the route's total timeout.
    deadline: float = 0.0
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
    #: ok | error | client_disconnected | stream_error
    outcome: str = "ok"
    error: SluiceError | None = None
    usage: Usage | None = None
    ttft: float | None = None
    bytes_in: int = 0
    prompt_chars: int = 0
    committed: bool = False
    #: Free-form facts later stages add to the audit record (e.g. prompt version, verdicts).
    annotations: dict[str, Any] = field(default_factory=dict)
