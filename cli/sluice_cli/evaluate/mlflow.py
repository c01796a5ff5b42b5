"""``sluice eval --mlflow URI``: log one evaluation run to an MLflow tracking server.

Owns the calls to MLflow's REST API (``/api/2.0/mlflow/...``; no ``mlflow`` package needed: it is
close to 1 GB installed): the experiment (``sluice-eval/<template>``, created when missing), a run
with params (template, version, route, threshold, repeat), metrics (score, pass rate of each run,
cost, latency) and the per-case table as the artifact ``cases.json`` (through the server's artifact
proxy, ``mlflow server``'s default). Blocking IO with ``urllib``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .report import Summary, as_json


class MlflowError(RuntimeError):
    pass


def _call(base: str, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
    url = base.rstrip("/") + path
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - user's URI
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            text = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise MlflowError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
    except OSError as exc:
        raise MlflowError(f"cannot reach the MLflow server at {base}: {exc}") from None
    return json.loads(text) if text.strip() else {}


def log_run(uri: str, summary: Summary, repeat: int) -> str:
    """Log ``summary``; returns the MLflow run id."""
    name = f"sluice-eval/{summary.template}"
    query = urllib.parse.urlencode({"experiment_name": name})
    try:
        exp = _call(uri, "GET", f"/api/2.0/mlflow/experiments/get-by-name?{query}")
        experiment_id = exp["experiment"]["experiment_id"]
    except MlflowError as exc:
        if "RESOURCE_DOES_NOT_EXIST" not in str(exc):
            raise
        experiment_id = _call(uri, "POST", "/api/2.0/mlflow/experiments/create", {"name": name})[
            "experiment_id"
        ]
    now = int(time.time() * 1000)
    run = _call(
        uri,
        "POST",
        "/api/2.0/mlflow/runs/create",
        {
            "experiment_id": experiment_id,
            "start_time": now,
            "run_name": f"{summary.template}@{summary.version}",
            "tags": [{"key": "sluice.template", "value": summary.template}],
        },
    )["run"]["info"]
    run_id = run["run_id"]
    params = {
        "template": summary.template,
        "version": str(summary.version),
        "route": summary.route,
        "threshold": str(summary.threshold),
        "repeat": str(repeat),
    }
    metrics = [
        ("score", summary.score, 0),
        ("passed", float(summary.passed), 0),
        ("cost_usd", summary.cost_usd, 0),
        ("latency_p50_ms", summary.latency_p50_ms, 0),
        ("latency_mean_ms", summary.latency_mean_ms, 0),
        *(("pass_rate", rate, step) for step, rate in enumerate(summary.runs)),
    ]
    _call(
        uri,
        "POST",
        "/api/2.0/mlflow/runs/log-batch",
        {
            "run_id": run_id,
            "params": [{"key": k, "value": v} for k, v in params.items()],
            "metrics": [
                {"key": k, "value": float(v), "timestamp": now, "step": s} for k, v, s in metrics
            ],
        },
    )
    artifact_uri = str(run.get("artifact_uri", ""))
    prefix = "mlflow-artifacts:/"
    if artifact_uri.startswith(prefix):
        path = urllib.parse.quote(artifact_uri[len(prefix) :].strip("/") + "/cases.json")
        body = json.dumps(as_json(summary), indent=2).encode()
        _call(uri, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{path}", raw=body)
    _call(
        uri,
        "POST",
        "/api/2.0/mlflow/runs/update",
        {"run_id": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)},
    )
    return str(run_id)
