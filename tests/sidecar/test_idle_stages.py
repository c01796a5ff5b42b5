"""A stage idle for the config (``Stage.active``: the guardrail stage of a config without
guardrails) is skipped by every request of that config, and takes part again as soon as a
config that needs it is swapped in (a real file reload); a request finishes with the stages of
the config it started with."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sluice_sidecar.budget import BudgetStage
from sluice_sidecar.config_source import FileConfig
from sluice_sidecar.contract import GuardAction, Guardrail, GuardStage, PiiRule, SidecarConfig
from sluice_sidecar.exchange import Exchange
from sluice_sidecar.guardrails import GuardrailStage
from sluice_sidecar.prompts import PromptStage
from tests.fakes.openai_server import FakeOpenAI

from .conftest import Sidecar, StartSidecar, backend, config, route

MAIL = "ann.lee@example.org"
MSG = [{"role": "user", "content": f"Write to {MAIL} please."}]
REDACT = Guardrail(
    name="no-mail",
    input=GuardStage(pii=PiiRule(entities=("EMAIL",), action=GuardAction.REDACT)),
)
PHASES = ("on_request", "on_response", "on_answer", "stream_filter", "on_finish")


def _write(path: Path, cfg: SidecarConfig) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cfg.model_dump(mode="json", by_alias=True)))
    tmp.replace(path)


def _spy(sc: Sidecar) -> tuple[GuardrailStage, Counter[str]]:
    """The sidecar's guardrail stage, its phases counted as they are called."""
    stage = next(s for s in sc.gateway.stages.all if isinstance(s, GuardrailStage))
    calls: Counter[str] = Counter()
    for phase in PHASES:
        original = getattr(stage, phase)

        def counted(*args: Any, _f: Callable[..., Any] = original, _p: str = phase) -> Any:
            calls[_p] += 1
            return _f(*args)

        setattr(stage, phase, counted)
    return stage, calls


async def _reloading(
    start_sidecar: StartSidecar, fake: FakeOpenAI, tmp_path: Path, *, guarded_first: bool
) -> tuple[Path, FileConfig, Sidecar, Counter[str], SidecarConfig, SidecarConfig]:
    """A sidecar reading a config file that the test rewrites (plain: one route; guarded: the
    same with a redacting guardrail), its guardrail stage's phases counted."""
    plain = config(route("chat", backend("a", fake)))
    guarded = plain.model_copy(update={"guardrails": (REDACT,)})
    path = tmp_path / "config.json"
    _write(path, guarded if guarded_first else plain)
    source = FileConfig(path, interval=3600)
    sc = await start_sidecar(source, pod_labels={})
    _, calls = _spy(sc)
    return path, source, sc, calls, plain, guarded


async def _both(sc: Sidecar) -> None:
    """A whole and a streamed answer."""
    code, _, _ = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert code == 200
    body = {"model": "chat", "messages": MSG, "stream": True}
    code, _, raw = await sc.post("/v1/chat/completions", body)
    assert code == 200 and b"[DONE]" in raw


async def test_guardrail_stage_is_skipped_while_idle_and_back_after_a_reload(
    start_sidecar: StartSidecar, fake: FakeOpenAI, tmp_path: Path
) -> None:
    path, source, sc, calls, plain, guarded = await _reloading(
        start_sidecar, fake, tmp_path, guarded_first=False
    )
    gw = sc.gateway

    live = gw.stages.live(source.current)
    assert [type(s) for s in live.all] == [PromptStage, BudgetStage]
    assert not live.response and not live.streams and not live.answer
    await _both(sc)
    await _both(sc)
    assert sum(calls.values()) == 0
    assert all(MAIL in r["messages"][0]["content"] for r in fake.requests)

    _write(path, guarded)
    assert source.reload()
    assert [type(s) for s in gw.stages.live(source.current).all] == [
        PromptStage,
        GuardrailStage,
        BudgetStage,
    ]
    sent = len(fake.requests)
    await _both(sc)
    assert calls["on_request"] == 2 and calls["on_response"] == 1
    assert calls["stream_filter"] >= 1
    assert calls["on_finish"] == 2
    assert len(fake.requests) == sent + 2
    for r in fake.requests[sent:]:
        assert MAIL not in r["messages"][0]["content"]

    _write(path, plain)
    assert source.reload()
    before = sum(calls.values())
    await _both(sc)
    assert sum(calls.values()) == before
    assert MAIL in fake.requests[-1]["messages"][0]["content"]


async def test_a_request_finishes_with_the_stages_of_the_config_it_started_with(
    start_sidecar: StartSidecar, fake: FakeOpenAI, tmp_path: Path
) -> None:
    path, source, sc, calls, plain, _ = await _reloading(
        start_sidecar, fake, tmp_path, guarded_first=True
    )
    old = source.current
    _write(path, plain)
    assert source.reload()
    assert source.current is not old

    started_before = Exchange("r1", "chat", sc.clock.now())
    started_before.config = old
    sc.gateway.finish(started_before)
    assert calls["on_finish"] == 1
    started_after = Exchange("r2", "chat", sc.clock.now())
    started_after.config = source.current
    sc.gateway.finish(started_after)
    assert calls["on_finish"] == 1  # idle for the new config: not asked
    no_config = Exchange("r3", "chat", sc.clock.now())
    sc.gateway.finish(no_config)  # before any config (503): every stage, as declared
    assert calls["on_finish"] == 2


@pytest.mark.parametrize("selected", [True, False])
def test_active_follows_the_pod_selector(selected: bool) -> None:
    guard = REDACT.model_copy(
        update={"selector": REDACT.selector.model_copy(update={"match_labels": {"app": "x"}})}
    )
    stage = GuardrailStage({"app": "x"} if selected else {"app": "y"})
    assert stage.active(config(guardrails=(guard,))) is selected
    assert stage.active(config()) is False
