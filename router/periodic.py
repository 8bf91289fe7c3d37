"""One background task that runs a coroutine every few seconds, and stops cleanly.

The reload watcher and the health prober both use it.

>>> ticker = Periodic(2.0, check_files, name="router-reload")  # doctest: +SKIP
>>> ticker.start(); ...; await ticker.aclose()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("router")


class Periodic:
    """Calls `tick()` every `interval_s` seconds until `aclose()`; a failing tick is logged, not fatal."""

    def __init__(
        self, interval_s: float, tick: Callable[[], Awaitable[object]], *, name: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval_s = interval_s
        self.tick = tick
        self.name = name
        self.sleep = sleep
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        """Start in the running event loop (once; later calls do nothing)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        while True:
            await self.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception:  # the loop must outlive one bad tick
                log.exception("%s: tick failed", self.name)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
