"""Response cache with single-flight, kept in memory or in Redis.

>>> import asyncio
>>> cache = ResponseCache(cache_store_from_url("memory://?max_entries=1000"))
>>> key = cache_key(partition="acme", route="default", deployments=["gpt-4o-mini"],
...                 request={"messages": [{"role": "user", "content": "hi"}], "temperature": 0})
>>> async def call_provider() -> str:
...     return "hello"
>>> async def ask() -> Lookup[str]:
...     return await cache.get_or_compute(key, call_provider, encode=str.encode, decode=bytes.decode,
...                                       route="default", ttl_s=3600)
>>> asyncio.run(ask()).outcome, asyncio.run(ask()).outcome
('miss', 'hit')
"""

from __future__ import annotations

from collections.abc import Callable

from router.cache.base import CacheStore, StoreStats
from router.cache.batch import BatchPlan, split_batch
from router.cache.flight import Lookup, Outcome, ResponseCache
from router.cache.keys import (
    MAX_TEXT_KEY,
    SHARED_PARTITION,
    CacheKeyError,
    cache_key,
    canonical_json,
    chat_key_frame,
    chat_key_in_frame,
    embedding_key,
    is_deterministic,
    key_digest,
    key_in_frame,
    key_of_text,
    partition_for,
)
from router.cache.memory import MemoryCacheStore
from router.cache.metrics import CacheCounters, CacheEvent, CacheObserver, RouteCounters
from router.redact import scrub
from router.redis_client import store_kind

__all__ = [
    "MAX_TEXT_KEY",
    "SHARED_PARTITION",
    "BatchPlan",
    "CacheCounters",
    "CacheEvent",
    "CacheKeyError",
    "CacheObserver",
    "CacheStore",
    "Lookup",
    "MemoryCacheStore",
    "Outcome",
    "ResponseCache",
    "RouteCounters",
    "StoreStats",
    "cache_key",
    "cache_store_from_url",
    "canonical_json",
    "chat_key_frame",
    "chat_key_in_frame",
    "embedding_key",
    "is_deterministic",
    "key_digest",
    "key_in_frame",
    "key_of_text",
    "partition_for",
    "split_batch",
]


def cache_store_from_url(url: str, *, clock: Callable[[], float] | None = None) -> CacheStore:
    """The store a URL names: `memory://?max_entries=N&max_bytes=M` or
    `redis://host:port/db?prefix=llmr:cache:`.

    `clock` (seconds, default `time.monotonic`) is the memory store's clock for
    expiry, or the Redis store's for its pause after a failure. The redis
    package is imported only when a Redis URL is used. Raises ValueError for
    an unknown scheme or option.

    >>> cache_store_from_url("memory://?max_bytes=1000000").name
    'memory://'
    """
    kind = store_kind(url)
    if kind == "memory":
        return MemoryCacheStore.from_url(url, clock=clock)
    if kind == "redis":
        from router.cache.redis import RedisCacheStore  # lazy: redis is an optional extra

        return RedisCacheStore.from_url(url, clock=clock)
    raise ValueError(f"unknown cache store URL {scrub(url)!r}: use memory:// or redis://host:port/db")
