"""The guardrail stage: GuardrailPolicy checks on requests and answers (personal data, secrets,
deny patterns, prompt injection, length), with streamed answers checked through a holdback window.

Owns the public API of the package and ``GuardrailStage``: ``on_request`` runs the input checks
(it may replace ``ex.body`` or raise ``GuardrailBlocked``) and then the policies' ``external``
classifiers, ``on_response`` checks a unary answer, ``on_answer`` (async, after
``on_response``) asks the ``output.external`` classifiers about it, and ``stream_filter`` makes
the filter of each streamed text (a choice's content, each tool call's arguments; with
``output.external`` classifiers it has an async ``settle``, awaited before ``finish``). It
compiles the config's guardrails once per config (``Engine``) and records verdicts on
``Exchange.verdicts``. An answer whose classifiers were not asked is blocked (``review``).

``restore``: the numbered placeholders of one request (``restore.Placeholders``) are kept here,
keyed by the exchange, from ``on_request`` until ``on_finish`` — never on the exchange's
annotations, which are audited. Answers get the originals back after the output checks ran.

``Monitor``: every verdict is counted (``counts``), logged (one line per request, logger
``sluice.guardrails``, never the text) and audited like any other; nothing is changed.

Modules: ``detectors`` (entity kinds → spans), ``redact`` (spans → placeholders), ``holdback``
(the streaming redactor), ``restore`` (placeholders back to originals), ``canonical`` and
``injection`` (prompt-injection scoring), ``policy`` (selection, actions, verdicts),
``review`` (the ``external`` classifiers applied to requests and answers), ``external`` (the
classifier call: the only IO here) and ``stats`` (verdict counts for the usage report).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..contract import Guardrail, SidecarConfig
from ..errors import GuardrailBlocked, SluiceError
from ..exchange import Exchange
from ..stage import DeltaFilter, Stage, UnaryAnswer
from . import review
from .canonical import Canonical, canonicalize
from .detectors import ENTITIES, Scanner, Span, detect
from .holdback import HoldbackRedactor, Released
from .injection import InjectionScore, score
from .policy import Engine, InputResult, OutputFilter, OutputResult, request_texts, tool_arguments
from .redact import redact
from .restore import Restorer, restore_text

log = logging.getLogger("sluice.guardrails")
#: (policy, stage, check, action, enforced) → verdicts counted since start.
CountKey = tuple[str, str, str, str, bool]

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
    __slots__ = ("_engine", "_held", "_labels", "_restore", "_source", "counts")

    def __init__(self, pod_labels: Mapping[str, str]) -> None:
        self._labels = dict(pod_labels)
        self._source: Sequence[Guardrail] | None = None
        self._engine = Engine((), self._labels)
        #: id(exchange) -> (exchange, placeholder -> original), from on_request to on_finish.
        self._restore: dict[int, tuple[Exchange, dict[str, str]]] = {}
        #: id(exchange) -> (exchange, a whole answer waiting for its classifiers), from
        #: on_response to on_answer.
        self._held: dict[int, tuple[Exchange, _Held]] = {}
        #: Every verdict recorded, enforced or not (``CountKey``).
        self.counts: Counter[CountKey] = Counter()

    def engine(self, guardrails: Sequence[Guardrail]) -> Engine:
        if guardrails is not self._source:
            self._engine = Engine(guardrails, self._labels)
            self._source = guardrails
        return self._engine

    def active(self, config: SidecarConfig) -> bool:
        """Idle (every phase returns at once, ``_for``) when no guardrail selects this pod."""
        return bool(config.guardrails) and not self.engine(config.guardrails).empty

    def _for(self, ex: Exchange) -> Engine | None:
        config = ex.config
        if config is None or ex.route is None or not config.guardrails:
            return None
        engine = self.engine(config.guardrails)
        return None if engine.empty else engine

    def _originals(self, ex: Exchange) -> dict[str, str] | None:
        got = self._restore.get(id(ex))
        return got[1] if got is not None and got[0] is ex else None

    async def on_request(self, ex: Exchange) -> None:
        """Input guardrails: record verdicts; redact (a new ``ex.body``) or raise the block;
        then the ``external`` classifiers. A request whose answer has output checks or gets
        originals restored is not passed through in the client's own dialect (the checks read
        the canonical answer)."""
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
        if result.placeholders:
            self._restore[id(ex)] = (ex, result.placeholders.originals)
            ex.native = None
        covering = engine.covering(route.name, route.source)
        if ex.native is not None and (
            not engine.plan("output", route.name, route.source).empty
            or any(g.output.external is not None for g in covering)
        ):
            ex.native = None
        checks = [
            (g, g.input.external, g.mode == "Enforce")
            for g in covering
            if g.input.external is not None
        ]
        if checks:
            texts = request_texts(ex.body, ex.operation, engine.pii_roles)
            verdicts, blocked = await review.classify_all(checks, "input", texts)
            ex.verdicts.extend(verdicts)
            if blocked is not None:
                raise blocked

    def on_response(self, ex: Exchange, answer: UnaryAnswer) -> None:
        """Output guardrails on a whole chat completion: redacted, or emptied with
        ``finish_reason: content_filter``; then the request's originals restored. An answer
        with ``output.external`` classifiers is held (emptied, ``content_filter``) until
        ``on_answer`` has their verdicts; an answer that is not JSON is blocked."""
        engine = self._for(ex)
        if engine is None or ex.operation != "chat":
            return
        route = ex.route
        assert route is not None
        originals = self._originals(ex)
        checks = review.output_checks(engine.covering(route.name, route.source), stream=False)
        plan = engine.plan("output", route.name, route.source)
        if originals is None and plan.empty and not checks:
            return
        body = answer.body
        if body is None:  # never passed unchecked
            if not plan.empty or any(enforced for _, _, enforced in checks):
                answer.replace(review.held_completion(None))
            return
        out, verdicts = engine.filter_completion(body, route.name, route.source)
        ex.verdicts.extend(verdicts)
        texts = review.answer_texts(out) if checks else []
        if originals:
            out = _restored(out, originals)
        if texts:  # the classifier reads the answer without the restored originals
            holding = any(enforced for _, _, enforced in checks)
            self._held[id(ex)] = (ex, _Held(checks, texts, out, holding))
            if holding:
                answer.replace(review.held_completion(out))
                return
        if out is not body:
            answer.replace(out)

    async def on_answer(self, ex: Exchange, answer: UnaryAnswer) -> None:
        """The ``output.external`` classifiers on a whole answer (after ``on_response``, before
        it is sent): the answer is released, or stays blocked (``content_filter``)."""
        got = self._held.pop(id(ex), None)
        if got is None or got[0] is not ex:
            return
        held = got[1]
        verdicts, blocked = await review.classify_all(held.checks, "output", held.texts)
        ex.verdicts.extend(verdicts)
        if blocked is None and held.holding:
            answer.replace(held.body)

    def stream_filter(self, ex: Exchange) -> DeltaFilter | None:
        """Output guardrails over one streamed text (holdback, buffer or audit), then the
        request's originals restored."""
        engine = self._for(ex)
        if engine is None:
            return None
        route = ex.route
        assert route is not None
        flt = engine.output_filter(route.name, route.source)
        originals = self._originals(ex)
        recorded: DeltaFilter | None = None if flt is None else _Recorded(flt, ex)
        checks = review.output_checks(engine.covering(route.name, route.source), stream=True)
        if checks:
            buffer = any(g.streaming_mode == "Buffer" for g, _, on in checks if on)
            recorded = review.ExternalFilter(recorded, checks, buffer, ex.verdicts.extend)
        if not originals:
            return recorded
        return Restorer(originals) if recorded is None else _Then(recorded, Restorer(originals))

    def on_finish(self, ex: Exchange) -> None:
        """Forget the request's originals; count and log its verdicts (an answer whose
        classifiers were never asked stayed blocked: recorded as ``notConsulted``)."""
        self._restore.pop(id(ex), None)
        held = self._held.pop(id(ex), None)
        if held is not None and held[0] is ex:
            ex.verdicts.extend(review.unasked_verdicts(held[1].checks, "output"))
        if not ex.verdicts:
            return
        for v in ex.verdicts:
            key = (
                str(v.get("policy")),
                str(v.get("stage")),
                str(v.get("check")),
                str(v.get("action")),
                bool(v.get("enforced")),
            )
            self.counts[key] += 1
        if log.isEnabledFor(logging.INFO) and any(v.get("action") != "Allow" for v in ex.verdicts):
            log.info(
                "request %s guardrails %s",
                ex.request_id,
                json.dumps(ex.verdicts, separators=(",", ":"), sort_keys=True),
            )


@dataclass(frozen=True, slots=True)
class _Held:
    """A whole answer waiting for its ``output.external`` classifiers: what they read, and the
    answer to send when they allow it (``holding``: it is blocked until then)."""

    checks: list[review.Check]
    texts: list[str]
    body: dict[str, Any]
    holding: bool


def _restored(completion: dict[str, Any], originals: Mapping[str, str]) -> dict[str, Any]:
    """A chat completion with the placeholders in each message's content and tool-call
    arguments replaced by their originals (the same object when there were none)."""
    choices = completion.get("choices")
    if not isinstance(choices, list):
        return completion
    out: list[Any] = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            out.append(choice)
            continue
        new = dict(message)
        if isinstance(message.get("content"), str):
            new["content"] = restore_text(message["content"], originals)
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            new_calls: list[Any] = []
            for call in calls:
                args = tool_arguments(call)
                if args is None:
                    new_calls.append(call)
                    continue
                fn = {**call["function"], "arguments": restore_text(args, originals)}
                new_calls.append({**call, "function": fn})
            new["tool_calls"] = new_calls
        out.append({**choice, "message": new})
    if out == choices:
        return completion
    return {**completion, "choices": out}


class _Then:
    """Two filters in a row: what the first releases goes through the second."""

    __slots__ = ("_a", "_b")

    def __init__(self, a: DeltaFilter, b: DeltaFilter) -> None:
        self._a = a
        self._b = b

    @property
    def blocked(self) -> SluiceError | None:
        return self._a.blocked or self._b.blocked

    def feed(self, text: str) -> str:
        out = self._a.feed(text)
        if self._a.blocked is not None:
            return ""
        return self._b.feed(out) if out else ""

    def finish(self) -> str:
        tail = self._a.finish()
        if self._a.blocked is not None:
            return ""
        return (self._b.feed(tail) if tail else "") + self._b.finish()

    async def settle(self) -> None:
        settle = getattr(self._a, "settle", None)
        if settle is not None:
            await settle()


class _Recorded:
    """An ``OutputFilter`` whose verdicts go to the exchange when the text finishes."""

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
