"""How late the event loop runs: so the router never blames a provider for its own starvation.

A timeout measured while the loop itself was stalled (CPU starvation, a
blocking call, a GC pause) says nothing about the provider: the answer may
have sat in a socket buffer while the loop could not read it. A ticker wakes
every `interval_s` and records how late it woke; the attempt loop asks
`max_since(mark)` when an attempt times out, and a timeout during which the
loop lagged by a large share of the attempt's timeout is recorded as
`timeout_starved`, which `router.errors.ERROR_KINDS` marks neutral for health.
The request still falls back as for any timeout.

Timeouts themselves are credited for starvation (`credited_timeout`): an
attempt's timeout counts only the time the loop was free to run it, so a
router whose process gets a small share of the CPU (a loaded host, a noisy
neighbour) does not time out answers that already sit in its socket buffers.
The caller's deadline still bounds every wait.

>>> lag = LoopLag(interval_s=0.05)  # doctest: +SKIP
>>> lag.start(); mark = lag.now()  # doctest: +SKIP
>>> lag.max_since(mark)  # the worst single stall since mark, seconds  # doctest: +SKIP
>>> lag.late_since(mark)  # every stall since mark added up, seconds  # doctest: +SKIP
>>> async with credited_timeout(lag, 1.0, limit_s=8.0):  # doctest: +SKIP
...     await call()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType


class LoopLag:
    """A ticker measuring event-loop lateness; `max_since` reads it. Start it on the serving loop."""

    def __init__(self, *, interval_s: float = 0.05, keep: int = 600,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=keep)  # (woke at, seconds late)
        self._expected: float | None = None
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        """A mark to pass to `max_since` later."""
        return self._clock()

    def record(self, woke_at: float, late_s: float) -> None:
        """One tick's lateness (the ticker calls it; tests may too)."""
        self._samples.append((woke_at, max(0.0, late_s)))

    def max_since(self, mark: float) -> float:
        """The worst lateness in seconds of any tick since `mark`, counting a tick overdue right now."""
        worst = 0.0
        for woke_at, late in reversed(self._samples):
            if woke_at < mark:
                break
            worst = max(worst, late)
        if self._expected is not None:
            worst = max(worst, self._clock() - self._expected)
        return worst

    def late_since(self, mark: float) -> float:
        """Seconds the loop ran late in total since `mark`: every tick's lateness after `mark`
        added up, with the tick overdue right now. Time the loop could not run what was due."""
        total = 0.0
        for woke_at, late in reversed(self._samples):
            if woke_at < mark:
                break
            total += min(late, woke_at - mark)  # a stall that began before mark counts from mark
        if self._expected is not None:
            total += max(0.0, self._clock() - max(self._expected, mark))
        return total

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._tick(), name="router-loop-lag")

    async def _tick(self) -> None:
        while True:
            self._expected = self._clock() + self.interval_s
            await asyncio.sleep(self.interval_s)
            woke = self._clock()
            self.record(woke, woke - self._expected)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class credited_timeout:
    """`asyncio.timeout(timeout_s)`, extended by the time the loop ran late meanwhile, never
    past `limit_s` seconds (the request's deadline). Raises `TimeoutError` on expiry.

    With `lag` None it is a plain timeout of `min(timeout_s, limit_s)`. The extension is
    checked when the timeout falls due, so an idle loop pays one timer per wait. A class
    rather than a generator-based context manager: it runs on every attempt (~3 µs less).
    """

    __slots__ = ("_handle", "_lag", "_limit_s", "_loop", "_mark", "_start", "_timeout_s", "_timer")

    def __init__(self, lag: LoopLag | None, timeout_s: float, *, limit_s: float) -> None:
        self._lag, self._timeout_s, self._limit_s = lag, timeout_s, limit_s
        self._handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> None:
        if self._lag is None:
            self._timer = asyncio.timeout(max(0.0, min(self._timeout_s, self._limit_s)))
            await self._timer.__aenter__()
            return
        self._loop = loop = asyncio.get_running_loop()
        self._start, self._mark = loop.time(), self._lag.now()
        self._timer = asyncio.timeout(None)
        await self._timer.__aenter__()
        self._handle = loop.call_at(self._start + min(self._timeout_s, max(0.0, self._limit_s)), self._check)

    def _check(self) -> None:
        assert self._lag is not None
        end = self._start + min(self._timeout_s + self._lag.late_since(self._mark), max(0.0, self._limit_s))
        now = self._loop.time()
        if end <= now:
            self._timer.reschedule(now)  # fires at once
        else:
            self._handle = self._loop.call_at(end, self._check)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
        await self._timer.__aexit__(exc_type, exc, tb)
