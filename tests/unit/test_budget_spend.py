"""Budget spend from the sidecars' reports: gauges per instance, summed; any order or duplication
of the same reports gives the same totals; the status ledger read back after a restart."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_operator.reports import BudgetSpend
from sluice_operator.status import threshold_verdict
from sluice_sidecar.budget import BudgetStage
from sluice_sidecar.contract import (
    Backend,
    BudgetLimit,
    BudgetRouteSpend,
    BudgetRule,
    BudgetWindowSpend,
    Pricing,
    Provider,
    Route,
    UsageReport,
    WindowKind,
)
from sluice_sidecar.model import Usage

DAY = 86400.0
T0 = dt.datetime(2026, 12, 6, tzinfo=dt.UTC).timestamp()
NOW = T0 + 3600
RULE = BudgetRule(
    name="team",
    limits=(
        BudgetLimit(window=WindowKind.DAY, usd=10.0),
        BudgetLimit(window=WindowKind.ROLLING, rolling_seconds=3600, requests=100),
    ),
)
PICO = 10**12


def report(pod: str, instance: str, seq: int, usd: float, requests: int) -> UsageReport:
    return UsageReport(
        namespace="ns",
        pod=pod,
        config_hash="h",
        seq=seq,
        window_start=NOW - 10,
        window_end=NOW,
        instance=instance,
        budgets=(
            BudgetWindowSpend(
                budget="team",
                window="Day/UTC",
                start=T0,
                resets_at=T0 + DAY,
                pusd=round(usd * PICO),
                tokens=requests * 10,
                requests=requests,
            ),
        ),
        budget_routes=(
            BudgetRouteSpend(
                budget="team",
                route="chat",
                model="gpt-4o",
                start=T0,
                pusd=round(usd * PICO),
                tokens=requests * 10,
                requests=requests,
            ),
        ),
    )


# Each instance reports a growing gauge: seq n carries n dollars-ish.
def series(pod: str, instance: str, n: int) -> list[UsageReport]:
    return [report(pod, instance, i, 0.5 * i, i) for i in range(1, n + 1)]


REPORTS = series("a", "a1", 4) + series("a", "a2", 2) + series("b", "b1", 3)
EXPECTED_USD = 2.0 + 1.0 + 1.5


def totals(spend: BudgetSpend) -> tuple[float, int, int]:
    fields, _ = spend.status("ns", RULE, {}, NOW)
    w = fields["windows"][0]
    return w["spentUSD"], w["tokens"], w["requests"]


@settings(max_examples=200, deadline=None)
@given(st.permutations(REPORTS), st.lists(st.sampled_from(REPORTS), max_size=12))
def test_any_order_and_duplication_gives_the_same_totals(
    order: list[UsageReport], dups: list[UsageReport]
) -> None:
    spend = BudgetSpend()
    for r in [*order, *dups]:
        spend.add(r, NOW)
    assert totals(spend) == (EXPECTED_USD, 90, 9)


def test_status_fields_state_and_crossings_once_per_window() -> None:
    spend = BudgetSpend()
    for r in REPORTS:
        spend.add(r, NOW)
    fields, crossings = spend.status("ns", RULE, {}, NOW)
    day = fields["windows"][0]
    assert day["percent"] == 45.0 and day["limit"] == "10.00 USD"
    assert day["start"] == "2026-12-06T00:00:00Z" and day["resetsAt"] == "2026-12-07T00:00:00Z"
    assert fields["state"] == "Ok" and fields["spent"] == "4.50 USD"
    assert fields["spendByRoute"][0]["route"] == "chat"
    assert fields["spendByRoute"][0]["usd"] == EXPECTED_USD
    assert crossings == []
    spend.add(report("c", "c1", 1, 4.0, 1), NOW)  # 8.50 of 10: crosses 50 and 80
    fields2, crossings2 = spend.status("ns", RULE, fields, NOW)
    assert [c.threshold for c in crossings2] == [50, 80]
    assert fields2["state"] == "Warning" and fields2["windows"][0]["alerted"] == [50, 80]
    assert "reached 80% of its Day/UTC limit" in crossings2[1].message
    _, again = spend.status("ns", RULE, fields2, NOW)
    assert again == []  # once per window
    v = threshold_verdict(fields2["windows"], RULE.alert_thresholds)
    assert (v.status, v.reason) == ("True", "Threshold80")


def test_restart_reads_the_ledger_back_without_double_counting() -> None:
    before = BudgetSpend()
    for r in REPORTS[:5]:
        before.add(r, NOW)
    written, _ = before.status("ns", RULE, {}, NOW)
    after = BudgetSpend()  # a new operator process
    after.seed("ns", "team", written["ledger"])
    for r in REPORTS:  # sidecars resend (old and new) reports
        after.add(r, NOW)
    assert totals(after) == (EXPECTED_USD, 90, 9)


def test_operator_clock_picks_the_window_and_old_windows_go() -> None:
    spend = BudgetSpend()
    for r in REPORTS:
        spend.add(r, NOW)
    fields, _ = spend.status("ns", RULE, {}, T0 + DAY + 7200)  # the next day, nothing reported
    assert fields["windows"][0]["spentUSD"] == 0 and fields["windows"][0]["start"] is None
    assert fields["ledger"] == [] or all(not e["windows"] for e in fields["ledger"])


def test_the_sidecar_reports_what_it_settled() -> None:
    class Clock:
        def now(self) -> float:
            return 100.0

        def wall(self) -> float:
            return NOW

    backend = Backend(
        name="b",
        provider=Provider.OPENAI,
        model="gpt-4o",
        pricing=Pricing(input_per_mtok=1.0, output_per_mtok=2.0),
    )
    route = Route(name="chat", source="chat", backends=(backend,))
    stage = BudgetStage((RULE,), {}, Clock(), (route,))  # type: ignore[arg-type]
    adm = stage.policy.admit(
        "r1", route, {"messages": [], "max_tokens": 10}, "chat", wall=NOW, mono=100.0
    )
    assert adm is not None
    stage.policy.settle(
        adm, Usage(input_tokens=1000, output_tokens=500), backend, wall=NOW, mono=100.0
    )
    windows, routes = stage.spend()
    day = windows[0]
    assert (day.budget, day.window, day.start, day.resets_at) == ("team", "Day/UTC", T0, T0 + DAY)
    assert day.pusd == 2_000_000 * 1000 and day.tokens == 1500 and day.requests == 1
    assert windows[1].window == "Rolling/3600" and windows[1].requests == 1
    assert routes[0].route == "chat" and routes[0].model == "gpt-4o" and routes[0].pusd == day.pusd


def test_budget_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from sluice_operator.metrics import register_budgets
    from sluice_operator.reconcile import BudgetSample

    registry = CollectorRegistry()
    register_budgets(
        registry,
        lambda: {("ns", "team"): [BudgetSample("Day/UTC", 8.5, 85.0, 10.0, DAY)]},
        lambda: {("ns", "team", "Day/UTC", 80): 1},
    )
    text = generate_latest(registry).decode()
    labels = 'budget="team",namespace="ns",window="Day/UTC"'
    assert f"sluice_budget_spent_usd{{{labels}}} 8.5" in text
    assert f"sluice_budget_usage_ratio{{{labels}}} 0.85" in text
    assert f"sluice_budget_limit_usd{{{labels}}} 10.0" in text
    assert f"sluice_budget_window_seconds{{{labels}}} 86400.0" in text
    crossed = 'budget="team",namespace="ns",threshold="80",window="Day/UTC"'
    assert f"sluice_budget_threshold_crossings_total{{{crossed}}} 1.0" in text


def test_price_unknown_condition_and_table_date() -> None:
    from sluice_operator.compile import prices
    from sluice_operator.status import desired_status

    def route(*backends: dict[str, object]) -> dict[str, object]:
        return {
            "metadata": {"name": "chat", "generation": 1},
            "spec": {"backends": list(backends)},
        }

    known = {"name": "a", "provider": "openai", "model": "gpt-4o-2024-08-06"}
    odd = {"name": "b", "provider": "openai", "model": "my-finetune"}
    priced = {**odd, "pricing": {"inputPerMTok": 1.0, "outputPerMTok": 2.0}}
    mock = {"name": "m", "provider": "mock", "model": "mock-1"}

    def verdict(obj: dict[str, object]) -> dict[str, object]:
        st = desired_status("ModelRoute", obj, [], None, "2026-12-06T00:00:00Z")
        assert st["pricesAsOf"] == prices.AS_OF
        return next(c for c in st["conditions"] if c["type"] == "PriceUnknown")

    assert verdict(route(known, priced, mock))["status"] == "False"
    unknown = verdict(route(known, odd))
    assert (unknown["status"], unknown["reason"]) == ("True", "NoPrice")
    assert "b (my-finetune)" in str(unknown["message"]) and "a (" not in str(unknown["message"])


def test_the_compiled_config_carries_the_price_table_date() -> None:
    import copy

    from sluice_operator import manifests
    from sluice_operator.compile import compile_namespace, prices

    from .test_api_models import ROUTE

    real = manifests.parse_object(copy.deepcopy(ROUTE), "test")
    mock_doc = copy.deepcopy(ROUTE)
    mock_doc["spec"]["backends"] = [{"name": "m", "provider": "mock", "model": "mock-1"}]
    mock = manifests.parse_object(mock_doc, "test")
    assert isinstance(real, manifests.Resource) and isinstance(mock, manifests.Resource)
    assert compile_namespace("team-a", [real]).config.prices_as_of == prices.AS_OF
    only_mock = compile_namespace("team-a", [mock]).config
    assert only_mock.prices_as_of is None and "pricesAsOf" not in only_mock.canonical_json()


def test_rolling_windows_keep_one_gauge_per_instance_and_folds_are_not_read_back() -> None:
    spend = BudgetSpend()
    for seq in range(1, 6):
        spend.add(
            UsageReport(
                namespace="ns",
                pod="a",
                config_hash="h",
                seq=seq,
                window_start=0,
                window_end=0,
                instance="a1",
                budgets=(
                    BudgetWindowSpend(
                        budget="team",
                        window="Rolling/3600",
                        start=NOW - 3600 + seq,
                        resets_at=NOW + seq,
                        requests=seq,
                    ),
                ),
            ),
            NOW,
        )
    fields, _ = spend.status("ns", RULE, {}, NOW)
    assert fields["windows"][1]["requests"] == 5
    assert len(fields["ledger"][0]["windows"]) == 1
    # An old status seen after the first read-back (a stale watch event) changes nothing.
    spend.seed("ns", "team", [])
    spend.seed("ns", "team", fields["ledger"] + fields["ledger"])
    assert spend.status("ns", RULE, {}, NOW)[0]["windows"][1]["requests"] == 5
