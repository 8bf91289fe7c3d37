"""Cache stores against every backend: one test class, run on memory and on Redis.

Redis tests skip when no Redis answers at `ROUTER_TEST_REDIS_URL` (default
redis://127.0.0.1:6379/0); each uses its own key prefix and deletes its keys
afterwards. Memory expiry runs on an injected clock; Redis expiry is checked
through the PTTL Redis set, not by sleeping.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import AsyncIterator, Iterator

import pytest

from router.cache import CacheStore, MemoryCacheStore, cache_key, cache_store_from_url, key_digest
from router.cache.memory import ENTRY_OVERHEAD, KEY_ALLOWANCE
from tests.conftest import FakeClock
from tests.test_cache_support import (
    DOWN_URL,
    REDIS_URL,
    delete_prefix,
    needs_redis,
    new_prefix,
    redis_url,
)

pytestmark = pytest.mark.timeout(30)

VALUE = b'{"choices":[{"message":{"content":"' + b"hello world " * 160 + b'"}}]}'  # ~2 KB


@pytest.fixture
def prefix() -> Iterator[str]:
    name = new_prefix()
    yield name
    delete_prefix(name)


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[CacheStore]:
    url = "memory://" if request.param == "memory" else redis_url(prefix)
    s = cache_store_from_url(url)
    yield s
    await s.aclose()


class TestEveryStore:
    async def test_set_then_get(self, store: CacheStore) -> None:
        assert await store.get("k1") is None
        await store.set("k1", VALUE, ttl_s=60)
        assert await store.get("k1") == VALUE
        await store.set("k1", b"v2", ttl_s=60)
        assert await store.get("k1") == b"v2"

    async def test_many_keep_order_and_report_misses(self, store: CacheStore) -> None:
        await store.set_many([("a", b"A"), ("c", b"C")], ttl_s=60)
        assert await store.get_many(["c", "b", "a"]) == [b"C", None, b"A"]
        assert await store.get_many([]) == []

    async def test_a_lock_is_held_by_one_token(self, store: CacheStore) -> None:
        first = await store.try_lock("k", ttl_s=30)
        assert first
        assert await store.try_lock("k", ttl_s=30) is None
        assert await store.peek("k") == (None, True)
        await store.unlock("k", "someone-else")
        assert await store.peek("k") == (None, True)
        await store.unlock("k", first)
        assert await store.peek("k") == (None, False)
        assert await store.try_lock("k", ttl_s=30)

    async def test_peek_reads_value_and_lock_together(self, store: CacheStore) -> None:
        await store.set("k", b"v", ttl_s=60)
        assert await store.peek("k") == (b"v", False)
        token = await store.try_lock("k", ttl_s=30)
        assert token
        assert await store.peek("k") == (b"v", True)

    async def test_stats_count_bytes_moved(self, store: CacheStore) -> None:
        await store.set("k", VALUE, ttl_s=60)
        await store.get("k")
        await store.get("absent")
        stats = store.stats()
        assert stats.bytes_written > 0 and stats.bytes_read == stats.bytes_written
        assert stats.errors == 0


class TestMemoryStore:
    async def test_entries_expire_on_their_own_ttl(self) -> None:
        clock = FakeClock()
        store = MemoryCacheStore(clock=clock)
        await store.set("short", b"s", ttl_s=10)
        await store.set("long", b"l", ttl_s=100)
        clock.now += 9.9
        assert await store.get("short") == b"s"
        clock.now += 0.2
        assert await store.get("short") is None
        assert await store.get("long") == b"l"
        clock.now += 90
        assert await store.get("long") is None
        assert store.stats().entries == 0

    async def test_locks_expire(self) -> None:
        clock = FakeClock()
        store = MemoryCacheStore(clock=clock)
        token = await store.try_lock("k", ttl_s=5)
        clock.now += 5
        assert await store.peek("k") == (None, False)
        other = await store.try_lock("k", ttl_s=5)
        assert other and other != token
        await store.unlock("k", token or "")  # the expired holder must not free the new lock
        assert (await store.peek("k"))[1]

    async def test_bytes_bound_evicts_least_recently_used(self) -> None:
        size = 1000 + ENTRY_OVERHEAD
        store = MemoryCacheStore(max_bytes=3 * size)
        for k in "abc":
            await store.set(k, bytes(1000), ttl_s=60)
        assert await store.get("a") is not None  # a is now the most recently used
        await store.set("d", bytes(1000), ttl_s=60)
        assert [k for k in "abcd" if await store.get(k) is not None] == ["a", "c", "d"]
        stats = store.stats()
        assert (stats.entries, stats.bytes_stored) == (3, 3 * size)
        await store.set("big", bytes(2500), ttl_s=60)  # needs room for 2: two go
        assert store.stats().bytes_stored is not None
        assert (store.stats().bytes_stored or 0) <= 3 * size
        assert await store.get("big") is not None

    async def test_a_value_larger_than_the_bound_is_not_stored(self) -> None:
        store = MemoryCacheStore(max_bytes=1000)
        await store.set("keep", b"x", ttl_s=60)
        await store.set("huge", bytes(2000), ttl_s=60)
        assert await store.get("huge") is None
        assert await store.get("keep") == b"x"

    def test_a_private_store_keeps_values_as_they_are(self) -> None:
        clock = FakeClock()
        store = MemoryCacheStore(clock=clock, max_entries=10, max_bytes=10 * (1000 + ENTRY_OVERHEAD))
        answer = ("an", "immutable", "answer")
        assert store.keeps_values
        store.keep_now("k", answer, 1000, ttl_s=60)
        kept = store.kept_now("k")
        assert kept is not None and kept[0] is answer and kept[1] == 1000
        assert store.get_now("k") is None  # a kept value is not bytes: the bytes API does not see it
        store.set_now("b", b"bytes", ttl_s=60)
        assert store.kept_now("b") is None and store.get_now("b") == b"bytes"
        stats = store.stats()
        assert (stats.entries, stats.bytes_stored) == (2, 1000 + len(b"bytes") + 2 * ENTRY_OVERHEAD)
        assert stats.bytes_written == 1000 + len(b"bytes") and stats.bytes_read == 1000 + len(b"bytes")
        clock.now += 60.1
        assert store.kept_now("k") is None  # expired on its own TTL

    def test_a_long_key_is_charged_its_extra_length(self) -> None:
        long_key = "k" * (KEY_ALLOWANCE + 500)
        store = MemoryCacheStore(max_bytes=10_000)
        store.set_now("short", bytes(100), ttl_s=60)
        store.set_now(long_key, bytes(100), ttl_s=60)
        assert store.stats().bytes_stored == 2 * (100 + ENTRY_OVERHEAD) + 500
        store.keep_now(long_key + "!", object(), 100, ttl_s=60)
        assert store.stats().bytes_stored == 3 * (100 + ENTRY_OVERHEAD) + 500 + 501

    def test_kept_values_count_toward_the_byte_bound(self) -> None:
        store = MemoryCacheStore(max_bytes=3 * (1000 + ENTRY_OVERHEAD))
        for k in "abcd":
            store.keep_now(k, object(), 1000, ttl_s=60)
        assert [k for k in "abcd" if store.kept_now(k) is not None] == ["b", "c", "d"]
        store.keep_now("huge", object(), 10**9, ttl_s=60)
        assert store.kept_now("huge") is None and store.kept_now("d") is not None

    def test_a_shared_store_keeps_bytes_only_as_redis_does(self) -> None:
        store = MemoryCacheStore(shared=True)
        assert not store.keeps_values
        with pytest.raises(NotImplementedError):
            store.keep_now("k", object(), 10, ttl_s=60)

    async def test_entries_bound(self) -> None:
        store = MemoryCacheStore(max_entries=2)
        for k in "abc":
            await store.set(k, b"v", ttl_s=60)
        assert await store.get_many(["a", "b", "c"]) == [None, b"v", b"v"]

    def test_url_options(self) -> None:
        store = cache_store_from_url("memory://?max_entries=5&max_bytes=4096")
        assert isinstance(store, MemoryCacheStore)
        assert (store.max_entries, store.max_bytes) == (5, 4096)
        with pytest.raises(ValueError, match="unknown option 'size'"):
            cache_store_from_url("memory://?size=5")
        with pytest.raises(ValueError, match="max_bytes must be an integer"):
            cache_store_from_url("memory://?max_bytes=lots")
        with pytest.raises(ValueError, match="at least 1"):
            cache_store_from_url("memory://?max_entries=0")
        with pytest.raises(ValueError, match="unknown cache store URL"):
            cache_store_from_url("memcached://x")


@needs_redis
class TestRedisStore:
    async def test_values_are_compressed_and_expire_with_their_ttl(self, prefix: str) -> None:
        import redis.asyncio

        store = cache_store_from_url(redis_url(prefix))
        raw = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            await store.set("k", VALUE, ttl_s=42.5)
            held = await raw.get(f"{prefix}v:{key_digest('k')}")
            assert isinstance(held, bytes) and len(held) < len(VALUE) / 4
            assert zlib.decompress(held) == VALUE
            assert 41_000 < await raw.pttl(f"{prefix}v:{key_digest('k')}") <= 42_500
            token = await store.try_lock("k", ttl_s=3)
            assert token and 0 < await raw.pttl(f"{prefix}l:{key_digest('k')}") <= 3000
        finally:
            await raw.aclose()
            await store.aclose()

    async def test_an_entry_that_is_not_ours_is_a_miss(self, prefix: str) -> None:
        import redis.asyncio

        store = cache_store_from_url(redis_url(prefix))
        raw = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            await raw.set(f"{prefix}v:{key_digest('k')}", b"not zlib", px=60_000)
            assert await store.get("k") is None
            assert store.stats().errors == 1
        finally:
            await raw.aclose()
            await store.aclose()

    async def test_key_names_hold_no_request_text(self, prefix: str) -> None:
        import redis.asyncio

        key = cache_key(partition="acme", route="r", deployments=["d"],
                        request={"messages": [{"role": "user", "content": "my secret plan"}]})
        assert "my secret plan" in key  # a short key is the request's text ...
        store = cache_store_from_url(redis_url(prefix))
        raw = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            await store.set(key, b"v", ttl_s=60)
            assert await store.try_lock(key, ttl_s=5)
            names = [n.decode() async for n in raw.scan_iter(match=f"{prefix}*")]
            # ... and Redis names it by its digest
            assert sorted(names) == [f"{prefix}l:{key_digest(key)}", f"{prefix}v:{key_digest(key)}"]
            assert await store.get(key) == b"v"
        finally:
            await raw.aclose()
            await store.aclose()

    async def test_two_clients_share_entries(self, prefix: str) -> None:
        one, two = cache_store_from_url(redis_url(prefix)), cache_store_from_url(redis_url(prefix))
        try:
            await one.set("k", b"v", ttl_s=60)
            assert await two.get("k") == b"v"
        finally:
            await one.aclose()
            await two.aclose()


class TestRedisDown:
    async def test_every_operation_degrades_without_raising(self, caplog: pytest.LogCaptureFixture) -> None:
        clock = FakeClock()
        store = cache_store_from_url(DOWN_URL, clock=clock)
        try:
            with caplog.at_level(logging.DEBUG, logger="router.cache.redis"):
                assert await store.get("k") is None
                clock.now += 5  # past the pause: Redis is tried (and fails) again
                await store.set("k", b"v", ttl_s=60)
                clock.now += 5
                assert await store.get_many(["a", "b"]) == [None, None]
                clock.now += 5
                assert await store.try_lock("k", ttl_s=5) == ""  # compute, unlocked
                clock.now += 5
                assert await store.peek("k") == (None, False)  # a waiter stops waiting
                clock.now += 5
                await store.unlock("k", "t")
            assert store.stats().errors == 6
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "127.0.0.1:1" in warnings[0].getMessage()
        finally:
            await store.aclose()

    async def test_redis_is_left_alone_for_a_while_after_a_failure(self) -> None:
        clock = FakeClock()
        store = cache_store_from_url(DOWN_URL, clock=clock)
        try:
            for _ in range(5):
                assert await store.get("k") is None
            assert store.stats().errors == 1
            clock.now += 1.0
            assert await store.get("k") is None
            assert store.stats().errors == 2
        finally:
            await store.aclose()

    @needs_redis
    async def test_recovery_is_logged(self, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
        from router.cache.redis import RedisCacheStore

        clock = FakeClock()
        store = RedisCacheStore.from_url(redis_url(prefix), clock=clock)
        try:
            store._down_until = clock.now + 1  # as after a failure
            assert await store.get("k") is None  # resting: Redis not asked
            clock.now += 1
            with caplog.at_level(logging.WARNING, logger="router.cache.redis"):
                await store.set("k", b"v", ttl_s=60)
            assert await store.get("k") == b"v"
            assert "answers again" in caplog.text
        finally:
            await store.aclose()
