"""The ``external`` classifiers applied to traffic: which policies ask theirs, on which texts,
the verdicts, and how an answer is held until its classifiers have spoken.

Owns ``classify_all`` (every covering policy's classifier asked at once for one stage; their
verdicts and the block), ``answer_texts`` and ``held_completion`` (a whole answer: its texts as
the classifier reads them, and the answer as it stands while they have not been asked) and
``ExternalFilter`` (one streamed text: what the classifiers read, released only once they have
been asked). The HTTP call itself is ``external``'s.

Never fails open: an enforced classifier that has not been asked counts as a block. So a whole
answer is held (``finish_reason: content_filter``, no text, no tool call) from the response
phase until ``GuardrailStage.on_answer`` got the classifiers' verdicts, and a stream's end (its
held text, ``finish_reason`` and ``[DONE]``) until ``ExternalFilter.settle`` did: a request
path that does not call them blocks every answer of a policy with ``output.external`` instead
of passing it unchecked.

Streams: each streamed text (the content, each tool call's arguments) is classified whole when
it ends, before the last of it is released. Under ``streaming.mode: Holdback`` (the default)
the text streams as the other checks release it and the classifier can stop only its end (the
choice then ends with ``content_filter``); under ``Buffer`` nothing of the text is released
before the classifiers allowed it; under ``Audit`` (and for a ``Monitor`` policy) they are asked
and their verdicts recorded, and nothing is held or blocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..contract import ExternalCheck, Guardrail
from ..errors import GuardrailBlocked, SluiceError
from ..stage import DeltaFilter
from . import external
from .policy import blocked_message, tool_arguments

#: (policy, its classifier, enforced: its verdict may block)
Check = tuple[Guardrail, ExternalCheck, bool]


def output_checks(policies: Sequence[Guardrail], stream: bool) -> list[Check]:
    """The ``output.external`` classifiers of ``policies``; a streamed answer's are not
    enforced under ``streaming.mode: Audit``."""
    return [
        (g, g.output.external, g.mode == "Enforce" and not (stream and g.streaming_mode == "Audit"))
        for g in policies
        if g.output.external is not None
    ]


async def classify_all(
    checks: Sequence[Check], stage: str, texts: Sequence[str]
) -> tuple[list[dict[str, Any]], GuardrailBlocked | None]:
    """Ask every classifier at once: a verdict each, and the first enforced block."""
    answers = await asyncio.gather(
        *(external.classify(check, g.name, stage, texts) for g, check, _ in checks)
    )
    verdicts: list[dict[str, Any]] = []
    blocked: GuardrailBlocked | None = None
    for (g, check, enforced), answer in zip(checks, answers, strict=True):
        v, stops, detail = _verdict(g, check, stage, enforced, answer)
        verdicts.append(v)
        if stops and enforced and blocked is None:
            blocked = GuardrailBlocked(g.name, stage, "external", detail)
    return verdicts, blocked


def _verdict(
    g: Guardrail,
    check: ExternalCheck,
    stage: str,
    enforced: bool,
    answer: external.Classified | external.Down,
) -> tuple[dict[str, Any], bool, str]:
    v: dict[str, Any] = {
        "policy": g.name,
        "stage": stage,
        "check": "external",
        "mode": g.mode,
        "enforced": enforced,
    }
    if isinstance(answer, external.Down):
        stops = check.failure_mode == "Closed"
        v |= {"action": "Block" if stops else "Allow", "failure": answer.reason}
        v["failureMode"] = check.failure_mode
        return v, stops, f"classifier unavailable ({answer.reason})"
    v |= {"action": "Block" if answer.flagged else "Allow", "flagged": answer.flagged}
    if answer.categories:
        v["categories"] = list(answer.categories)
    if answer.score is not None:
        v["score"] = answer.score
    return v, answer.flagged, ", ".join(answer.categories)


def unasked_verdicts(checks: Sequence[Check], stage: str) -> list[dict[str, Any]]:
    """The verdicts of classifiers that could not be asked: a failure (``notConsulted``) that
    blocks when enforced, whatever ``failureMode`` says (it is not the service's fault)."""
    return [
        {
            "policy": g.name,
            "stage": stage,
            "check": "external",
            "mode": g.mode,
            "enforced": enforced,
            "action": "Block",
            "failure": "notConsulted",
            "failureMode": check.failure_mode,
        }
        for g, check, enforced in checks
    ]


def not_asked(checks: Sequence[Check], stage: str) -> GuardrailBlocked | None:
    """The block when the classifiers could not be asked at all (the request path did not give
    them the answer): the first enforced one's."""
    for g, _, enforced in checks:
        if enforced:
            return GuardrailBlocked(g.name, stage, "external", "classifier not consulted")
    return None


# --- whole answers ------------------------------------------------------------------------------


def answer_texts(completion: Mapping[str, Any]) -> list[str]:
    """The texts of a chat completion a classifier reads: each choice's content and the
    arguments of each of its tool calls."""
    texts: list[str] = []
    choices = completion.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("content"), str) and message["content"]:
            texts.append(message["content"])
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            args = tool_arguments(call)
            if args:
                texts.append(args)
    return texts


def held_completion(completion: Mapping[str, Any] | None) -> dict[str, Any]:
    """A chat completion as it stands while its classifiers have not allowed it (or when they
    blocked it): every choice without text or tool call, ``finish_reason: content_filter``. An
    answer that is not a JSON object becomes one such choice."""
    choices = completion.get("choices") if completion is not None else None
    if completion is None or not isinstance(choices, list) or not choices:
        return {
            **(completion or {"object": "chat.completion"}),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ""},
                    "finish_reason": "content_filter",
                }
            ],
        }
    out: list[Any] = []
    for i, item in enumerate(choices):
        choice = item if isinstance(item, dict) else {"index": i}
        message = choice.get("message")
        message = message if isinstance(message, dict) else {"role": "assistant"}
        blocked = {"message": blocked_message(message), "finish_reason": "content_filter"}
        out.append({**choice, **blocked})
    return {**completion, "choices": out}


# --- streams ------------------------------------------------------------------------------------


class ExternalFilter:
    """The classifiers over one streamed text, after ``inner`` (the other checks, the same
    stage's filter; None when there are none). ``feed`` as any ``DeltaFilter``; at the end
    ``await settle()`` (it classifies the whole text the client gets, before anything still
    held is released), then ``finish()`` returns the rest. ``finish`` without ``settle`` blocks
    when a classifier is enforced: never passed unchecked."""

    __slots__ = (
        "_blocked",
        "_buffer",
        "_checks",
        "_inner",
        "_parts",
        "_record",
        "_settled",
        "_tail",
        "verdicts",
    )

    def __init__(
        self,
        inner: DeltaFilter | None,
        checks: Sequence[Check],
        buffer: bool,
        record: Callable[[list[dict[str, Any]]], None] = lambda verdicts: None,
    ) -> None:
        self._inner = inner
        self._record = record
        self._checks = tuple(checks)
        self._buffer = buffer and any(enforced for _, _, enforced in checks)
        self._parts: list[str] = []
        self._settled = False
        self._tail = ""
        self._blocked: SluiceError | None = None
        #: The classifiers' verdicts, once ``settle`` asked them.
        self.verdicts: list[dict[str, Any]] = []

    @property
    def blocked(self) -> SluiceError | None:
        inner = self._inner.blocked if self._inner is not None else None
        return inner or self._blocked

    def feed(self, text: str) -> str:
        if self.blocked is not None or self._settled:
            return ""
        out = self._inner.feed(text) if self._inner is not None else text
        if self.blocked is not None:
            return ""
        if out:
            self._parts.append(out)
        return "" if self._buffer else out

    async def settle(self) -> None:
        """Classify the whole text (what the other checks let through); then ``finish`` says
        what is left to send."""
        if self._settled:
            return
        self._settled = True
        tail = self._inner.finish() if self._inner is not None else ""
        if self.blocked is not None:
            return
        if tail:
            self._parts.append(tail)
        text = "".join(self._parts)
        if not text:  # nothing was said (a choice's content before its tool calls)
            return
        self.verdicts, self._blocked = await classify_all(self._checks, "output", [text])
        self._record(self.verdicts)
        if self._blocked is None:
            self._tail = text if self._buffer else tail

    def finish(self) -> str:
        if not self._settled:  # nobody asked the classifiers: an enforced one blocks
            self._settled = True
            tail = self._inner.finish() if self._inner is not None else ""
            if self.blocked is None and not self._parts and not tail:
                return ""  # nothing was said: nothing to ask about
            if self.blocked is None:
                self.verdicts = unasked_verdicts(self._checks, "output")
                self._record(self.verdicts)
            self._blocked = self.blocked or not_asked(self._checks, "output")
            if self._blocked is not None:
                return ""
            return "".join([*self._parts, tail]) if self._buffer else tail
        if self.blocked is not None:
            return ""
        tail, self._tail = self._tail, ""
        return tail
