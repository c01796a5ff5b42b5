"""The Grafana dashboard parses and only queries metrics the sidecar really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from sluice_sidecar.metering import Metrics

REPO = Path(__file__).resolve().parents[2]
SCRAPE_TIME = {"sluice_backend_state", "sluice_config_loaded", "sluice_config_valid"}


def exported() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names | SCRAPE_TIME


def test_dashboard_queries_exported_metrics_only() -> None:
    dash = json.loads((REPO / "deploy" / "grafana" / "sluice-dashboard.json").read_text())
    known = exported()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b((?:sluice|gen_ai)_[a-z_]+)\{", target["expr"]):
                base = re.sub(r"_(bucket|sum|count|total)$", "", name)
                assert name in known or base in known, f"{panel['title']}: unknown metric {name}"
