"""Conversation history: stores chosen by URL, and fitting a history into a context window.

>>> store = history_store_from_url("memory://?ttl_s=3600")
>>> store.ttl_s
3600.0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from router.history.base import DEFAULT_TTL_S, HistoryStore, HistoryStoreError
from router.history.fit import fit_messages
from router.history.memory import MemoryHistoryStore
from router.redact import scrub
from router.redis_client import store_kind

__all__ = [
    "DEFAULT_TTL_S",
    "HistoryStore",
    "HistoryStoreError",
    "MemoryHistoryStore",
    "fit_messages",
    "history_store_from_url",
]


def history_store_from_url(url: str, *, ttl_s: float | None = None,
                           clock: Callable[[], float] | None = None) -> HistoryStore:
    """The store a URL names: `memory://?ttl_s=N` or `redis://host:port/db?prefix=llmr:hist:&ttl_s=N`.

    `ttl_s` (seconds kept after the last append) wins over the URL's; the
    default is a day. `clock` is the memory store's (monotonic seconds); Redis
    expires keys on its own clock. The redis package is imported only for a
    Redis URL. ValueError for any other scheme.
    """
    kind = store_kind(url)
    if kind == "memory":
        query = dict(parse_qsl(urlsplit(url).query))
        ttl = ttl_s if ttl_s is not None else float(query.get("ttl_s", DEFAULT_TTL_S))
        return MemoryHistoryStore(ttl_s=ttl, clock=clock or time.monotonic)
    if kind == "redis":
        from router.history.redis import RedisHistoryStore  # lazy: redis is an optional extra

        return RedisHistoryStore.from_url(url, ttl_s=ttl_s)
    raise ValueError(f"unknown history store URL {scrub(url)!r}: use memory:// or redis://host:port/db")
