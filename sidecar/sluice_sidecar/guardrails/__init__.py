"""The guardrail stage: GuardrailPolicy checks on requests and answers (personal data, secrets,
deny patterns, prompt injection, length), with streamed answers checked through a holdback window.

Owns the public API of the package and ``GuardrailStage``: ``on_request`` runs the input checks
(it may replace ``ex.body`` or raise ``GuardrailBlocked``) and then the policies' ``external``
classifiers, ``on_response`` checks a unary answer and ``stream_filter`` makes the filter of each
streamed text (a choice's content, each tool call's arguments). It compiles the config's
guardrails once per config (``Engine``) and records verdicts on ``Exchange.verdicts``.

``restore``: the numbered placeholders of one request (``restore.Placeholders``) are kept here,
keyed by the exchange, from ``on_request`` until ``on_finish`` — never on the exchange's
annotations, which are audited. Answers get the originals back after the output checks ran.

``Monitor``: every verdict is counted (``counts``), logged (one line per request, logger
``sluice.guardrails``, never the text) and audited like any other; nothing is changed.

Modules: ``detectors`` (entity kinds → spans), ``redact`` (spans → placeholders), ``holdback``
(the streaming redactor), ``restore`` (placeholders back to originals), ``canonical`` and
``injection`` (prompt-injection scoring), ``policy`` (selection, actions, verdicts) and
``external`` (the classifier call: the only IO here).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..contract import Guardrail
from ..errors import GuardrailBlocked, SluiceError
from ..exchange import Exchange
from ..stage import DeltaFilter, Stage, UnaryAnswer
from . import external
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
    __slots__ = ("_engine", "_labels", "_restore", "_source", "counts")

    def __init__(self, pod_labels: Mapping[str, str]) -> None:
        self._labels = dict(pod_labels)
        self._source: Sequence[Guardrail] | None = None
        self._engine = Engine((), self._labels)
        #: id(exchange) -> (exchange, placeholder -> original), from on_request to on_finish.
        self._restore: dict[int, tuple[Exchange, dict[str, str]]] = {}
        #: Every verdict recorded, enforced or not (``CountKey``).
        self.counts: Counter[CountKey] = Counter()

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
        if ex.native is not None and not engine.plan("output", route.name, route.source).empty:
            ex.native = None
        await self._external(ex, engine)

    async def _external(self, ex: Exchange, engine: Engine) -> None:
        route = ex.route
        assert route is not None
        checks = [
            (g, g.input.external)
            for g in engine.covering(route.name, route.source)
            if g.input.external is not None
        ]
        if not checks:
            return
        texts = request_texts(ex.body, ex.operation, engine.pii_roles)
        answers = await asyncio.gather(
            *(external.classify(check, g.name, "input", texts) for g, check in checks)
        )
        blocked: GuardrailBlocked | None = None
        for (g, check), answer in zip(checks, answers, strict=True):
            enforced = g.mode == "Enforce"
            v: dict[str, Any] = {
                "policy": g.name,
                "stage": "input",
                "check": "external",
                "mode": g.mode,
                "enforced": enforced,
            }
            if isinstance(answer, external.Down):
                stops = check.failure_mode == "Closed"
                v |= {"action": "Block" if stops else "Allow", "failure": answer.reason}
                v["failureMode"] = check.failure_mode
                detail = f"classifier unavailable ({answer.reason})"
            else:
                stops = answer.flagged
                v |= {"action": "Block" if stops else "Allow", "flagged": answer.flagged}
                if answer.categories:
                    v["categories"] = list(answer.categories)
                if answer.score is not None:
                    v["score"] = answer.score
                detail = ", ".join(answer.categories)
            ex.verdicts.append(v)
            if stops and enforced and blocked is None:
                blocked = GuardrailBlocked(g.name, "input", "external", detail)
        if blocked is not None:
            raise blocked

    def on_response(self, ex: Exchange, answer: UnaryAnswer) -> None:
        """Output guardrails on a whole chat completion: redacted, or emptied with
        ``finish_reason: content_filter``; then the request's originals restored."""
        engine = self._for(ex)
        if engine is None or ex.operation != "chat":
            return
        route = ex.route
        assert route is not None
        originals = self._originals(ex)
        if originals is None and engine.plan("output", route.name, route.source).empty:
            return
        body = answer.body
        if body is None:
            return
        out, verdicts = engine.filter_completion(body, route.name, route.source)
        ex.verdicts.extend(verdicts)
        if originals:
            out = _restored(out, originals)
        if out is not body:
            answer.replace(out)

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
        recorded = None if flt is None else _Recorded(flt, ex)
        if not originals:
            return recorded
        return Restorer(originals) if recorded is None else _Then(recorded, Restorer(originals))

    def on_finish(self, ex: Exchange) -> None:
        """Forget the request's originals; count and log its verdicts."""
        self._restore.pop(id(ex), None)
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
