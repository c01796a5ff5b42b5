"""The contract between the request path and its stages: ``Stage``, its four phases, and the
shapes each phase is handed.

A stage is one policy applied to traffic (the prompt template, the guardrails, the budget). It
may take part in any of four phases, each optional:

* ``on_request(ex)`` — after the route is resolved, before any backend is chosen. It may
  rewrite the request (assign a *new* dict to ``ex.body``: that is how the request path knows a
  client's own body can no longer be passed through), refuse it (raise a ``SluiceError``), or
  re-route it (assign ``ex.route`` and ``ex.deadline``). A stage that must see the answer in
  the canonical shape sets ``ex.native = None`` (no pass-through of the client's own dialect).
* ``on_response(ex, answer)`` — a whole (unary) answer in the canonical shape, before it is
  reshaped for the client; ``answer.body`` parses it on first use, ``answer.replace`` rewrites it.
* ``stream_filter(ex)`` — a ``DeltaFilter`` over the text deltas of one streamed choice (asked
  once per choice), or None. It may hold text back (redaction across chunk boundaries) and stop
  the stream (``blocked``: the choice ends with ``finish_reason: content_filter``).
* ``on_finish(ex)`` — once per request, after the answer went out: settle, record, report. It
  must never raise.

``Stages`` keeps the stages in their declared order (``app.default_stages`` declares it) and, per
phase, only those that implement it, so a phase no stage uses costs nothing per request. A stage
that can tell from the config alone that none of its phases will act (``Stage.active``: the
guardrail stage of a config without guardrails) is left out of ``Stages.live(config)``, the
stages a request that started with that config passes: it costs nothing per request either.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from .contract import SidecarConfig
from .errors import SluiceError
from .exchange import Exchange


class DeltaFilter(Protocol):
    """The output check of one streamed choice: ``feed`` each text delta and send what it
    returns; at the end call ``finish`` once and send what it returns before the choice's
    ``finish_reason``. Once ``blocked`` is set, nothing more of the choice is sent."""

    @property
    def blocked(self) -> SluiceError | None: ...

    def feed(self, text: str) -> str: ...

    def finish(self) -> str: ...


class JsonTextGuard:
    """A ``DeltaFilter`` for JSON text a filter rewrote (tool-call arguments): a ``[`` that
    follows an odd run of backslashes (a redaction placeholder put right after an escape's
    backslash, as in ``\\[EMAIL]``) gets one more backslash, so the text still parses. Valid
    JSON never has ``\\[``, so nothing else changes. Works across deltas."""

    __slots__ = ("_odd",)

    blocked: SluiceError | None = None

    def __init__(self) -> None:
        self._odd = False  # the text so far ends in an odd run of backslashes

    def feed(self, text: str) -> str:
        if not self._odd and "\\" not in text:
            return text
        out: list[str] = []
        odd = self._odd
        for ch in text:
            if ch == "\\":
                odd = not odd
            else:
                if odd and ch == "[":
                    out.append("\\")
                odd = False
            out.append(ch)
        self._odd = odd
        return "".join(out)

    def finish(self) -> str:
        return ""


class UnaryAnswer:
    """A whole canonical answer (a ``chat.completion`` or an embeddings list) as the stages see
    it: parsed only when a stage asks for ``body``."""

    __slots__ = ("_obj", "_raw", "changed")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._obj: dict[str, Any] | None = None
        self.changed = False

    @property
    def body(self) -> dict[str, Any] | None:
        """The answer as a JSON object (None when it is not one)."""
        if self._obj is None:
            try:
                obj = json.loads(self._raw)
            except (ValueError, RecursionError):
                return None
            self._obj = obj if isinstance(obj, dict) else None
        return self._obj

    def replace(self, body: dict[str, Any]) -> None:
        self._obj = body
        self.changed = True

    def encoded(self) -> bytes:
        if not self.changed or self._obj is None:
            return self._raw
        return json.dumps(self._obj, ensure_ascii=False, separators=(",", ":")).encode()


class Stage:
    """Base class of a stage: every phase does nothing. Override the phases the stage uses."""

    name = "stage"

    def active(self, config: SidecarConfig) -> bool:
        """False when no phase of the stage can act on a request that started with ``config``
        (each would return at once): the request path then skips the stage for such requests
        (``Stages.live``). Pure in ``config``; asked once per config, never per request."""
        return True

    async def on_request(self, ex: Exchange) -> None:
        return None

    def on_response(self, ex: Exchange, answer: UnaryAnswer) -> None:
        return None

    def stream_filter(self, ex: Exchange) -> DeltaFilter | None:
        return None

    async def on_answer(self, ex: Exchange, answer: UnaryAnswer) -> None:
        return None

    def on_finish(self, ex: Exchange) -> None:
        return None


def _overrides(stage: Stage, phase: str) -> bool:
    return getattr(type(stage), phase) is not getattr(Stage, phase)


def _active(stage: Stage, config: SidecarConfig) -> bool:
    try:
        return stage.active(config)
    except Exception:  # when in doubt the stage runs, and its phases decide as they always did
        return True


#: Configs whose stages ``Stages.live`` remembers.
_SEEN = 8


class Stages:
    """Stages in their declared order, split by phase."""

    __slots__ = (
        "_config",
        "_live",
        "_seen",
        "all",
        "answer",
        "finish",
        "request",
        "response",
        "streams",
    )

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.all = tuple(stages)
        self.request = tuple(s for s in self.all if _overrides(s, "on_request"))
        self.response = tuple(s for s in self.all if _overrides(s, "on_response"))
        self.streams = tuple(s for s in self.all if _overrides(s, "stream_filter"))
        self.answer = tuple(s for s in self.all if _overrides(s, "on_answer"))
        self.finish = tuple(s for s in self.all if _overrides(s, "on_finish"))
        self._config: SidecarConfig | None = None
        self._live = self
        #: id(config) -> (config, its stages), for the requests of earlier configs still running.
        self._seen: dict[int, tuple[SidecarConfig, Stages]] = {}

    def live(self, config: SidecarConfig | None) -> Stages:
        """The stages a request that started with ``config`` passes: those ``active`` for it,
        in the same order and split (all of them without a config). Each config is asked about
        once: the last one worked out costs one identity check, the few before it (requests
        still running across a swap) a look-up. A stage whose ``active`` fails is kept."""
        if config is self._config:
            return self._live
        if config is None:
            return self
        hit = self._seen.get(id(config))
        if hit is not None and hit[0] is config:
            return hit[1]
        kept = [s for s in self.all if _active(s, config)]
        live = self if len(kept) == len(self.all) else Stages(kept)
        if len(self._seen) >= _SEEN:
            self._seen.clear()
        self._seen[id(config)] = (config, live)
        self._config, self._live = config, live
        return live

    def filters(self, ex: Exchange) -> list[DeltaFilter]:
        """The filters of one streamed choice of ``ex``, in stage order."""
        out = []
        for s in self.streams:
            f = s.stream_filter(ex)
            if f is not None:
                out.append(f)
        return out
