"""Quota state in this process's memory: exact, fast, and gone on restart.

Each reserve and settle runs to the end without awaiting, so on one event loop
no other task can slip between the check and the commit; a lock makes it hold
across threads too. State is bounded by time: every entry expires with its
window (a GCRA bucket once it has drained, a counter when its calendar window
ends, a lease when it lapses), and expired entries are swept at most once per
`prune_interval_s`. Past `max_keys` live entries the store refuses new work
with `QuotaStoreError` (so the manager's failure mode decides) rather than
silently forget anyone's spend.

>>> import asyncio
>>> store = MemoryStore(clock=lambda: 1_700_000_000.0)
>>> asyncio.run(store.usage(("m", "d", "M"), "open"))
(((0, 0, 0), (0, 0, 0), (0, 0, 0)), 0)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from router.quota.base import (
    WINDOWS,
    Admitted,
    Counts,
    QuotaStore,
    QuotaStoreError,
    RateAdjust,
    Rejected,
    ReservePlan,
    SettlePlan,
    Window,
    WindowAdjust,
    gcra_check,
    pick_worst,
    window_end,
    window_id,
    window_ids,
)


@dataclass(slots=True)
class _Counter:
    window_id: int
    expires_at: float
    counts: list[int]


class MemoryStore(QuotaStore):
    """In-process quota store; pass the same `clock` the tests control.

    >>> MemoryStore().name
    'memory://'
    """

    name = "memory://"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_keys: int = 1_000_000,
        prune_interval_s: float = 60.0,
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._prune_interval_s = prune_interval_s
        self._next_prune = 0.0
        self._tat: dict[str, float] = {}
        self._counters: dict[str, _Counter] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Entries held now (expired ones count until the next sweep)."""
        return len(self._tat) + len(self._counters) + len(self._leases)

    async def reserve(self, plan: ReservePlan) -> Admitted | Rejected:
        with self._lock:
            now = self._clock()
            self._prune(now)
            rejected = self._check(plan, now)
            if rejected is not None:
                return rejected
            new_keys = len(plan.rates) + len(plan.windows) + len(plan.slots)  # at most
            if len(self) + new_keys > self._max_keys:
                self._prune(now, force=True)
                if len(self) + new_keys > self._max_keys:
                    raise QuotaStoreError(f"memory quota store is full ({self._max_keys} keys)")
            for r in plan.rates:
                start = max(self._tat.get(r.key, now), now)
                self._tat[r.key] = start + r.amount * r.interval_s
            for w in plan.windows:
                counter = self._counter(w.key, w.window, now)
                for i in range(3):
                    counter.counts[i] += w.amounts[i]
            for s in plan.slots:
                self._leases.setdefault(s.key, {})[plan.id] = now + plan.lease_s
            return Admitted(window_ids(now))

    def _check(self, plan: ReservePlan, now: float) -> Rejected | None:
        worst: Rejected | None = None
        for i, r in enumerate(plan.rates):
            fits, usage, retry = gcra_check(self._tat.get(r.key), now, r)
            if not fits:
                worst = pick_worst(worst, Rejected("rate", i, 0, usage, retry))
        for i, w in enumerate(plan.windows):
            current = self._current_counts(w.key, w.window, now)
            for f in range(3):
                limit = w.limits[f]
                if limit is not None and current[f] + w.amounts[f] > limit:
                    wait = window_end(w.window, window_id(w.window, now)) - now
                    worst = pick_worst(worst, Rejected("window", i, f, current[f], wait))
        for i, s in enumerate(plan.slots):
            if s.limit is None:
                continue
            held = sum(1 for exp in self._leases.get(s.key, {}).values() if exp > now)
            if held + 1 > s.limit:
                worst = pick_worst(worst, Rejected("slot", i, 0, held, None))
        return worst

    async def settle(self, plan: SettlePlan) -> bool:
        with self._lock:
            now = self._clock()
            leases = self._leases.get(plan.open_key)
            if leases is None or leases.pop(plan.id, None) is None:
                return False
            for r in plan.rates:
                self._adjust_rate(r, now)
            for w in plan.windows:
                self._adjust_window(w, now)
            for key in plan.release:
                self._leases.get(key, {}).pop(plan.id, None)
            return True

    async def usage(
        self, window_keys: tuple[str, str, str], open_key: str
    ) -> tuple[tuple[Counts, Counts, Counts], int]:
        with self._lock:
            now = self._clock()
            m, d, mo = (
                self._current_counts(key, window, now)
                for key, window in zip(window_keys, WINDOWS, strict=True)
            )
            held = sum(1 for exp in self._leases.get(open_key, {}).values() if exp > now)
            return (m, d, mo), held

    def _current_counts(self, key: str, window: Window, now: float) -> Counts:
        counter = self._counters.get(key)
        if counter is None or counter.window_id != window_id(window, now):
            return (0, 0, 0)
        c = counter.counts
        return (c[0], c[1], c[2])

    def _counter(self, key: str, window: Window, now: float) -> _Counter:
        """The counter of the current window, started afresh if the stored one is over."""
        wid = window_id(window, now)
        counter = self._counters.get(key)
        if counter is None or counter.window_id != wid:
            counter = _Counter(wid, window_end(window, wid), [0, 0, 0])
            self._counters[key] = counter
        return counter

    def _adjust_rate(self, r: RateAdjust, now: float) -> None:
        tat = self._tat.get(r.key)
        if r.delta > 0:
            self._tat[r.key] = max(tat if tat is not None else now, now) + r.delta * r.interval_s
        elif tat is not None:
            self._tat[r.key] = tat + r.delta * r.interval_s

    def _adjust_window(self, w: WindowAdjust, now: float) -> None:
        if w.window_id is None:
            counter = self._counter(w.key, w.window, now)
        else:
            found = self._counters.get(w.key)
            if found is None or found.window_id != w.window_id:
                return  # that window is over: its counts no longer matter
            counter = found
        for i in range(3):
            counter.counts[i] += w.deltas[i]

    def _prune(self, now: float, *, force: bool = False) -> None:
        if not force and now < self._next_prune:
            return
        self._next_prune = now + self._prune_interval_s
        self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._counters = {k: c for k, c in self._counters.items() if c.expires_at > now}
        for key in list(self._leases):
            live = {i: exp for i, exp in self._leases[key].items() if exp > now}
            if live:
                self._leases[key] = live
            else:
                del self._leases[key]
