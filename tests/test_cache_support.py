"""Helpers shared by the cache tests (no tests here): Redis reachability, key prefixes, a fake clock."""

from __future__ import annotations

import os
import uuid

import pytest

REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DOWN_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def _redis_down() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except Exception as exc:
        return f"Redis not reachable at {REDIS_URL} ({exc.__class__.__name__}); start redis-server"
    return None


REDIS_DOWN = _redis_down()
needs_redis = pytest.mark.skipif(REDIS_DOWN is not None, reason=REDIS_DOWN or "")


def new_prefix() -> str:
    return f"test-cache-{uuid.uuid4().hex}:"


def redis_url(prefix: str, base: str = REDIS_URL) -> str:
    return f"{base}{'&' if '?' in base else '?'}prefix={prefix}"


def delete_prefix(prefix: str) -> None:
    if REDIS_DOWN is not None:
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()
