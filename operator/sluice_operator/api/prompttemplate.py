"""The PromptTemplate kind: append-only prompt versions with movable labels.

Owns the spec and status models. Existing versions are immutable and cannot be removed (CEL
transition rules, checked by the apiserver); labels must point at existing versions. No IO.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import Field

from .base import DNS_LABEL, NAME_REGEX, CommonStatus, Rule, SluiceModel, text

LabelName = Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]
#: A gated label move, ``from->to`` (two label names).
GATE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?->[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
VariableName = Annotated[str, Field(max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Message(SluiceModel):
    """One chat message of the template; `{{name}}` placeholders are filled from variables."""

    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="system, developer, user or assistant."
    )
    content: str = text(8192, "Message text with {{variable}} placeholders.")


class Variable(SluiceModel):
    """A template variable."""

    required: bool = Field(default=False, description="The request must supply it.")
    default: str | None = text(
        1024, "Value used when the request does not supply one.", default=None
    )
    max_length: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Longest accepted value, in characters."
    )


class PromptVersion(SluiceModel):
    """One immutable version of the prompt."""

    version: int = Field(ge=1, le=1_000_000, description="Version number, unique in the template.")
    messages: list[Message] = Field(
        min_length=1, max_length=16, description="The messages this version renders."
    )
    variables: dict[VariableName, Variable] | None = Field(
        default=None, max_length=16, description="Variables the messages use."
    )
    params: dict[str, Any] | None = Field(
        default=None,
        description="Request parameters applied with this version (temperature, max_tokens, ...).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    route: str | None = Field(
        default=None,
        max_length=253,
        pattern=NAME_REGEX,
        description="ModelRoute used when the request does not name one.",
    )


class Check(SluiceModel):
    """One evaluation check applied to each case's answer."""

    type: Literal["contains", "regex", "jsonSchema", "judge"] = Field(
        description="contains, regex, jsonSchema or judge."
    )
    value: str | None = text(
        8192, "The text, pattern or JSON schema to check against.", default=None
    )


class Case(SluiceModel):
    """One inline evaluation case."""

    name: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        description="Name of the case in reports (default case-<n>, counting from 1).",
    )
    variables: dict[str, str] | None = Field(default=None, description="Variables for the case.")
    expect: str | None = text(
        8192,
        "Expected content: what a contains check without a value looks for, and what the judge "
        "is told a good answer says.",
        default=None,
    )


class ConfigMapKeyRef(SluiceModel):
    name: str = Field(max_length=253, pattern=DNS_LABEL, description="ConfigMap name.")
    key: str = Field(max_length=253, description="Key holding JSON lines of cases.")


class Dataset(SluiceModel):
    """Evaluation cases: inline or from a ConfigMap."""

    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="Cases in a ConfigMap."
    )
    cases: list[Case] | None = Field(default=None, max_length=100, description="Inline cases.")


class Judge(SluiceModel):
    """An LLM judge scoring answers with a rubric."""

    route: str = Field(max_length=253, pattern=NAME_REGEX, description="ModelRoute of the judge.")
    rubric: str = text(8192, "What the judge scores.")
    scale: int = Field(default=5, ge=2, le=100, description="Top of the score scale.")
    pass_score: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Lowest passing score (default 70% of the scale, rounded up).",
    )

    rules = (
        Rule(
            cel="!has(self.passScore) || self.passScore <= self.scale",
            message="passScore must not exceed scale",
            check=lambda j: j.pass_score is None or j.pass_score <= j.scale,
            field="passScore",
        ),
    )


class Evaluation(SluiceModel):
    """Checks a version must pass before a gated label moves to it."""

    dataset: Dataset | None = Field(default=None, description="Evaluation cases.")
    checks: list[Check] | None = Field(default=None, max_length=16, description="Checks.")
    judge: Judge | None = Field(default=None, description="Judge settings for judge checks.")
    threshold: float = Field(default=1.0, ge=0, le=1, description="Pass rate needed.")
    gate: list[Annotated[str, Field(max_length=130, pattern=GATE_PATTERN)]] | None = Field(
        default=None,
        max_length=8,
        description="Label moves that need a pass, e.g. canary->production: the label after "
        "the arrow moves to a new version only once that version passed (moving it back to a "
        "version it served before is a rollback and never gated).",
    )

    rules = (
        Rule(
            cel="has(self.dataset) && (has(self.dataset.configMapRef) || "
            "(has(self.dataset.cases) && size(self.dataset.cases) > 0))",
            message="an evaluation needs cases: set dataset.cases or dataset.configMapRef",
            check=lambda e: (
                e.dataset is not None
                and (e.dataset.config_map_ref is not None or bool(e.dataset.cases))
            ),
            field="dataset",
        ),
        Rule(
            cel="!has(self.checks) || !self.checks.exists(c, c.type == 'judge') || has(self.judge)",
            message="a judge check needs judge settings (judge.route, judge.rubric)",
            check=lambda e: (
                e.judge is not None or not any(c.type == "judge" for c in e.checks or ())
            ),
            field="judge",
        ),
    )


# The first label whose version does not exist, in CEL (used twice in one message).
_DANGLING = "self.labels.filter(l, !self.versions.exists(v, v.version == self.labels[l]))[0]"


class PromptTemplateSpec(SluiceModel):
    """Versions of a prompt and labels (production, canary, ...) that point at them."""

    versions: list[PromptVersion] = Field(
        min_length=1,
        max_length=32,
        description="Append-only list of versions; existing versions cannot change or go away.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["version"],
            "x-sluice-item-validations": [
                {
                    "rule": "self == oldSelf",
                    "message": "an existing version is immutable; add a new version instead",
                    "messageExpression": "'version %d is immutable; add a new version "
                    "instead'.format([self.version])",
                }
            ],
        },
    )
    labels: dict[LabelName, int] | None = Field(
        default=None,
        max_length=16,
        description="Label -> version, e.g. production: 3. Apps ask for name@label.",
    )
    split: dict[LabelName, Annotated[int, Field(ge=0, le=100)]] | None = Field(
        default=None,
        max_length=8,
        description="Label -> percent of production traffic served by that label's version.",
    )
    evaluation: Evaluation | None = Field(default=None, description="Evaluation gate.")

    rules = (
        Rule(
            cel="self.versions.all(a, self.versions.exists_one(b, b.version == a.version))",
            message="version numbers must be unique",
            check=lambda s: len({v.version for v in s.versions}) == len(s.versions),
            field="versions",
            message_cel="'version %d appears more than once; version numbers must be unique'"
            ".format([self.versions.filter(a, !self.versions.exists_one(b, b.version == a.version))"
            "[0].version])",
            explain=lambda s: (
                f"version {_duplicate(v.version for v in s.versions)} appears more "
                "than once; version numbers must be unique"
            ),
        ),
        Rule(
            cel="!has(self.labels) || self.labels.all(l, "
            "self.versions.exists(v, v.version == self.labels[l]))",
            message="every label must point at an existing version",
            check=lambda s: not _dangling_labels(s),
            field="labels",
            message_cel="'label %s points at version %d, which does not exist'.format(["
            + _DANGLING
            + ", self.labels["
            + _DANGLING
            + "]])",
            explain=lambda s: (
                f"label {_dangling_labels(s)[0]} points at version "
                f"{(s.labels or {})[_dangling_labels(s)[0]]}, which does not exist"
            ),
        ),
        Rule(
            cel="!has(self.split) || self.split.all(k, has(self.labels) && k in self.labels)",
            message="every split key must be a label",
            check=lambda s: all(k in (s.labels or {}) for k in (s.split or {})),
            field="split",
            message_cel="'split key %s is not a label; add it to labels or remove it from split'"
            ".format([self.split.filter(k, !has(self.labels) || !(k in self.labels))[0]])",
            explain=lambda s: (
                "split key "
                + next(k for k in s.split or {} if k not in (s.labels or {}))
                + " is not a label; add it to labels or remove it from split"
            ),
        ),
        Rule(
            cel="!has(oldSelf.versions) || oldSelf.versions.all(o, "
            "self.versions.exists(v, v.version == o.version))",
            message="existing versions cannot be removed",
            check=lambda s: True,
            field="versions",
            transition=True,
            message_cel="'existing versions cannot be removed: version %d is missing'.format(["
            "oldSelf.versions.filter(o, !self.versions.exists(v, v.version == o.version))"
            "[0].version])",
        ),
    )


def _dangling_labels(spec: PromptTemplateSpec) -> list[str]:
    versions = {v.version for v in spec.versions}
    return [label for label, n in (spec.labels or {}).items() if n not in versions]


def _duplicate(values: Iterable[int]) -> int | None:
    seen: set[int] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


class VersionEvaluation(SluiceModel):
    score: float | None = Field(default=None, description="Pass rate of the cases (mean of runs).")
    passed: bool | None = Field(
        default=None, description="Whether the score reached the threshold in force."
    )
    at: str | None = Field(default=None, description="When it was evaluated.")
    threshold: float | None = Field(default=None, description="The threshold it was held to.")
    cases: int | None = Field(default=None, description="Number of cases.")
    runs: int | None = Field(default=None, description="Runs of every case (--repeat).")
    spread: str | None = Field(
        default=None, max_length=256, description="Score spread over runs: min..max (stdev)."
    )
    failed: list[Annotated[str, Field(max_length=256)]] | None = Field(
        default=None, max_length=20, description="Failing cases and checks (first 20)."
    )
    source: str | None = Field(
        default=None,
        max_length=256,
        description="Where the result came from: the evaluation.sluice.dev/v<N> annotation "
        "written by `sluice eval --record`.",
    )
    stale: bool | None = Field(
        default=None,
        description="The recorded result was made against other evaluation settings or "
        "another content of the version, so it does not count.",
    )


class VersionStatus(SluiceModel):
    version: int = Field(description="Version number.")
    hash: str = Field(description="Content hash of the version.")
    first_seen: str | None = Field(default=None, description="When the operator first saw it.")
    evaluation: VersionEvaluation | None = Field(default=None, description="Evaluation result.")


class LabelMove(SluiceModel):
    label: str = Field(description="Label that moved.")
    version: int = Field(description="Version it moved to.")
    at: str = Field(description="When.")


class PromptTemplateStatus(CommonStatus):
    """Observed state of a PromptTemplate."""

    production_version: int | None = Field(
        default=None, description="Version the production label serves."
    )
    labels_summary: str | None = Field(
        default=None,
        max_length=1024,
        description="Every label and the version it serves, e.g. production=3,canary=4 "
        "(production first, then by name): the LABELS column of kubectl get.",
    )
    versions: list[VersionStatus] = Field(default_factory=list, description="Per-version facts.")
    label_history: list[LabelMove] = Field(
        default_factory=list, description="Label moves, newest last: what ran when."
    )
