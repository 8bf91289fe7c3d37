"""Quota state in this process's memory: exact, fast, bounded, and gone on restart.

Each reserve, top-up and settle runs to the end without awaiting, so on one
event loop no other task can slip between the check and the commit; a lock
makes it hold across threads too.

State is kept per tenant (the keys' `{tenant}` hash tag) and bounded two ways:

- by time: every entry expires with its window (a GCRA bucket once it has
  drained, a counter when its calendar window ends, a lease when it lapses);
  expired entries are swept at most once per `prune_interval_s`;
- by size: at most `max_keys` entries in all and `max_keys_per_tenant` for one
  tenant. A new tenant arriving at a full store evicts the tenants used least
  recently (idle ones first: those holding no live lease), never refuses it.
  Only a tenant whose own keys pass its bound is refused (`QuotaStoreError`,
  so the manager's failure mode decides); the bound is far above what any
  tenants file can make one tenant use.

What eviction forgets, for the evicted tenant only: its spend and counts in
the current day and month (it may spend its budgets again), its rate buckets
(it starts with a full burst), and its open leases (their slots free at once;
settling them later is a no-op, so their estimates stay counted in nothing).

>>> import asyncio
>>> store = MemoryStore(clock=lambda: 1_700_000_000.0)
>>> asyncio.run(store.usage(("m", "d", "M"), "open"))
(((0, 0, 0), (0, 0, 0), (0, 0, 0)), 0)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

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
    TopUpPlan,
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


@dataclass(slots=True)
class _Tenant:
    """One tenant's entries: GCRA arrival times, window counters, lease sets."""

    tat: dict[str, float] = field(default_factory=dict)
    counters: dict[str, _Counter] = field(default_factory=dict)
    leases: dict[str, dict[str, float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tat) + len(self.counters) + len(self.leases)

    def busy(self, now: float) -> bool:
        """Whether it holds a live lease (a call in flight)."""
        return any(exp > now for held in self.leases.values() for exp in held.values())

    def prune(self, now: float) -> None:
        self.tat = {k: v for k, v in self.tat.items() if v > now}
        self.counters = {k: c for k, c in self.counters.items() if c.expires_at > now}
        for key in list(self.leases):
            live = {i: exp for i, exp in self.leases[key].items() if exp > now}
            if live:
                self.leases[key] = live
            else:
                del self.leases[key]


def tenant_of(key: str) -> str:
    """The hash tag of a key (`{acme}:t:day` -> `acme`); keys without one share ''."""
    if key.startswith("{"):
        end = key.find("}")
        if end > 0:
            return key[1:end]
    return ""


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
        max_keys_per_tenant: int = 10_000,
        prune_interval_s: float = 60.0,
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._max_per_tenant = max_keys_per_tenant
        self._prune_interval_s = prune_interval_s
        self._next_prune = 0.0
        #: Least recently used first.
        self._tenants: OrderedDict[str, _Tenant] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        #: Tenants evicted to make room, for metrics and tests.
        self.evictions = 0

    def __len__(self) -> int:
        """Entries held now (expired ones count until the next sweep)."""
        return sum(len(t) for t in self._tenants.values())

    async def reserve(self, plan: ReservePlan) -> Admitted | Rejected:
        with self._lock:
            now = self._clock()
            self._prune(now)
            keys = [*(r.key for r in plan.rates), *(w.key for w in plan.windows),
                    *(s.key for s in plan.slots)]
            t = self._use(tenant_of(keys[0]) if keys else "")
            if plan.slots and plan.id in t.leases.get(plan.slots[0].key, {}):
                return Admitted(window_ids(now))  # already taken (a retried reserve)
            rejected = self._check(t, plan, now)
            if rejected is not None:
                return rejected
            before = len(t)
            new_keys = sum(1 for k in keys if k not in t.tat and k not in t.counters
                           and k not in t.leases)
            if before + new_keys > self._max_per_tenant:
                t.prune(now)
                if len(t) + new_keys > self._max_per_tenant:
                    raise QuotaStoreError(
                        f"memory quota store: one tenant holds {self._max_per_tenant} keys",
                        outage=False)
            for r in plan.rates:
                start = max(t.tat.get(r.key, now), now)
                t.tat[r.key] = start + r.amount * r.interval_s
            for w in plan.windows:
                counter = _counter(t, w.key, w.window, now)
                for i in range(3):
                    counter.counts[i] += w.amounts[i]
            for s in plan.slots:
                t.leases.setdefault(s.key, {})[plan.id] = now + plan.lease_s
            self._size += len(t) - before
            self._make_room(now)
            return Admitted(window_ids(now))

    def _check(self, t: _Tenant, plan: ReservePlan, now: float) -> Rejected | None:
        worst: Rejected | None = None
        for i, r in enumerate(plan.rates):
            fits, usage, retry = gcra_check(t.tat.get(r.key), now, r)
            if not fits:
                worst = pick_worst(worst, Rejected("rate", i, 0, usage, retry))
        for i, w in enumerate(plan.windows):
            current = _current_counts(t, w.key, w.window, now)
            for f in range(3):
                limit = w.limits[f]
                if limit is not None and current[f] + w.amounts[f] > limit:
                    wait = window_end(w.window, window_id(w.window, now)) - now
                    worst = pick_worst(worst, Rejected("window", i, f, current[f], wait))
        for i, s in enumerate(plan.slots):
            if s.limit is None:
                continue
            held = sum(1 for exp in t.leases.get(s.key, {}).values() if exp > now)
            if held + 1 > s.limit:
                worst = pick_worst(worst, Rejected("slot", i, 0, held, None))
        return worst

    async def top_up(self, plan: TopUpPlan) -> Literal["ok", "closed"] | Rejected:
        with self._lock:
            now = self._clock()
            t = self._tenants.get(tenant_of(plan.open_key))
            expiry = None if t is None else t.leases.get(plan.open_key, {}).get(plan.id)
            if t is None or expiry is None or expiry <= now:
                return "closed"
            self._tenants.move_to_end(tenant_of(plan.open_key))
            worst: Rejected | None = None
            for i, r in enumerate(plan.rates):
                fits, usage, retry = gcra_check(t.tat.get(r.key), now, r)
                if not fits:
                    worst = pick_worst(worst, Rejected("rate", i, 0, usage, retry))
            live = [(i, w, c) for i, w in enumerate(plan.windows)
                    if (c := t.counters.get(w.key)) is not None and c.window_id == w.window_id]
            for i, w, c in live:
                for f, (delta, limit) in enumerate(zip(w.deltas, w.limits, strict=True), start=1):
                    if limit is not None and c.counts[f] + delta > limit:
                        wait = window_end(w.window, w.window_id) - now
                        worst = pick_worst(worst, Rejected("window", i, f, c.counts[f], wait))
            if worst is not None:
                return worst
            for r in plan.rates:
                _move_rate(t, RateAdjust(r.key, r.interval_s, r.amount), now)
            for _, w, c in live:
                c.counts[1] += w.deltas[0]
                c.counts[2] += w.deltas[1]
            for key in (plan.open_key, *plan.renew):
                held = t.leases.get(key)
                if held is not None and plan.id in held:
                    held[plan.id] = max(held[plan.id], now + plan.lease_s)
            return "ok"

    async def settle(self, plan: SettlePlan) -> bool:
        with self._lock:
            now = self._clock()
            t = self._tenants.get(tenant_of(plan.open_key))
            leases = None if t is None else t.leases.get(plan.open_key)
            if t is None or leases is None or leases.pop(plan.id, None) is None:
                return False  # a void has nothing to guard against: a memory reserve is never late
            before = len(t)
            if not leases:
                del t.leases[plan.open_key]
            for r in plan.rates:
                _move_rate(t, r, now)
            for w in plan.windows:
                _adjust_window(t, w, now)
            for key in plan.release:
                held = t.leases.get(key)
                if held is not None and held.pop(plan.id, None) is not None and not held:
                    del t.leases[key]
            self._size += len(t) - before
            return True

    async def usage(
        self, window_keys: tuple[str, str, str], open_key: str
    ) -> tuple[tuple[Counts, Counts, Counts], int]:
        with self._lock:
            now = self._clock()
            t = self._tenants.get(tenant_of(open_key), _Tenant())
            m, d, mo = (
                _current_counts(t, key, window, now)
                for key, window in zip(window_keys, WINDOWS, strict=True)
            )
            held = sum(1 for exp in t.leases.get(open_key, {}).values() if exp > now)
            return (m, d, mo), held

    def _use(self, name: str) -> _Tenant:
        """The tenant's entries, marked most recently used (created empty if new)."""
        t = self._tenants.get(name)
        if t is None:
            t = self._tenants[name] = _Tenant()
        else:
            self._tenants.move_to_end(name)
        return t

    def _make_room(self, now: float) -> None:
        """Evict least recently used tenants, idle ones first, until within `max_keys`.

        The tenant just served is never evicted; expired entries count until
        the next sweep (a sweep over every tenant here would make a full store
        cost O(tenants) per request).
        """
        excess = self._size - self._max_keys
        if excess <= 0:
            return
        newest = next(reversed(self._tenants))
        victims: dict[str, None] = {}
        for busy_ok in (False, True):
            for name, t in self._tenants.items():  # least recently used first
                if excess <= 0:
                    break
                if name == newest or name in victims or (not busy_ok and t.busy(now)):
                    continue
                victims[name] = None
                excess -= len(t)
        for name in victims:
            self._size -= len(self._tenants.pop(name))
            self.evictions += 1

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + self._prune_interval_s
        for name in list(self._tenants):
            t = self._tenants[name]
            t.prune(now)
            if not len(t):
                del self._tenants[name]
        self._size = len(self)


def _current_counts(t: _Tenant, key: str, window: Window, now: float) -> Counts:
    counter = t.counters.get(key)
    if counter is None or counter.window_id != window_id(window, now):
        return (0, 0, 0)
    c = counter.counts
    return (c[0], c[1], c[2])


def _counter(t: _Tenant, key: str, window: Window, now: float) -> _Counter:
    """The counter of the current window, started afresh if the stored one is over."""
    wid = window_id(window, now)
    counter = t.counters.get(key)
    if counter is None or counter.window_id != wid:
        counter = _Counter(wid, window_end(window, wid), [0, 0, 0])
        t.counters[key] = counter
    return counter


def _move_rate(t: _Tenant, r: RateAdjust, now: float) -> None:
    tat = t.tat.get(r.key)
    if r.delta > 0:
        t.tat[r.key] = max(tat if tat is not None else now, now) + r.delta * r.interval_s
    elif tat is not None:
        t.tat[r.key] = tat + r.delta * r.interval_s


def _adjust_window(t: _Tenant, w: WindowAdjust, now: float) -> None:
    if w.window_id is None:
        counter = _counter(t, w.key, w.window, now)
    else:
        found = t.counters.get(w.key)
        if found is None or found.window_id != w.window_id:
            return  # that window is over: its counts no longer matter
        counter = found
    for i in range(3):
        counter.counts[i] += w.deltas[i]
