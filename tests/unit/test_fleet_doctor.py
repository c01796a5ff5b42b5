"""`sluice status` tables from objects, and `sluice doctor`'s CRD comparison (no cluster)."""

from __future__ import annotations

from typing import Any

from sluice_cli import doctor, fleet


def route(hash_: str, sidecars: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat"},
        "status": {
            "model": "chat",
            "rollout": {"configHash": hash_, "summary": "1/2", "sidecars": sidecars},
            "backends": [
                {"name": "a", "state": "Ejected", "until": "T", "requests": 3},
                {"name": "k", "state": "Healthy", "credentials": "Missing"},
            ],
            "conditions": [{"type": "Ready", "status": "True", "reason": "Compiled"}],
        },
    }


def test_pods_are_current_stale_or_silent() -> None:
    sidecars = [
        {"pod": "p1", "configHash": "h2", "lastReport": "2025-01-01T10:00:00Z"},
        {"pod": "p2", "configHash": "h1", "lastReport": "2025-01-01T10:01:00Z"},
    ]
    budget = {
        "metadata": {"name": "b"},
        "spec": {"onExceeded": {"action": "AlertOnly"}},
        "status": {"state": "Warning", "windows": [{"window": "Day", "percent": 81.5}]},
    }
    got = fleet.build(
        "shop",
        {"ModelRoute": [route("h2", sidecars)], "Budget": [budget]},
        ["p1", "p2", "p3"],
    )
    assert [(p.name, p.state) for p in got.pods] == [
        ("p1", "current"),
        ("p2", "stale"),
        ("p3", "no report"),
    ]
    assert got.not_ready == ["Budget b: not seen yet"]
    text = fleet.render(got)
    assert "a Ejected until T (3 req, 0 err), k Healthy KEY MISSING (0 req, 0 err)" in text
    assert "b       Warning  AlertOnly    Day 81.5%" in text


def test_served_crd_may_add_fields_but_not_differ() -> None:
    wanted = {"versions": [{"name": "v1", "schema": {"type": "object"}}]}
    served = {"versions": [{"name": "v1", "schema": {"type": "object"}, "x": 1}], "y": 2}
    assert doctor._contains(served, wanted)
    assert not doctor._contains({"versions": [{"name": "v0"}]}, wanted)
    assert not doctor._contains({"versions": []}, wanted)
