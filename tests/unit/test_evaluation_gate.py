"""The PromptTemplate evaluation gate (pure): which label moves happen, what status says."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sluice_operator import evaluation, status
from sluice_operator.api.prompttemplate import PromptTemplateSpec
from sluice_operator.compile.compiler import version_hash


def spec(production: int = 1, **evaluation_kw: Any) -> PromptTemplateSpec:
    ev = {
        "dataset": {"cases": [{"name": "reset", "variables": {"q": "reset?"}, "expect": "reset"}]},
        "checks": [{"type": "contains"}],
        "threshold": 1.0,
        "gate": ["canary->production"],
        **evaluation_kw,
    }
    return PromptTemplateSpec.model_validate(
        {
            "versions": [
                {"version": n, "messages": [{"role": "user", "content": f"v{n} {{{{q}}}}"}]}
                for n in (1, 2, 3)
            ],
            "labels": {"production": production, "canary": 2},
            "evaluation": ev,
        }
    )


def record(s: PromptTemplateSpec, version: int, score: float, **kw: Any) -> dict[str, str]:
    v = next(x for x in s.versions if x.version == version)
    rec = evaluation.Record(
        template="t",
        version=version,
        hash=kw.pop("hash", version_hash(v)),
        settings_hash=kw.pop("settings_hash", evaluation.settings_hash(s.evaluation)),
        score=score,
        threshold=1.0,
        passed=kw.pop("passed", score >= 1.0),
        cases=1,
        failed=[] if score >= 1.0 else ["reset: contains 'reset' not found"],
        at="2026-01-01T00:00:00Z",
    )
    return {evaluation.annotation_key(version): rec.to_annotation()}


HISTORY = [{"label": "production", "version": 1, "at": "t0"}, {"label": "canary", "version": 2}]


def test_first_labels_are_taken_as_they_are() -> None:
    assert evaluation.decide(spec(2), {}, []).labels["production"] == 2


def test_a_move_without_a_result_waits() -> None:
    gate = evaluation.decide(spec(2), {}, HISTORY)
    assert gate.labels["production"] == 1
    assert gate.held[0].reason == evaluation.PENDING
    assert "no evaluation result yet" in gate.held[0].message


def test_a_failed_version_keeps_the_old_one_serving_and_names_the_cases() -> None:
    s = spec(2)
    gate = evaluation.decide(s, record(s, 2, 0.0), HISTORY)
    assert gate.labels["production"] == 1
    assert gate.held[0].reason == evaluation.FAILED
    assert "reset: contains" in gate.held[0].message


def test_a_passing_version_moves_the_label() -> None:
    s = spec(2)
    assert evaluation.decide(s, record(s, 2, 1.0), HISTORY) == evaluation.Gate(
        {"production": 2, "canary": 2}
    )


def test_the_record_passed_bit_is_not_trusted_the_threshold_in_force_is() -> None:
    s = spec(2)
    gate = evaluation.decide(s, record(s, 2, 0.5, passed=True), HISTORY)
    assert gate.labels["production"] == 1


def test_stale_records_do_not_count() -> None:
    s = spec(2)
    for bad in ({"hash": "other"}, {"settings_hash": "other"}):
        gate = evaluation.decide(s, record(s, 2, 1.0, **bad), HISTORY)
        assert gate.held[0].reason == evaluation.PENDING
    garbage = {evaluation.annotation_key(2): "{not json"}
    assert "not a valid record" in evaluation.decide(s, garbage, HISTORY).held[0].message


def test_rollback_is_never_gated() -> None:
    s = spec(1)
    history = [*HISTORY, {"label": "production", "version": 3}]  # 1 -> 3, now back to 1
    assert evaluation.decide(s, {}, history).labels["production"] == 1


def test_ungated_labels_move_freely() -> None:
    s = spec(3, gate=None)
    assert evaluation.decide(s, {}, HISTORY).labels["production"] == 3


def test_results_for_status() -> None:
    s = spec(2)
    out = evaluation.results(s, record(s, 2, 0.0))
    assert out[2]["passed"] is False
    assert out[2]["failed"] == ["reset: contains 'reset' not found"]
    assert out[2]["source"] == "evaluation.sluice.dev/v2"


def test_pending_is_waiting_and_failed_is_stalled() -> None:
    from sluice_operator.compile import Problem

    for reason, stalled, reconciling in (
        (evaluation.PENDING, "False", "True"),
        (evaluation.FAILED, "True", "False"),
    ):
        found = status.verdicts(
            status.Facts(problems=[Problem("PromptTemplate", "t", "spec.labels", reason, "m")])
        )
        by = {v.type: v for v in found}
        assert (by["Ready"].status, by["Ready"].reason) == ("False", reason)
        assert by["Stalled"].status == stalled
        assert by["Reconciling"].status == reconciling


@pytest.mark.parametrize(
    "bad",
    [
        {"dataset": {"cases": []}},
        {"dataset": None},
        {"checks": [{"type": "judge"}]},
        {"gate": ["canary=>production"]},
    ],
)
def test_bad_evaluations_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        spec(**bad)
