"""A cache store in this process's memory, bounded by entries and by bytes.

Entries live in a cachetools `LRUCache`: the least recently used entry goes
first when a bound is reached. Each entry carries its own expiry (when its
TTL runs out, on the injected clock, so tests move time instead of
sleeping), checked when it is read: an expired entry is dropped then, or
evicted as the least recently used. (cachetools' `TLRUCache` expires eagerly,
with a heap and a timer per write: ~6 µs a write against ~1.7 µs, on every
cache miss.) cachetools bounds one size only, so the byte bound is its
`maxsize` (sizes from `getsizeof`) and the entry bound is enforced after
each insert.

A store that is not `shared` also keeps values as they are (`keep_now`,
`kept_now`): the response cache keeps chat answers so, counted at a size
its caller estimates, so that a miss does not encode them nor a hit decode
them.

>>> import asyncio
>>> store = MemoryCacheStore(max_entries=2, max_bytes=10_000)
>>> asyncio.run(store.set("k", b"v", ttl_s=60))
>>> asyncio.run(store.get("k"))
b'v'
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

from cachetools import LRUCache

from router.cache.base import CacheStore, StoreStats

#: Bytes charged per entry beyond its value: the cache's bookkeeping and a key of up to
#: `KEY_ALLOWANCE` characters, roughly what CPython spends on them, so `max_bytes` bounds real
#: memory. A longer key (a request's text, up to `MAX_TEXT_KEY`) is charged its extra length.
ENTRY_OVERHEAD = 256
KEY_ALLOWANCE = 64
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class _Entry(NamedTuple):
    #: Bytes (`set`), or a value kept as it is (`keep_now`).
    value: object
    #: When the entry expires, on the store's clock (seconds).
    expires_at: float
    #: The value's size in bytes: its length, or what `keep_now` was told.
    nbytes: int
    kept: bool
    #: What the entry counts toward `max_bytes`: `nbytes`, `ENTRY_OVERHEAD` and a long key's extra.
    charged: int


def _size(entry: _Entry) -> int:
    return entry.charged


class MemoryCacheStore(CacheStore):
    """At most `max_entries` entries and `max_bytes` bytes (values plus
    `ENTRY_OVERHEAD` each, plus what a key has beyond `KEY_ALLOWANCE` characters),
    least recently used evicted first.

    `clock` (seconds, default `time.monotonic`) decides expiry of entries and
    locks. A value larger than `max_bytes` on its own is not stored. Locks
    here only matter to several `ResponseCache` objects sharing this store.
    """

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        shared: bool = False,
    ) -> None:
        """`shared=True` when several `ResponseCache` objects use this one store (replicas in
        one process, tests): single-flight then also locks in the store, as with Redis."""
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"max_entries and max_bytes must be at least 1, got {max_entries}, {max_bytes}")
        self.name = "memory://"
        self.shared = shared
        self.local = True
        self.keeps_values = not shared  # stores shared like Redis keep bytes, as Redis does
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: LRUCache[str, _Entry] = LRUCache(maxsize=max_bytes, getsizeof=_size)
        self._locks: dict[str, tuple[str, float]] = {}
        self._read = 0
        self._written = 0

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def _live(self, key: str) -> _Entry | None:
        """The entry under `key` unless it has expired (then it is dropped)."""
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            entries.pop(key, None)
            return None
        return entry

    def get_now(self, key: str) -> bytes | None:
        entry = self._live(key)
        if entry is None or entry.kept:
            return None
        self._read += entry.nbytes
        return entry.value  # type: ignore[return-value]  # what set_now stored: bytes

    def kept_now(self, key: str) -> tuple[object, int] | None:
        # `_live` inline: this is every memory:// lookup.
        entries = self._entries
        entry = entries.get(key)
        if entry is None or not entry.kept:
            return None
        if entry.expires_at <= self._clock():
            entries.pop(key, None)
            return None
        self._read += entry.nbytes
        return entry.value, entry.nbytes

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.set_now(key, value, ttl_s)

    def set_now(self, key: str, value: bytes, ttl_s: float) -> None:
        self._put(key, value, len(value), ttl_s, False)

    def keep_now(self, key: str, value: object, nbytes: int, ttl_s: float) -> None:
        if not self.keeps_values:
            raise NotImplementedError("a shared memory store keeps bytes only, as Redis does")
        self._put(key, value, max(0, nbytes), ttl_s, True)

    def _put(self, key: str, value: object, nbytes: int, ttl_s: float, kept: bool) -> None:
        entries = self._entries
        charged = nbytes + ENTRY_OVERHEAD + max(0, len(key) - KEY_ALLOWANCE)
        if charged > self.max_bytes or ttl_s <= 0:
            entries.pop(key, None)
            return
        # tuple.__new__: the NamedTuple's own __new__ is a Python function, a frame more a miss.
        entries[key] = tuple.__new__(_Entry, (value, self._clock() + ttl_s, nbytes, kept, charged))
        self._written += nbytes
        while len(entries) > self.max_entries:
            entries.popitem()

    def _holder(self, key: str) -> str | None:
        held = self._locks.get(key)
        if held is None:
            return None
        if held[1] <= self._clock():
            del self._locks[key]
            return None
        return held[0]

    async def try_lock(self, key: str, ttl_s: float) -> str | None:
        if self._holder(key) is not None:
            return None
        token = secrets.token_hex(8)
        self._locks[key] = (token, self._clock() + ttl_s)
        return token

    async def unlock(self, key: str, token: str) -> None:
        if token and self._holder(key) == token:
            del self._locks[key]

    async def peek(self, key: str) -> tuple[bytes | None, bool]:
        return await self.get(key), self._holder(key) is not None

    def stats(self) -> StoreStats:
        """`entries` counts what is held, expired entries not yet dropped included."""
        return StoreStats(entries=len(self._entries), bytes_stored=int(self._entries.currsize),
                          bytes_read=self._read, bytes_written=self._written, errors=0)

    async def aclose(self) -> None:
        """Nothing to release: the entries go with the object."""

    @classmethod
    def from_url(cls, url: str, *, clock: Callable[[], float] | None = None) -> MemoryCacheStore:
        """`memory://?max_entries=N&max_bytes=M` (both optional positive integers)."""
        args: dict[str, int] = {}
        for name, raw in parse_qsl(urlsplit(url).query, keep_blank_values=True):
            if name not in ("max_entries", "max_bytes"):
                raise ValueError(f"cache URL {url!r}: unknown option {name!r} (use max_entries, max_bytes)")
            try:
                args[name] = int(raw)
            except ValueError:
                raise ValueError(f"cache URL {url!r}: {name} must be an integer, got {raw!r}") from None
        return cls(clock=clock or time.monotonic, max_entries=args.get("max_entries", DEFAULT_MAX_ENTRIES),
                   max_bytes=args.get("max_bytes", DEFAULT_MAX_BYTES))
