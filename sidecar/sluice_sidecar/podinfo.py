"""Who this sidecar runs for: the pod's labels, from the injector's downward-API file.

Owns parsing the kubelet's downward-API ``metadata.labels`` file (one ``key="value"`` line per
label, values quoted Go-style) named by ``SLUICE_POD_LABELS_FILE``. Budgets, guardrail policies and
route ``workloadSelector``s match on these labels. Outside a pod (``sluice run``) there is no file
and the labels are empty, so selectors with ``matchLabels`` do not match.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

ENV = "SLUICE_POD_LABELS_FILE"


def parse_labels(text: str) -> dict[str, str]:
    """``key="value"`` lines → a dict. Malformed lines are skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or not key.strip():
            continue
        raw = raw.strip()
        try:
            value = json.loads(raw) if raw.startswith('"') else raw
        except ValueError:
            continue
        if isinstance(value, str):
            out[key.strip()] = value
    return out


def pod_labels(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The pod's labels, or {} when the file is not there."""
    path = (env if env is not None else os.environ).get(ENV)
    if not path:
        return {}
    try:
        return parse_labels(Path(path).read_text(encoding="utf-8"))
    except OSError:
        return {}


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when every selector label is on the pod (an empty selector matches every pod)."""
    return all(labels.get(k) == v for k, v in selector.items())
