"""What each resource's ``status`` should say, computed from compile results and sidecar reports.

Owns: the standard conditions (``Ready``, ``Reconciling``, ``Stalled`` - read by Flux kstatus and
the Argo CD health check - plus ``Valid``, ``ResolvedRefs`` and a route's ``CredentialsAvailable``)
with reasons a person can act on, ``observedGeneration`` and ``enforcedGeneration`` (the generation
in force, which lags while a later edit is invalid), kind-specific status fields (a route's resolved
model name, backend health and rollout, and each limited backend's provider quota as the operator
shares it out; a template's version hashes, evaluation results and label history; a gated label
move that waits for an evaluation is Ready=False, Reconciling=True), and the minimal merge patch
from the current status to the desired one (``None`` when nothing changed, so an idle operator
writes nothing).

A purely computational module with no side-effects; the caller performs the IO. Time is passed in.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .compile import CompileResult, Problem, prices
from .quotas import QuotaView

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
RESOLVED_REFS = "ResolvedRefs"
VALID = "Valid"
CREDENTIALS = "CredentialsAvailable"

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
# Problems with a reference to another object (ResolvedRefs=False); others (a model-name
# conflict) leave ResolvedRefs alone.
REFERENCE_REASONS = frozenset({"RouteNotFound", "SelectsNothing"})
# Problems that wait on something outside the cluster (an evaluation result from CI): Ready=False
# and Reconciling=True (kstatus: in progress), not Stalled.
WAITING_REASONS = frozenset({"EvaluationPending"})


@dataclass(frozen=True)
class Verdict:
    """One condition's desired value; ``status`` is "True", "False" or "Unknown"."""

    type: str
    status: str
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == TRUE


def _condition(
    old: Sequence[Mapping[str, Any]], v: Verdict, generation: int, now: str
) -> dict[str, Any]:
    previous = next((c for c in old if c.get("type") == v.type), None)
    since = (
        previous["lastTransitionTime"]
        if previous and previous.get("status") == v.status and previous.get("lastTransitionTime")
        else now
    )
    return {
        "type": v.type,
        "status": v.status,
        "reason": v.reason,
        "message": v.message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def invalid_reason(invalid: Sequence[str]) -> str:
    """A CamelCase reason naming the field at fault: ``spec.limits[0].timezone: …`` →
    ``InvalidTimezone``; ``InvalidSpec`` when no field is named."""
    path = invalid[0].split(": ", 1)[0] if invalid and ": " in invalid[0] else ""
    words = [w for w in re.split(r"[.\[\]]", path) if w and not w.isdigit()]
    field = words[-1] if len(words) > 1 else ""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", field):
        return "InvalidSpec"
    return "Invalid" + field[0].upper() + field[1:]


@dataclass(frozen=True)
class KeysSeen:
    """What the live sidecars serving a route said about its backends' API keys."""

    pods: int = 0  # sidecars that report the route
    missing: Mapping[str, Sequence[str]] = field(default_factory=dict)  # backend -> those pods


@dataclass(frozen=True)
class Facts:
    """What the status of one object is computed from (all pure data)."""

    invalid: Sequence[str] = ()  # "path: message" for each validation error of the spec
    problems: Sequence[Problem] = ()  # reference and conflict problems found by the compiler
    in_effect: bool = False  # the object has rules in the compiled config
    enforced: int | None = None  # the generation in force, when known
    #: backend -> (Secret, key) of each ModelRoute backend that reads an API key
    secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    route: bool = False  # the object is a ModelRoute (gets the credentials condition)
    keys: KeysSeen = KeysSeen()  # the sidecars' word on those keys (ModelRoute only)
    keys_missing_for: float = 0.0  # seconds CredentialsAvailable has been False
    namespace: str = ""


def verdicts(facts: Facts) -> list[Verdict]:
    """Conditions for one resource. Ready says whether the current generation is in effect (and,
    for a ModelRoute, whether its sidecars can read every backend's API key); Stalled=True
    whenever it is not because of something only a person can fix in the spec (so kstatus says
    Failed and the Argo CD check Degraded); a missing key or a pending evaluation is waited for
    (Reconciling=True: in progress); Reconciling is False once the operator has acted on the
    generation (before that, ``observedGeneration`` lags and both read it as in progress)."""
    if facts.invalid:
        reason = invalid_reason(facts.invalid)
        errors = "; ".join(facts.invalid)
        if facts.in_effect:
            which = (
                f"generation {facts.enforced}" if facts.enforced else "its last valid generation"
            )
            note = (
                f"Still enforcing {which}; fix the spec (or revert it) to apply changes. "
                "Deleting the object removes its rules."
            )
        else:
            note = "Not in effect: no generation of this object was valid yet; fix the spec."
        message = f"{errors}. {note}"
        out = [
            Verdict(VALID, FALSE, reason, errors),
            Verdict(RESOLVED_REFS, UNKNOWN, "NotChecked", "Not checked: the spec is invalid."),
            Verdict(READY, FALSE, reason, message),
            Verdict(STALLED, TRUE, reason, message),
            Verdict(RECONCILING, FALSE, reason, "Waiting for a valid spec."),
        ]
        if facts.route:
            out.append(Verdict(CREDENTIALS, UNKNOWN, "NotChecked", "The spec is invalid."))
        return out
    out = [Verdict(VALID, TRUE, "Valid", "The spec is valid.")]
    refs = [p for p in facts.problems if p.reason in REFERENCE_REASONS]
    if refs:
        out.append(Verdict(RESOLVED_REFS, FALSE, refs[0].reason, _say(refs)))
    else:
        out.append(Verdict(RESOLVED_REFS, TRUE, "ResolvedRefs", "All references resolve."))
    if facts.problems:
        first = facts.problems[0]
        message = _say(facts.problems)
        if not facts.in_effect:
            message += ". Not in effect."
        out.append(Verdict(READY, FALSE, first.reason, message))
        if first.reason in WAITING_REASONS:
            out.append(Verdict(STALLED, FALSE, first.reason, "Waiting, not blocked."))
            out.append(Verdict(RECONCILING, TRUE, first.reason, message))
            return out + ([_credentials(facts)] if facts.route else [])
        out.append(Verdict(STALLED, TRUE, first.reason, message))
    elif facts.route and facts.keys.missing:
        # In effect, but a backend cannot authenticate: not Ready. Waiting (Reconciling) for
        # KEYS_GRACE, then Stalled: a Secret often comes a moment after the route (External
        # Secrets, Sealed Secrets, the same sync) and reaches running pods with the kubelet.
        message = _missing_keys(facts)
        out.append(Verdict(READY, FALSE, KEYS_MISSING, message))
        if facts.keys_missing_for < KEYS_GRACE:
            out.append(Verdict(STALLED, FALSE, KEYS_MISSING, "Waiting for the API key."))
            out.append(Verdict(RECONCILING, TRUE, KEYS_MISSING, message))
            return [*out, _credentials(facts)]
        out.append(Verdict(STALLED, TRUE, KEYS_MISSING, message))
    else:
        out.append(Verdict(READY, TRUE, "Compiled", "In effect in the namespace's sidecar config."))
        out.append(Verdict(STALLED, FALSE, "Compiled", "Nothing blocks this object."))
    out.append(
        Verdict(RECONCILING, FALSE, "Compiled", "The operator has acted on this generation.")
    )
    if facts.route:
        out.append(_credentials(facts))
    return out


def _say(problems: Sequence[Problem]) -> str:
    return "; ".join(f"{p.path}: {p.message}" for p in problems)


KEYS_MISSING = "CredentialsMissing"
#: Seconds a route may wait for a missing API key (Reconciling: kstatus InProgress, Argo CD
#: Progressing) before it is Stalled (Failed, Degraded): a Secret created with or just after the
#: route reaches running pods within the kubelet's sync period (about a minute), then a report.
KEYS_GRACE = 180.0
#: Pods named in a CredentialsMissing message (the count says how many there are).
NAMED_PODS = 3


def _credentials(facts: Facts) -> Verdict:
    """``CredentialsAvailable``: the operator cannot read Secrets (by design), so the sidecars,
    which read the mounted keys, say whether they can: False when any live one cannot, True when
    every one can, Unknown before any reports."""
    if not facts.secrets:
        return Verdict(CREDENTIALS, TRUE, "NoSecrets", "No backend of this route needs an API key.")
    if facts.keys.missing:
        return Verdict(CREDENTIALS, FALSE, KEYS_MISSING, _missing_keys(facts))
    refs = ", ".join(f"Secret {s} key {k}" for s, k in sorted(set(facts.secrets.values())))
    if facts.keys.pods:
        return Verdict(
            CREDENTIALS,
            TRUE,
            "ReadBySidecars",
            f"The {facts.keys.pods} sidecar(s) serving this route read every API key ({refs}).",
        )
    return Verdict(
        CREDENTIALS,
        UNKNOWN,
        "CheckedBySidecar",
        f"No sidecar serving this route has reported yet. The operator has no access to Secrets, "
        f"so it cannot tell whether {refs} exist; each sidecar reads the mounted key, reports it "
        "here, and answers 503 missing_credential for a backend whose key is missing (then falls "
        "back to the next backend).",
    )


def _missing_keys(facts: Facts) -> str:
    parts = []
    for backend, pods in sorted(facts.keys.missing.items()):
        secret, key = facts.secrets.get(backend, ("?", "?"))
        named = ", ".join(sorted(pods)[:NAMED_PODS]) + (", ..." if len(pods) > NAMED_PODS else "")
        parts.append(
            f"backend {backend}: {len(pods)} of {facts.keys.pods} sidecar(s) ({named}) cannot "
            f"read Secret {secret} key {key} (no such Secret or key, or the value is empty or "
            f"has a line break); create it with `kubectl create secret generic {secret} "
            f"-n {facts.namespace or '<namespace>'} --from-literal={key}=<API key>`"
        )
    return (
        "; ".join(parts) + ". Meanwhile requests fall over to the next backend. The kubelet "
        "brings a new or fixed Secret into running pods within about a minute, and this clears."
    )


def conditions(
    old: Sequence[Mapping[str, Any]], found: Sequence[Verdict], generation: int, now: str
) -> list[dict[str, Any]]:
    """New condition list: our types updated (keeping transition times), other types kept."""
    ours = {v.type for v in found}
    kept = [dict(c) for c in old if c.get("type") not in ours]
    return [_condition(old, v, generation, now) for v in found] + kept


def kind_fields(
    kind: str,
    obj: Mapping[str, Any],
    result: CompileResult | None,
    now: str,
    evaluations: Mapping[int, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Kind-specific status fields derived from the spec and the compiled config (and, for a
    PromptTemplate, ``evaluations``: each version's recorded evaluation, when known)."""
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
                **(
                    _keep_evaluation(old, v.version)
                    if evaluations is None
                    else (
                        {"evaluation": dict(evaluations[v.version])}
                        if v.version in evaluations
                        else {}
                    )
                ),
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
            "labelsSummary": labels_summary(prompt.labels),
            "versions": versions,
            "labelHistory": history[-50:],
        }
    return {}


def labels_summary(labels: Mapping[str, int]) -> str | None:
    """``production=3,canary=4``: production first, then by name (None when there are none)."""
    order = sorted(labels, key=lambda label: (label != "production", label))
    return ",".join(f"{label}={labels[label]}" for label in order) or None


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
    *,
    evaluations: Mapping[int, Mapping[str, Any]] | None = None,
    keys: KeysSeen = KeysSeen(),
) -> dict[str, Any]:
    """The full status the resource should have now (``keys``: a ModelRoute's sidecars' word on
    its API keys)."""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    generation = int(meta.get("generation") or 1)
    old = obj.get("status") or {}
    problems = result.problems_for(kind, name) if result is not None and not invalid else []
    in_effect = result is not None and result.in_effect(kind, name)
    enforced: int | None = None
    if in_effect:
        # Valid: this generation. Invalid: the last valid one, carried over; its number is in
        # the status we wrote then.
        enforced = generation if not invalid else old.get("enforcedGeneration")
    status = dict(old)
    status.update(kind_fields(kind, obj, result if not invalid else None, now, evaluations))
    status["observedGeneration"] = generation
    status["enforcedGeneration"] = enforced
    secrets = _secrets(obj) if kind == "ModelRoute" else {}
    # Only backends that read a key now (a sidecar may still run an older config).
    keys = KeysSeen(keys.pods, {b: p for b, p in keys.missing.items() if b in secrets})
    facts = Facts(
        keys_missing_for=_false_for(old.get("conditions") or [], CREDENTIALS, now),
        invalid=invalid,
        problems=problems,
        in_effect=in_effect,
        enforced=enforced,
        secrets=secrets,
        route=kind == "ModelRoute",
        keys=keys,
        namespace=str(meta.get("namespace") or ""),
    )
    found = verdicts(facts)
    if kind == "ModelRoute" and not invalid:
        found.append(price_verdict(obj))
        status["pricesAsOf"] = prices.AS_OF
    status["conditions"] = conditions(old.get("conditions") or [], found, generation, now)
    return status


def _false_for(old: Sequence[Mapping[str, Any]], type_: str, now: str) -> float:
    """Seconds the condition ``type_`` has been False as of ``now`` (0 when it is not False)."""
    c = next((c for c in old if c.get("type") == type_), None)
    if c is None or c.get("status") != FALSE:
        return 0.0
    try:
        since = dt.datetime.fromisoformat(str(c.get("lastTransitionTime")))
        return max(0.0, (dt.datetime.fromisoformat(now) - since).total_seconds())
    except ValueError:
        return 0.0


PRICE_UNKNOWN = "PriceUnknown"


def price_verdict(obj: Mapping[str, Any]) -> Verdict:
    """``PriceUnknown``: True naming each backend (not a mock) whose input or output price is
    neither in its ``pricing`` nor in the built-in table; its spend counts as zero."""
    missing = []
    for item in (obj.get("spec") or {}).get("backends") or []:
        b = item or {}
        if b.get("provider") == "mock":
            continue
        pricing = b.get("pricing") or {}
        if "inputPerMTok" in pricing and "outputPerMTok" in pricing:
            continue
        if not prices.known(str(b.get("model") or "")):
            missing.append(f"{b.get('name')} ({b.get('model')})")
    if not missing:
        return Verdict(PRICE_UNKNOWN, FALSE, "Priced", "Every backend has a price.")
    return Verdict(
        PRICE_UNKNOWN,
        TRUE,
        "NoPrice",
        f"No price for {', '.join(missing)}: the built-in table (as of {prices.AS_OF}) does not "
        "know the model, so its spend counts as 0 USD in budgets (tokens and requests still "
        "count); set spec.backends[].pricing.",
    )


def _secrets(obj: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """backend -> (Secret, key) for every backend of a ModelRoute that reads an API key."""
    out = {}
    for b in (obj.get("spec") or {}).get("backends") or []:
        ref = ((b or {}).get("credentials") or {}).get("secretRef") or {}
        if ref.get("name"):
            out[str(b.get("name", ""))] = (str(ref["name"]), str(ref.get("key", "")))
    return out


# --- ModelRoute provider quotas -------------------------------------------------------------------

#: Status shows a granted total to the nearest 1/QUOTA_STEPS of its limit (whole units; exact
#: for limits under QUOTA_STEPS): shares move a little at every renewal, and a status write for
#: each move would be noise. The operator's metrics carry the exact values.
QUOTA_STEPS = 20


def rounded(value: int, limit: int) -> int:
    """``value`` to the nearest multiple of ``limit // QUOTA_STEPS`` (at least 1), never above
    ``max(value, limit)``: a total within the limit is shown within it."""
    step = max(1, limit // QUOTA_STEPS)
    return min(step * ((2 * value + step) // (2 * step)), max(value, limit))


def quota_status(view: QuotaView) -> dict[str, int]:
    """A backend's ``quota`` block: ``rpm``/``tpm`` (the limit) and ``grantedRpm``/``grantedTpm``
    (the live shares summed, ``rounded``) for each limited metric, and ``holders``."""
    out: dict[str, int] = {}
    for limit, granted, name in zip(view.limit, view.granted, ("Rpm", "Tpm"), strict=True):
        if limit is not None:
            out[name.lower()] = limit
            out[f"granted{name}"] = rounded(granted, limit)
    out["holders"] = view.holders
    return out


def with_quotas(
    backends: Sequence[Mapping[str, Any]], route: str, views: Sequence[QuotaView]
) -> list[dict[str, Any]]:
    """``backends`` (a ModelRoute's ``status.backends``, as the sidecars report them) with a
    ``quota`` block on each backend of ``route`` (the virtual model name) that ``views`` name."""
    quotas = {v.backend: quota_status(v) for v in views if v.route == route}
    return [
        {**b, "quota": quotas[b["name"]]} if b.get("name") in quotas else dict(b) for b in backends
    ]


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
    if change.ok and not _had_ready(old):
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
        READY, after.get("status", UNKNOWN), after.get("reason", ""), after.get("message", "")
    )


# --- Budget --------------------------------------------------------------------------------------

THRESHOLD = "ThresholdReached"


def threshold_verdict(windows: Sequence[Mapping[str, Any]], thresholds: Sequence[int]) -> Verdict:
    """``ThresholdReached``: True naming the highest alert threshold reached in a current window
    (reason ``Threshold80``, or ``Exhausted`` at 100), False below every threshold."""
    reached = [(t, w) for w in windows for t in thresholds if float(w.get("percent") or 0.0) >= t]
    if not reached:
        return Verdict(THRESHOLD, FALSE, "BelowThresholds", "No alert threshold is reached.")
    top, where = max(reached, key=lambda tw: (tw[0], float(tw[1].get("percent") or 0.0)))
    reason = "Exhausted" if top >= 100 else f"Threshold{top}"
    return Verdict(
        THRESHOLD,
        TRUE,
        reason,
        f"{where.get('window')}: {where.get('percent')}% of {where.get('limit')} used "
        f"(threshold {top}%); resets at {where.get('resetsAt') or 'a rolling boundary'}.",
    )
