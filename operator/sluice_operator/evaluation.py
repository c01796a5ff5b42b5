"""The evaluation gate of PromptTemplates: which label moves a template may make, and what its
versions' evaluation results say.

Owns the evaluation record (``Record``: what ``sluice eval --record`` writes into the template's
annotation ``evaluation.sluice.dev/v<N>``), the fingerprint of the evaluation settings a record
was made under (``settings_hash``), the per-version results for ``status.versions[].evaluation``
(``results``) and the gate (``decide``): a label named after the arrow of a ``gate`` entry
(``canary->production``) moves to a new version only when a current, passing record of that
version exists; otherwise it keeps the version it serves (the last move in
``status.labelHistory``) and the template says why. Moving a label back to a version it served
before is a rollback and never gated; a template's first labels are taken as they are (there is
nothing older to keep serving).

The operator never runs an evaluation itself: it cannot read the provider keys the cases and the
judge need (it never reads Secrets), so the evaluation runs where the keys are - ``sluice eval``
in CI or in a Job - and the operator checks what was recorded: the record must name the version's
current content hash and the current evaluation settings, and its score is compared with the
threshold in force here (a record's own ``passed`` is not trusted). See docs/prompttemplate.md.

A purely computational module with no side-effects; the caller performs the IO.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from .api.prompttemplate import Evaluation, Judge, PromptTemplateSpec
from .compile.compiler import version_hash

ANNOTATION_PREFIX = "evaluation.sluice.dev/"
FAILED = "EvaluationFailed"
PENDING = "EvaluationPending"
MAX_FAILED = 20


def annotation_key(version: int) -> str:
    """The annotation holding the recorded evaluation of ``version``."""
    return f"{ANNOTATION_PREFIX}v{version}"


class Record(BaseModel):
    """One evaluation run of one version, as ``sluice eval --record`` writes it (JSON)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    template: str
    version: int
    hash: str = Field(description="Content hash of the version evaluated.")
    settings_hash: str = Field(description="settings_hash of the evaluation settings used.")
    score: float = Field(ge=0, le=1)
    threshold: float = Field(ge=0, le=1)
    passed: bool
    cases: int = Field(ge=0)
    runs: int = Field(default=1, ge=1)
    spread: str | None = None
    failed: list[str] = Field(default_factory=list)
    at: str
    route: str | None = None

    def to_annotation(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


def settings_hash(evaluation: Evaluation | None) -> str:
    """Fingerprint of what a result depends on: cases, checks, judge and threshold (not the
    gate, which says only where results are needed)."""
    body = evaluation.model_dump(mode="json", by_alias=True, exclude={"gate"}) if evaluation else {}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def pass_score(judge: Judge) -> int:
    """Lowest passing judge score: ``passScore``, else 70% of the scale rounded up."""
    return judge.pass_score if judge.pass_score is not None else math.ceil(0.7 * judge.scale)


def gated_labels(spec: PromptTemplateSpec) -> set[str]:
    """The labels whose moves need a passing evaluation (the right side of each gate entry)."""
    gate = spec.evaluation.gate if spec.evaluation else None
    return {entry.partition("->")[2] for entry in gate or ()}


def read_record(annotations: Mapping[str, str], version: int) -> Record | str | None:
    """The recorded evaluation of ``version``; a text saying why it is unreadable; or None."""
    raw = annotations.get(annotation_key(version))
    if raw is None:
        return None
    try:
        return Record.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "<root>"
        return (
            f"annotation {annotation_key(version)} is not a valid record ({where}: {first['msg']})"
        )


@dataclass(frozen=True)
class Verdict:
    """What the gate makes of one version's record."""

    passed: bool
    status: dict[str, Any]  # for status.versions[].evaluation
    why: str  # one line for messages


def judge_version(
    spec: PromptTemplateSpec, annotations: Mapping[str, str], version: int
) -> Verdict:
    """The verdict on ``version`` from its record (pending when there is none or it is stale)."""
    found = read_record(annotations, version)
    if found is None:
        return Verdict(False, {}, f"version {version} has no evaluation result yet")
    if isinstance(found, str):
        return Verdict(False, {"passed": False, "stale": True}, found)
    hashes = {v.version: version_hash(v) for v in spec.versions}
    threshold = spec.evaluation.threshold if spec.evaluation else 1.0
    status: dict[str, Any] = {
        "score": round(found.score, 4),
        "at": found.at,
        "threshold": threshold,
        "cases": found.cases,
        "runs": found.runs,
        "source": annotation_key(version),
    }
    if found.spread:
        status["spread"] = found.spread
    if found.failed:
        status["failed"] = [f[:256] for f in found.failed[:MAX_FAILED]]
    stale = None
    if found.version != version or found.hash != hashes.get(version):
        stale = f"the result of version {version} was recorded for other content"
    elif found.settings_hash != settings_hash(spec.evaluation):
        stale = (
            f"the result of version {version} was recorded under other evaluation settings "
            f"(cases, checks, judge or threshold changed since); run `sluice eval --record` again"
        )
    if stale:
        status.update(passed=False, stale=True)
        return Verdict(False, status, stale)
    passed = found.score >= threshold
    status["passed"] = passed
    if passed:
        return Verdict(True, status, f"version {version} passed ({found.score:.2f})")
    failing = "; ".join(found.failed[:5]) or "no case details recorded"
    return Verdict(
        False,
        status,
        f"version {version} failed its evaluation (score {found.score:.2f} < threshold "
        f"{threshold:.2f}; failing: {failing})",
    )


def results(spec: PromptTemplateSpec, annotations: Mapping[str, str]) -> dict[int, dict[str, Any]]:
    """``status.versions[].evaluation`` for every version that has a record."""
    out: dict[int, dict[str, Any]] = {}
    for v in spec.versions:
        verdict = judge_version(spec, annotations, v.version)
        if verdict.status:
            out[v.version] = verdict.status
    return out


@dataclass(frozen=True)
class Held:
    """A label move the gate refused: the label keeps serving ``serving``."""

    label: str
    wanted: int
    serving: int
    reason: str  # FAILED or PENDING
    message: str


@dataclass(frozen=True)
class Gate:
    labels: dict[str, int]  # the labels in force (compile these)
    held: list[Held] = field(default_factory=list)


def decide(
    spec: PromptTemplateSpec,
    annotations: Mapping[str, str],
    history: Sequence[Mapping[str, Any]],
) -> Gate:
    """The labels in force: each gated label's wanted version if it may move there, else the
    version it serves now (from ``history``, oldest first)."""
    wanted = dict(spec.labels or {})
    serving: dict[str, int] = {}
    served: dict[str, set[int]] = {}
    for move in history:
        label, version = move.get("label"), move.get("version")
        if isinstance(label, str) and isinstance(version, int):
            serving[label] = version
            served.setdefault(label, set()).add(version)
    existing = {v.version for v in spec.versions}
    labels = dict(wanted)
    held: list[Held] = []
    for label in sorted(gated_labels(spec) & set(wanted)):
        target, now = wanted[label], serving.get(label)
        if now is None or target == now or target in served.get(label, set()):
            continue  # first labels, no move, or a rollback
        if now not in existing:
            continue  # cannot happen (versions are append-only); never point at nothing
        verdict = judge_version(spec, annotations, target)
        if verdict.passed:
            continue
        reason = (
            FAILED
            if verdict.status.get("passed") is False and not verdict.status.get("stale")
            else PENDING
        )
        held.append(
            Held(
                label,
                target,
                now,
                reason,
                f"{label} stays on version {now}: moving it to version {target} needs a passing "
                f"evaluation, and {verdict.why}",
            )
        )
        labels[label] = now
    return Gate(labels, held)
