"""The GuardrailPolicy kind: input and output filters (PII, prompt injection, deny lists).

Owns the spec and status models. No IO.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator

from .base import CommonStatus, Rule, Selector, SluiceModel, duration, text


class Entity(StrEnum):
    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CREDIT_CARD = "CREDIT_CARD"
    IBAN = "IBAN"
    US_SSN = "US_SSN"
    IP_ADDRESS = "IP_ADDRESS"
    API_KEY = "API_KEY"


class GuardAction(StrEnum):
    REDACT = "Redact"
    BLOCK = "Block"
    LOG = "Log"


class Pii(SluiceModel):
    """Detect personal data of the listed kinds."""

    entities: list[Entity] = Field(
        min_length=1,
        max_length=16,
        description="Entity kinds to act on: EMAIL, PHONE, CREDIT_CARD, IBAN, US_SSN, "
        "IP_ADDRESS, API_KEY.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    action: GuardAction = Field(default=GuardAction.REDACT, description="Redact, Block or Log.")
    restore: bool = Field(
        default=False,
        description="Input only, with Redact: the provider sees typed placeholders "
        "([EMAIL_1]) and the app's answer has the originals put back.",
    )

    rules = (
        Rule(
            cel="!has(self.restore) || !self.restore || self.action == 'Redact'",
            message="restore needs action Redact",
            check=lambda p: not p.restore or p.action == GuardAction.REDACT,
            field="restore",
        ),
    )


class PromptInjection(SluiceModel):
    """Detect prompt-injection attempts (canonicalised: Base64, zero-width, homoglyphs)."""

    action: GuardAction = Field(default=GuardAction.BLOCK, description="Block or Log.")
    threshold: float = Field(default=0.5, ge=0, le=1, description="Score above which it acts.")

    rules = (
        Rule(
            cel="self.action != 'Redact'",
            message="prompt injection cannot be redacted; use Block or Log",
            check=lambda p: p.action != GuardAction.REDACT,
            field="action",
        ),
    )


class Deny(SluiceModel):
    """A regular expression that must not match."""

    regex: str = Field(max_length=1024, description="Python/RE2-compatible regular expression.")
    action: GuardAction = Field(default=GuardAction.BLOCK, description="Redact, Block or Log.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class External(SluiceModel):
    """A classifier service of your own: POST {"policy", "stage", "texts"}, answer
    {"flagged": bool, "categories"?, "score"?}. Under input it reads the messages (after
    redaction); under output the answer's text and tool-call arguments as the app gets them
    (a stream: each text whole when it ends, before its end is released; streaming.mode Buffer
    releases none of it before the classifier allowed it)."""

    url: str = text(2048, "URL of the classifier (POST, JSON).", pattern=r"^https?://")
    timeout: str = duration("The longest wait for its answer.", default="1s")
    failure_mode: Literal["Open", "Closed"] = Field(
        default="Closed",
        description="When the service is down, slow (no answer within timeout), answers "
        "non-200 or garbage: Closed blocks; Open lets the text through and counts it "
        "(status: flagged, entity EXTERNAL_UNAVAILABLE).",
    )


class Stage(SluiceModel):
    """Checks on one direction of traffic."""

    pii: Pii | None = Field(default=None, description="Personal data detection.")
    prompt_injection: PromptInjection | None = Field(default=None, description="Injection check.")
    deny: list[Deny] | None = Field(default=None, max_length=32, description="Deny patterns.")
    max_chars: int | None = Field(default=None, ge=1, description="Longest accepted text.")
    external: External | None = Field(
        default=None, description="Your classifier service, asked about this direction's text."
    )


class Streaming(SluiceModel):
    """How streamed output is checked."""

    mode: Literal["Holdback", "Buffer", "Audit"] = Field(
        default="Holdback",
        description="Holdback releases text once no match can span it; Buffer waits for the "
        "whole answer; Audit checks after sending (never blocks).",
    )
    holdback_chars: int = Field(default=64, ge=1, le=4096, description="Holdback window size.")


class GuardrailPolicySpec(SluiceModel):
    """Filters applied to requests and answers of selected workloads."""

    selector: Selector | None = Field(default=None, description="Workloads and routes covered.")
    mode: Literal["Enforce", "Monitor"] = Field(
        default="Enforce", description="Enforce applies actions; Monitor only logs and counts."
    )
    input: Stage | None = Field(default=None, description="Checks on the request.")
    output: Stage | None = Field(default=None, description="Checks on the answer.")
    streaming: Streaming | None = Field(default=None, description="Streamed output checking.")

    rules = (
        Rule(
            cel="has(self.input) || has(self.output)",
            message="set input or output checks",
            check=lambda s: s.input is not None or s.output is not None,
        ),
        Rule(
            cel="!has(self.output) || !has(self.output.pii) || !has(self.output.pii.restore) "
            "|| !self.output.pii.restore",
            message="restore applies to input personal data only",
            check=lambda s: s.output is None or s.output.pii is None or not s.output.pii.restore,
            field="output",
        ),
    )


class VerdictCounts(SluiceModel):
    """Verdicts counted by the sidecars."""

    blocked: int = Field(
        default=0, description="Requests and answers blocked (one per entity found in them)."
    )
    redacted: int = Field(default=0, description="Matches replaced by placeholders.")
    flagged: int = Field(
        default=0,
        description="Findings that changed nothing: Log rules, a Monitor policy, a streamed "
        "Audit check, a classifier that was down under failureMode Open.",
    )


class EntityVerdicts(VerdictCounts):
    """Verdicts on one entity over the window."""

    entity: str = Field(
        description="EMAIL, PHONE, … (personal data), deny[i] (the i-th deny rule), "
        "PROMPT_INJECTION, MAX_CHARS, EXTERNAL (the classifier flagged it) or "
        "EXTERNAL_UNAVAILABLE (the classifier was down, slow or answered garbage)."
    )


class BucketVerdicts(VerdictCounts):
    """Verdicts in one five-minute bucket."""

    start: str = Field(description="Start of the bucket (UTC).")


class VerdictWindow(SluiceModel):
    """The sidecars' verdict counts over the last hour."""

    window: str = Field(default="1h", description="The span counted: the last hour.")
    entities: list[EntityVerdicts] = Field(
        default_factory=list, max_length=64, description="Per entity, busiest first."
    )
    buckets: list[BucketVerdicts] = Field(
        default_factory=list,
        max_length=12,
        description="Per five-minute bucket, oldest first (buckets without verdicts left out).",
    )


class GuardrailPolicyStatus(CommonStatus):
    """Verdict counts over the last hour, from the sidecars' reports."""

    blocked: int = Field(
        default=0, description="Requests and answers blocked in the last hour (all entities)."
    )
    redacted: int = Field(default=0, description="Matches redacted in the last hour.")
    flagged: int = Field(
        default=0, description="Findings that changed nothing in the last hour (Log, Monitor)."
    )
    verdicts: VerdictWindow | None = Field(
        default=None, description="The counts per entity and per five-minute bucket."
    )
