"""The checks of ``sluice eval``: ``contains``, ``regex``, ``jsonSchema`` and ``judge``.

Owns compiling a template's checks once (``compile_checks``: a bad pattern or schema is bad input,
named by its field path), applying the deterministic ones to an answer (``apply``), the request a
judge is sent (``judge_messages``) and the strict reading of its reply (``parse_judge``): exactly a
JSON object ``{"score": <integer 1..scale>, "reason": "<text>"}``; anything else fails the check
with the reason, it never passes. ``jsonschema`` is imported only when a ``jsonSchema`` check
exists (the ``[eval]`` extra). Purely computational: no IO.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sluice_operator.api.prompttemplate import Case, Check, Judge

JUDGE_SYSTEM = (
    "You are an evaluation judge. Score the ANSWER against the RUBRIC on an integer scale from "
    "1 (worst) to {scale} (best). Reply with only a JSON object and nothing else, exactly: "
    '{{"score": <integer from 1 to {scale}>, "reason": "<one sentence>"}}'
)


class BadInputError(ValueError):
    """Input that makes the evaluation meaningless: exit 2, naming where."""


@dataclass(frozen=True)
class Outcome:
    """One check on one answer."""

    check: str  # "contains", "regex", "jsonSchema", "judge"
    score: float  # 0..1
    passed: bool
    detail: str


@dataclass(frozen=True)
class Compiled:
    """A check ready to apply: its type, value, and the compiled pattern or schema validator."""

    index: int
    type: str
    value: str | None
    pattern: re.Pattern[str] | None = None
    validator: Any = None


def compile_checks(checks: Sequence[Check], cases: Sequence[Case], where: str) -> list[Compiled]:
    """Compile ``checks``; raises ``BadInputError`` naming ``where`` and the field at fault."""
    out: list[Compiled] = []
    for i, check in enumerate(checks):
        path = f"{where}: spec.evaluation.checks[{i}].value"
        if check.type == "contains" and check.value is None:
            for n, case in enumerate(cases):
                if case.expect is None:
                    raise BadInputError(
                        f"{where}: spec.evaluation.dataset.cases[{n}].expect: a contains check "
                        "without a value compares with the case's expect; set one of them"
                    )
            out.append(Compiled(i, check.type, None))
        elif check.type == "contains":
            out.append(Compiled(i, check.type, check.value))
        elif check.type == "regex":
            if not check.value:
                raise BadInputError(f"{path}: a regex check needs a pattern")
            try:
                out.append(Compiled(i, check.type, check.value, pattern=re.compile(check.value)))
            except re.error as exc:
                raise BadInputError(f"{path}: not a valid regular expression ({exc})") from None
        elif check.type == "jsonSchema":
            out.append(Compiled(i, check.type, check.value, validator=_validator(check, path)))
        else:
            out.append(Compiled(i, check.type, check.value))
    return out


def _validator(check: Check, path: str) -> Any:
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ModuleNotFoundError:
        raise BadInputError(
            f"{path}: jsonSchema checks need the jsonschema package: pip install 'sluicegate[eval]'"
        ) from None
    try:
        schema = json.loads(check.value or "")
    except ValueError as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc})") from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BadInputError(f"{path}: not a valid JSON schema ({exc.message})") from None
    return cls(schema)


def apply(check: Compiled, case: Case, answer: str) -> Outcome:
    """A deterministic check (not ``judge``) on ``answer``."""
    if check.type == "contains":
        wanted = check.value if check.value is not None else case.expect or ""
        ok = wanted.casefold() in answer.casefold()
        return Outcome("contains", float(ok), ok, "" if ok else f"{_short(wanted)!r} not found")
    if check.type == "regex":
        assert check.pattern is not None
        ok = check.pattern.search(answer) is not None
        return Outcome("regex", float(ok), ok, "" if ok else f"/{_short(check.value)}/ no match")
    if check.type == "jsonSchema":
        try:
            doc = json.loads(answer)
        except ValueError as exc:
            return Outcome("jsonSchema", 0.0, False, f"answer is not JSON ({exc})")
        error = next(iter(check.validator.iter_errors(doc)), None)
        if error is None:
            return Outcome("jsonSchema", 1.0, True, "")
        where = "/".join(str(p) for p in error.absolute_path) or "<root>"
        return Outcome("jsonSchema", 0.0, False, f"{where}: {_short(error.message)}")
    raise ValueError(f"not a deterministic check: {check.type}")


def judge_messages(judge: Judge, case: Case, answer: str) -> list[dict[str, str]]:
    """The chat messages sent to the judge route for one answer."""
    user = f"RUBRIC:\n{judge.rubric}\n\n"
    if case.expect:
        user += f"A GOOD ANSWER SAYS:\n{case.expect}\n\n"
    if case.variables:
        user += f"INPUT VARIABLES:\n{json.dumps(case.variables, ensure_ascii=False)}\n\n"
    user += f"ANSWER:\n{answer}"
    return [
        {"role": "system", "content": JUDGE_SYSTEM.format(scale=judge.scale)},
        {"role": "user", "content": user},
    ]


def parse_judge(reply: str, scale: int, pass_score: int) -> Outcome:
    """Strictly read a judge's reply; anything but the asked-for object fails the check."""
    try:
        obj = json.loads(reply.strip())
    except ValueError:
        return Outcome("judge", 0.0, False, f"judge reply is not JSON: {_short(reply)!r}")
    if not isinstance(obj, dict) or not set(obj) <= {"score", "reason"} or "score" not in obj:
        return Outcome(
            "judge", 0.0, False, f'judge reply is not {{"score", "reason"}}: {_short(reply)!r}'
        )
    score, reason = obj["score"], obj.get("reason", "")
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= scale:
        return Outcome("judge", 0.0, False, f"judge score {score!r} is not an integer 1..{scale}")
    if not isinstance(reason, str):
        return Outcome("judge", 0.0, False, "judge reason is not a string")
    ok = score >= pass_score
    return Outcome("judge", score / scale, ok, f"{score}/{scale}: {_short(reason)}")


def _short(text: str | None, limit: int = 80) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"
