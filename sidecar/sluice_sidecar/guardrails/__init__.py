"""The guardrail stage: GuardrailPolicy checks on requests and answers (personal data, secrets,
deny patterns, prompt injection, length), with streamed answers checked through a holdback window.

Owns the public API of the package and ``GuardrailStage``: ``on_request`` runs the input checks
(it may replace ``ex.body`` or raise ``GuardrailBlocked``), ``on_response`` checks a unary answer
and ``stream_filter`` makes the per-choice filter of a stream. It compiles the config's
guardrails once per config (``Engine``) and records verdicts on ``Exchange.verdicts``. Pure: no
IO (the ``external`` classifier is not run yet).

Modules: ``detectors`` (entity kinds → spans), ``redact`` (spans → placeholders), ``holdback``
(the streaming redactor), ``canonical`` and ``injection`` (prompt-injection scoring), ``policy``
(selection, actions, verdicts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..contract import Guardrail
from ..errors import GuardrailBlocked, SluiceError
from ..exchange import Exchange
from ..stage import DeltaFilter, Stage, UnaryAnswer
from .canonical import Canonical, canonicalize
from .detectors import ENTITIES, Scanner, Span, detect
from .holdback import HoldbackRedactor, Released
from .injection import InjectionScore, score
from .policy import Engine, InputResult, OutputFilter, OutputResult
from .redact import redact

__all__ = [
    "ENTITIES",
    "Canonical",
    "Engine",
    "GuardrailBlocked",
    "GuardrailStage",
    "HoldbackRedactor",
    "InjectionScore",
    "InputResult",
    "OutputFilter",
    "OutputResult",
    "Released",
    "Scanner",
    "Span",
    "canonicalize",
    "detect",
    "redact",
    "score",
]


class GuardrailStage(Stage):
    """The guardrail stage of one sidecar (one workload: ``pod_labels``): input checks
    (``on_request``), output checks on whole answers (``on_response``) and on streams
    (``stream_filter``). The compiled ``Engine`` is rebuilt only when the config's
    ``guardrails`` object changes."""

    name = "guardrails"
    __slots__ = ("_engine", "_labels", "_source")

    def __init__(self, pod_labels: Mapping[str, str]) -> None:
        self._labels = dict(pod_labels)
        self._source: Sequence[Guardrail] | None = None
        self._engine = Engine((), self._labels)

    def engine(self, guardrails: Sequence[Guardrail]) -> Engine:
        if guardrails is not self._source:
            self._engine = Engine(guardrails, self._labels)
            self._source = guardrails
        return self._engine

    def _for(self, ex: Exchange) -> Engine | None:
        config = ex.config
        if config is None or ex.route is None or not config.guardrails:
            return None
        engine = self.engine(config.guardrails)
        return None if engine.empty else engine

    async def on_request(self, ex: Exchange) -> None:
        """Input guardrails: record verdicts; redact (a new ``ex.body``) or raise the block.
        A request whose answer has output checks is not passed through in the client's own
        dialect (the checks read the canonical answer)."""
        engine = self._for(ex)
        if engine is None:
            return
        route = ex.route
        assert route is not None
        result = engine.check_input(ex.body, route.name, route.source, ex.operation)
        ex.verdicts.extend(result.verdicts)
        if result.blocked is not None:
            raise result.blocked
        if result.body is not ex.body:
            ex.body = result.body
        if ex.native is not None and not engine.plan("output", route.name, route.source).empty:
            ex.native = None

    def on_response(self, ex: Exchange, answer: UnaryAnswer) -> None:
        """Output guardrails on a whole chat completion: redacted, or emptied with
        ``finish_reason: content_filter``."""
        engine = self._for(ex)
        if engine is None or ex.operation != "chat":
            return
        route = ex.route
        assert route is not None
        if engine.plan("output", route.name, route.source).empty:
            return
        body = answer.body
        if body is None:
            return
        out, verdicts = engine.filter_completion(body, route.name, route.source)
        ex.verdicts.extend(verdicts)
        if out is not body:
            answer.replace(out)

    def stream_filter(self, ex: Exchange) -> DeltaFilter | None:
        """Output guardrails over one streamed choice (holdback, buffer or audit)."""
        engine = self._for(ex)
        if engine is None:
            return None
        route = ex.route
        assert route is not None
        flt = engine.output_filter(route.name, route.source)
        return None if flt is None else _Recorded(flt, ex)


class _Recorded:
    """An ``OutputFilter`` whose verdicts go to the exchange when the choice finishes."""

    __slots__ = ("_ex", "_flt")

    def __init__(self, flt: OutputFilter, ex: Exchange) -> None:
        self._flt = flt
        self._ex = ex

    @property
    def blocked(self) -> SluiceError | None:
        return self._flt.blocked

    def feed(self, text: str) -> str:
        return self._flt.feed(text)

    def finish(self) -> str:
        out = self._flt.finish()
        self._ex.verdicts.extend(self._flt.verdicts)
        return out
