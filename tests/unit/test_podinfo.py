"""Parsing the downward-API labels file and matching selectors."""

from __future__ import annotations

from pathlib import Path

from sluice_sidecar import podinfo


def test_parse_kubelet_format_with_escapes() -> None:
    text = 'app="web"\nteam="a\\"b"\ntier="front end"\nbroken\n=x\n'
    assert podinfo.parse_labels(text) == {"app": "web", "team": 'a"b', "tier": "front end"}


def test_pod_labels_from_file_or_empty(tmp_path: Path) -> None:
    f = tmp_path / "labels"
    f.write_text('app="web"\n')
    assert podinfo.pod_labels({podinfo.ENV: str(f)}) == {"app": "web"}
    assert podinfo.pod_labels({podinfo.ENV: str(tmp_path / "missing")}) == {}
    assert podinfo.pod_labels({}) == {}


def test_selector_matching() -> None:
    assert podinfo.matches({}, {})
    assert podinfo.matches({"app": "web"}, {"app": "web", "x": "y"})
    assert not podinfo.matches({"app": "web"}, {"app": "api"})
    assert not podinfo.matches({"app": "web"}, {})


def test_snapshot_offers_only_routes_whose_workload_selector_matches() -> None:
    from sluice_sidecar.contract import Backend, Provider, Route, SidecarConfig
    from sluice_sidecar.gateway import snapshot_of

    mock = (Backend(name="m", provider=Provider.MOCK, model="m"),)
    cfg = SidecarConfig(
        namespace="ns",
        routes=(
            Route(name="open", source="open", backends=mock),
            Route(
                name="web-only", source="web-only", backends=mock, workload_selector={"app": "web"}
            ),
        ),
    )
    assert set(snapshot_of(cfg, {"app": "web"}).routes) == {"open", "web-only"}
    api = snapshot_of(cfg, {"app": "api"})
    assert set(api.routes) == {"open"}
    assert b"web-only" not in api.models_body
    assert set(snapshot_of(cfg).routes) == {"open"}
