"""The response cache: look up, compute at most once per key at a time, store.

`ResponseCache.get_or_compute` answers one request:

1. Read (unless `read=False`): an entry in the store is a hit.
2. Single-flight in this process: identical requests already in flight wait
   for the first (the leader) and get its value; N callers, one computation.
3. Single-flight across processes sharing a store (Redis): the leader takes a
   short lock (`SET NX PX`); a caller in another process that finds the lock
   taken polls for the entry with backoff, up to `max_wait_s`, then computes
   itself. A leader that stores nothing (its answer was uncacheable, or it
   failed) releases the lock, and the waiters compute at once.
4. Compute, and store the value unless `write=False` or `encode(value)` is
   None (the value must not be cached). With `size`, a store that keeps
   values (memory://, not shared) keeps the value itself, counted at
   `size(value)` bytes, so a miss encodes nothing and a hit decodes nothing;
   any other store gets `encode(value)`, and a hit `decode(bytes)`.

When a leader fails, its in-process followers get the same exception, as Go's
singleflight does: N identical requests to a failing provider then cost one
call, not N. Exceptions for which `shares_error(exc)` is False (errors about
one caller rather than the upstream) make the followers try again instead,
one of them leading. A cancelled leader never passes its cancellation on: its
followers try again. Errors are never stored.

Followers get the leader's very object, so values should be immutable. They
get it even when the leader did not store it (`write=False`, or `encode`
gave None): they asked the same question at the same moment.

>>> import asyncio
>>> from router.cache.memory import MemoryCacheStore
>>> cache = ResponseCache(MemoryCacheStore())
>>> async def compute() -> str:
...     return "answer"
>>> async def twice() -> tuple[str, str]:
...     first = await cache.get_or_compute("k", compute, encode=str.encode, decode=bytes.decode, route="r", ttl_s=60)
...     again = await cache.get_or_compute("k", compute, encode=str.encode, decode=bytes.decode, route="r", ttl_s=60)
...     return first.outcome, again.outcome
>>> asyncio.run(twice())
('miss', 'hit')
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Literal, Protocol, TypeVar

from router.cache.base import CacheStore
from router.cache.batch import split_batch
from router.cache.metrics import CacheCounters, CacheEvent, CacheObserver, EventKind
from router.records import record

log = logging.getLogger(__name__)

T = TypeVar("T")
Outcome = Literal["hit", "coalesced", "miss", "bypass"]


@record
class Lookup(Generic[T]):
    """The answer to one `get_or_compute`: the value and how it was obtained.

    `outcome`: "hit" (read from the store), "coalesced" (another caller's
    computation, in this process or another), "miss" (this caller computed),
    "bypass" (computed without reading, `read=False`).
    """

    value: T
    outcome: Outcome

    @property
    def hit(self) -> bool:
        """True when no provider was called for this caller."""
        return self.outcome in ("hit", "coalesced")


class _Emitter(Protocol):
    def __call__(self, route: str, kind: EventKind, nbytes: int = 0) -> None: ...


class _LeaderGone(Exception):
    """The in-process leader stopped without a value its followers may share."""


def _share_every_error(_exc: BaseException) -> bool:
    return True


class ResponseCache:
    """Single-flight lookups over a `CacheStore`; see the module docstring.

    `lock_ttl_s` is how long a leader's cross-process lock lasts by default (set
    it near the longest a computation takes: the route's deadline); waiters
    poll from `poll_s[0]` seconds, growing by half each time, up to `poll_s[1]`.
    `clock` (seconds) and `sleep` are injected for tests. `observer` receives
    every `CacheEvent` (wire a meter there); `counters` keeps totals per route.
    """

    def __init__(
        self,
        store: CacheStore,
        *,
        lock_ttl_s: float = 30.0,
        poll_s: tuple[float, float] = (0.01, 0.2),
        shares_error: Callable[[BaseException], bool] = _share_every_error,
        observer: CacheObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not (0 < poll_s[0] <= poll_s[1]):
            raise ValueError(f"poll_s must be (first, most) with 0 < first <= most, got {poll_s!r}")
        self.store = store
        self.counters = CacheCounters()
        self._lock_ttl_s = lock_ttl_s
        self._poll_s = poll_s
        self._shares_error = shares_error
        self._observer = observer
        self._clock = clock
        self._sleep = sleep
        #: key -> the leader's future, made when the first follower comes (None until then).
        self._flights: dict[str, asyncio.Future[Any] | None] = {}
        #: Counts one event (and tells the observer): without an observer, the counters' own method.
        self._emit: _Emitter = self.counters.count if observer is None else self._emit_observed

    def _emit_observed(self, route: str, kind: EventKind, nbytes: int = 0) -> None:
        self.counters.count(route, kind, nbytes)
        if self._observer is not None:
            self._observer(CacheEvent(route=route, kind=kind, nbytes=nbytes))

    def _decoded(self, raw: bytes, decode: Callable[[bytes], T], route: str) -> tuple[T] | None:
        """(decode(raw),), or None when the entry cannot be decoded (then it is a miss)."""
        try:
            return (decode(raw),)
        except Exception as exc:  # a stale or damaged entry must not fail the request
            log.warning("cache entry on route %s could not be decoded (%s); computing instead",
                        route, exc.__class__.__name__)
            self._emit(route, "decode_error", len(raw))
            return None

    async def _read(self, key: str, decode: Callable[[bytes], T], route: str) -> tuple[bytes | None, Lookup[T] | None]:
        """The entry under `key` as stored, and a hit (counted) when it decodes."""
        store = self.store
        raw = store.get_now(key) if store.local else await store.get(key)
        if raw is None:
            return None, None
        found = self._decoded(raw, decode, route)
        if found is None:
            return raw, None
        self._emit(route, "hit", len(raw))
        return raw, Lookup(found[0], "hit")

    async def peek(self, key: str, *, decode: Callable[[bytes], T], route: str) -> T | None:
        """The stored value for `key`, or None (counted as a hit or a miss); no single-flight.

        For answers that cannot wait on another call in flight, such as a
        stream its caller reads as it arrives.
        """
        _, hit = await self._read(key, decode, route)
        if hit is None:
            self._emit(route, "miss")
            return None
        return hit.value

    async def put(self, key: str, payload: bytes, *, route: str, ttl_s: float) -> None:
        """Store `payload` under `key` for `ttl_s` seconds (the write side of `peek`)."""
        await self._store(key, payload, route, ttl_s)

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[T]],
        *,
        encode: Callable[[T], bytes | None],
        decode: Callable[[bytes], T],
        route: str,
        ttl_s: float,
        read: bool = True,
        write: bool = True,
        lock_ttl_s: float | None = None,
        max_wait_s: float | None = None,
        size: Callable[[T], int | None] | None = None,
    ) -> Lookup[T]:
        """The value for `key`: from the store, from an identical call in flight, or computed.

        `compute()` makes the value (calls the provider). `encode(value)` is its
        stored form, or None for a value that must not be stored; `decode(bytes)`
        turns stored bytes back into a value. With `size`, a store that
        `keeps_values` keeps the value itself, counted at `size(value)` bytes
        (None: do not store), and never calls `encode` or `decode`. `read=False`
        skips the lookup and single-flight (a "no-cache" request); `write=False`
        stores nothing ("no-store"). `ttl_s` is the entry's life in seconds;
        `lock_ttl_s` (default: the cache's) the cross-process lock's;
        `max_wait_s` (default `lock_ttl_s`) bounds the wait for another
        process's entry. Raises whatever `compute` raises (see the module
        docstring for followers).
        """
        keep = size if self.store.keeps_values else None
        if not read:
            return await self._compute(key, compute, encode, keep, route, ttl_s, write=write, outcome="bypass")

        flights = self._flights
        while key in flights:
            flight = flights[key]
            if flight is None:  # the first follower makes the leader's future (a lone leader needs none)
                flight = flights[key] = asyncio.get_running_loop().create_future()
            try:
                # shield: a follower that is cancelled must not cancel the leader's future.
                value: T = await asyncio.shield(flight)
            except _LeaderGone:
                continue  # the leader stopped; one of the followers leads now
            self._emit(route, "coalesced")
            return Lookup(value, "coalesced")

        flights[key] = None
        lookup: Lookup[T]
        try:
            if keep is not None:
                # Every memory:// lookup, inline (a coroutine of its own costs 1.5k instructions).
                kept = self.store.kept_now(key)
                if kept is not None:
                    self._emit(route, "hit", kept[1])
                    lookup = Lookup(kept[0], "hit")  # type: ignore[arg-type]  # what _keep kept: a T
                else:
                    value = await compute()
                    self._emit(route, "miss")
                    if write and (nbytes := keep(value)) is not None:  # `_keep`, inline
                        self.store.keep_now(key, value, nbytes, ttl_s)
                        self._emit(route, "write", nbytes)
                    lookup = Lookup(value, "miss")
            elif write and self.store.shared:
                lookup = await self._lead(key, compute, encode, decode, route, ttl_s,
                                          lock_ttl_s or self._lock_ttl_s, max_wait_s)
            else:
                # Nothing will be stored, or no other process reads this store: the in-process
                # flight above is all the single-flight there is to do (no lock, no second read).
                _, found = await self._read(key, decode, route)
                lookup = found or await self._compute(key, compute, encode, None, route, ttl_s, write=write)
        except BaseException as exc:
            flight = flights.pop(key)
            if flight is not None:
                shared = isinstance(exc, Exception) and self._shares_error(exc)
                flight.set_exception(exc if shared else _LeaderGone())
                flight.exception()  # retrieved: no "never retrieved" warning when every follower left
            raise
        flight = flights.pop(key)
        if flight is not None:
            flight.set_result(lookup.value)
        return lookup

    async def _lead(
        self,
        key: str,
        compute: Callable[[], Awaitable[T]],
        encode: Callable[[T], bytes | None],
        decode: Callable[[bytes], T],
        route: str,
        ttl_s: float,
        lock_ttl_s: float,
        max_wait_s: float | None,
    ) -> Lookup[T]:
        """The leader's work on a store other processes share: read, lock (or wait for the
        lock holder's entry), read again, compute and store."""
        raw, hit = await self._read(key, decode, route)
        if hit is not None:
            return hit
        token = await self.store.try_lock(key, lock_ttl_s)
        if token is None:
            waited = await self._wait_for_entry(key, decode, route,
                                                lock_ttl_s if max_wait_s is None else max_wait_s)
            if waited is not None:
                return waited
            return await self._compute(key, compute, encode, None, route, ttl_s, write=True)
        try:
            if token and raw is None:
                # Another process may have stored the entry between our read and our lock.
                _, hit = await self._read(key, decode, route)
                if hit is not None:
                    return hit
            return await self._compute(key, compute, encode, None, route, ttl_s, write=True)
        finally:
            # After the write, so a waiter that sees the lock gone also sees the entry.
            await self.store.unlock(key, token)

    async def _compute(
        self, key: str, compute: Callable[[], Awaitable[T]], encode: Callable[[T], bytes | None],
        keep: Callable[[T], int | None] | None, route: str, ttl_s: float, *, write: bool,
        outcome: Outcome = "miss",
    ) -> Lookup[T]:
        """Compute, count it as `outcome` and, with `write`, store it: the value itself counted
        at `keep(value)` bytes in a store that keeps values, else `encode(value)`."""
        value = await compute()
        self._emit(route, outcome)
        if write and keep is not None:
            self._keep(key, value, keep, route, ttl_s)
        elif write:
            await self._store(key, encode(value), route, ttl_s)
        return Lookup(value, outcome)

    def _keep(self, key: str, value: T, size: Callable[[T], int | None], route: str, ttl_s: float) -> None:
        nbytes = size(value)
        if nbytes is not None:
            self.store.keep_now(key, value, nbytes, ttl_s)
            self._emit(route, "write", nbytes)

    async def _store(self, key: str, payload: bytes | None, route: str, ttl_s: float) -> None:
        if payload is None:
            return
        store = self.store
        if store.local:
            store.set_now(key, payload, ttl_s)
        else:
            await store.set(key, payload, ttl_s)
        self._emit(route, "write", len(payload))

    async def _wait_for_entry(
        self, key: str, decode: Callable[[bytes], T], route: str, max_wait_s: float,
    ) -> Lookup[T] | None:
        """Another process's entry for `key` once it appears; None if its lock goes
        without one or `max_wait_s` passes."""
        deadline = self._clock() + max_wait_s
        delay = self._poll_s[0]
        while (left := deadline - self._clock()) > 0:
            await self._sleep(min(delay, left))
            delay = min(delay * 1.5, self._poll_s[1])
            raw, locked = await self.store.peek(key)
            if raw is not None:
                found = self._decoded(raw, decode, route)
                if found is None:
                    return None
                self._emit(route, "coalesced", len(raw))
                return Lookup(found[0], "coalesced")
            if not locked:
                return None
        log.debug("cache wait on route %s gave up after %.3f s", route, max_wait_s)
        return None

    async def get_or_compute_batch(
        self,
        keys: Sequence[str],
        compute_missing: Callable[[Sequence[int]], Awaitable[Sequence[T]]],
        *,
        encode: Callable[[T], bytes | None],
        decode: Callable[[bytes], T],
        route: str,
        ttl_s: float,
        read: bool = True,
        write: bool = True,
    ) -> list[Lookup[T]]:
        """One `Lookup` per key, in input order, computing only the items not cached.

        `compute_missing(indices)` computes the input items at `indices` (the
        first occurrence of each uncached key, ascending) and returns one value
        per index, in that order; it is not called when everything is cached.
        Each value is stored as `encode(value)` (None: not stored). Batches do
        not single-flight. Raises ValueError when `compute_missing` returns the
        wrong number of items.
        """
        unique = list(dict.fromkeys(keys))
        cached: dict[str, T] = {}
        if read:
            for key, raw in zip(unique, await self.store.get_many(unique), strict=True):
                if raw is not None and (found := self._decoded(raw, decode, route)) is not None:
                    cached[key] = found[0]
                    self._emit(route, "hit", len(raw))
        plan = split_batch(keys, cached)
        computed: Sequence[T] = await compute_missing(plan.missing) if plan.missing else ()
        if len(computed) != len(plan.missing):
            raise ValueError(f"compute_missing returned {len(computed)} items for {len(plan.missing)} indices")
        for _ in computed:
            self._emit(route, "miss" if read else "bypass")
        if write:
            items = [(keys[i], payload) for i, value in zip(plan.missing, computed, strict=True)
                     if (payload := encode(value)) is not None]
            await self.store.set_many(items, ttl_s)
            for _, payload in items:
                self._emit(route, "write", len(payload))
        outcome: Outcome = "miss" if read else "bypass"
        return [Lookup(value, "hit" if from_cache else outcome)
                for value, from_cache in plan.assemble(computed)]
