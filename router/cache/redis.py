"""A cache store in Redis, shared by every router process.

Values are zlib-compressed and stored with `SET key value PX ttl`, so Redis
expires each entry itself. A compute lock is `SET lock token NX PX ttl`,
released by a script that deletes it only while it still holds our token.
`peek` reads an entry and its lock in one MGET.

Redis being down or slow never fails a request: the operation degrades (a
read is a miss, a write is dropped, `try_lock` lets the caller compute), the
first failure of an outage is logged as a warning (later ones at debug), and
Redis is left alone for `retry_after_s` before it is tried again, so an
outage costs one timeout per `retry_after_s`, not one per request.

>>> store = RedisCacheStore.from_url("redis://127.0.0.1:6379/0?prefix=llmr:cache:")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import secrets
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from router.redis_client import client_from_url, pop_query_option, redis_missing, store_name

try:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise redis_missing("the Redis cache store") from exc

from router.cache.base import CacheStore, StoreStats
from router.cache.keys import key_digest

log = logging.getLogger(__name__)

# Deletes the lock only while it holds the caller's token: a leader whose
# lock expired must not release the lock a later leader took.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
#: zlib level 1: most of the gain on JSON text for a fraction of level 6's CPU.
_COMPRESS_LEVEL = 1


class RedisCacheStore(CacheStore):
    """Cache store on a redis.asyncio client; see `from_url`.

    Entries are kept under `{prefix}v:{digest}`, locks under `{prefix}l:{digest}`, where
    digest is the key's SHA-256 (`router.cache.keys.key_digest`): no prompt text in key names.
    `clock` (seconds, default `time.monotonic`) times the pause after a failure.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "llmr:cache:",
        name: str = "redis",
        retry_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.name = name
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._unlock = client.register_script(_UNLOCK)
        self._down_until: float | None = None
        self._read = 0
        self._written = 0
        self._errors = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_s: float = 0.5,
        max_connections: int = 50,
        retry_after_s: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> RedisCacheStore:
        """Connect lazily to `redis://[:password@]host:port/db?prefix=llmr:cache:`.

        Every command times out after `timeout_s` and is not retried: a cache
        lookup that waits longer than that costs more than it saves. The pool
        blocks (up to `timeout_s`) when all `max_connections` are busy.
        """
        redis_url, prefix = pop_query_option(url, "prefix", "llmr:cache:")
        client = client_from_url(redis_url, timeout_s=timeout_s, retries=0,
                                 max_connections=max_connections, needed_by="the Redis cache store")
        return cls(client, prefix=prefix, retry_after_s=retry_after_s, name=store_name(url),
                   clock=clock or time.monotonic)

    def _value_key(self, key: str) -> str:
        return f"{self._prefix}v:{key_digest(key)}"

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}l:{key_digest(key)}"

    async def _call(self, operation: Callable[[], Awaitable[Any]], fallback: object) -> Any:
        """`operation()`, or `fallback` if Redis fails or is resting after a failure."""
        if self._down_until is not None and self._clock() < self._down_until:
            return fallback
        try:
            result = await operation()
        except (RedisError, OSError) as exc:
            self._errors += 1
            if self._down_until is None:
                log.warning("cache store %s failed (%s); serving without it for now",
                            self.name, exc.__class__.__name__)
            else:
                log.debug("cache store %s still failing: %s", self.name, exc.__class__.__name__)
            self._down_until = self._clock() + self._retry_after_s
            return fallback
        if self._down_until is not None:
            log.warning("cache store %s answers again", self.name)
            self._down_until = None
        return result

    def _decode(self, raw: object) -> bytes | None:
        if not isinstance(raw, bytes):
            return None
        try:
            value = zlib.decompress(raw)
        except zlib.error:
            # Not ours (or damaged): a miss, and the next write replaces it.
            self._errors += 1
            return None
        self._read += len(raw)
        return value

    async def get(self, key: str) -> bytes | None:
        return self._decode(await self._call(lambda: self._client.get(self._value_key(key)), None))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        raws = await self._call(lambda: self._client.mget([self._value_key(k) for k in keys]),
                                [None] * len(keys))
        return [self._decode(r) for r in raws]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.set_many([(key, value)], ttl_s)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float) -> None:
        if not items:
            return
        ttl_ms = max(1, round(ttl_s * 1000))
        packed = [(self._value_key(k), zlib.compress(v, _COMPRESS_LEVEL)) for k, v in items]

        async def write() -> bool:
            async with self._client.pipeline(transaction=False) as pipe:
                for k, v in packed:
                    pipe.set(k, v, px=ttl_ms)
                await pipe.execute()
            return True

        if await self._call(write, False):
            self._written += sum(len(v) for _, v in packed)

    async def try_lock(self, key: str, ttl_s: float) -> str | None:
        token = secrets.token_hex(8)
        ttl_ms = max(1, round(ttl_s * 1000))
        # Unreachable: "" lets the caller compute, unlocked, as it would with no cache.
        took = await self._call(
            lambda: self._client.set(self._lock_key(key), token, nx=True, px=ttl_ms), "")
        if took == "":
            return ""
        return token if took else None

    async def unlock(self, key: str, token: str) -> None:
        if token:
            await self._call(lambda: self._unlock(keys=[self._lock_key(key)], args=[token]), 0)

    async def peek(self, key: str) -> tuple[bytes | None, bool]:
        pair = await self._call(
            lambda: self._client.mget([self._value_key(key), self._lock_key(key)]), [None, None])
        return self._decode(pair[0]), pair[1] is not None

    def stats(self) -> StoreStats:
        return StoreStats(entries=None, bytes_stored=None, bytes_read=self._read,
                          bytes_written=self._written, errors=self._errors)

    async def aclose(self) -> None:
        await self._client.aclose()
