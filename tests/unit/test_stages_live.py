"""``Stages.live``: the stages a request of a config passes, without those idle for it, in the
declared order and split by phase; worked out once per config."""

from __future__ import annotations

from sluice_sidecar.contract import Route, SidecarConfig
from sluice_sidecar.exchange import Exchange
from sluice_sidecar.stage import DeltaFilter, Stage, Stages


class _Req(Stage):
    name = "req"

    async def on_request(self, ex: Exchange) -> None:
        return None


class _Idle(Stage):
    """Active only for configs with routes; counts how often it is asked."""

    name = "idle"

    def __init__(self) -> None:
        self.asked = 0

    def active(self, config: SidecarConfig) -> bool:
        self.asked += 1
        return bool(config.routes)

    async def on_request(self, ex: Exchange) -> None:
        return None

    def stream_filter(self, ex: Exchange) -> DeltaFilter | None:
        return None

    def on_finish(self, ex: Exchange) -> None:
        return None


class _Fin(Stage):
    name = "fin"

    def on_finish(self, ex: Exchange) -> None:
        return None


def _config(routes: int) -> SidecarConfig:
    return SidecarConfig(
        namespace="t",
        routes=tuple(
            Route(
                name=f"r{i}",
                source="s",
                backends=({"name": "b", "provider": "mock", "model": "m"},),
            )
            for i in range(routes)
        ),
    )


def test_idle_stages_are_left_out_in_order_and_per_phase() -> None:
    req, idle, fin = _Req(), _Idle(), _Fin()
    stages = Stages([req, idle, fin])
    empty, full = _config(0), _config(1)

    live = stages.live(empty)
    assert live.all == (req, fin)
    assert live.request == (req,) and live.streams == () and live.finish == (fin,)

    everything = stages.live(full)
    assert everything is stages  # nothing idle: the declared stages themselves
    assert everything.request == (req, idle) and everything.finish == (idle, fin)

    assert stages.live(None) is stages  # no config yet: every stage


def test_asked_once_per_config() -> None:
    idle = _Idle()
    stages = Stages([_Req(), idle])
    empty, full = _config(0), _config(1)
    first = stages.live(empty)
    assert stages.live(empty) is first and idle.asked == 1
    assert stages.live(full) is stages and idle.asked == 2
    # a request of the earlier config finishing after the swap: remembered, not asked again
    assert stages.live(empty) is first and idle.asked == 2
    assert stages.live(full) is stages and idle.asked == 2


class _Broken(_Idle):
    def active(self, config: SidecarConfig) -> bool:
        raise RuntimeError("cannot tell")


def test_a_stage_whose_active_fails_is_kept() -> None:
    broken = _Broken()
    stages = Stages([_Req(), broken])
    assert stages.live(_config(0)).request == stages.request
