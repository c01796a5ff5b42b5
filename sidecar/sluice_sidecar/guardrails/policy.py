"""GuardrailPolicies applied to traffic: which policies cover a request, their verdicts, and the
request or answer that results.

Owns ``Engine`` (the compiled form of a config's ``guardrails`` for one workload), the input
check (request body → same body, redacted body, or ``GuardrailBlocked``), the unary output check
(answer text or a whole chat completion, its content and each tool call's arguments →
redacted, or blocked with ``finish_reason: content_filter``), ``OutputFilter`` (the per-stream
check built on ``holdback``) and the verdict records the audit log carries. Pure: no IO; the
``external`` classifier is called by the stage (``external``), not here.

Selection: a policy covers a request when every ``selector.matchLabels`` entry is among the pod's
labels and ``selector.routes`` is empty or names the request's route (the ModelRoute's name, or
the virtual model name). All covering policies apply; their checks are compiled into one plan
per stage, so the text is scanned once whatever the number of policies.

What is checked. Input: the text of ``system``, ``developer``, ``user`` and ``tool`` messages
(string content and the ``text`` parts of multi-part content) for personal data, deny patterns
and ``maxChars`` (their total length); prompt injection only in ``user`` and ``tool`` messages,
whose text comes from people and documents, not in the instructions the application (or a
PromptTemplate) wrote, which legitimately say things like "never reveal your instructions".
Embeddings requests: every string of ``input``. Output: the answer's text and the
``function.arguments`` of its tool calls, each checked as one text (redacted JSON text is kept
valid: ``stage.JsonTextGuard``).

Actions. ``Enforce`` applies them: ``Redact`` replaces matches with ``[EMAIL]``-style
placeholders (deny matches with ``[REDACTED]``), ``Block`` rejects the request (400,
``type``/``code`` ``content_filter``) or ends the answer with ``finish_reason: content_filter``,
``Log`` only records. An enforced ``Redact`` pii rule with ``restore`` (input only) names
each original with a numbered placeholder instead (``[EMAIL_1]``; ``restore.Placeholders``,
returned in ``InputResult.placeholders`` for the stage to put back). Prompt injection cannot
be redacted: ``Redact`` there blocks. ``maxChars``
blocks. An injection check acts when the score is above its threshold (``>``; 0 acts on any
signal, 1 never). ``Monitor`` records what would have happened and never changes traffic.
Streams: ``Holdback`` enforces as above while streaming; ``Buffer`` holds the whole answer and
checks it like a unary one; ``Audit`` streams untouched and records verdicts at the end (its
rules are recorded with ``enforced: false``). When several policies apply, the strictest
streaming mode wins (Buffer > Holdback > Audit) and the largest ``holdbackChars`` bounds deny
matches.

Verdict records (``Exchange.verdicts`` → the audit record's ``guardrails``): ``{"policy",
"stage", "check", "action", "mode", "enforced"}`` plus ``"entities": {"EMAIL": 2}`` (pii),
``"patterns": [0, 2], "matches": 3`` (deny: indexes of the policy's deny rules), ``"score",
"signals"`` (promptInjection; recorded with action ``Allow`` when it scored above 0 but not
above the threshold, which is how the false-positive budget is tracked) or ``"chars",
"limit"`` (maxChars). Never the matched text.
"""

from __future__ import annotations

import itertools
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar

from ..contract import GuardAction, Guardrail, GuardStage
from ..errors import GuardrailBlocked
from ..stage import JsonTextGuard
from .detectors import DENY_PREFIX, Scanner, Span
from .holdback import HoldbackRedactor
from .injection import InjectionScore, score
from .redact import apply, placeholder
from .restore import Placeholders

Stage = Literal["input", "output"]
StreamingMode = Literal["Holdback", "Buffer", "Audit"]

PII_ROLES: Final = frozenset({"system", "developer", "user", "tool"})
INJECTION_ROLES: Final = frozenset({"user", "tool"})
#: Texts longer than this are not cached (one long text would evict everything else).
_CACHE_MAX_CHARS: Final = 1 << 16
#: Per cache: about 25 conversations of 10 turns resending their messages; 2048 cost 2 MB more RSS
#: under load (bench/cpu_probe.py) for hits that a pod's one app rarely needs.
_CACHE_ENTRIES: Final = 256
_STRICTNESS: Final[dict[str, int]] = {"Audit": 0, "Holdback": 1, "Buffer": 2}

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _LRU(Generic[K, V]):
    """A small least-recently-used map (chat histories resend the same messages every turn)."""

    __slots__ = ("_data", "_size")

    def __init__(self, size: int = _CACHE_ENTRIES) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._size = size

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        if len(self._data) > self._size:
            self._data.popitem(last=False)


def _key(text: str) -> tuple[int, int]:
    return hash(text), len(text)


@dataclass(frozen=True, slots=True)
class Rule:
    """One check of one policy, as it applies to one stage."""

    policy: str
    check: Literal["pii", "deny", "promptInjection", "maxChars"]
    action: GuardAction
    mode: str
    enforced: bool
    #: Entity labels the rule covers (pii: entity kinds; deny: ``deny:<policy>#<i>``).
    labels: frozenset[str] = frozenset()
    threshold: float = 0.5
    limit: int = 0

    @property
    def blocks(self) -> bool:
        return self.enforced and self.action is not GuardAction.LOG

    def verdict(self, stage: Stage, **facts: Any) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "stage": stage,
            "check": self.check,
            "action": str(self.action),
            "mode": self.mode,
            "enforced": self.enforced,
            **facts,
        }


@dataclass(slots=True)
class Plan:
    """Every check that applies to one stage of one request, compiled for one pass."""

    stage: Stage
    rules: tuple[Rule, ...]
    scanner: Scanner
    #: Labels replaced in the text (enforced Redact rules).
    redact: frozenset[str]
    #: Labels that block (enforced Block rules).
    block: frozenset[str]
    streaming: StreamingMode = "Holdback"
    #: Labels replaced by numbered placeholders whose originals the answer gets back (input
    #: pii rules with ``restore``).
    restore: frozenset[str] = frozenset()
    _spans: _LRU[tuple[int, int], tuple[Span, ...]] = field(default_factory=_LRU)
    _scores: _LRU[tuple[int, int], InjectionScore] = field(default_factory=_LRU)

    @property
    def empty(self) -> bool:
        return not self.rules

    @property
    def scans(self) -> bool:
        return not self.scanner.empty

    @property
    def injection(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.check == "promptInjection")

    @property
    def max_chars(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.check == "maxChars")

    def spans(self, text: str) -> tuple[Span, ...]:
        if len(text) > _CACHE_MAX_CHARS:
            return tuple(self.scanner.find(text))
        key = _key(text)
        got = self._spans.get(key)
        if got is None:
            got = tuple(self.scanner.find(text))
            self._spans.put(key, got)
        return got

    def injection_score(self, text: str) -> InjectionScore:
        if len(text) > _CACHE_MAX_CHARS:
            return score(text)
        key = _key(text)
        got = self._scores.get(key)
        if got is None:
            got = score(text)
            self._scores.put(key, got)
        return got


# --- verdicts over found spans ------------------------------------------------------------------


def _span_verdicts(
    plan: Plan, counts: Mapping[str, int], deny_index: Mapping[str, int], first_block: str | None
) -> tuple[list[dict[str, Any]], Rule | None]:
    """Verdicts of the pii and deny rules for label counts, and the rule that blocks: the first
    enforced Block rule covering ``first_block``, the label of the earliest blocking match
    (earliest, so that a stream, which blocks at the first one it sees, agrees)."""
    verdicts: list[dict[str, Any]] = []
    blocking: Rule | None = None
    for rule in plan.rules:
        if rule.check not in ("pii", "deny"):
            continue
        hits = {label: n for label, n in counts.items() if label in rule.labels}
        if not hits:
            continue
        if rule.check == "pii":
            verdicts.append(rule.verdict(plan.stage, entities=dict(sorted(hits.items()))))
        else:
            verdicts.append(
                rule.verdict(
                    plan.stage,
                    patterns=sorted(deny_index[label] for label in hits),
                    matches=sum(hits.values()),
                )
            )
        if (
            blocking is None
            and first_block in hits
            and rule.blocks
            and rule.action is GuardAction.BLOCK
        ):
            blocking = rule
    return verdicts, blocking


def _injection_verdicts(
    plan: Plan, result: InjectionScore
) -> tuple[list[dict[str, Any]], Rule | None]:
    verdicts: list[dict[str, Any]] = []
    blocking: Rule | None = None
    if result.score <= 0.0:
        return verdicts, None
    for rule in plan.injection:
        above = result.score > rule.threshold
        v = rule.verdict(plan.stage, score=result.score, signals=list(result.signals))
        if not above:
            v["action"] = "Allow"
        verdicts.append(v)
        if above and rule.blocks and blocking is None:
            blocking = rule
    return verdicts, blocking


def _length_verdicts(plan: Plan, chars: int) -> tuple[list[dict[str, Any]], Rule | None]:
    verdicts: list[dict[str, Any]] = []
    blocking: Rule | None = None
    for rule in plan.max_chars:
        if chars > rule.limit:
            verdicts.append(rule.verdict(plan.stage, chars=chars, limit=rule.limit))
            if rule.blocks and blocking is None:
                blocking = rule
    return verdicts, blocking


def _blocked(plan: Plan, rule: Rule, counts: Mapping[str, int] | None = None) -> GuardrailBlocked:
    detail = ""
    if rule.check == "pii" and counts:
        detail = ", ".join(sorted(label for label in counts if label in rule.labels))
    return GuardrailBlocked(rule.policy, plan.stage, rule.check, detail)


def _first_block(plan: Plan, spans: Iterable[Span]) -> str | None:
    """The label of the first span (spans are sorted by start) that an enforced rule blocks."""
    return next((s.entity for s in spans if s.entity in plan.block), None)


def _count(spans: Iterable[Span], into: dict[str, int]) -> None:
    for s in spans:
        into[s.entity] = into.get(s.entity, 0) + 1


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputResult:
    """The request body to send (the same object when nothing changed), or why it is blocked."""

    body: dict[str, Any]
    verdicts: list[dict[str, Any]]
    blocked: GuardrailBlocked | None = None
    #: The request's numbered placeholders (``restore``), when any was sent.
    placeholders: Placeholders | None = None


@dataclass(frozen=True, slots=True)
class OutputResult:
    """The answer text to return (redacted), or ``blocked`` (return none of it)."""

    text: str
    verdicts: list[dict[str, Any]]
    blocked: GuardrailBlocked | None = None


# --- the engine ---------------------------------------------------------------------------------


def _compile_deny(policy: str, i: int, regex: str, problems: list[str]) -> re.Pattern[str] | None:
    try:
        return re.compile(regex)
    except re.error as exc:
        problems.append(f"policy {policy!r}: deny[{i}] regex does not compile ({exc}); ignored")
        return None


class Engine:
    """A config's guardrails compiled for one workload (its pod labels). Build one per config
    (``Guardrails`` in ``__init__`` caches it); plans per route are built on first use."""

    def __init__(
        self,
        guardrails: Sequence[Guardrail],
        pod_labels: Mapping[str, str] | None = None,
        *,
        pii_roles: Iterable[str] = PII_ROLES,
        injection_roles: Iterable[str] = INJECTION_ROLES,
    ) -> None:
        labels = dict(pod_labels or {})
        self.policies: tuple[Guardrail, ...] = tuple(
            g
            for g in guardrails
            if all(labels.get(k) == v for k, v in g.selector.match_labels.items())
        )
        self.pii_roles = frozenset(pii_roles)
        self.injection_roles = frozenset(injection_roles)
        #: Config problems found while compiling (a deny regex that does not compile).
        self.problems: list[str] = []
        self._deny: dict[tuple[str, Stage], tuple[re.Pattern[str] | None, ...]] = {}
        for g in self.policies:
            for stage in ("input", "output"):
                st: GuardStage = g.input if stage == "input" else g.output
                self._deny[(g.name, stage)] = tuple(
                    _compile_deny(g.name, i, d.regex, self.problems) for i, d in enumerate(st.deny)
                )
        self._plans: dict[tuple[Stage, bool, str, str], Plan] = {}

    @property
    def empty(self) -> bool:
        return not self.policies

    def covering(self, route: str, source: str | None = None) -> tuple[Guardrail, ...]:
        """The policies that apply to requests on ``route`` (virtual model name) whose
        ModelRoute is ``source``."""
        return tuple(
            g
            for g in self.policies
            if not g.selector.routes or route in g.selector.routes or source in g.selector.routes
        )

    def plan(
        self, stage: Stage, route: str, source: str | None = None, stream: bool = False
    ) -> Plan:
        key = (stage, stream, route, source or "")
        got = self._plans.get(key)
        if got is None:
            got = self._plans[key] = self._build(stage, route, source, stream)
        return got

    def _build(self, stage: Stage, route: str, source: str | None, stream: bool) -> Plan:
        rules: list[Rule] = []
        entities: set[str] = set()
        deny: list[tuple[str, re.Pattern[str]]] = []
        streaming: StreamingMode = "Audit"
        window = 1
        for g in self.covering(route, source):
            st = g.input if stage == "input" else g.output
            audit = stream and stage == "output" and g.streaming_mode == "Audit"
            enforced = g.mode == "Enforce" and not audit
            mode = g.mode
            has_checks = False
            if st.pii is not None:
                has_checks = True
                kinds = frozenset(st.pii.entities)
                entities |= kinds
                rules.append(Rule(g.name, "pii", st.pii.action, mode, enforced, kinds))
            for i, (d, pattern) in enumerate(
                zip(st.deny, self._deny[(g.name, stage)], strict=True)
            ):
                has_checks = True
                if pattern is None:
                    continue
                label = f"{DENY_PREFIX}{g.name}#{i}"
                deny.append((label[len(DENY_PREFIX) :], pattern))
                rules.append(Rule(g.name, "deny", d.action, mode, enforced, frozenset({label})))
                window = max(window, g.holdback_chars)
            if st.prompt_injection is not None:
                has_checks = True
                pi = st.prompt_injection
                action = GuardAction.BLOCK if pi.action is GuardAction.REDACT else pi.action
                rules.append(
                    Rule(g.name, "promptInjection", action, mode, enforced, threshold=pi.threshold)
                )
            if st.max_chars is not None:
                has_checks = True
                rules.append(
                    Rule(g.name, "maxChars", GuardAction.BLOCK, mode, enforced, limit=st.max_chars)
                )
            if has_checks and enforced and _STRICTNESS[g.streaming_mode] > _STRICTNESS[streaming]:
                streaming = g.streaming_mode
        redact: set[str] = set()
        block: set[str] = set()
        for r in rules:
            if r.enforced and r.check in ("pii", "deny"):
                if r.action is GuardAction.REDACT:
                    redact |= r.labels
                elif r.action is GuardAction.BLOCK:
                    block |= r.labels
        restore: set[str] = set()
        if stage == "input":
            for g in self.covering(route, source):
                pii = g.input.pii
                if g.mode == "Enforce" and pii is not None and pii.restore:
                    restore |= set(pii.entities) & redact
        return Plan(
            stage,
            tuple(rules),
            Scanner(entities, deny, window),
            frozenset(redact),
            frozenset(block),
            streaming,
            frozenset(restore),
        )

    # --- input ---------------------------------------------------------------------------------

    def check_input(
        self,
        body: dict[str, Any],
        route: str,
        source: str | None = None,
        operation: str = "chat",
    ) -> InputResult:
        """The verdicts on a request body; the body to send or the block."""
        plan = self.plan("input", route, source)
        if plan.empty:
            return InputResult(body, [])
        parts = list(_parts(body, operation))
        scanned = [(where, text) for where, role, text in parts if role in self.pii_roles]
        verdicts, blocking = _length_verdicts(plan, sum(len(t) for _, t in scanned))
        if blocking is not None:  # too long: do not spend CPU scanning it
            return InputResult(body, verdicts, _blocked(plan, blocking))
        counts: dict[str, int] = {}
        replaced: dict[tuple[Any, int | None], str] = {}
        first_block: str | None = None
        holders = Placeholders() if plan.restore else None
        name = None if holders is None else _namer(plan.restore, holders)
        if plan.scans:
            for where, text in scanned:
                spans = plan.spans(text)
                if not spans:
                    continue
                _count(spans, counts)
                if first_block is None:
                    first_block = _first_block(plan, spans)
                shown = [s for s in spans if s.entity in plan.redact]
                if shown:
                    replaced[where] = apply(text, shown, name=name)
        span_v, span_block = _span_verdicts(plan, counts, _deny_index(plan), first_block)
        verdicts += span_v
        blocking = span_block
        if plan.injection:
            best = InjectionScore(0.0)
            for _, role, text in parts:
                if role in self.injection_roles:
                    got = plan.injection_score(text)
                    if got.score > best.score:
                        best = got
            inj_v, inj_block = _injection_verdicts(plan, best)
            verdicts += inj_v
            blocking = blocking or inj_block
        if blocking is not None:
            return InputResult(body, verdicts, _blocked(plan, blocking, counts))
        if not replaced:
            return InputResult(body, verdicts)
        return InputResult(
            _rewrite(body, replaced, operation), verdicts, placeholders=holders or None
        )

    # --- output --------------------------------------------------------------------------------

    def check_output(self, text: str, route: str, source: str | None = None) -> OutputResult:
        """The verdicts on a whole (unary) answer; the text to return or the block."""
        return evaluate_text(self.plan("output", route, source), text)

    def filter_completion(
        self, completion: dict[str, Any], route: str, source: str | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A unary chat completion with each choice's ``message.content`` and the
        ``arguments`` of each of its ``tool_calls`` checked (each text on its own, as a stream
        checks them): redacted, or blocked — content emptied, tool calls dropped,
        ``finish_reason: content_filter``. The same object comes back when nothing changed."""
        plan = self.plan("output", route, source)
        choices = completion.get("choices")
        if plan.empty or not isinstance(choices, list):
            return completion, []
        verdicts: list[dict[str, Any]] = []
        new_choices: list[Any] = []
        changed = False
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                new_choices.append(choice)
                continue
            assert isinstance(choice, dict)
            new_message, blocked = _filter_message(plan, message, verdicts)
            if new_message is message:
                new_choices.append(choice)
                continue
            changed = True
            new_choice = {**choice, "message": new_message}
            if blocked:
                new_choice["finish_reason"] = "content_filter"
            new_choices.append(new_choice)
        if not changed:
            return completion, verdicts
        return {**completion, "choices": new_choices}, verdicts

    def output_filter(self, route: str, source: str | None = None) -> OutputFilter | None:
        """A filter for one streamed answer (one per choice index), or None when no output
        check applies."""
        plan = self.plan("output", route, source, stream=True)
        return None if plan.empty else OutputFilter(plan)


def _filter_message(
    plan: Plan, message: dict[str, Any], verdicts: list[dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """One answer message checked: the message to return (``message`` itself when unchanged)
    and whether it is blocked."""
    out = message
    content = message.get("content")
    if isinstance(content, str):
        result = evaluate_text(plan, content)
        verdicts += result.verdicts
        if result.blocked is not None:
            return blocked_message(message), True
        if result.text != content:
            out = {**message, "content": result.text}
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return out, False
    new_calls: list[Any] = []
    for call in calls:
        args = tool_arguments(call)
        if args is None:
            new_calls.append(call)
            continue
        result = evaluate_text(plan, args)
        verdicts += result.verdicts
        if result.blocked is not None:
            return blocked_message(message), True
        text = json_text(result.text)
        if text == args:
            new_calls.append(call)
        else:
            new_calls.append({**call, "function": {**call["function"], "arguments": text}})
    if any(a is not b for a, b in zip(new_calls, calls, strict=True)):
        out = {**out, "tool_calls": new_calls}
    return out, False


def blocked_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A blocked answer: no text, and no tool call (it must not run)."""
    out = {k: v for k, v in message.items() if k not in ("tool_calls", "function_call")}
    out["content"] = ""
    return out


def tool_arguments(call: Any) -> str | None:
    """The ``function.arguments`` text of one tool call, when it has one."""
    fn = call.get("function") if isinstance(call, dict) else None
    args = fn.get("arguments") if isinstance(fn, dict) else None
    return args if isinstance(args, str) else None


def json_text(text: str) -> str:
    """Redacted JSON text (tool-call arguments) kept valid: a placeholder that follows a
    backslash (a match that began right after an escape such as ``\\n``) gets the backslash
    escaped, so the JSON still parses (the escape's letter went with the match)."""
    guard = JsonTextGuard()
    return guard.feed(text) + guard.finish()


def _namer(restore: frozenset[str], holders: Placeholders) -> Callable[[Span, str], str]:
    def name(span: Span, original: str) -> str:
        if span.entity in restore:
            return holders.name(span, original)
        return placeholder(span.entity)

    return name


def _deny_index(plan: Plan) -> dict[str, int]:
    """deny label -> index of the rule among its policy's deny rules."""
    return {
        label: int(label.rpartition("#")[2])
        for r in plan.rules
        if r.check == "deny"
        for label in r.labels
    }


def evaluate_text(plan: Plan, text: str) -> OutputResult:
    """All of ``plan``'s checks on one whole text (an answer, or a Buffer/Audit stream)."""
    if plan.empty:
        return OutputResult(text, [])
    verdicts, blocking = _length_verdicts(plan, len(text))
    if blocking is not None:
        return OutputResult("", verdicts, _blocked(plan, blocking))
    counts: dict[str, int] = {}
    out = text
    first_block: str | None = None
    if plan.scans:
        spans = plan.spans(text)
        _count(spans, counts)
        first_block = _first_block(plan, spans)
        shown = [s for s in spans if s.entity in plan.redact]
        if shown:
            out = apply(text, shown)
    span_v, blocking = _span_verdicts(plan, counts, _deny_index(plan), first_block)
    verdicts += span_v
    if plan.injection:
        inj_v, inj_block = _injection_verdicts(plan, plan.injection_score(text))
        verdicts += inj_v
        blocking = blocking or inj_block
    if blocking is not None:
        return OutputResult("", verdicts, _blocked(plan, blocking, counts))
    return OutputResult(out, verdicts)


class OutputFilter:
    """The output check of one streamed answer: ``feed`` each text delta, send what it returns;
    at the end of the stream call ``finish`` once and send what it returns. When ``blocked``
    turns true, stop the stream with ``finish_reason: content_filter`` (text already sent stays
    sent; nothing of the blocked match was). ``verdicts`` are complete after ``finish``.

    Holdback: redaction and blocks as the text streams (``HoldbackRedactor``); the injection
    check runs over the whole answer at ``finish``. Buffer: nothing until ``finish``, then as a
    unary answer. Audit: everything at once, verdicts at ``finish``.
    """

    __slots__ = (
        "_counts",
        "_done",
        "_holdback",
        "_injection_v",
        "_length_v",
        "_limits",
        "_parts",
        "_plan",
        "_size",
        "_step",
        "_unary_v",
        "blocked",
    )

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._holdback = (
            HoldbackRedactor(plan.scanner, plan.redact)
            if plan.streaming == "Holdback" and plan.scans
            else None
        )
        keep_all = plan.streaming != "Holdback" or bool(plan.injection)
        self._parts: list[str] | None = [] if keep_all else None
        self._size = 0
        self._counts: dict[str, int] = {}
        self._length_v: list[dict[str, Any]] = []
        self._injection_v: list[dict[str, Any]] = []
        self._unary_v: list[dict[str, Any]] | None = None  # Buffer and Audit: a unary check
        self._limits = bool(plan.max_chars)  # maxChars rules: the length is checked per delta
        self._done = False
        self.blocked: GuardrailBlocked | None = None
        #: Holdback without maxChars rules: ``feed`` goes straight to the redactor (the
        #: per-delta path of every such stream; the length is then never needed).
        self._step = (
            self._holdback.stepper
            if self._holdback is not None and plan.streaming == "Holdback" and not self._limits
            else None
        )

    @property
    def mode(self) -> StreamingMode:
        return self._plan.streaming

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        """In the order of a unary check: length, personal data and deny, injection."""
        if self._unary_v is not None:
            return list(self._unary_v)
        span_v, _ = _span_verdicts(self._plan, self._counts, _deny_index(self._plan), None)
        return [*self._length_v, *span_v, *self._injection_v]

    def feed(self, text: str) -> str:
        step = self._step
        if step is not None and self.blocked is None:
            if self._parts is not None:
                self._parts.append(text)
            out, spans = step(text)
            return self._take(out, spans) if spans else out
        return self._feed(text)

    def _feed(self, text: str) -> str:
        if self.blocked is not None or self._done:
            return ""
        self._size += len(text)
        if self._parts is not None:
            self._parts.append(text)
        streaming = self._plan.streaming
        if streaming == "Audit":
            return text
        if self._limits:
            length_v, blocking = _length_verdicts(self._plan, self._size)
            if blocking is not None:
                self._length_v = length_v
                self.blocked = _blocked(self._plan, blocking)
                return ""
        if streaming == "Buffer" or self._holdback is None:
            return "" if streaming == "Buffer" else text
        out, spans = self._holdback.step(text)
        return self._take(out, spans) if spans else out

    def finish(self) -> str:
        if self._done:
            return ""
        self._done = True
        self._step = None
        plan = self._plan
        if self.blocked is not None:
            return ""
        if plan.streaming in ("Buffer", "Audit"):
            result = evaluate_text(plan, "".join(self._parts or ()))
            self._unary_v = result.verdicts
            if plan.streaming == "Audit":
                return ""
            self.blocked = result.blocked
            return result.text if result.blocked is None else ""
        if plan.max_chars:
            self._length_v = _length_verdicts(plan, self._size)[0]
        tail = ""
        if self._holdback is not None:
            released = self._holdback.close()
            tail = self._take(released.text, released.spans)
            if self._is_blocked():  # ``_take`` may have set it
                return ""
        if plan.injection:
            inj_v, blocking = _injection_verdicts(
                plan, plan.injection_score("".join(self._parts or ()))
            )
            self._injection_v = inj_v
            if blocking is not None:
                self.blocked = _blocked(plan, blocking)
                return ""
        return tail

    def _is_blocked(self) -> bool:
        """``blocked is not None``, read anew: after a call that may set it, a plain test of the
        attribute is one mypy takes as still narrowed by the test before the call (and code
        compiled by mypyc checks that narrowing at run time)."""
        return self.blocked is not None

    def _take(self, text: str, spans: tuple[Span, ...]) -> str:
        if not spans:
            return text
        _count(spans, self._counts)
        first_block = _first_block(self._plan, spans)
        if first_block is not None:
            plan = self._plan
            _, blocking = _span_verdicts(plan, self._counts, _deny_index(plan), first_block)
            assert blocking is not None
            self.blocked = _blocked(self._plan, blocking, self._counts)
            return ""
        return text


# --- request bodies -----------------------------------------------------------------------------

_Where = tuple[Any, int | None]


def _chat_parts(body: Mapping[str, Any]) -> Iterable[tuple[_Where, str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        role = role if isinstance(role, str) else ""
        content = msg.get("content")
        if isinstance(content, str):
            yield (i, None), role, content
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if (
                    isinstance(part, dict)
                    and part.get("type") == "text"
                    and isinstance(part.get("text"), str)
                ):
                    yield (i, j), role, part["text"]


def request_texts(body: Mapping[str, Any], operation: str, roles: Iterable[str]) -> list[str]:
    """The texts of a request the checks read: chat messages of ``roles``, embeddings
    inputs, a text completion's prompt and suffix."""
    wanted = frozenset(roles)
    return [text for _, role, text in _parts(body, operation) if role in wanted]


def _parts(body: Mapping[str, Any], operation: str) -> Iterable[tuple[_Where, str, str]]:
    if operation == "embeddings":
        return _field_parts(body, "input")
    if operation == "completions":  # the user's text: the prompt, and the suffix of a FIM
        return itertools.chain(_field_parts(body, "prompt"), _field_parts(body, "suffix"))
    return _chat_parts(body)


def _field_parts(body: Mapping[str, Any], name: str) -> Iterable[tuple[_Where, str, str]]:
    """The texts of a top-level field (a string or an array of strings), as the user's."""
    value = body.get(name)
    if isinstance(value, str):
        yield (name, None), "user", value
    elif isinstance(value, list):
        for j, item in enumerate(value):
            if isinstance(item, str):
                yield (name, j), "user", item


def _rewrite(
    body: dict[str, Any], replaced: Mapping[_Where, str], operation: str
) -> dict[str, Any]:
    """A new body with the replaced texts; everything not replaced is shared, not copied."""
    out = dict(body)
    if operation != "chat":  # top-level fields (``_field_parts``)
        for (name, j), text in replaced.items():
            if j is None:
                out[name] = text
                continue
            if out[name] is body[name]:
                out[name] = list(body[name])
            out[name][j] = text
        return out
    messages = list(body["messages"])
    copied: set[int] = set()
    for (i, j), text in replaced.items():
        if i not in copied:
            messages[i] = dict(messages[i])
            if j is not None:
                messages[i]["content"] = list(messages[i]["content"])
            copied.add(i)
        if j is None:
            messages[i]["content"] = text
        else:
            messages[i]["content"][j] = {**messages[i]["content"][j], "text": text}
    out["messages"] = messages
    return out
