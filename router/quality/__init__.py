"""Quality from feedback: scores per deployment, route and task, kept in memory or in Redis.

The router registers each response id when it answers; a caller's score for
that id later becomes evidence; strategies (`router.strategies_learned`) read
the estimates through the `QualityView` protocol.

>>> import asyncio
>>> tracker = tracker_from_url("memory://", clock=lambda: 0.0)
>>> _ = asyncio.run(tracker.register("resp-1", deployment="gpt", route="default", task=None, tenant="acme"))
>>> asyncio.run(tracker.feedback("resp-1", 0.8)).deployment
'gpt'
>>> round(tracker.estimate("gpt", "default").mean, 2)
0.8
"""

from __future__ import annotations

import time
from collections.abc import Callable

from router.quality.base import (
    Decay,
    Evidence,
    FeedbackNotFound,
    FeedbackTarget,
    QualityEstimate,
    QualityStore,
    QualityStoreUnavailable,
    QualityView,
    validate_score,
)
from router.quality.memory import MemoryQualityStore
from router.quality.tracker import QualityTracker
from router.redis_client import store_kind

__all__ = [
    "Decay",
    "Evidence",
    "FeedbackNotFound",
    "FeedbackTarget",
    "MemoryQualityStore",
    "QualityEstimate",
    "QualityStore",
    "QualityStoreUnavailable",
    "QualityTracker",
    "QualityView",
    "tracker_from_url",
    "validate_score",
]


def tracker_from_url(url: str, *, clock: Callable[[], float] = time.monotonic, decay: Decay | None = None,
                     feedback_ttl_s: float = 24 * 3600.0, max_keys: int = 10_000,
                     refresh_interval_s: float = 5.0) -> QualityTracker:
    """A tracker over the store a URL names: `memory://` or `redis://host:port/db?prefix=llmr:quality:`.

    The redis package is imported only for a Redis URL. Raises ValueError for another scheme.

    >>> tracker_from_url("memory://").store.name
    'memory://'
    """
    kind = store_kind(url)
    store: QualityStore
    if kind == "memory":
        store = MemoryQualityStore(clock=clock, max_keys=max_keys, feedback_ttl_s=feedback_ttl_s)
    elif kind == "redis":
        from router.quality.redis import RedisQualityStore  # lazy: redis is an optional extra

        store = RedisQualityStore(url, max_keys=max_keys)  # it reads `?prefix=` itself
    else:
        raise ValueError(f"unknown quality store URL {url!r}: use memory:// or redis://host:port/db")
    return QualityTracker(store, clock=clock, decay=decay, feedback_ttl_s=feedback_ttl_s,
                          refresh_interval_s=refresh_interval_s)
