"""The contract of a cache store: bytes under string keys, each with its own TTL.

A store knows nothing of requests or routes: `ResponseCache` (in `flight.py`)
builds keys and payloads and decides what to store. Besides values, a store
holds short locks, so that of several router processes sharing it only one
computes an answer while the others wait for its entry (`try_lock`, `peek`,
`unlock`).

A store never raises for being unreachable: a read is then a miss, a write is
dropped, `try_lock` lets the caller compute without a lock. A cache is an
optimisation; it must not fail a request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What a store holds and has moved, in bytes of values (after compression for Redis).

    `entries` and `bytes_stored` are None where the store cannot tell cheaply
    (Redis). `bytes_read`/`bytes_written` count since the store was made;
    `errors` counts operations that failed and degraded to a miss or no-op.
    """

    entries: int | None
    bytes_stored: int | None
    bytes_read: int
    bytes_written: int
    errors: int


class CacheStore(ABC):
    """Bytes under keys, each entry expiring after its own TTL; see the module docstring.

    Keys are the strings of `router.cache.keys` (up to `MAX_TEXT_KEY` + 7 characters); a
    store outside this process names them by their SHA-256 (`key_digest`). TTLs are in
    seconds and must be positive and finite.
    """

    #: Where the store lives, without credentials, e.g. "memory://" or "redis://host:6379/0".
    name: str
    #: True when other processes read and write it too (Redis): single-flight then also takes
    #: a short lock in the store; a store of this process alone needs only the in-process flight.
    shared: bool = True

    #: True for a store of this process whose `get_now`/`set_now` answer at once, without a
    #: coroutine (what `get`/`set` do for it): the request path then skips two awaits a miss.
    local: bool = False

    #: True for a store of this process alone that may keep values as they are (`keep_now`,
    #: `kept_now`) instead of their bytes: `ResponseCache` then neither encodes an answer on a
    #: miss nor decodes it on a hit. Kept values are handed to every hit, so they must be immutable.
    keeps_values: bool = False

    def kept_now(self, key: str) -> tuple[object, int] | None:
        """(the value `keep_now` kept under `key`, its size in bytes), or None; only for stores
        that `keeps_values`. Entries written as bytes are not returned here."""
        raise NotImplementedError(f"{self.name} keeps bytes only")

    def keep_now(self, key: str, value: object, nbytes: int, ttl_s: float) -> None:
        """Keep `value` itself under `key` for `ttl_s` seconds, counted as `nbytes` bytes toward
        the store's bounds; only for stores that `keeps_values`."""
        raise NotImplementedError(f"{self.name} keeps bytes only")

    def get_now(self, key: str) -> bytes | None:
        """`get` without a coroutine; only for `local` stores."""
        raise NotImplementedError(f"{self.name} is not in this process")

    def set_now(self, key: str, value: bytes, ttl_s: float) -> None:
        """`set` without a coroutine; only for `local` stores."""
        raise NotImplementedError(f"{self.name} is not in this process")

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value under `key`, or None if absent, expired or the store is unreachable."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under `keys`, in order (one round trip where the store allows)."""
        return [await self.get(k) for k in keys]

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store `value` under `key` for `ttl_s` seconds; dropped if the store is unreachable."""

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float) -> None:
        """Store every (key, value) pair for `ttl_s` seconds."""
        for key, value in items:
            await self.set(key, value, ttl_s)

    @abstractmethod
    async def try_lock(self, key: str, ttl_s: float) -> str | None:
        """Take the compute lock of `key` for `ttl_s` seconds.

        Returns a token to pass to `unlock` when the caller may compute (it
        took the lock, or the store is unreachable and no lock can be had:
        then the token is ""), or None when another holder has it.
        """

    @abstractmethod
    async def unlock(self, key: str, token: str) -> None:
        """Release the lock of `key` if `token` still holds it (a lock that expired and
        was taken by another is left alone)."""

    @abstractmethod
    async def peek(self, key: str) -> tuple[bytes | None, bool]:
        """(the value under `key` or None, whether its lock is held), read together.

        An unreachable store answers (None, False), so a waiter stops waiting.
        """

    @abstractmethod
    def stats(self) -> StoreStats:
        """Counts of what the store holds and has moved."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections; the store is not used afterwards."""
