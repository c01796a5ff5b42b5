"""Shared building blocks of the four Sluice API kinds.

Owns: the base model (camelCase JSON, unknown fields rejected), the standard status shape
(``observedGeneration`` + ``conditions``), the ``Rule`` mechanism that states a cross-field rule
once and gets both a CEL ``x-kubernetes-validations`` entry in the CRD and the same check in
Python, and small field types (durations, names, strings that must not hold an inline API key).

Purely computational: no IO, no Kubernetes client.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP = "sluice.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# --- inline secrets -------------------------------------------------------------------------------

# Provider API keys: OpenAI (`sk-…`, `sk-proj-…`), Anthropic (`sk-ant-…`), Google (`AIza…`).
# RE2 and Python agree on this syntax, so the CEL rule and the Python check are the same regex.
INLINE_KEY_REGEX = r"(sk-[A-Za-z0-9_-]{16,}|AIza[A-Za-z0-9_-]{20,})"
_INLINE_KEY = re.compile(INLINE_KEY_REGEX)
# Long free text (prompt messages) is too costly for the regex under the apiserver's CEL cost
# budget, so its CRD rule looks for the current key prefixes only; Python applies the full regex.
INLINE_KEY_PREFIXES = ("sk-ant-", "sk-proj-", "sk-svcacct-", "AIza")
LONG_TEXT = 2048
INLINE_KEY_MESSAGE = (
    "looks like an inline API key; put the key in a Secret and reference it with "
    "credentials.secretRef"
)
NO_INLINE_KEY_MARK = "x-sluice-no-inline-key"


def text(max_length: int, description: str, **kwargs: Any) -> Any:
    """A free-text field: bounded length, and rejected if it contains an inline API key."""
    return Field(
        max_length=max_length,
        description=description,
        json_schema_extra={NO_INLINE_KEY_MARK: True},
        **kwargs,
    )


# --- names and durations --------------------------------------------------------------------------

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_REGEX = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
DURATION_REGEX = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float:
    """``"1m30s"`` → 90.0 seconds. The value is assumed to match ``DURATION_REGEX``."""
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))


def duration(description: str, **kwargs: Any) -> Any:
    """A duration field such as ``500ms``, ``30s``, ``5m`` or ``1h30m``."""
    return Field(pattern=DURATION_REGEX, max_length=32, description=description, **kwargs)


# --- cross-field rules: one statement, two checks ---------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A validation rule written once: CEL for the apiserver, a Python predicate for ``render``.

    ``field`` (optional) is the child field the message is about, relative to the model the rule is
    attached to; it becomes the CEL ``fieldPath`` and the Python error location.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field: str | None = None
    transition: bool = False  # uses oldSelf; only the apiserver can check it
    # The specific message (naming the label, version or backend at fault): a CEL
    # ``messageExpression`` for the apiserver and the same text from Python. ``message`` stays
    # the fallback the apiserver shows if the expression cannot be evaluated.
    message_cel: str | None = None
    explain: Callable[[Any], str] | None = None

    def to_crd(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.message_cel:
            out["messageExpression"] = self.message_cel
        if self.field:
            out["fieldPath"] = f".{self.field}"
        return out

    def describe(self, model: Any) -> str:
        """The message for a model that fails this rule."""
        return self.explain(model) if self.explain is not None else self.message


class RuleError(ValueError):
    """A failed ``Rule``; carries the child field it is about."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


class SluiceModel(BaseModel):
    """Base for every API model: camelCase JSON, unknown fields rejected, rules enforced."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [rule.to_crd() for rule in cls.rules]
        return schema

    @model_validator(mode="after")
    def _check_rules(self) -> SluiceModel:
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get(NO_INLINE_KEY_MARK):
                value = getattr(self, name)
                if isinstance(value, str) and _INLINE_KEY.search(value):
                    raise RuleError(INLINE_KEY_MESSAGE, info.alias or name)
        for rule in type(self).rules:
            if not rule.transition and not rule.check(self):
                raise RuleError(rule.describe(self), rule.field)
        return self


# --- status ---------------------------------------------------------------------------------------


class Condition(SluiceModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready or ResolvedRefs.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024, description="One CamelCase word saying why, e.g. RouteNotFound."
    )
    message: str = Field(
        default="", max_length=32768, description="What a person should know or do."
    )
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition was set for."
    )


class SidecarRollout(SluiceModel):
    """One injected pod's sidecar as its latest report shows it."""

    pod: str = Field(description="Pod name.")
    config_hash: str = Field(description="Hash of the config the sidecar runs.")
    last_report: str | None = Field(
        default=None,
        description="When the sidecar last reported, to the minute (RFC 3339); a pod silent for "
        "a minute drops out of the list.",
        json_schema_extra={"format": "date-time"},
    )


class Rollout(SluiceModel):
    """How far the namespace's current config has reached its pods, from the sidecars' reports."""

    config_hash: str | None = Field(
        default=None, description="Hash of the namespace's current compiled config."
    )
    pods: int = Field(default=0, description="Injected pods whose sidecars report (the total).")
    applied: int = Field(default=0, description="Of those, the pods that run configHash.")
    summary: str | None = Field(
        default=None, description="applied/pods, e.g. 2/3 (the APPLIED column)."
    )
    sidecars: list[SidecarRollout] = Field(
        default_factory=list,
        max_length=100,
        description="Each reporting pod, its config hash and last report (ModelRoute only; at "
        "most 100, by pod name). `sluice status` lists them.",
    )


class CommonStatus(SluiceModel):
    """Fields every kind's status has; kind-specific status models extend it.

    ``observedGeneration`` defaults to 0 in the CRD (and ``status`` to ``{}``), so an object the
    operator has not seen yet reads as not observed: Flux kstatus says InProgress, the Argo CD
    health check Progressing, instead of a premature Current/Healthy.
    """

    observed_generation: int = Field(
        default=0,
        ge=0,
        description="The .metadata.generation the operator last acted on; 0 until it has seen "
        "the object.",
    )
    enforced_generation: int | None = Field(
        default=None,
        ge=1,
        description="The generation whose rules the namespace's sidecars are given. Lower than "
        "observedGeneration while a later edit is invalid (the last valid generation stays in "
        "force); absent when no generation was ever valid.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Ready, Reconciling, Stalled, Valid, ResolvedRefs and kind-specific "
        "conditions in the standard shape.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    rollout: Rollout | None = Field(
        default=None,
        description="Config rollout to the namespace's pods, from the sidecars' reports.",
    )


class Selector(SluiceModel):
    """Which traffic a policy applies to. Empty means every injected workload of the namespace."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict,
        max_length=32,
        description="Pod labels a workload must carry (all of them) for the policy to apply.",
    )
    routes: list[Annotated[str, Field(max_length=253, pattern=NAME_REGEX)]] = Field(
        default_factory=list,
        max_length=64,
        description="ModelRoute names the policy applies to; empty means every route.",
    )
