"""The interface between the request pipeline and a provider adapter.

Owns the shapes handed across it: ``Call`` (one try against one backend), ``Usage`` and the
``Upstream`` response handle, plus ``Adapter``, which every provider implements. Adapters speak
the provider's wire format and translate to and from the OpenAI format the sidecar serves; they
map transport exceptions to ``errors.UpstreamError`` subclasses at this edge. Deadlines are the
pipeline's: adapters never start timers of their own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal

from ..contract import Backend, Route

Operation = Literal["chat", "embeddings"]


@dataclass(slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    #: "provider" when the provider reported it, "estimated" when the sidecar counted.
    source: str = "provider"


@dataclass(slots=True)
class Call:
    operation: Operation
    route: Route
    backend: Backend
    body: dict[str, Any]
    stream: bool
    #: The client itself asked for ``stream_options.include_usage`` (else the usage chunk the
    #: sidecar asked for is dropped before it reaches the client).
    client_wants_usage: bool
    api_key: str | None
    request_id: str
    #: ``max_tokens`` sent when the request has none (every provider gets a cap).
    default_max_tokens: int = 4096
    #: The client's own Anthropic-shaped body (``POST /v1/messages``) when no pipeline hook
    #: replaced the request: an Anthropic backend sends it as it is (lossless passthrough).
    native: dict[str, Any] | None = None
    #: ``traceparent`` / ``tracestate`` to send upstream (W3C trace context).
    trace_headers: dict[str, str] = field(default_factory=dict)
    #: The most bytes of a non-streamed answer that are read (``limits.maxResponseBytes``).
    max_response_bytes: int = 32 * 1024 * 1024


class Upstream(ABC):
    """An upstream response whose status was 2xx; read it once, as a whole or as frames."""

    usage: Usage | None = None
    #: Chunks that carried generated content (the token estimate when no usage came).
    content_chunks: int = 0
    #: True once the provider said the answer is complete ([DONE] or a finish_reason).
    complete: bool = False
    #: The API shape of what ``read`` and ``frames`` return: "openai" (chat completions), or
    #: "anthropic" for an Anthropic backend passing a ``/v1/messages`` request through natively.
    dialect: str = "openai"

    @abstractmethod
    async def read(self) -> bytes:
        """The whole (non-streamed) answer as an OpenAI JSON body; sets ``usage``."""

    @abstractmethod
    def frames(self) -> AsyncGenerator[bytes, None]:
        """The streamed answer as OpenAI SSE frames ready for the client, without ``[DONE]``.

        Ends normally only when the answer is complete; raises ``UpstreamError`` when the
        provider fails in-band, cuts the stream or sends something unparseable.
        """

    @abstractmethod
    def close(self) -> None:
        """Abort: drop the upstream connection (client gone, timeout, error)."""

    def release(self) -> None:
        """Done reading normally; the connection may be reused."""
        self.close()


class Adapter(ABC):
    @abstractmethod
    async def open(self, call: Call) -> Upstream:
        """Send ``call``; return once a 2xx status is in, or raise ``UpstreamError``."""
