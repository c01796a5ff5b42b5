"""``sluice eval --mlflow`` against a real ``mlflow server`` on loopback.

MLflow is about 850 MB installed (70 s on a fresh machine), so it is not in the [dev] extra:
``hack/ensure-mlflow.sh`` installs it once into a virtualenv of its own under ~/.cache/sluice and
``hack/test.sh`` points SLUICE_MLFLOW at it (an ``mlflow`` on PATH also works). Without one the
test fails and says how to get it. The client side needs nothing: it speaks MLflow's REST API.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice_cli.main import main

from .test_eval_cli import manifests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = os.environ.get("SLUICE_MLFLOW") or shutil.which("mlflow")
    if not exe:
        pytest.fail(
            "no mlflow server to test against: run `export SLUICE_MLFLOW=$(bash "
            "hack/ensure-mlflow.sh)` (or install the [mlflow] extra)"
        )
    work = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            exe,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{work}/mlflow.db",
            "--artifacts-destination",
            str(work / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((work / "server.log").read_text(errors="replace")[-2000:])
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _get(url: str, endpoint: str, **query: str) -> Any:
    full = f"{url}{endpoint}?{urllib.parse.urlencode(query)}" if query else url + endpoint
    with urllib.request.urlopen(full, timeout=10) as r:
        body = r.read()
    return json.loads(body) if endpoint.startswith("/api/2.0/mlflow/") else body


def test_eval_run_is_logged_with_params_metrics_and_case_table(
    mlflow_server: str, tmp_path: Path
) -> None:
    path = manifests(tmp_path)
    code = main(
        ["eval", str(path), "--template", "support", "--repeat", "2", "--mlflow", mlflow_server]
    )
    assert code == 0
    exp = _get(
        mlflow_server,
        "/api/2.0/mlflow/experiments/get-by-name",
        experiment_name="sluice-eval/support",
    )
    exp_id = exp["experiment"]["experiment_id"]
    with urllib.request.urlopen(
        urllib.request.Request(
            mlflow_server + "/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [exp_id]}).encode(),
            headers={"Content-Type": "application/json"},
        ),
        timeout=10,
    ) as r:
        runs = json.loads(r.read())["runs"]
    assert len(runs) == 1
    run = runs[0]
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params == {
        "template": "support",
        "version": "1",
        "route": "chat",
        "threshold": "1.0",
        "repeat": "2",
    }
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["score"] == 1.0 and metrics["passed"] == 1.0
    assert {"cost_usd", "latency_p50_ms", "pass_rate"} <= set(metrics)
    assert run["info"]["status"] == "FINISHED"
    artifact = _get(
        mlflow_server,
        "/get-artifact",
        path="cases.json",
        run_uuid=run["info"]["run_id"],
    )
    cases = json.loads(artifact)["cases"]
    assert {c["case"] for c in cases} == {"reset", "where"} and len(cases) == 4


def test_unreachable_mlflow_is_exit_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    assert main(["eval", str(manifests(tmp_path)), "--template", "support", "--mlflow", url]) == 2
