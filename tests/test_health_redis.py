"""Circuit opens shared through a real Redis; skipped when none is reachable.

Set `ROUTER_TEST_REDIS_URL` to use another server than 127.0.0.1:6379.
Each test uses its own key prefix, so tests never see each other's opens.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from router.health import AttemptResult, BreakerConfig, CircuitState, HealthTracker
from router.health_store import RedisSharedHealth
from tests.conftest import FakeClock

redis_asyncio = pytest.importorskip("redis.asyncio")

REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DOWN_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
D = "dep"


@pytest.fixture
async def redis_client() -> AsyncIterator[object]:
    client = redis_asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc!r}")
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: object) -> AsyncIterator[str]:
    prefix = f"llmr-test:{uuid.uuid4().hex}:"
    yield prefix
    await redis_client.delete(f"{prefix}open")  # type: ignore[attr-defined]


def timeout(name: str = D) -> AttemptResult:
    return AttemptResult(name, ok=False, latency_s=1.0, error_kind="timeout")


async def test_replicas_share_an_open_circuit(prefix: str) -> None:
    clock = FakeClock()
    a = HealthTracker(
        BreakerConfig(consecutive_failures=3),
        clock=clock,
        shared=RedisSharedHealth(REDIS_URL, prefix=prefix),
    )
    changes: list[tuple[str, CircuitState, CircuitState, str]] = []
    b = HealthTracker(
        clock=clock,
        shared=RedisSharedHealth(REDIS_URL, prefix=prefix),
        on_state_change=lambda *c: changes.append(c),
    )
    try:
        assert await b.sync()
        assert b.state(D) is CircuitState.CLOSED  # B has never called D
        for _ in range(3):
            a.record(timeout())
        assert a.state(D) is CircuitState.OPEN
        assert await a.sync()
        assert await b.sync()
        assert b.state(D) is CircuitState.OPEN
        assert not b.available(D) and not b.admit(D)
        assert b.recovers_at(D) == pytest.approx(clock.now + 5.0, abs=0.5)
        assert changes == [(D, CircuitState.CLOSED, CircuitState.OPEN, "shared")]
        clock.advance(5.5)
        assert b.admit(D) and b.state(D) is CircuitState.HALF_OPEN
    finally:
        await a.aclose()
        await b.aclose()


async def test_an_open_is_pushed_without_an_explicit_sync(prefix: str) -> None:
    clock = FakeClock()
    a = HealthTracker(
        BreakerConfig(consecutive_failures=1),
        clock=clock,
        shared=RedisSharedHealth(REDIS_URL, prefix=prefix),
    )
    b = HealthTracker(clock=clock, shared=RedisSharedHealth(REDIS_URL, prefix=prefix))
    try:
        a.record(timeout())  # schedules a fire-and-forget push on the running loop
        for _ in range(100):  # each pull is a round trip, during which the push runs
            assert await b.sync()
            if b.state(D) is CircuitState.OPEN:
                break
        assert b.state(D) is CircuitState.OPEN
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_later_open_wins(prefix: str) -> None:
    store = RedisSharedHealth(REDIS_URL, prefix=prefix)
    try:
        await store.publish_open(D, 30.0, 30.0)
        await store.publish_open(D, 2.0, 5.0)  # an earlier end does not shorten it
        await store.publish_open("other", 1.0, 1.0)
        opens = await store.fetch_open()
        assert set(opens) == {D, "other"}
        assert opens[D].remaining_s == pytest.approx(30.0, abs=0.5)
        assert opens[D].cooldown_s == 30.0
    finally:
        await store.aclose()


async def test_a_client_passed_in_stays_open(redis_client: object, prefix: str) -> None:
    tracker = HealthTracker(shared=RedisSharedHealth(redis_client, prefix=prefix))  # type: ignore[arg-type]
    await tracker.start()
    await tracker.aclose()
    assert await redis_client.ping()  # type: ignore[attr-defined]


async def test_redis_down_falls_back_to_local_state(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router.health")
    clock = FakeClock()
    tracker = HealthTracker(
        BreakerConfig(consecutive_failures=2),
        clock=clock,
        shared=RedisSharedHealth(DOWN_URL, timeout_s=0.2),
    )
    try:
        await tracker.start()  # no exception, the background task keeps trying
        assert tracker.admit(D)
        tracker.begin(D)
        tracker.record(timeout())
        tracker.record(timeout())  # opens locally; the push is attempted in the background
        assert tracker.state(D) is CircuitState.OPEN and not tracker.available(D)
        for _ in range(3):
            assert not await tracker.sync()
        clock.advance(5.0)
        assert tracker.admit(D) and tracker.state(D) is CircuitState.HALF_OPEN
    finally:
        await tracker.aclose()
    records = [r for r in caplog.records if r.name == "router.health"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING
    assert "unreachable" in records[0].getMessage()


async def test_a_url_names_its_own_prefix(redis_client: object, prefix: str) -> None:
    """`?prefix=` in the URL is the store's key prefix, not an option handed to redis-py."""
    store = RedisSharedHealth(f"{REDIS_URL}?prefix={prefix}", prefix="ignored:")
    try:
        await store.publish_open(D, 30.0, 30.0)
        assert await redis_client.exists(f"{prefix}open") == 1  # type: ignore[attr-defined]
        assert await redis_client.exists("ignored:open") == 0  # type: ignore[attr-defined]
    finally:
        await store.aclose()
