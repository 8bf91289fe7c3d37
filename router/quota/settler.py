"""Deliver settles to the store off the caller's path, retrying through outages.

A settle (or refund, or void) is a `SettlePlan`, idempotent in every store: it
closes its reservation once and is a no-op after that. So a settle whose
answer was lost (a timeout) can be sent again safely, and one that failed is
retried with exponential backoff until it lands or until its reservation's
lease is over (then there is nothing left to release; see below).

Durability: pending settles live in this process only. If the process dies
before one lands, the reservation's lease lapses by itself after `lease_s`:
its concurrency slot comes back then, and its estimate stays counted in place
of the actual use. That over-charges a call that used less than estimated
(the usual case: the estimate assumes `max_tokens` of output) and
under-charges one that used more (provider token counts above our estimate),
by the difference, in the windows the reservation counted in.

>>> import asyncio
>>> from router.quota.memory import MemoryStore
>>> async def demo() -> int:
...     settler = Settler(MemoryStore())
...     return await settler.flush()
>>> asyncio.run(demo())
0
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from router.quota.base import QuotaStore, QuotaStoreError, SettlePlan

log = logging.getLogger("router.quota")


class Settler:
    """Background settles against one store.

    `clock` (wall seconds) is compared with each settle's `deadline`; `sleep`
    waits between retries (inject both in tests). At most `max_pending`
    settles wait at once; past that a new one is dropped and left to its lease
    (counted in `dropped`), so an outage cannot grow memory without bound.
    """

    def __init__(
        self,
        store: QuotaStore,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        max_pending: int = 100_000,
    ) -> None:
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._max_pending = max_pending
        self._tasks: set[asyncio.Task[bool]] = set()
        #: Settles that failed at least once and were tried again.
        self.retries = 0
        #: Settles given up on: lease over, queue full, or cancelled at close.
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Settles not yet delivered."""
        return len(self._tasks)

    def submit(self, plan: SettlePlan, *, deadline: float, first_delay_s: float = 0.0) -> None:
        """Deliver `plan` in the background; give up once the clock passes `deadline`.

        Needs a running event loop (call it from async code).
        """
        if len(self._tasks) >= self._max_pending:
            self.dropped += 1
            log.warning("quota settle queue full (%d); reservation %s is left to its lease",
                        self._max_pending, plan.id)
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(plan, deadline, first_delay_s), name=f"quota-settle-{plan.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, plan: SettlePlan, deadline: float, delay: float) -> bool:
        if delay > 0:
            await self._sleep(delay)
        wait = max(self._backoff_s, delay)
        while True:
            try:
                return await self._store.settle(plan)
            except QuotaStoreError as exc:
                if self._clock() + wait >= deadline:
                    self.dropped += 1
                    log.warning("quota settle of %s given up (lease over): %s", plan.id, exc)
                    return False
                self.retries += 1
            await self._sleep(wait)
            wait = min(wait * 2, self._max_backoff_s)

    async def flush(self, timeout_s: float | None = None) -> int:
        """Wait until every pending settle has landed or given up; the number still pending.

        With `timeout_s`, stop waiting after that many seconds (of the event
        loop's clock) and return what is left.
        """
        deadline = math.inf if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        while self._tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=None if math.isinf(left) else left)
        return len(self._tasks)

    async def aclose(self, timeout_s: float) -> None:
        """Flush for up to `timeout_s`, then cancel what is left (their leases will lapse)."""
        left = await self.flush(timeout_s)
        if not left:
            return
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.dropped += left
        log.warning("quota store closed with %d settles undelivered; their leases will lapse", left)
