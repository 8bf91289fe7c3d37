"""LoopLag on a fake clock, and timeouts credited for the time the loop ran late."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.loop_lag import Deadlines, LoopLag, credited_timeout, deadlines
from tests.conftest import FakeClock

pytestmark = pytest.mark.timeout(30)


def test_max_since_is_the_worst_tick_after_the_mark(clock: FakeClock) -> None:
    lag = LoopLag(clock=clock)
    lag.record(1001.0, 0.9)  # before the mark: not counted
    mark = 1002.0
    lag.record(1002.5, 0.2)
    lag.record(1003.0, 0.4)
    lag.record(1003.5, -0.01)  # early wake-ups count as 0
    clock.now = 1004.0
    assert lag.max_since(mark) == pytest.approx(0.4)
    assert lag.max_since(1003.2) == 0.0
    assert lag.max_since(990.0) == pytest.approx(0.9)


def test_late_since_adds_every_stall_after_the_mark(clock: FakeClock) -> None:
    lag = LoopLag(clock=clock)
    lag.record(1001.0, 0.9)
    lag.record(1002.5, 0.2)
    lag.record(1003.0, 0.4)
    assert lag.late_since(1002.0) == pytest.approx(0.6)
    # A stall that began before the mark counts only from the mark.
    assert lag.late_since(1002.8) == pytest.approx(0.2)
    assert lag.late_since(1004.0) == 0.0


def test_old_samples_are_dropped(clock: FakeClock) -> None:
    lag = LoopLag(clock=clock, keep=3)
    for i in range(10):
        lag.record(1000.0 + i, 1.0)
    assert lag.late_since(0.0) == pytest.approx(3.0)


async def test_a_tick_overdue_right_now_counts() -> None:
    clock = FakeClock()
    lag = LoopLag(clock=clock, interval_s=0.01)
    mark = lag.now()
    lag.start()
    try:
        await asyncio.sleep(0)  # the ticker sets when it expects to wake
        clock.advance(2.0)  # the loop "stalls" for 2 s before the ticker runs again
        assert lag.max_since(mark) == pytest.approx(2.0 - 0.01)
        assert lag.late_since(mark) == pytest.approx(2.0 - 0.01)
    finally:
        await lag.aclose()


async def test_the_ticker_measures_a_blocked_loop() -> None:
    lag = LoopLag(interval_s=0.01)
    lag.start()
    try:
        await asyncio.sleep(0.05)
        mark = lag.now()
        time.sleep(0.3)  # block the loop on purpose
        await asyncio.sleep(0.05)
        # Lower bounds: a slower machine only adds lag. (late_since counts a stall from `mark`,
        # max_since whole, so under load a tick already overdue at `mark` makes the two differ.)
        assert lag.max_since(mark) >= 0.25
        assert lag.late_since(mark) >= 0.25
    finally:
        await lag.aclose()


class CreditedLag(LoopLag):
    """A lag meter that reports a fixed lateness, whatever the loop did."""

    def __init__(self, late_s: float) -> None:
        super().__init__()
        self.late_s = late_s

    def late_since(self, mark: float) -> float:
        return self.late_s


async def test_a_credited_timeout_waits_longer_by_the_lag() -> None:
    # 0.05 s timeout, but the loop "ran late" 30 s meanwhile: a 0.2 s answer is not cut.
    async with credited_timeout(CreditedLag(30.0), 0.05, limit_s=20.0):
        await asyncio.sleep(0.2)


async def test_a_credited_timeout_still_fires_without_lag() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with credited_timeout(CreditedLag(0.0), 0.05, limit_s=20.0):
            await asyncio.sleep(30)
    assert 0.05 <= time.monotonic() - started < 10


async def test_a_credited_timeout_never_passes_its_limit() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with credited_timeout(CreditedLag(1000.0), 0.05, limit_s=0.2):
            await asyncio.sleep(30)
    assert 0.2 <= time.monotonic() - started < 10


async def test_without_a_meter_it_is_a_plain_timeout() -> None:
    with pytest.raises(TimeoutError):
        async with credited_timeout(None, 0.05, limit_s=20.0):
            await asyncio.sleep(30)
    async with credited_timeout(None, 5.0, limit_s=5.0):
        await asyncio.sleep(0)


async def test_one_timer_serves_waits_armed_in_any_order() -> None:
    # The long wait arms the shared timer first; the short ones must still fire on time.
    release = asyncio.Event()

    async def wait(timeout_s: float) -> str:
        try:
            async with credited_timeout(None, timeout_s, limit_s=20.0):
                await release.wait()
        except TimeoutError:
            return "timed out"
        return "answered"

    long = asyncio.create_task(wait(10.0))
    await asyncio.sleep(0)
    started = time.monotonic()
    short = [asyncio.create_task(wait(t)) for t in (0.2, 0.05)]
    assert await asyncio.gather(*short) == ["timed out", "timed out"]
    assert time.monotonic() - started < 5  # not held back until the long wait's timer
    release.set()
    assert await long == "answered"


async def test_a_finished_wait_is_never_cancelled_later() -> None:
    async with credited_timeout(None, 0.05, limit_s=20.0):
        await asyncio.sleep(0)
    await asyncio.sleep(0.15)  # past the finished wait's time: this sleep is not cut
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_an_outer_cancel_is_not_taken_for_the_timeout() -> None:
    async def waits() -> None:
        async with credited_timeout(None, 10.0, limit_s=20.0):
            await asyncio.sleep(30)

    task = asyncio.create_task(waits())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_finished_waits_do_not_pile_up() -> None:
    # 10 s timeouts that end at once: without compaction the heap would hold all 5,000 for 10 s.
    for _ in range(5000):
        async with credited_timeout(None, 10.0, limit_s=20.0):
            pass
    d = deadlines()
    assert d.live == 0
    assert d.held <= Deadlines.COMPACT_AT + 1
