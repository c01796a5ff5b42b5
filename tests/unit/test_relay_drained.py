"""``stream._Relay.run`` with an upstream that sent all it will with the first frame
(``Upstream.drained``: an answer that arrived in one read): the rest of the frames (closing
frames at most) is relayed without the idle timer, the same way and with the same ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest

from sluice_sidecar import errors
from sluice_sidecar.contract import Backend, Route
from sluice_sidecar.exchange import Exchange
from sluice_sidecar.gateway import stream

BACKEND = Backend(name="b", provider="openai-compatible", model="m", base_url="http://x")
ROUTE = Route(name="r", source="r", backends=(BACKEND,))


class _Client:
    """What the relay writes to."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.written.append(data)


def _exchange() -> Exchange:
    ex = Exchange("id", "chat", 0.0)
    ex.route, ex.backend = ROUTE, BACKEND
    ex.deadline = 1e9
    return ex


async def _frames(*items: bytes | Exception) -> AsyncGenerator[bytes, None]:
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


def _relay(limit: int = 1 << 20) -> tuple[Any, _Client]:
    client = _Client()
    return stream._Relay(client, limit, None, None, None), client  # type: ignore[arg-type]


def _run(relay: Any, frames: AsyncGenerator[bytes, None], *, drained: bool) -> Any:
    async def main() -> Any:
        gw = SimpleNamespace(
            loop=asyncio.get_running_loop(), clock=SimpleNamespace(now=lambda: 0.0)
        )
        return await relay.run(gw, _exchange(), frames, b"data: first\n\n", drained)

    return asyncio.run(main())


def test_a_drained_upstream_is_relayed_without_the_idle_timer() -> None:
    relay, client = _relay()
    with mock.patch.object(stream.dispatch, "TryTimer", side_effect=AssertionError("a timer")):
        end = _run(relay, _frames(b"data: closing\n\n"), drained=True)
    assert end is None
    assert client.written == [b"data: first\n\n", b"data: closing\n\n"]


@pytest.mark.parametrize("drained", [True, False])
def test_drained_or_not_the_relay_ends_the_same(drained: bool) -> None:
    relay, client = _relay()
    assert _run(relay, _frames(b"data: closing\n\n"), drained=drained) is None
    assert client.written == [b"data: first\n\n", b"data: closing\n\n"]
    failure = errors.BadUpstreamResponse("cut", backend="b")
    relay, client = _relay()
    assert _run(relay, _frames(failure), drained=drained) is failure
    relay, client = _relay(limit=len(b"data: first\n\n") + 4)
    assert _run(relay, _frames(b"data: closing\n\n"), drained=drained) is stream.CUT
    assert client.written == [b"data: first\n\n"]
