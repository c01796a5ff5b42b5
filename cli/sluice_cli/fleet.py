"""``sluice status`` (also ``kubectl sluice status``): which pod runs which config, and how it goes.

Owns reading a namespace's fleet through the user's kubeconfig - the injected pods (label
``sluice.dev/injected=true``) and the four kinds with their status (each route's rollout lists
every reporting pod's config hash and last report; backends' health; budgets' state) - and
printing it as tables (or JSON with ``-o json``). Missing credentials, an unreachable cluster and
missing CRDs end the command with one line saying what to do (exit 2). Reads only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from sluice_operator.api import GROUP, KINDS, VERSION
from sluice_operator.inject import annotations as ann

EXIT_CANNOT_READ = 2


class ClusterError(Exception):
    """The cluster cannot be read; ``str()`` says why and what to do."""


@dataclass
class PodRow:
    name: str
    config_hash: str | None = None
    last_report: str | None = None
    state: str = "no report"  # current | stale | no report


@dataclass
class Fleet:
    namespace: str
    config_hash: str | None = None
    pods: list[PodRow] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    budgets: list[dict[str, Any]] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)


def load_api(kubeconfig: str | None = None, context: str | None = None) -> tuple[Any, str]:
    """An API client from the kubeconfig, and the context's namespace."""
    try:
        from kubernetes import client, config
    except ModuleNotFoundError as exc:
        raise ClusterError(
            f"this command needs {exc.name}, part of the [operator] extra: "
            "pip install 'sluicegate[operator]'"
        ) from exc
    try:
        config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, TypeError) as exc:
        raise ClusterError(
            f"no usable kubeconfig ({exc}); set KUBECONFIG or pass --kubeconfig"
        ) from exc
    namespace = ((active or {}).get("context") or {}).get("namespace") or "default"
    return client.ApiClient(), str(namespace)


def _call(api: Any, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from kubernetes.client.exceptions import ApiException

    host = api.configuration.host
    try:
        return fn(*args, _request_timeout=10, **kwargs)
    except ApiException as exc:
        if exc.status == 404 and what.endswith(f".{GROUP}"):
            raise ClusterError(
                f"the Sluice CRDs are not installed at {host} ({what} is not served): "
                "kubectl apply --server-side -f crds/  (or helm install the chart)"
            ) from exc
        if exc.status in (401, 403):
            raise ClusterError(
                f"the cluster at {host} refused to list {what} ({exc.status} {exc.reason}); "
                "check your kubeconfig's user and its RBAC"
            ) from exc
        raise ClusterError(f"the cluster at {host} answered {exc.status} for {what}") from exc
    except Exception as exc:  # urllib3 wraps connection errors in several types
        raise ClusterError(f"cannot reach the cluster at {host}: {exc}") from exc


def gather(api: Any, namespace: str) -> Fleet:
    """Everything ``sluice status`` shows for ``namespace`` (reads only)."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    objects: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        got = _call(
            api,
            kind.crd_name,
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            kind.plural,
        )
        objects[kind.kind] = list(got.get("items") or [])
    pods = _call(
        api,
        "pods",
        client.CoreV1Api(api).list_namespaced_pod,
        namespace,
        label_selector=f"{ann.INJECTED.key}=true",
    )
    return build(namespace, objects, [p.metadata.name for p in pods.items or []])


def build(
    namespace: str, objects: Mapping[str, Sequence[Mapping[str, Any]]], pods: Sequence[str]
) -> Fleet:
    """The fleet from the objects (by kind) and the injected pods' names. Pure."""
    fleet = Fleet(namespace)
    reports: dict[str, dict[str, Any]] = {}
    for kind, items in objects.items():
        for obj in items:
            st = obj.get("status") or {}
            rollout = st.get("rollout") or {}
            fleet.config_hash = fleet.config_hash or rollout.get("configHash")
            for s in rollout.get("sidecars") or []:
                seen = reports.get(s["pod"])
                if seen is None or (s.get("lastReport") or "") > (seen.get("lastReport") or ""):
                    reports[s["pod"]] = dict(s)
            ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
            name = obj.get("metadata", {}).get("name", "?")
            if ready is None or ready.get("status") != "True":
                why = f"{ready.get('reason')}: {ready.get('message')}" if ready else "not seen yet"
                fleet.not_ready.append(f"{kind} {name}: {why}")
            if kind == "ModelRoute":
                fleet.routes.append(
                    {
                        "name": name,
                        "model": st.get("model") or name,
                        "applied": rollout.get("summary") or "-",
                        "backends": [
                            {
                                k: b.get(k)
                                for k in (
                                    "name",
                                    "state",
                                    "until",
                                    "credentials",
                                    "requests",
                                    "errors",
                                )
                            }
                            for b in st.get("backends") or []
                        ],
                    }
                )
            if kind == "Budget":
                fleet.budgets.append(
                    {
                        "name": name,
                        "state": st.get("state") or "-",
                        "action": ((obj.get("spec") or {}).get("onExceeded") or {}).get(
                            "action", "Block"
                        ),
                        "windows": [
                            {"window": w.get("window"), "percent": w.get("percent", 0)}
                            for w in st.get("windows") or []
                        ],
                    }
                )
    for pod in sorted(set(pods) | set(reports)):
        r = reports.get(pod)
        if r is None:
            fleet.pods.append(PodRow(pod))
            continue
        current = r.get("configHash") == fleet.config_hash
        fleet.pods.append(
            PodRow(pod, r.get("configHash"), r.get("lastReport"), "current" if current else "stale")
        )
    return fleet


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def render(fleet: Fleet) -> str:
    """The human-readable report."""
    out = [f"namespace {fleet.namespace}: current config {fleet.config_hash or '(none yet)'}", ""]
    if fleet.pods:
        rows = [("POD", "CONFIG", "LAST REPORT", "STATE")]
        rows += [(p.name, p.config_hash or "-", p.last_report or "-", p.state) for p in fleet.pods]
        out += [_table(rows), ""]
    else:
        out += ["no injected pods (label sluice.dev/inject=true on a pod or its namespace)", ""]
    if fleet.routes:
        rows = [("ROUTE", "MODEL", "APPLIED", "BACKENDS")]
        for r in fleet.routes:
            backends = ", ".join(
                f"{b['name']} {b['state']}"
                + (f" until {b['until']}" if b.get("until") else "")
                + (" KEY MISSING" if b.get("credentials") == "Missing" else "")
                + f" ({b.get('requests') or 0} req, {b.get('errors') or 0} err)"
                for b in r["backends"]
            )
            rows.append((r["name"], r["model"], r["applied"], backends or "no reports yet"))
        out += [_table(rows), ""]
    if fleet.budgets:
        rows = [("BUDGET", "STATE", "ON EXCEEDED", "WINDOWS")]
        for b in fleet.budgets:
            windows = ", ".join(f"{w['window']} {w['percent']}%" for w in b["windows"])
            rows.append((b["name"], b["state"], b["action"], windows or "-"))
        out += [_table(rows), ""]
    if fleet.not_ready:
        out += ["NOT READY", *(f"  {line}" for line in fleet.not_ready), ""]
    return "\n".join(out)


def main(
    namespace: str | None,
    output: str,
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    try:
        api, default_namespace = load_api(kubeconfig, context)
        fleet = gather(api, namespace or default_namespace)
    except ClusterError as exc:
        print(f"sluice status: {exc}", file=err)
        return EXIT_CANNOT_READ
    if output == "json":
        print(json.dumps(asdict(fleet), indent=2), file=out)
    else:
        out.write(render(fleet))
    return 0
