"""Tenant quotas against every store: one test class, run on memory and on Redis.

Both stores get the same injected clock (the Redis scripts take it in place of
`TIME`), so no test sleeps. Redis tests skip when no Redis answers at
`ROUTER_TEST_REDIS_URL` (default redis://127.0.0.1:6379/0); each uses its own
key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from router.errors import QuotaExceeded, QuotaStoreUnavailable, TenantNotAllowed
from router.quota import (
    MemoryStore,
    QuotaManager,
    QuotaStore,
    QuotaStoreError,
    Reservation,
    TenantsFile,
    store_from_url,
)
from router.quota.base import window_end, window_id
from tests.conftest import FakeClock

REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_down() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except Exception as exc:
        return f"Redis not reachable at {REDIS_URL} ({exc.__class__.__name__}); start redis-server"
    return None


REDIS_DOWN = _redis_down()
needs_redis = pytest.mark.skipif(REDIS_DOWN is not None, reason=REDIS_DOWN or "")


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def tenants(default: dict[str, Any] | None = None, others: dict[str, Any] | None = None,
            **data: Any) -> TenantsFile:
    """A tenants file whose `default` tenant has `default` limits."""
    every = {"default": default or {}, **(others or {})}
    return TenantsFile.model_validate({"tenants": every, **data})


def redis_url(prefix: str) -> str:
    return f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}"


def delete_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(at(2024, 3, 10, 12, 0, 0))


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test-quota-{uuid.uuid4().hex}:"
    yield name
    if REDIS_DOWN is None:
        delete_prefix(name)


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def quota(request: pytest.FixtureRequest, clock: FakeClock,
                prefix: str) -> AsyncIterator[QuotaManager]:
    url = "memory://" if request.param == "memory" else redis_url(prefix)
    manager = QuotaManager(store_from_url(url, clock=clock), clock=clock, lease_s=300)
    yield manager
    await manager.aclose()


async def reserve(quota: QuotaManager, t: TenantsFile, tenant: str = "acme",
                  **kw: Any) -> Reservation:
    args: dict[str, Any] = {"route": "default", "deployment": "gpt-4o-mini"} | kw
    return await quota.reserve(t, tenant=tenant, **args)


async def admitted(quota: QuotaManager, t: TenantsFile, n: int, **kw: Any) -> int:
    ok = 0
    for _ in range(n):
        try:
            await reserve(quota, t, **kw)
            ok += 1
        except QuotaExceeded:
            pass
    return ok


class TestQuota:
    async def test_rpm_burst_then_steady_rate(self, quota: QuotaManager, clock: FakeClock) -> None:
        t = tenants({"requests_per_minute": 60, "burst": 5})
        assert await admitted(quota, t, 5) == 5
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t)
        e = exc.value
        assert (e.tenant, e.limit, e.limit_value, e.scope) == ("acme", "requests_per_minute", 60,
                                                               "tenant")
        assert e.usage == pytest.approx(5, abs=1e-3)
        assert e.retry_after == pytest.approx(1.0, abs=1e-3)
        clock.now += 1.0
        assert await admitted(quota, t, 2) == 1

    async def test_rpm_never_doubles_at_a_minute_boundary(self, quota: QuotaManager,
                                                          clock: FakeClock) -> None:
        t = tenants({"requests_per_minute": 60, "burst": 60})
        boundary = at(2024, 3, 10, 12, 1, 0)
        clock.now = boundary - 0.1
        assert await admitted(quota, t, 60) == 60
        clock.now = boundary + 0.1  # a fixed window would start afresh here
        assert await admitted(quota, t, 60) == 0

    async def test_rpm_rolling_minute_holds_limit_plus_burst(self, quota: QuotaManager,
                                                             clock: FakeClock) -> None:
        t = tenants({"requests_per_minute": 60})  # default burst: 10 s worth = 10
        times: list[float] = []
        for _ in range(360):  # one attempt every 0.5 s for 3 minutes
            try:
                await reserve(quota, t)
                times.append(clock.now)
            except QuotaExceeded:
                pass
            clock.now += 0.5
        worst = max(sum(1 for u in times if s <= u < s + 60) for s in times)
        assert 60 <= worst <= 70
        assert len(times) == pytest.approx(180 + 10, abs=2)

    async def test_tokens_per_minute_and_settle_gives_back(self, quota: QuotaManager) -> None:
        t = tenants({"tokens_per_minute": 1000})
        first = await reserve(quota, t, est_tokens=400)
        await reserve(quota, t, est_tokens=400)
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t, est_tokens=400)
        assert exc.value.limit == "tokens_per_minute"
        assert exc.value.usage == pytest.approx(800, abs=0.5)
        assert exc.value.retry_after == pytest.approx(200 * 60 / 1000, abs=1e-3)
        await quota.settle(first, tokens=100, cost_usd=0)  # 300 tokens back
        await reserve(quota, t, est_tokens=400)

    async def test_usd_per_day_retry_after_is_midnight_utc(self, quota: QuotaManager,
                                                           clock: FakeClock) -> None:
        t = tenants({"usd_per_day": 1})
        clock.now = at(2024, 3, 10, 23, 0, 0)
        for _ in range(4):
            await reserve(quota, t, est_cost_usd=0.25)
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t, est_cost_usd=0.25)
        e = exc.value
        assert (e.limit, e.limit_value, e.usage) == ("usd_per_day", 1.0, 1.0)
        assert e.retry_after == pytest.approx(3600, abs=1e-3)
        clock.now = at(2024, 3, 11, 0, 0, 1)
        await reserve(quota, t, est_cost_usd=0.25)

    @pytest.mark.parametrize(("now", "to_month_end"), [
        (at(2024, 2, 29, 12, 0, 0), 12 * 3600),  # leap day
        (at(2023, 12, 31, 23, 0, 0), 3600),  # year end
    ])
    async def test_usd_per_month_is_a_calendar_month(self, quota: QuotaManager, clock: FakeClock,
                                                     now: float, to_month_end: float) -> None:
        t = tenants({"usd_per_month": 1})
        clock.now = now
        await reserve(quota, t, est_cost_usd=0.6)
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t, est_cost_usd=0.6)
        assert exc.value.limit == "usd_per_month"
        assert exc.value.retry_after == pytest.approx(to_month_end, abs=1e-3)
        clock.now += to_month_end
        await reserve(quota, t, est_cost_usd=0.6)

    async def test_max_concurrent(self, quota: QuotaManager) -> None:
        t = tenants({"max_concurrent": 2})
        a = await reserve(quota, t)
        b = await reserve(quota, t)
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t)
        assert (exc.value.limit, exc.value.limit_value, exc.value.usage) == ("max_concurrent", 2, 2)
        assert exc.value.retry_after is None
        assert (await quota.usage("acme")).in_flight == 2
        await quota.settle(a, tokens=1, cost_usd=0)
        c = await reserve(quota, t)
        await quota.refund(b)
        await quota.refund(c)
        assert (await quota.usage("acme")).in_flight == 0

    async def test_lapsed_lease_frees_its_slot(self, quota: QuotaManager, clock: FakeClock) -> None:
        t = tenants({"max_concurrent": 1})
        crashed = await reserve(quota, t)
        clock.now += 301  # the manager's lease_s is 300
        await reserve(quota, t)
        assert await quota.settle(crashed, tokens=0, cost_usd=0) is False

    async def test_per_route_limit(self, quota: QuotaManager) -> None:
        t = tenants({"usd_per_day": 10, "routes": {"quality": {"usd_per_day": 0.05}}})
        await reserve(quota, t, route="quality", est_cost_usd=0.03)
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t, route="quality", est_cost_usd=0.03)
        e = exc.value
        assert (e.limit, e.scope, e.limit_value) == ("usd_per_day", "route:quality", 0.05)
        assert e.usage == pytest.approx(0.03)
        await reserve(quota, t, route="default", est_cost_usd=0.03)

    async def test_per_deployment_limit(self, quota: QuotaManager) -> None:
        t = tenants({"deployments": {"gpt-4o": {"requests_per_minute": 2, "burst": 2}}})
        assert await admitted(quota, t, 3, deployment="gpt-4o") == 2
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t, deployment="gpt-4o")
        assert (exc.value.limit, exc.value.scope) == ("requests_per_minute", "deployment:gpt-4o")
        await reserve(quota, t, deployment="gpt-4o-mini")

    async def test_refund_returns_tokens_money_and_slot_not_the_request(
            self, quota: QuotaManager) -> None:
        t = tenants({"usd_per_day": 1, "requests_per_minute": 60, "burst": 2})
        res = await reserve(quota, t, est_tokens=500, est_cost_usd=0.6)
        assert await quota.refund(res) is True
        usage = await quota.usage("acme")
        assert (usage.day.requests, usage.day.tokens, usage.day.usd) == (1, 0, 0.0)
        assert usage.in_flight == 0
        await reserve(quota, t, est_cost_usd=0.6)  # the money came back
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t, est_cost_usd=0.1)
        assert exc.value.limit == "requests_per_minute"  # the request slot did not

    async def test_settle_counts_actual_once(self, quota: QuotaManager) -> None:
        t = tenants({"usd_per_day": 1})
        res = await reserve(quota, t, est_tokens=1000, est_cost_usd=0.10)
        assert await quota.settle(res, tokens=250, cost_usd=0.03) is True
        assert await quota.settle(res, tokens=250, cost_usd=0.03) is False
        assert await quota.refund(res) is False
        for window in ("minute", "day", "month"):
            u = getattr(await quota.usage("acme"), window)
            assert (u.requests, u.tokens, u.usd) == (1, 250, 0.03)

    async def test_settle_above_estimate_is_counted(self, quota: QuotaManager) -> None:
        t = tenants({"usd_per_day": 1})
        res = await reserve(quota, t, est_cost_usd=0.1)
        await quota.settle(res, tokens=10, cost_usd=0.95)
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t, est_cost_usd=0.1)
        assert exc.value.usage == pytest.approx(0.95)

    async def test_settle_on_another_deployment_moves_its_counters(self,
                                                                   quota: QuotaManager) -> None:
        t = tenants({"deployments": {"a": {"requests_per_day": 1, "max_concurrent": 1},
                                     "b": {"requests_per_day": 1}}})
        res = await reserve(quota, t, deployment="a")
        await quota.settle(res, tokens=5, cost_usd=0.001, deployment="b")
        again = await reserve(quota, t, deployment="a")  # a's request and slot went back
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t, deployment="b")
        assert exc.value.scope == "deployment:b"
        await quota.refund(again)

    async def test_request_larger_than_a_limit_never_fits(self, quota: QuotaManager) -> None:
        t = tenants({"usd_per_day": 1, "tokens_per_minute": 100})
        cases: list[tuple[dict[str, Any], str]] = [
            ({"est_cost_usd": 2}, "usd_per_day"), ({"est_tokens": 101}, "tokens_per_minute")]
        for kw, limit in cases:
            with pytest.raises(QuotaExceeded) as exc:
                await reserve(quota, t, **kw)
            assert (exc.value.limit, exc.value.retry_after) == (limit, None)
        assert (await quota.usage("acme")).day.requests == 0

    async def test_zero_limit_forbids(self, quota: QuotaManager) -> None:
        t = tenants({"requests_per_minute": 0})
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t)
        assert exc.value.retry_after is None

    async def test_usage_windows_roll_over(self, quota: QuotaManager, clock: FakeClock) -> None:
        t = tenants({})
        await quota.settle(await reserve(quota, t, est_tokens=7), tokens=7, cost_usd=0.5)
        clock.now += 60
        usage = await quota.usage("acme")
        assert (usage.minute.requests, usage.day.requests, usage.day.usd) == (0, 1, 0.5)
        assert (await quota.usage("nobody")).month.requests == 0

    async def test_unknown_tenants_get_default_limits_each(self, quota: QuotaManager) -> None:
        t = tenants({"requests_per_minute": 60, "burst": 1})
        assert await admitted(quota, t, 2, tenant="stranger") == 1
        assert await admitted(quota, t, 2, tenant="another") == 1

    async def test_unknown_tenants_rejected(self, quota: QuotaManager) -> None:
        t = TenantsFile.model_validate({"unknown_tenants": "reject", "tenants": {"acme": {}}})
        await reserve(quota, t, tenant="acme")
        with pytest.raises(TenantNotAllowed) as exc:
            await reserve(quota, t, tenant="stranger")
        assert (exc.value.tenant, exc.value.reason) == ("stranger", "unknown tenant")

    async def test_allowed_routes(self, quota: QuotaManager) -> None:
        t = tenants({}, {"acme": {"allowed_routes": ["default"]}})
        resolved = quota.resolve(t, tenant="acme", route="default")
        assert resolved.allowed_routes == frozenset({"default"})
        with pytest.raises(TenantNotAllowed) as exc:
            await reserve(quota, t, route="quality")
        assert exc.value.route == "quality"
        assert quota.resolve(None, tenant="anyone", route="any").is_empty()
        with pytest.raises(TenantNotAllowed):  # needs no store: `explain` calls it on the class
            QuotaManager.resolve(t, tenant="acme", route="quality")

    async def test_200_concurrent_reserves_fit_the_budget_exactly(self,
                                                                  quota: QuotaManager) -> None:
        t = tenants({"usd_per_day": 1.0})
        results = await asyncio.gather(
            *(reserve(quota, t, est_cost_usd=0.02) for _ in range(200)), return_exceptions=True
        )
        assert_exactly_50(results)


def assert_exactly_50(results: list[Any]) -> None:
    ok = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert (len(ok), len(refused)) == (50, 150)
    assert all(e.limit == "usd_per_day" and e.retry_after and e.retry_after > 0 for e in refused)


@needs_redis
class TestRedisShared:
    """Redis with its own TIME: shared between clients and across restarts."""

    async def test_two_managers_share_one_budget(self, prefix: str) -> None:
        q1 = QuotaManager(store_from_url(redis_url(prefix)))
        q2 = QuotaManager(store_from_url(redis_url(prefix)))
        t = tenants({"usd_per_day": 1.0})
        results = await asyncio.gather(*(
            reserve(q, t, est_cost_usd=0.02) for _ in range(100) for q in (q1, q2)
        ), return_exceptions=True)
        assert_exactly_50(results)
        await q1.aclose()
        await q2.aclose()

    async def test_usage_survives_a_restart(self, prefix: str) -> None:
        t = tenants({"usd_per_day": 1.0})
        first = QuotaManager(store_from_url(redis_url(prefix)))
        await first.settle(await reserve(first, t, est_cost_usd=0.5), tokens=9, cost_usd=0.7)
        await first.aclose()
        second = QuotaManager(store_from_url(redis_url(prefix)))
        assert (await second.usage("acme")).day.usd == pytest.approx(0.7)
        with pytest.raises(QuotaExceeded):
            await reserve(second, t, est_cost_usd=0.5)
        await second.aclose()

    async def test_server_time_drives_the_bucket(self, prefix: str) -> None:
        quota = QuotaManager(store_from_url(redis_url(prefix)))
        t = tenants({"requests_per_minute": 60, "burst": 3})
        assert await admitted(quota, t, 4) == 3
        with pytest.raises(QuotaExceeded) as exc:
            await reserve(quota, t)
        assert exc.value.retry_after is not None and 0.5 < exc.value.retry_after <= 1.0
        await quota.aclose()

    async def test_every_key_expires_and_noscript_reloads(self, prefix: str) -> None:
        import redis.asyncio

        store = store_from_url(redis_url(prefix))
        # an edited script has a SHA Redis has never seen: the first call meets NOSCRIPT
        script = store._reserve  # type: ignore[attr-defined]
        script.source += f"\n-- {uuid.uuid4().hex}"
        script.sha = __import__("hashlib").sha1(script.source.encode()).hexdigest()
        quota = QuotaManager(store)
        t = tenants({"requests_per_minute": 10, "tokens_per_minute": 1000, "usd_per_month": 5,
                     "max_concurrent": 3, "routes": {"default": {"requests_per_day": 9}}})
        await reserve(quota, t, est_tokens=10)
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        assert len(keys) == 7  # tenant rpm, tpm, minute, day, month, open; route day
        ttls = [await client.pttl(k) for k in keys]
        assert all(ttl > 0 for ttl in ttls)
        await client.aclose()
        await quota.aclose()


class DownStore(QuotaStore):
    name = "down://"

    async def reserve(self, plan: Any) -> Any:
        raise QuotaStoreError("down")

    async def settle(self, plan: Any) -> bool:
        raise QuotaStoreError("down")

    async def usage(self, window_keys: Any, open_key: str) -> Any:
        raise QuotaStoreError("down")

    async def top_up(self, plan: Any) -> Any:
        raise QuotaStoreError("down")


class TestOutage:
    """Rates fail open, money fails closed (by default); no Redis needed."""

    @pytest.fixture
    async def down(self, clock: FakeClock) -> AsyncIterator[QuotaManager]:
        manager = QuotaManager(store_from_url("redis://127.0.0.1:1/0"), clock=clock)
        yield manager
        await manager.aclose()

    async def test_rates_fail_open_money_closed(self, down: QuotaManager) -> None:
        res = await reserve(down, tenants({"requests_per_minute": 5, "max_concurrent": 1}))
        assert res.degraded and down.store_errors == 1
        assert await down.settle(res, tokens=1, cost_usd=0) is True  # in the local limiter
        with pytest.raises(QuotaStoreUnavailable) as exc:
            await reserve(down, tenants({"requests_per_minute": 5, "usd_per_day": 1}))
        assert (exc.value.limit, exc.value.store) == ("usd_per_day", "redis://127.0.0.1:1/0")
        with pytest.raises(QuotaStoreUnavailable):
            await down.usage("acme")
        assert down.store_errors == 3

    async def test_failure_mode_is_configurable(self, down: QuotaManager) -> None:
        flipped = {"failure_mode": {"rates": "closed", "money": "open"}}
        with pytest.raises(QuotaStoreUnavailable) as exc:
            await reserve(down, tenants({"requests_per_minute": 5}, **flipped))
        assert exc.value.limit == "requests_per_minute"
        assert (await reserve(down, tenants({"usd_per_day": 1}, **flipped))).degraded

    async def test_logged_once_per_interval(self, down: QuotaManager, clock: FakeClock,
                                            caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger="router.quota")
        for _ in range(3):
            await reserve(down, tenants({}))
        clock.now += 61
        await reserve(down, tenants({}))
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 2 and "2 more failures" in messages[1]

    async def test_settle_never_raises_and_is_retried(self, clock: FakeClock) -> None:
        res = await reserve(QuotaManager(MemoryStore(clock=clock)), tenants({"usd_per_day": 1}))
        down = QuotaManager(DownStore(), clock=clock)
        assert await down.settle(res, tokens=1, cost_usd=0.1) is False
        assert await down.refund(res) is False
        assert down.store_errors == 2
        assert down.pending_settles == 2  # both wait in the background for the store
        await down.aclose(flush_timeout_s=0)
        assert down.pending_settles == 0


class TestMemoryStore:
    async def test_expired_entries_are_pruned(self, clock: FakeClock) -> None:
        store = MemoryStore(clock=clock)
        quota = QuotaManager(store)
        t = tenants({"requests_per_minute": 60, "usd_per_day": 5})
        for i in range(50):
            await quota.settle(await reserve(quota, t, tenant=f"t{i}"), tokens=1, cost_usd=0)
        assert len(store) >= 200  # rpm, minute, day, month of each tenant
        clock.now += 40 * 86_400
        await reserve(quota, t, tenant="late")
        assert len(store) <= 6



def test_window_math_at_month_and_year_ends() -> None:
    dec = window_id("month", at(2023, 12, 15, 0, 0, 0))
    assert window_end("month", dec) == at(2024, 1, 1, 0, 0, 0)
    feb = window_id("month", at(2024, 2, 1))
    assert window_end("month", feb) == at(2024, 3, 1)
    assert window_id("day", at(2024, 3, 10, 23, 59, 59)) + 1 == window_id("day", at(2024, 3, 11))


def test_store_urls() -> None:
    assert isinstance(store_from_url("memory://"), MemoryStore)
    with pytest.raises(ValueError, match="unknown quota store URL"):
        store_from_url("postgres://db/quota")
