"""Tenant quotas, rate limits and budgets, kept in memory or in Redis.

>>> import asyncio
>>> quota = QuotaManager(store_from_url("memory://"))
>>> tenants = TenantsFile.model_validate({"tenants": {"default": {"requests_per_minute": 60}}})
>>> res = asyncio.run(quota.reserve(tenants, tenant="acme", route="default"))
>>> res.tenant
'acme'
"""

from __future__ import annotations

import time
from collections.abc import Callable

from router.quota.base import (
    QuotaStore,
    QuotaStoreError,
    Reservation,
    TenantUsage,
    WindowUsage,
)
from router.quota.config import (
    FailurePolicy,
    Limits,
    TenantLimits,
    TenantsFile,
    reference_issues,
    unpriced_issues,
)
from router.quota.manager import QuotaManager
from router.quota.memory import MemoryStore
from router.redact import scrub
from router.redis_client import store_kind

__all__ = [
    "FailurePolicy",
    "Limits",
    "MemoryStore",
    "QuotaManager",
    "QuotaStore",
    "QuotaStoreError",
    "Reservation",
    "TenantLimits",
    "TenantUsage",
    "TenantsFile",
    "WindowUsage",
    "reference_issues",
    "store_from_url",
    "unpriced_issues",
]


def store_from_url(url: str, *, clock: Callable[[], float] | None = None) -> QuotaStore:
    """The store a URL names: `memory://` or `redis://host:port/db?prefix=llmr:`.

    `clock` is the memory store's clock (default `time.time`). Redis uses its
    own `TIME`; a clock given for Redis replaces it, for tests only. The redis
    package is imported only when a Redis URL is used.

    >>> store_from_url("memory://").name
    'memory://'
    """
    kind = store_kind(url)
    if kind == "memory":
        return MemoryStore(clock=clock or time.time)
    if kind == "redis":
        from router.quota.redis import RedisStore  # lazy: redis is an optional extra

        return RedisStore.from_url(url, clock=clock)
    raise ValueError(f"unknown quota store URL {scrub(url)!r}: use memory:// or redis://host:port/db")
