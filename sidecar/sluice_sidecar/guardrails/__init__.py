"""Guardrails: GuardrailPolicy checks on requests and answers (personal data, secrets, deny
patterns, prompt injection, length), with streamed answers checked through a holdback window.

Owns the public API of the package and ``Guardrails``, the seam the pipeline wires in: its
``before_backend`` is a ``runtime.Hooks.before_backend`` hook (input checks; it may replace
``ex.body`` or raise ``GuardrailBlocked``), ``filter_completion`` checks a unary answer and
``output_filter`` makes the per-stream filter. It compiles the current config's guardrails once
per config (``Engine``) and records verdicts on ``Exchange.verdicts``. Pure: no IO.

Modules: ``detectors`` (entity kinds → spans), ``redact`` (spans → placeholders), ``holdback``
(the streaming redactor), ``canonical`` and ``injection`` (prompt-injection scoring), ``policy``
(selection, actions, verdicts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..contract import Guardrail
from .canonical import Canonical, canonicalize
from .detectors import ENTITIES, Scanner, Span, detect
from .holdback import HoldbackRedactor, Released
from .injection import InjectionScore, score
from .policy import Engine, GuardrailBlocked, InputResult, OutputFilter, OutputResult
from .redact import redact

if TYPE_CHECKING:
    from ..exchange import Exchange

__all__ = [
    "ENTITIES",
    "Canonical",
    "Engine",
    "GuardrailBlocked",
    "Guardrails",
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
    "make_hooks",
    "redact",
    "score",
]


class Guardrails:
    """The pipeline's guardrail stage for one sidecar (one workload: ``pod_labels``).

    ``current`` returns the guardrails of the config in force (``snapshot.config.guardrails``);
    the compiled ``Engine`` is rebuilt only when that object changes.
    """

    __slots__ = ("_current", "_engine", "_labels", "_source")

    def __init__(
        self, current: Callable[[], Sequence[Guardrail]], pod_labels: Mapping[str, str]
    ) -> None:
        self._current = current
        self._labels = dict(pod_labels)
        self._source: Sequence[Guardrail] | None = None
        self._engine = Engine((), self._labels)

    def engine(self) -> Engine:
        guardrails = self._current()
        if guardrails is not self._source:
            self._engine = Engine(guardrails, self._labels)
            self._source = guardrails
        return self._engine

    async def before_backend(self, ex: Exchange) -> None:
        """Input guardrails: record verdicts; redact (a new ``ex.body``) or raise the block."""
        route = ex.route
        if route is None:
            return
        engine = self.engine()
        if engine.empty:
            return
        result = engine.check_input(ex.body, route.name, route.source, ex.operation)
        ex.verdicts.extend(result.verdicts)
        if result.blocked is not None:
            raise result.blocked
        if result.body is not ex.body:
            ex.body = result.body

    def filter_completion(self, ex: Exchange, completion: dict[str, Any]) -> dict[str, Any]:
        """A unary chat completion (OpenAI shape) after the output guardrails; verdicts go to
        ``ex.verdicts``. The same object comes back when nothing changed."""
        route = ex.route
        engine = self.engine()
        if route is None or engine.empty:
            return completion
        out, verdicts = engine.filter_completion(completion, route.name, route.source)
        ex.verdicts.extend(verdicts)
        return out

    def output_filter(self, ex: Exchange) -> OutputFilter | None:
        """A filter for one streamed choice of ``ex``'s answer, or None when no output check
        applies. After ``finish()``, extend ``ex.verdicts`` with its ``verdicts``."""
        route = ex.route
        engine = self.engine()
        if route is None or engine.empty:
            return None
        return engine.output_filter(route.name, route.source)


def make_hooks(
    current: Callable[[], Sequence[Guardrail]], pod_labels: Mapping[str, str]
) -> Guardrails:
    """The guardrail stage; pass ``.before_backend`` in ``runtime.Hooks.before_backend``."""
    return Guardrails(current, pod_labels)
