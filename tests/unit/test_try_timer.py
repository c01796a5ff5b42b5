"""``dispatch.TryTimer`` behaves as ``asyncio.timeout`` for the request path's tries: a try that
runs out of time leaves as ``TimeoutError``, one that ends in time is untouched, and a
cancellation from outside (the client went away) stays a cancellation, also when the timer
ran out at the same time."""

from __future__ import annotations

import asyncio

import pytest

from sluice_sidecar.gateway.dispatch import TryTimer


def test_a_try_that_runs_out_of_time_raises_timeout_error() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError), TryTimer(0.01):
            await asyncio.sleep(10)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0

    asyncio.run(main())


def test_an_expired_deadline_fires_at_once() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError), TryTimer(0.0):
            await asyncio.sleep(10)

    asyncio.run(main())


def test_a_try_in_time_is_untouched() -> None:
    async def main() -> str:
        with TryTimer(10):
            await asyncio.sleep(0)
            result = "done"
        await asyncio.sleep(0.02)  # the cancelled timer never fires later
        return result

    assert asyncio.run(main()) == "done"


def test_without_a_time_only_expire_ends_the_block() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError), TryTimer(None) as timer:
            await asyncio.sleep(0.01)  # no time set: nothing fires
            asyncio.get_running_loop().call_soon(timer.expire)
            await asyncio.sleep(10)

    asyncio.run(main())


def test_other_errors_pass_through() -> None:
    async def main() -> None:
        with TryTimer(10):
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(main())


def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def try_() -> None:
            with TryTimer(10):
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(try_())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_an_outside_cancellation_as_the_timer_expires_stays_a_cancellation() -> None:
    async def main() -> None:
        async def try_() -> None:
            with TryTimer(0.0):
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(10)

        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(try_())

    asyncio.run(main())


def test_outside_a_task_it_refuses() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def outside() -> None:
            try:
                TryTimer(1)
            except RuntimeError as exc:
                fut.set_result(exc)

        loop.call_soon(outside)
        assert isinstance(await fut, RuntimeError)

    asyncio.run(main())
