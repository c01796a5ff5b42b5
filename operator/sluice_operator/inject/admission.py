"""AdmissionReview v1 in, AdmissionReview out: the webhook's logic without the HTTP server.

A purely computational function with no side-effects; the caller performs the IO. ``review``
validates the envelope, reads the namespace facts and Secret list from the cache (memory only, no
API call on the admission path), runs ``decide`` and ``build_patch``, and wraps the result as the
apiserver expects (base64 JSONPatch, ``warnings``, ``auditAnnotations``). Dry-run requests get the
same answer; the only difference is ``Outcome.dry_run``, which tells the caller not to record
anything. The answer is always an answer:

* a body that is not an AdmissionReview v1 with a ``request.uid`` cannot be answered in-protocol:
  ``MalformedReviewError`` (the HTTP layer replies 400 and the apiserver applies the failurePolicy);
* anything else that goes wrong (a malformed pod, a bug) admits the pod unchanged with a warning
  that says why, or, when ``settings.fail_closed``, denies it with that message;
* requests that are not a Pod CREATE are admitted unchanged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import decide as decide_mod
from . import patch as patch_mod
from .cache import InjectionCache
from .decide import Decision
from .patch import JsonPatch
from .settings import InjectorSettings

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
_MAX_WARNING = 240


class MalformedReviewError(ValueError):
    """The body is not an AdmissionReview v1 with a request uid; it cannot be answered."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one admission request, for logs, metrics and Events."""

    uid: str
    namespace: str
    pod: str
    dry_run: bool
    decision: Decision | None = None
    patch: JsonPatch = field(default_factory=list)
    error: str | None = None
    allowed: bool = True


def _pod_name(request: Mapping[str, Any], obj: Mapping[str, Any]) -> str:
    meta = decide_mod.metadata(obj)
    name = request.get("name") or meta.get("name")
    if name:
        return str(name)
    generate = meta.get("generateName")
    return f"{generate}<generated>" if generate else "<unnamed>"


def _warnings(texts: list[str]) -> list[str]:
    return [t if len(t) <= _MAX_WARNING else t[: _MAX_WARNING - 3] + "..." for t in texts]


def _envelope(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def parse_envelope(body: Any) -> tuple[str, Mapping[str, Any]]:
    """The request uid and the request; ``MalformedReviewError`` when the envelope is bad."""
    if not isinstance(body, Mapping):
        raise MalformedReviewError("the body is not a JSON object")
    if body.get("apiVersion") != API_VERSION or body.get("kind") != KIND:
        raise MalformedReviewError(
            f"expected apiVersion {API_VERSION} kind {KIND}, got "
            f"{body.get('apiVersion')!r} {body.get('kind')!r}"
        )
    request = body.get("request")
    if not isinstance(request, Mapping):
        raise MalformedReviewError("request is missing")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReviewError("request.uid is missing")
    return uid, request


def _is_pod_create(request: Mapping[str, Any]) -> bool:
    kind = request.get("kind")
    resource = request.get("resource")
    return (
        isinstance(kind, Mapping)
        and kind.get("group", "") == ""
        and kind.get("kind") == "Pod"
        and isinstance(resource, Mapping)
        and resource.get("resource") == "pods"
        and not request.get("subResource")
        and request.get("operation") == "CREATE"
    )


def review(
    body: Any, settings: InjectorSettings, cache: InjectionCache
) -> tuple[dict[str, Any], Outcome]:
    """Answer one AdmissionReview. Raises only ``MalformedReviewError``."""
    uid, request = parse_envelope(body)
    dry_run = request.get("dryRun") is True
    namespace = str(request.get("namespace") or "")
    try:
        if not _is_pod_create(request):
            outcome = Outcome(uid=uid, namespace=namespace, pod="", dry_run=dry_run)
            return _envelope({"uid": uid, "allowed": True}), outcome
        obj = request.get("object")
        if not isinstance(obj, Mapping):
            raise ValueError("request.object is not a pod object")
        namespace = namespace or str(decide_mod.metadata(obj).get("namespace") or "")
        if not namespace:
            raise ValueError("the request names no namespace")
        pod = _pod_name(request, obj)
        decision = decide_mod.decide(obj, namespace, cache.namespace(namespace), settings)
        ops = patch_mod.build_patch(obj, settings, cache.config(namespace).secrets, decision)
    except Exception as exc:  # every failure must still produce an answer
        return _failure(uid, namespace, dry_run, settings, exc)

    response: dict[str, Any] = {
        "uid": uid,
        "allowed": True,
        "auditAnnotations": {"decision": decision.code},
    }
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(ops, separators=(",", ":")).encode()
        ).decode()
    if decision.warnings:
        response["warnings"] = _warnings(decision.warnings)
    outcome = Outcome(
        uid=uid, namespace=namespace, pod=pod, dry_run=dry_run, decision=decision, patch=ops
    )
    return _envelope(response), outcome


def _failure(
    uid: str, namespace: str, dry_run: bool, settings: InjectorSettings, exc: Exception
) -> tuple[dict[str, Any], Outcome]:
    what = f"{type(exc).__name__}: {exc}"
    if settings.fail_closed:
        message = f"sluice injector could not process the pod ({what}); denied (fail closed)"
        response: dict[str, Any] = {
            "uid": uid,
            "allowed": False,
            "status": {"code": 500, "message": message, "reason": "InternalError"},
        }
    else:
        message = f"sluice: sidecar not injected, injector error ({what}); pod admitted unchanged"
        response = {"uid": uid, "allowed": True, "warnings": _warnings([message])}
    outcome = Outcome(
        uid=uid,
        namespace=namespace,
        pod="",
        dry_run=dry_run,
        error=what,
        allowed=not settings.fail_closed,
    )
    return _envelope(response), outcome
