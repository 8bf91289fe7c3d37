"""The background ticker behind live reload and health probes."""

from __future__ import annotations

import asyncio

import pytest

from router.periodic import Periodic


async def test_ticks_survive_a_failing_tick_and_stop_on_close(caplog: pytest.LogCaptureFixture) -> None:
    ticks: list[int] = []
    waits: list[float] = []
    done = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)  # yield only: no wall-clock wait

    async def tick() -> None:
        ticks.append(len(ticks))
        if len(ticks) == 2:
            raise RuntimeError("one bad tick")
        if len(ticks) == 4:
            done.set()

    ticker = Periodic(2.5, tick, name="test-ticker", sleep=fake_sleep)
    ticker.start()
    await asyncio.wait_for(done.wait(), 1.0)
    await ticker.aclose()
    assert not ticker.running
    assert ticks[:4] == [0, 1, 2, 3] and set(waits) == {2.5}
    assert "test-ticker: tick failed" in caplog.text
