"""How late the event loop runs: so the router never blames a provider for its own starvation.

A timeout measured while the loop itself was stalled (CPU starvation, a
blocking call, a GC pause) says nothing about the provider: the answer may
have sat in a socket buffer while the loop could not read it. A ticker wakes
every `interval_s` and records how late it woke; the attempt loop asks
`max_since(mark)` when an attempt times out, and a timeout during which the
loop lagged by a large share of the attempt's timeout is recorded as
`timeout_starved`, which `router.errors.ERROR_KINDS` marks neutral for health.
The request still falls back as for any timeout.

>>> lag = LoopLag(interval_s=0.05)  # doctest: +SKIP
>>> lag.start(); mark = lag.now()  # doctest: +SKIP
>>> lag.max_since(mark)  # seconds the loop ran late since mark  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable


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
