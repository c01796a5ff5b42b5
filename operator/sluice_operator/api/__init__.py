"""The Sluice API: the four kinds of ``sluice.dev/v1alpha1`` and the facts the CRDs need about them.

Owns the registry ``KINDS`` (kind → spec/status models, names, printer columns). The pydantic
models in this package are the single source of truth for the CRD schemas, ``kubectl explain``
text, the offline validation of ``sluice render`` and the compiler's input. No IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import API_VERSION, GROUP, VERSION, CommonStatus, SluiceModel
from .budget import BudgetSpec, BudgetStatus
from .guardrailpolicy import GuardrailPolicySpec, GuardrailPolicyStatus
from .modelroute import ModelRouteSpec, ModelRouteStatus
from .prompttemplate import PromptTemplateSpec, PromptTemplateStatus

__all__ = ["API_VERSION", "GROUP", "KINDS", "VERSION", "Column", "Kind", "kind_by_name"]

READY = '.status.conditions[?(@.type=="Ready")].status'
REASON = '.status.conditions[?(@.type=="Ready")].reason'


@dataclass(frozen=True)
class Column:
    """An ``additionalPrinterColumns`` entry."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[SluiceModel]
    status: type[CommonStatus]
    description: str
    columns: tuple[Column, ...]

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _common(*columns: Column) -> tuple[Column, ...]:
    return (
        *columns,
        Column(
            "Applied",
            ".status.rollout.summary",
            description="Pods running the current config / pods reporting, e.g. 2/3.",
        ),
        Column("Ready", READY, description="Whether the resource is in effect."),
        Column("Reason", REASON, description="Why it is (not) ready.", priority=1),
        Column("Age", ".metadata.creationTimestamp", type="date"),
    )


KINDS: tuple[Kind, ...] = (
    Kind(
        kind="ModelRoute",
        plural="modelroutes",
        short_names=("mr", "mroute"),  # not "route": OpenShift's Route has it
        spec=ModelRouteSpec,
        status=ModelRouteStatus,
        description="A virtual model name that apps send, resolved to provider backends with "
        "fallbacks, retries and circuit breakers.",
        columns=_common(
            Column("Model", ".status.model", description="Model name apps send."),
            Column("Strategy", ".spec.strategy", description="How backends are chosen."),
        ),
    ),
    Kind(
        kind="PromptTemplate",
        plural="prompttemplates",
        short_names=("pt", "prompt"),
        spec=PromptTemplateSpec,
        status=PromptTemplateStatus,
        description="Versioned prompts with movable labels (production, canary, ...).",
        columns=_common(
            Column(
                "Labels",
                ".status.labelsSummary",
                description="Labels and the versions they serve, e.g. production=3,canary=4.",
            ),
        ),
    ),
    Kind(
        kind="Budget",
        plural="budgets",
        short_names=("bud",),
        spec=BudgetSpec,
        status=BudgetStatus,
        description="Money, token and request limits per workload, with calendar windows.",
        columns=_common(
            Column("Spent", ".status.spent", description="Spend in the most used window."),
            Column("Limit", ".status.limit", description="That window's limit."),
            Column("State", ".status.state", description="Ok, Warning or Exhausted."),
            Column("Resets", ".status.resetsAt", description="When that window resets."),
            Column("Action", ".spec.onExceeded.action", description="What happens when exceeded."),
        ),
    ),
    Kind(
        kind="GuardrailPolicy",
        plural="guardrailpolicies",
        short_names=("gp", "guardrail"),
        spec=GuardrailPolicySpec,
        status=GuardrailPolicyStatus,
        description="Filters for PII, prompt injection and deny patterns on requests and answers.",
        columns=_common(
            Column("Mode", ".spec.mode", description="Enforce or Monitor."),
            Column("Blocked", ".status.blocked", type="integer", description="Blocked, last hour."),
            Column(
                "Redacted",
                ".status.redacted",
                type="integer",
                description="Redacted, last hour.",
                priority=1,
            ),
            Column(
                "Flagged",
                ".status.flagged",
                type="integer",
                description="Flagged without action (Log, Monitor), last hour.",
            ),
        ),
    ),
)


def kind_by_name(name: str) -> Kind | None:
    """The registered kind called ``name`` (exact ``kind`` spelling), or None."""
    for kind in KINDS:
        if kind.kind == name:
            return kind
    return None
