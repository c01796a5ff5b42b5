"""What each resource's ``status`` should say, computed from compile results and sidecar reports.

Owns: the standard conditions (``Ready``, ``ResolvedRefs``, ``Valid``) with reasons a person can act
on, ``observedGeneration``, kind-specific status fields (a route's resolved model name, backend
health and rollout; a template's version hashes and label history), and the minimal merge patch
from the current status to the desired one (``None`` when nothing changed, so an idle operator
writes nothing).

A purely computational module with no side-effects; the caller performs the IO. Time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .compile import CompileResult, Problem

READY = "Ready"
RESOLVED_REFS = "ResolvedRefs"
VALID = "Valid"


@dataclass(frozen=True)
class Verdict:
    """One condition's desired value."""

    type: str
    status: bool
    reason: str
    message: str


def _condition(
    old: Sequence[Mapping[str, Any]], v: Verdict, generation: int, now: str
) -> dict[str, Any]:
    status = "True" if v.status else "False"
    previous = next((c for c in old if c.get("type") == v.type), None)
    since = (
        previous["lastTransitionTime"]
        if previous and previous.get("status") == status and previous.get("lastTransitionTime")
        else now
    )
    return {
        "type": v.type,
        "status": status,
        "reason": v.reason,
        "message": v.message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def verdicts(invalid: Sequence[str], problems: Sequence[Problem]) -> list[Verdict]:
    """Conditions for one resource from its validation errors and reference problems."""
    if invalid:
        message = "; ".join(invalid)
        return [
            Verdict(VALID, False, "InvalidSpec", message),
            Verdict(RESOLVED_REFS, False, "InvalidSpec", "not checked: the spec is invalid"),
            Verdict(READY, False, "InvalidSpec", f"{message}. Fix the spec; nothing else changed."),
        ]
    out = [Verdict(VALID, True, "Valid", "The spec is valid.")]
    if problems:
        first = problems[0]
        message = "; ".join(f"{p.path}: {p.message}" for p in problems)
        out.append(Verdict(RESOLVED_REFS, False, first.reason, message))
        out.append(Verdict(READY, False, first.reason, message))
    else:
        out.append(Verdict(RESOLVED_REFS, True, "ResolvedRefs", "All references resolve."))
        out.append(Verdict(READY, True, "Compiled", "In effect in the namespace's sidecar config."))
    return out


def conditions(
    old: Sequence[Mapping[str, Any]], found: Sequence[Verdict], generation: int, now: str
) -> list[dict[str, Any]]:
    """New condition list: our types updated (keeping transition times), other types kept."""
    ours = {v.type for v in found}
    kept = [dict(c) for c in old if c.get("type") not in ours]
    return [_condition(old, v, generation, now) for v in found] + kept


def kind_fields(
    kind: str, obj: Mapping[str, Any], result: CompileResult | None, now: str
) -> dict[str, Any]:
    """Kind-specific status fields derived from the spec and the compiled config."""
    spec = obj.get("spec") or {}
    name = obj.get("metadata", {}).get("name", "")
    old = obj.get("status") or {}
    if kind == "ModelRoute":
        model = spec.get("model") or name
        out: dict[str, Any] = {"model": model}
        if result is not None:
            out["rollout"] = {**(old.get("rollout") or {}), "configHash": result.hash}
        return out
    if kind == "PromptTemplate" and result is not None:
        prompt = next((p for p in result.config.prompts if p.name == name), None)
        if prompt is None:
            return {}
        first_seen = {v.get("version"): v.get("firstSeen") for v in old.get("versions") or []}
        versions = [
            {
                "version": v.version,
                "hash": v.hash,
                "firstSeen": first_seen.get(v.version) or now,
                **_keep_evaluation(old, v.version),
            }
            for v in prompt.versions
        ]
        history = list(old.get("labelHistory") or [])
        current = {h["label"]: h["version"] for h in history}  # last entry per label wins
        for label, version in sorted(prompt.labels.items()):
            if current.get(label) != version:
                history.append({"label": label, "version": version, "at": now})
        return {
            "productionVersion": prompt.labels.get("production"),
            "versions": versions,
            "labelHistory": history[-50:],
        }
    return {}


def _keep_evaluation(old: Mapping[str, Any], version: int) -> dict[str, Any]:
    for v in old.get("versions") or []:
        if v.get("version") == version and v.get("evaluation"):
            return {"evaluation": v["evaluation"]}
    return {}


def desired_status(
    kind: str,
    obj: Mapping[str, Any],
    invalid: Sequence[str],
    result: CompileResult | None,
    now: str,
) -> dict[str, Any]:
    """The full status the resource should have now."""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    generation = int(meta.get("generation") or 1)
    old = obj.get("status") or {}
    problems = result.problems_for(kind, name) if result is not None and not invalid else []
    status = dict(old)
    status.update(kind_fields(kind, obj, result if not invalid else None, now))
    status["observedGeneration"] = generation
    status["conditions"] = conditions(
        old.get("conditions") or [], verdicts(invalid, problems), generation, now
    )
    return status


def status_patch(
    old: Mapping[str, Any] | None, desired: Mapping[str, Any]
) -> dict[str, Any] | None:
    """A merge patch for ``status`` turning ``old`` into ``desired``; None when they are equal."""
    old = old or {}
    changed = {k: v for k, v in desired.items() if old.get(k) != v}
    return changed or None


def event_worthy(old: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> Verdict | None:
    """A Ready change worth an Event: going not-ready, or recovering. A resource that is simply
    Ready on first sight gets none (that would be one Event per object on every install)."""
    change = ready_changed(old, desired)
    if change is None:
        return None
    if change.status and not _had_ready(old):
        return None
    return change


def _had_ready(status: Mapping[str, Any] | None) -> bool:
    return any(c.get("type") == READY for c in (status or {}).get("conditions") or [])


def ready_changed(old: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> Verdict | None:
    """The new Ready verdict when Ready's status or reason changed (worth an Event), else None."""

    def ready(status: Mapping[str, Any] | None) -> Mapping[str, Any]:
        for c in (status or {}).get("conditions") or []:
            if c.get("type") == READY:
                return dict(c)
        return {}

    before, after = ready(old), ready(desired)
    if (before.get("status"), before.get("reason")) == (after.get("status"), after.get("reason")):
        return None
    return Verdict(
        READY, after.get("status") == "True", after.get("reason", ""), after.get("message", "")
    )
