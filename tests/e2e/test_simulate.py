"""``sluice simulate`` end to end: an audit log recorded by running real requests through an
in-process sidecar (``create_app``, the mock provider, a fake clock, ``MemoryAudit``), then
replayed against changed manifests - a new Budget, a new price, a renamed route, a new backend,
a routing rule, a workloadSelector, a new GuardrailPolicy (with and without prompt text) - each
checked in the table, the ``--json`` report and the exit code; bad input is exit 2 naming the
file, line and field."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from sluice_cli.main import main
from sluice_operator import manifests as mf
from sluice_operator.compile import compile_namespace
from sluice_sidecar import app as sidecar_app
from sluice_sidecar.metering import MemoryAudit
from tests.fakes.clock import FakeClock

Docs = list[dict[str, Any]]
HOUR = 3600.0
#: The requests recorded, an hour apart: (prompt, max_tokens). One carries an e-mail address.
REQUESTS = [
    ("Hello there, how do I reset my password?", 50),
    ("What is the weather like on the moon today?", 50),
    ("Please write to ana@example.com about the invoice.", 50),
    ("Summarise our refund policy in one line.", 50),
    (
        "A long question. " * 40,
        50,
    ),
    ("Last question of the day, thanks!", 50),
]


def old_docs() -> Docs:
    def backend(name: str, price: float, priority: int) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "mock",
            "model": f"{name}-1",
            "priority": priority,
            "pricing": {"inputPerMTok": price, "outputPerMTok": 2 * price},
            "mock": {"completionTokens": 20},
        }

    return [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": "chat"},
            "spec": {"backends": [backend("a", 1.0, 0), backend("b", 3.0, 1)]},
        },
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "GuardrailPolicy",
            "metadata": {"name": "pii"},
            "spec": {"mode": "Enforce", "input": {"pii": {"entities": ["EMAIL"], "action": "Log"}}},
        },
    ]


def write(folder: Path, docs: Docs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "all.yaml").write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    return folder


async def _record(folder: Path) -> list[dict[str, Any]]:
    resources, errors = mf.load_paths([folder])
    assert not errors, errors
    config = compile_namespace("default", resources).config
    audit, clock = MemoryAudit(), FakeClock()
    api = sidecar_app.create_app(
        config, clock=clock, audit=audit, pod_labels={}, who={}, audit_prompts=True
    )
    async with TestClient(TestServer(api)) as client:
        for i, (prompt, cap) in enumerate(REQUESTS):
            body = {
                "model": "chat",
                "max_tokens": cap,
                "messages": [{"role": "user", "content": prompt}],
            }
            resp = await client.post(
                "/v1/chat/completions", json=body, headers={"x-request-id": f"r{i}"}
            )
            assert resp.status == 200, await resp.text()
            await asyncio.sleep(0)
            clock.advance(HOUR)
    assert len(audit.records) == len(REQUESTS)
    return audit.records


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(old manifests, audit log with prompts, the same log without prompt text)."""
    tmp = tmp_path_factory.mktemp("simulate")
    old = write(tmp / "old", old_docs())
    recs = asyncio.run(_record(old))
    with_text = tmp / "audit.jsonl"
    with_text.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    bare = tmp / "audit-bare.jsonl"
    bare.write_text(
        "".join(
            json.dumps({k: v for k, v in r.items() if k != "promptMessages"}) + "\n" for r in recs
        ),
        encoding="utf-8",
    )
    return old, with_text, bare


def changed(tmp: Path, edit: Callable[[Docs], None]) -> Path:
    docs = copy.deepcopy(old_docs())
    edit(docs)
    return write(tmp / "new", docs)


def simulate(*args: str | Path, tmp: Path) -> tuple[int, dict[str, Any]]:
    """``sluice simulate ARGS --json FILE``: the exit code and the JSON report."""
    out = tmp / "report.json"
    code = main(["simulate", *map(str, args), "--json", str(out)])
    return code, json.loads(out.read_text())


def budget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Budget",
        "metadata": {"name": name},
        "spec": spec,
    }


def route_of(docs: Docs, name: str = "chat") -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "ModelRoute" and d["metadata"]["name"] == name)


def test_unchanged_manifests_change_nothing(
    recorded: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, audit, _ = recorded
    code, doc = simulate(old, "--audit", audit, tmp=tmp_path)
    assert code == 0, capsys.readouterr().out
    assert doc["differs"] is False and doc["records"] == len(REQUESTS)
    assert doc["guardrailsReplayed"] == len(REQUESTS)
    assert "SAME: nothing would differ" in capsys.readouterr().out
    code, doc = simulate(old, "--audit", audit, "--against", old, tmp=tmp_path)
    assert code == 0 and not doc["changes"]


def test_a_new_budget_says_which_requests_it_would_refuse_and_when(
    recorded: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, audit, _ = recorded

    def edit(docs: Docs) -> None:
        docs.append(budget("three-a-day", limits=[{"window": "Day", "requests": 3}]))

    new = changed(tmp_path, edit)
    code, doc = simulate(new, "--audit", audit, tmp=tmp_path)
    out = capsys.readouterr().out
    assert code == 1, out
    assert doc["counts"]["budget.refused"] == len(REQUESTS) - 3
    refused = [c for c in doc["changes"] if c["change"] == "refused"]
    assert [c["requestId"] for c in refused] == ["r3", "r4", "r5"]
    assert all("three-a-day" in c["new"] and c["at"].endswith("Z") for c in refused)
    assert "(3 refused by a budget)" in out
    # the refused requests no longer cost anything
    spend = {s["route"]: s for s in doc["spend"]}
    assert spend["chat"]["newUSD"] < spend["chat"]["oldUSD"]
    # --against: the same answer from two replays
    code, doc2 = simulate(new, "--audit", audit, "--against", old, tmp=tmp_path)
    assert code == 1 and doc2["counts"]["budget.refused"] == 3


def test_a_usd_budget_reserves_the_worst_case_the_record_shows(
    recorded: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, audit, _ = recorded

    def edit(docs: Docs) -> None:
        docs.append(budget("tiny", limits=[{"window": "Day", "usd": 0.0002}]))

    code, doc = simulate(changed(tmp_path, edit), "--audit", audit, tmp=tmp_path)
    assert code == 1
    assert 0 < doc["counts"]["budget.refused"] < len(REQUESTS)
    # a bigger assumed output cap makes every reservation bigger: more refusals
    code, doc2 = simulate(
        changed(tmp_path, edit), "--audit", audit, "--max-tokens", "4000", tmp=tmp_path
    )
    assert doc2["counts"]["budget.refused"] > doc["counts"]["budget.refused"]


def test_a_downgrade_budget_moves_requests_and_their_spend(
    recorded: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, audit, _ = recorded

    def edit(docs: Docs) -> None:
        cheap = copy.deepcopy(route_of(docs))
        cheap["metadata"]["name"] = "cheap"
        cheap["spec"]["backends"] = [cheap["spec"]["backends"][0]]
        cheap["spec"]["backends"][0]["pricing"] = {"inputPerMTok": 0.1, "outputPerMTok": 0.2}
        docs.append(cheap)
        docs.append(
            budget(
                "two-then-cheap",
                selector={"routes": ["chat"]},
                limits=[{"window": "Day", "requests": 2}],
                onExceeded={"action": "Downgrade", "route": "cheap"},
            )
        )

    code, doc = simulate(changed(tmp_path, edit), "--audit", audit, tmp=tmp_path)
    assert code == 1
    assert doc["counts"]["budget.downgraded"] == len(REQUESTS) - 2
    assert doc["counts"]["budget.refused"] == 0 and doc["counts"]["routing.route"] == 0
    spend = {s["route"]: s for s in doc["spend"]}
    assert spend["cheap"]["oldUSD"] == 0 and spend["cheap"]["newUSD"] > 0


def test_a_new_price_changes_spend_per_route(
    recorded: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, audit, _ = recorded

    def edit(docs: Docs) -> None:
        route_of(docs)["spec"]["backends"][0]["pricing"] = {
            "inputPerMTok": 2.0,
            "outputPerMTok": 4.0,
        }

    code, doc = simulate(changed(tmp_path, edit), "--audit", audit, tmp=tmp_path)
    assert code == 1
    assert not doc["changes"]
    (row,) = doc["spend"]
    assert row["route"] == "chat" and row["newUSD"] == pytest.approx(2 * row["oldUSD"])
    assert "spend +" in capsys.readouterr().out


def test_a_renamed_route_makes_the_model_unknown(
    recorded: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, audit, _ = recorded

    def edit(docs: Docs) -> None:
        route_of(docs)["metadata"]["name"] = "chat-v2"

    code, doc = simulate(changed(tmp_path, edit), "--audit", audit, tmp=tmp_path)
    assert code == 1
    assert doc["counts"]["routing.unknown"] == len(REQUESTS)
    assert "no route 'chat'" in doc["changes"][0]["new"]


def test_a_new_first_backend_and_a_routing_rule(
    recorded: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, audit, _ = recorded

    def swap(docs: Docs) -> None:
        a, b = route_of(docs)["spec"]["backends"]
        a["priority"], b["priority"] = 1, 0

    code, doc = simulate(changed(tmp_path, swap), "--audit", audit, tmp=tmp_path)
    assert code == 1 and doc["counts"]["routing.route"] == len(REQUESTS)
    assert doc["changes"][0]["old"] == "chat/a (a-1)" and doc["changes"][0]["new"] == "chat/b (b-1)"

    def rule(docs: Docs) -> None:
        route_of(docs)["spec"]["routingRules"] = [
            {"name": "long", "match": {"minPromptTokens": 100}, "backends": ["b"]}
        ]

    code, doc = simulate(changed(tmp_path, rule), "--audit", audit, tmp=tmp_path)
    assert code == 1 and doc["counts"]["routing.route"] == 1
    assert doc["changes"][0]["requestId"] == "r4"

    def header_rule(docs: Docs) -> None:
        route_of(docs)["spec"]["routingRules"] = [
            {"name": "vip", "match": {"headers": {"x-tier": "vip"}}, "backends": ["b"]}
        ]

    code, doc = simulate(changed(tmp_path, header_rule), "--audit", audit, tmp=tmp_path)
    assert code == 0
    assert any("headers, which audit records do not carry" in k for k in doc["notSimulated"])


def test_a_workload_selector_with_the_pods_labels(
    recorded: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, audit, _ = recorded

    def edit(docs: Docs) -> None:
        route_of(docs)["spec"]["workloadSelector"] = {"matchLabels": {"app": "billing"}}

    new = changed(tmp_path, edit)
    code, doc = simulate(new, "--audit", audit, "--labels", "app=shop", tmp=tmp_path)
    assert code == 1 and doc["counts"]["routing.unknown"] == len(REQUESTS)
    code, doc = simulate(new, "--audit", audit, "--labels", "app=billing", tmp=tmp_path)
    assert code == 0
    code, doc = simulate(new, "--audit", audit, tmp=tmp_path)  # labels unknown: matches
    assert code == 0


def test_a_new_guardrail_policy_needs_the_prompt_text(
    recorded: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, audit, bare = recorded

    def edit(docs: Docs) -> None:
        docs[1]["spec"]["input"]["pii"]["action"] = "Block"

    new = changed(tmp_path, edit)
    code, doc = simulate(new, "--audit", audit, tmp=tmp_path)
    assert code == 1
    (change,) = doc["changes"]
    assert change["requestId"] == "r2" and change["kind"] == "guardrails"
    assert change["old"].startswith("log") and change["new"].startswith("block")
    assert doc["spend"][0]["newUSD"] < doc["spend"][0]["oldUSD"]  # the blocked one costs nothing
    capsys.readouterr()
    code, doc = simulate(new, "--audit", bare, tmp=tmp_path)
    out = capsys.readouterr().out
    assert code == 0 and doc["guardrailsReplayed"] == 0
    key = "guardrails not re-checked: no prompt text (recorded without --audit-prompts)"
    assert doc["notSimulated"][key] == len(REQUESTS)
    assert f"{len(REQUESTS)} record(s): {key}" in out


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("{not json", "not JSON"),
        ('{"ts": "yesterday"}', "'ts'"),
        ('{"ts": 1, "model": "chat", "route": "chat", "status": "ok"}', "'status'"),
        (
            '{"ts": 1, "model": "chat", "route": "chat", "status": 200, "inputTokens": -1}',
            "'inputTokens'",
        ),
        ('{"ts": 1, "route": "chat", "status": 200}', "'model' is missing"),
    ],
)
def test_bad_records_are_exit_2_naming_file_line_and_field(
    recorded: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: str,
    field: str,
) -> None:
    old, audit, _ = recorded
    bad = tmp_path / "bad.jsonl"
    bad.write_text(audit.read_text() + "\n" + line + "\n", encoding="utf-8")
    assert main(["simulate", str(old), "--audit", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:{len(REQUESTS) + 2}:" in err and field in err


def test_other_bad_input_is_exit_2(
    recorded: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, audit, _ = recorded
    assert main(["simulate", str(old), "--audit", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: cannot read" in capsys.readouterr().err
    broken = write(tmp_path / "broken", [{**old_docs()[0], "spec": {"backends": "x"}}])
    assert main(["simulate", str(broken), "--audit", str(audit)]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["simulate", str(old), "--audit", str(audit), "--labels", "app"]) == 2
