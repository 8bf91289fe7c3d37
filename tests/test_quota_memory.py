"""The memory store's bounds: per tenant, and least recently used tenants evicted, never refused."""

from __future__ import annotations

import pytest

from router.errors import QuotaStoreUnavailable
from router.quota import MemoryStore, QuotaManager
from tests.conftest import FakeClock
from tests.test_quota import at, reserve, tenants

pytestmark = pytest.mark.timeout(30)

#: A tenant with a dollar budget and a rate limit: rpm bucket, minute, day, open set.
BUDGETED = tenants({"requests_per_minute": 60, "usd_per_day": 1})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(at(2024, 3, 10, 12, 0, 0))


async def test_a_full_store_evicts_the_least_recently_used_tenants(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock, max_keys=400)
    quota = QuotaManager(store, clock=clock)
    for i in range(500):  # 4 keys each once settled: 2,000 keys through a store of 400
        res = await reserve(quota, BUDGETED, tenant=f"t{i}", est_cost_usd=0.5)
        await quota.settle(res, tokens=1, cost_usd=0.5)
        clock.now += 0.01
    assert len(store) <= 400 and store.evictions >= 390
    assert (await quota.usage("t499")).day.usd == 0.5  # the recent ones are kept
    assert (await quota.usage("t0")).day.usd == 0  # forgotten: its day's spend starts over


async def test_recent_use_protects_a_tenant(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock, max_keys=100)
    quota = QuotaManager(store, clock=clock)
    for i in range(200):  # 20 keys of drive-by tenants pass between two calls of the regular one
        if i % 4 == 0:
            res = await reserve(quota, BUDGETED, tenant="regular", est_cost_usd=0.01)
            await quota.settle(res, tokens=0, cost_usd=0.01)  # idle, but used recently
        await quota.settle(await reserve(quota, BUDGETED, tenant=f"drive-by-{i}"), tokens=0, cost_usd=0)
        clock.now += 1
    assert (await quota.usage("regular")).day.usd == pytest.approx(0.5)
    assert (await quota.usage("drive-by-0")).day.requests == 0


async def test_a_tenant_in_flight_outlives_idle_ones(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock, max_keys=60)
    quota = QuotaManager(store, clock=clock)
    t = tenants({"max_concurrent": 1, "usd_per_day": 1})
    busy = await reserve(quota, t, tenant="busy", est_cost_usd=0.3)
    for i in range(100):  # all idle once settled; busy is the least recently used
        await quota.settle(await reserve(quota, t, tenant=f"idle-{i}"), tokens=0, cost_usd=0)
    usage = await quota.usage("busy")
    assert (usage.in_flight, usage.day.usd) == (1, 0.3)
    assert await quota.settle(busy, tokens=1, cost_usd=0.2) is True


async def test_one_tenant_never_fails_another(clock: FakeClock) -> None:
    """Before: a full store refused every money-limited request of every tenant."""
    store = MemoryStore(clock=clock, max_keys=20, max_keys_per_tenant=8)
    quota = QuotaManager(store, clock=clock)
    greedy = tenants({"usd_per_day": 1, "routes": {f"r{i}": {"usd_per_day": 1} for i in range(5)}})
    for i in range(3):  # each route adds its day key: the 4th key past the bound is refused
        await reserve(quota, greedy, tenant="greedy", route=f"r{i}")
    with pytest.raises(QuotaStoreUnavailable):
        for i in range(3, 5):
            await reserve(quota, greedy, tenant="greedy", route=f"r{i}")
    for i in range(50):  # everyone else, far past max_keys, is served and counted
        res = await reserve(quota, BUDGETED, tenant=f"other-{i}", est_cost_usd=0.1)
        assert not res.degraded
    assert len(store) <= 20


async def test_bytes_per_tenant_stay_bounded(clock: FakeClock) -> None:
    """max_keys bounds memory: 4,000 tenants through a 2,000-key store keep 2,000 keys."""
    import tracemalloc

    store = MemoryStore(clock=clock, max_keys=2_000)
    quota = QuotaManager(store, clock=clock)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(4_000):
        await quota.settle(await reserve(quota, BUDGETED, tenant=f"tenant-{i:06d}"), tokens=1,
                           cost_usd=0.001)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(store) <= 2_000
    assert held < 2_000 * 750  # ~1.8 KB per tenant kept (4 keys); all 4,000 would hold ~7 MB
