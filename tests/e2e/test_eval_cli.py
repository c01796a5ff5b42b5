"""``sluice eval`` end to end: manifests → the in-process sidecar (mock provider, scripted judge)
→ checks → exit code, table, JSON and JUnit reports; bad input and an unreachable judge are 2."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice_cli.evaluate import checks as ck
from sluice_cli.main import main


def manifests(
    tmp: Path,
    *,
    reply: str = "To reset open Settings and choose Reset.",
    judge_reply: str = '{"score": 5, "reason": "correct"}',
    judge_fails: bool = False,
    checks: list[dict[str, Any]] | None = None,
    threshold: float = 1.0,
) -> Path:
    judge_backend: dict[str, Any] = {"name": "j", "provider": "mock", "model": "judge-1"}
    judge_backend["mock"] = {"failureRate": 1.0} if judge_fails else {"reply": judge_reply}
    docs = [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": "chat"},
            "spec": {
                "backends": [
                    {"name": "m", "provider": "mock", "model": "m-1", "mock": {"reply": reply}}
                ]
            },
        },
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": "judge"},
            "spec": {"backends": [judge_backend], "retry": {"attempts": 1}},
        },
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "PromptTemplate",
            "metadata": {"name": "support"},
            "spec": {
                "versions": [
                    {
                        "version": 1,
                        "route": "chat",
                        "messages": [{"role": "user", "content": "{{question}}"}],
                        "variables": {"question": {"required": True}},
                    }
                ],
                "labels": {"production": 1},
                "evaluation": {
                    "dataset": {
                        "cases": [
                            {
                                "name": "reset",
                                "variables": {"question": "Reset?"},
                                "expect": "reset",
                            },
                            {
                                "name": "where",
                                "variables": {"question": "Where?"},
                                "expect": "settings",
                            },
                        ]
                    },
                    "checks": checks
                    if checks is not None
                    else [{"type": "contains"}, {"type": "judge"}],
                    "judge": {"route": "judge", "rubric": "Helpful and correct?", "scale": 5},
                    "threshold": threshold,
                },
            },
        },
    ]
    path = tmp / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    return path


def run(path: Path, *extra: str) -> int:
    return main(["eval", str(path), "--template", "support", *extra])


def test_passing_version_exits_0_with_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_xml = tmp_path / "r.json", tmp_path / "r.xml"
    code = run(
        manifests(tmp_path), "--json", str(out_json), "--junit", str(out_xml), "--repeat", "3"
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "PASS: support@1 via chat" in printed
    assert "reset" in printed and "judge" in printed
    report = json.loads(out_json.read_text())
    assert report["score"] == 1.0 and report["runs"] == [1.0, 1.0, 1.0]
    assert len(report["cases"]) == 6
    assert report["cases"][0]["answer"].startswith("To reset")
    suite = ET.parse(out_xml).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "6" and suite.get("failures") == "0"


def test_failing_checks_exit_1_and_name_the_case(tmp_path: Path) -> None:
    out_json, out_xml = tmp_path / "r.json", tmp_path / "r.xml"
    path = manifests(tmp_path, reply="I cannot help with that.")
    assert run(path, "--json", str(out_json), "--junit", str(out_xml)) == 1
    report = json.loads(out_json.read_text())
    assert report["score"] == 0.0 and not report["passed"]
    assert any(f.startswith("reset: contains") for f in report["failed"])
    failures = ET.parse(out_xml).getroot().iter("failure")
    assert any("not found" in (f.get("message") or "") for f in failures)


def test_below_threshold_fails_at_or_above_passes(tmp_path: Path) -> None:
    # "where" passes (settings), "reset" fails: pass rate 0.5
    path = manifests(tmp_path, reply="Open the settings page.", threshold=0.5)
    assert run(path) == 0
    path = manifests(tmp_path, reply="Open the settings page.", threshold=0.6)
    assert run(path) == 1


def test_unparsable_judge_fails_the_case_never_passes_it(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    path = manifests(tmp_path, judge_reply="Score: 5 - great answer")
    assert run(path, "--json", str(out)) == 1
    checks = [c for case in json.loads(out.read_text())["cases"] for c in case["checks"]]
    judge = [c for c in checks if c["check"] == "judge"]
    assert judge and all(not c["passed"] and "not JSON" in c["detail"] for c in judge)


def test_unreachable_judge_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(manifests(tmp_path, judge_fails=True)) == 2
    assert "judge route 'judge'" in capsys.readouterr().err


def test_json_schema_check(tmp_path: Path) -> None:
    schema = json.dumps({"type": "object", "required": ["answer"]})
    good = manifests(
        tmp_path, reply='{"answer": "yes"}', checks=[{"type": "jsonSchema", "value": schema}]
    )
    assert run(good) == 0
    bad = manifests(
        tmp_path, reply='{"other": 1}', checks=[{"type": "jsonSchema", "value": schema}]
    )
    assert run(bad) == 1


@pytest.mark.parametrize(
    ("extra", "checks", "message"),
    [
        (["--version", "9"], None, "spec.versions has no version 9"),
        (["--label", "canary"], None, "spec.labels has no label 'canary'"),
        ([], [{"type": "regex", "value": "("}], "spec.evaluation.checks[0].value"),
        ([], [{"type": "jsonSchema", "value": "{nope"}], "spec.evaluation.checks[0].value"),
        (["--route", "nope"], None, "route 'nope'"),
    ],
)
def test_bad_input_is_exit_2_naming_file_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    checks: list[dict[str, Any]] | None,
    message: str,
) -> None:
    path = manifests(tmp_path, checks=checks)
    assert run(path, *extra) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "manifests.yaml" in err


def test_unknown_template_is_exit_2(tmp_path: Path) -> None:
    assert main(["eval", str(manifests(tmp_path)), "--template", "nope"]) == 2


@pytest.mark.parametrize(
    ("reply", "passed", "detail"),
    [
        ('{"score": 4, "reason": "ok"}', True, "4/5"),
        ('{"score": 3}', False, "3/5"),
        ('{"score": 6, "reason": "x"}', False, "not an integer 1..5"),
        ('{"score": 4.5, "reason": "x"}', False, "not an integer"),
        ('{"score": true}', False, "not an integer"),
        ('{"score": 5, "extra": 1}', False, "is not"),
        ("[5]", False, "is not"),
        ("5", False, "is not"),
        ('```json\n{"score": 5}\n```', False, "not JSON"),
    ],
)
def test_judge_reply_is_parsed_strictly(reply: str, passed: bool, detail: str) -> None:
    out = ck.parse_judge(reply, scale=5, pass_score=4)
    assert out.passed is passed
    assert detail in out.detail
