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
import heapq
import math
import time
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any


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


class Watch:
    """One armed timeout (see `Deadlines.watch`): `expired` once it has cancelled its task."""

    __slots__ = ("cancelling", "done", "expired", "lag", "limit_s", "mark", "owner", "start", "task", "timeout_s")

    def __init__(self, owner: Deadlines, task: asyncio.Task[Any], start: float, lag: LoopLag | None,
                 timeout_s: float, limit_s: float) -> None:
        self.owner, self.start, self.lag, self.timeout_s, self.limit_s = owner, start, lag, timeout_s, limit_s
        self.task: asyncio.Task[Any] | None = task
        self.mark = lag.now() if lag is not None else 0.0
        self.cancelling = task.cancelling()
        self.done = self.expired = False

    def end(self) -> float:
        """When the timeout falls due: its start plus the timeout, credited with the loop's
        lateness since, never past the limit (loop time, seconds)."""
        credit = self.lag.late_since(self.mark) if self.lag is not None else 0.0
        return self.start + min(self.timeout_s + credit, max(0.0, self.limit_s))

    def close(self, cancelled: bool) -> bool:
        """Disarm; True when the task's `CancelledError` (`cancelled`) was this timeout's own,
        which the caller turns into its timeout error. The same test as `asyncio.Timeout`.
        Closing again does nothing and returns False."""
        task, self.task = self.task, None  # a finished wait keeps no task (nor its frames) alive
        if not self.done:
            self.done = True
            self.owner.live -= 1
        if not self.expired or task is None:
            return False
        return task.uncancel() <= self.cancelling and cancelled


class Deadlines:
    """Every timeout armed on one event loop, behind one timer.

    `asyncio.timeout` arms a `TimerHandle` per wait and cancels it when the wait
    ends, ~4 µs an attempt; here a wait is a heap entry (timeouts are mostly
    equal, so entries arrive in order and the push is O(1)) and one timer is
    armed for the earliest. A finished wait is only marked done: the timer drops
    it when its time comes, and the heap is compacted when finished waits
    outnumber live ones (so memory follows the waits in flight, not the request
    rate times the timeout). A wait that falls due is credited with the loop's
    lateness (`LoopLag.late_since`) and pushed back, or its task is cancelled,
    as `asyncio.timeout` does; `Watch.close` tells the caller whether the
    `CancelledError` it sees is the timeout's.
    """

    __slots__ = ("__weakref__", "_heap", "_loop", "_seq", "_timer", "_timer_at", "live")

    #: The heap is compacted once it holds this many entries and twice as many as are live.
    COMPACT_AT = 1024

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        #: Waits armed and not yet closed or expired.
        self.live = 0

    def watch(self, lag: LoopLag | None, timeout_s: float, *, limit_s: float) -> Watch:
        """Cancel the current task once `timeout_s` (plus the loop's lateness, with `lag`)
        has passed, never later than `limit_s` seconds from now. Close the watch after the wait."""
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("a timeout must be armed inside a task")
        now = self._loop.time()
        w = Watch(self, task, now, lag, timeout_s, limit_s)
        end = now + min(timeout_s, max(0.0, limit_s))
        heap = self._heap
        if len(heap) >= self.COMPACT_AT and len(heap) > 2 * self.live:
            heap[:] = [e for e in heap if not e[2].done]
            heapq.heapify(heap)
        self._seq += 1
        self.live += 1
        heapq.heappush(heap, (end, self._seq, w))
        if end < self._timer_at:
            self._arm(end)
        return w

    @property
    def held(self) -> int:
        """Heap entries, finished waits not yet dropped included (what memory the waits take)."""
        return len(self._heap)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        heap, now = self._heap, self._loop.time()
        while heap and (heap[0][2].done or heap[0][0] <= now):
            _, _, w = heapq.heappop(heap)
            if w.done or w.task is None:
                continue
            end = w.end()
            if end > now:
                self._seq += 1
                heapq.heappush(heap, (end, self._seq, w))
                continue
            w.done = w.expired = True
            self.live -= 1
            w.task.cancel()
        if heap:
            self._arm(heap[0][0])


_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = weakref.WeakKeyDictionary()
_last: Deadlines | None = None


def deadlines() -> Deadlines:
    """The running loop's `Deadlines` (one per loop)."""
    global _last
    loop = asyncio.get_running_loop()
    last = _last
    if last is not None and last._loop is loop:
        return last
    found = _deadlines.get(loop)
    if found is None:
        found = _deadlines[loop] = Deadlines(loop)
    _last = found
    return found


class credited_timeout:
    """`asyncio.timeout(timeout_s)`, extended by the time the loop ran late meanwhile, never
    past `limit_s` seconds (the request's deadline). Raises `TimeoutError` on expiry.

    With `lag` None it is a plain timeout of `min(timeout_s, limit_s)`. The extension is
    checked when the timeout falls due. Armed through the loop's `Deadlines` (one timer for
    every wait); the attempt loop uses `Deadlines.watch` directly, without the context manager.
    """

    __slots__ = ("_lag", "_limit_s", "_timeout_s", "_watch")

    def __init__(self, lag: LoopLag | None, timeout_s: float, *, limit_s: float) -> None:
        self._lag, self._timeout_s, self._limit_s = lag, timeout_s, limit_s

    async def __aenter__(self) -> None:
        self._watch = deadlines().watch(self._lag, self._timeout_s, limit_s=self._limit_s)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._watch.close(exc_type is asyncio.CancelledError):
            raise TimeoutError from exc
