"""The interface between the request path and the IO that reaches a backend.

Owns ``Upstream`` (the handle of one 2xx answer: read it whole or as frames, then release or
abort it) and ``Transport`` (sends one ``translate.Call`` through a backend dialect and returns
an ``Upstream`` once a 2xx status is in, or raises ``errors.UpstreamError``). Deadlines are the
request path's: transports never start timers of their own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from typing import Protocol

from ..model import Usage
from ..translate import BackendDialect, Call


class Upstream(ABC):
    """An upstream response whose status was 2xx; read it once, as a whole or as frames."""

    usage: Usage | None = None
    #: The provider reported usage out of range (``scrub.usage_in_range``): it was dropped.
    usage_invalid: bool = False
    #: Chunks that carried generated content (the token estimate when no usage came).
    content_chunks: int = 0
    #: True once the provider said the answer is complete ([DONE] or a finish_reason).
    complete: bool = False
    #: True once the frames handed out are all the provider will send: what is left of
    #: ``frames`` reads nothing more from the connection (it may still yield closing frames
    #: or raise).
    drained: bool = False

    @abstractmethod
    async def read(self) -> bytes:
        """The whole (non-streamed) answer in the translator's answer dialect (the canonical
        OpenAI body, or the client's own for a pass-through); sets ``usage``."""

    @abstractmethod
    def frames(self) -> AsyncGenerator[bytes, None]:
        """The streamed answer as SSE frames (canonical chunks, or the client's own events for
        a pass-through), without ``[DONE]``.

        Ends normally only when the answer is complete; raises ``UpstreamError`` when the
        provider fails in-band, cuts the stream or sends something unparseable.
        """

    @abstractmethod
    def close(self) -> None:
        """Abort: drop the upstream connection (client gone, timeout, error)."""

    def release(self) -> None:
        """Done reading normally; the connection may be reused."""
        self.close()


class Transport(Protocol):
    async def open(self, call: Call, dialect: BackendDialect) -> Upstream:
        """Send ``call`` in ``dialect``; return once a 2xx status is in, or raise
        ``UpstreamError``."""
