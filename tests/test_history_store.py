"""History stores: one contract, run against memory and a real Redis (skipped when none answers).

Set `ROUTER_TEST_REDIS_URL` to use another server than 127.0.0.1:6379. Each
test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.errors import InvalidRequest
from router.history import HistoryStore, HistoryStoreError, MemoryHistoryStore, history_store_from_url
from tests.conftest import FakeClock

pytestmark = pytest.mark.timeout(30)

REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
HI = {"role": "user", "content": "hi"}
HELLO = {"role": "assistant", "content": "hello"}


async def redis_or_skip() -> Any:
    redis_asyncio = pytest.importorskip("redis.asyncio")
    client = redis_asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc!r}")
    return client


@contextlib.asynccontextmanager
async def fresh_prefix() -> AsyncIterator[tuple[Any, str]]:
    """A Redis client and a key prefix no other test uses; the prefix's keys are deleted afterwards."""
    client = await redis_or_skip()
    prefix = f"llmr-test:hist:{uuid.uuid4().hex}:"
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[tuple[Any, str]]:
    async with fresh_prefix() as found:
        yield found


def redis_url(prefix: str, **query: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return f"{REDIS_URL}?prefix={prefix}{extra}"


@pytest.fixture(params=["memory", "redis"])
async def any_store(request: pytest.FixtureRequest) -> AsyncIterator[HistoryStore]:
    if request.param == "memory":
        yield MemoryHistoryStore(ttl_s=60)
        return
    async with fresh_prefix() as (_, prefix):
        redis_store = history_store_from_url(redis_url(prefix))
        yield redis_store
        await redis_store.aclose()


class TestEveryStore:
    """The contract, for every backend."""

    async def test_appends_come_back_in_order_as_plain_data(self, any_store: HistoryStore) -> None:
        assert await any_store.load("acme", "c1") == []
        await any_store.append("acme", "c1", [HI])
        await any_store.append("acme", "c1", [HELLO, {"role": "user", "content": [{"type": "text", "text": "é"}]}])
        loaded = await any_store.load("acme", "c1")
        assert loaded == [HI, HELLO, {"role": "user", "content": [{"type": "text", "text": "é"}]}]
        loaded[0]["content"] = "mutated"
        assert (await any_store.load("acme", "c1"))[0] == HI

    async def test_tenants_never_see_each_others_conversations(self, any_store: HistoryStore) -> None:
        await any_store.append("acme", "same-id", [HI])
        assert await any_store.load("globex", "same-id") == []
        await any_store.append("a:b", "c", [HI])  # separators in names cannot alias another key
        assert await any_store.load("a", "b:c") == []
        await any_store.clear("globex", "same-id")
        assert await any_store.load("acme", "same-id") == [HI]

    async def test_clear_forgets(self, any_store: HistoryStore) -> None:
        await any_store.append("acme", "c1", [HI, HELLO])
        await any_store.clear("acme", "c1")
        assert await any_store.load("acme", "c1") == []

    async def test_a_batch_with_a_bad_message_stores_nothing(self, any_store: HistoryStore) -> None:
        with pytest.raises(InvalidRequest, match=r"messages\[1\] is not JSON data"):
            await any_store.append("acme", "c1", [HI, {"role": "user", "content": object()}])
        with pytest.raises(InvalidRequest, match=r"messages\[0\] must be a mapping"):
            await any_store.append("acme", "c1", [{"content": "no role"}])
        assert await any_store.load("acme", "c1") == []

    async def test_empty_keys_are_refused(self, any_store: HistoryStore) -> None:
        with pytest.raises(InvalidRequest, match="tenant"):
            await any_store.load("", "c1")
        with pytest.raises(InvalidRequest, match="conversation_id"):
            await any_store.append("acme", "x" * 300, [HI])


# --- memory ----------------------------------------------------------------------------------


async def test_memory_conversations_expire_ttl_after_the_last_append() -> None:
    clock = FakeClock()
    store = history_store_from_url("memory://?ttl_s=10", clock=clock)
    await store.append("acme", "c1", [HI])
    clock.now += 9
    await store.append("acme", "c1", [HELLO])  # slides the expiry
    clock.now += 9
    assert await store.load("acme", "c1") == [HI, HELLO]
    clock.now += 1
    assert await store.load("acme", "c1") == []
    await store.append("acme", "c1", [HI])  # an expired conversation starts afresh
    assert await store.load("acme", "c1") == [HI]


async def test_memory_sweeps_expired_conversations() -> None:
    clock = FakeClock()
    store = MemoryHistoryStore(ttl_s=5, clock=clock)
    for n in range(999):
        await store.append("acme", f"c{n}", [HI])
    clock.now += 6
    assert len(store) == 999
    await store.append("acme", "fresh", [HI])  # the 1000th append sweeps
    assert len(store) == 1


# --- redis -----------------------------------------------------------------------------------


async def test_redis_history_survives_a_restart(redis_prefix: tuple[Any, str]) -> None:
    _, prefix = redis_prefix
    first = history_store_from_url(redis_url(prefix))
    await first.append("acme", "c1", [HI, HELLO])
    await first.aclose()
    restarted = history_store_from_url(redis_url(prefix))  # a new process: new store, same URL and prefix
    assert await restarted.load("acme", "c1") == [HI, HELLO]
    await restarted.aclose()
    elsewhere = history_store_from_url(redis_url(prefix + "other:"))
    assert await elsewhere.load("acme", "c1") == []
    await elsewhere.aclose()


async def test_redis_ttl_is_set_and_slides_with_each_append(redis_prefix: tuple[Any, str]) -> None:
    client, prefix = redis_prefix
    store = history_store_from_url(redis_url(prefix, ttl_s="120"))
    assert store.ttl_s == 120.0
    await store.append("acme", "c1", [HI])
    key = f"{prefix}acme:c1"
    assert 119_000 < await client.pttl(key) <= 120_000
    await client.pexpire(key, 5_000)
    await store.append("acme", "c1", [HELLO])
    assert 119_000 < await client.pttl(key) <= 120_000
    await store.aclose()


async def test_redis_keys_encode_tenant_and_id(redis_prefix: tuple[Any, str]) -> None:
    client, prefix = redis_prefix
    store = history_store_from_url(redis_url(prefix))
    await store.append("a:b", "{c}", [HI])
    assert await client.exists(f"{prefix}a%3Ab:%7Bc%7D") == 1
    await store.aclose()


async def test_redis_down_is_a_history_store_error_without_the_password() -> None:
    pytest.importorskip("redis.asyncio")
    store = history_store_from_url("redis://:s3cret-pass@127.0.0.1:1/0", ttl_s=5)  # nothing listens on port 1
    with pytest.raises(HistoryStoreError) as info:
        await store.load("acme", "c1")
    assert info.value.store == "redis://127.0.0.1:1/0" and "s3cret" not in str(info.value)
    with pytest.raises(HistoryStoreError):
        await store.append("acme", "c1", [HI])
    await store.aclose()


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="memory:// or redis://"):
        history_store_from_url("sqlite:///tmp/x.db")
    assert history_store_from_url("memory://", ttl_s=7).ttl_s == 7
