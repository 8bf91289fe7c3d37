"""Quotas when the shared store misbehaves, and what a request pays for them.

Redis pauses are simulated by a TCP proxy this test controls (`FreezableProxy`):
frozen, it holds every byte in both directions, so commands time out on the
client and run on Redis later, after the proxy thaws, just as with
`CLIENT PAUSE`, but without pausing the Redis other people share. Outages with
nothing listening use a closed port. Tests that need no real time use the
injected clock; the proxy tests use short real timeouts (0.2 s) and are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from router.errors import QuotaExceeded
from router.quota import MemoryStore, QuotaManager, QuotaStore, store_from_url
from router.quota.base import QuotaStoreError
from router.quota.plan import settle_plan
from router.quota.redis import RedisStore
from tests import test_quota
from tests.conftest import FakeClock
from tests.test_quota import (
    REDIS_URL,
    needs_redis,
    reserve,
    tenants,
)

# the fixtures of test_quota.py, shared by name
clock = test_quota.clock
prefix = test_quota.prefix

pytestmark = pytest.mark.timeout(60)


class FreezableProxy:
    """Forwards TCP to Redis; `freeze()` holds all traffic until `thaw()`."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        await self._flowing.wait()  # a close is traffic too: held while frozen
        dst.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FreezableProxy]:
    parts = urlsplit(REDIS_URL)
    p = FreezableProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await p.start()
    yield p
    p.thaw()
    await p.close()


def proxied_url(proxy: FreezableProxy, prefix: str) -> str:
    parts = urlsplit(REDIS_URL)
    return f"redis://127.0.0.1:{proxy.port}{parts.path or '/0'}?prefix={prefix}"


def direct(prefix: str) -> QuotaManager:
    return QuotaManager(store_from_url(f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}"))


@needs_redis
class TestRedisPause:
    async def test_in_flight_leases_reconcile_when_redis_returns(
            self, proxy: FreezableProxy, prefix: str) -> None:
        store = RedisStore.from_url(proxied_url(proxy, prefix), timeout_s=0.2)
        quota = QuotaManager(store, lease_s=300, outage_probe_s=0.05)
        t = tenants({"max_concurrent": 10, "requests_per_minute": 600})
        held = [await reserve(quota, t) for _ in range(3)]
        proxy.freeze()
        for res in held:  # the calls finish while Redis is unreachable
            assert await quota.settle(res, tokens=5, cost_usd=0) is False
        stray = [await reserve(quota, t) for _ in range(2)]  # time out; may land later
        assert all(r.degraded for r in stray)
        observer = direct(prefix)
        assert (await observer.usage("acme")).in_flight == 3  # nothing got through yet
        proxy.thaw()
        assert await quota.flush(timeout_s=20) == 0
        usage = await observer.usage("acme")
        assert usage.in_flight == 0  # not 900 s later: now
        assert usage.day.tokens == 15  # each settle counted once
        await observer.aclose()
        await quota.aclose()

    async def test_a_reserve_landing_after_its_void_is_refused(self, prefix: str) -> None:
        quota = direct(prefix)
        t = tenants({"max_concurrent": 1})
        res = await reserve(quota, t)
        await quota.refund(res)
        # the void of a reserve that never arrived, then the reserve arriving late
        late = await quota.reserve(t, tenant="acme", route="default")
        void = settle_plan(late, 0, 0, None, void_s=60)
        assert await quota.store.settle(void) is True  # it had landed: refunded
        again = settle_plan(res, 0, 0, None, void_s=60)
        assert await quota.store.settle(again) is False  # not open: remembered as void
        with pytest.raises(QuotaStoreError, match="voided"):
            await quota.store.reserve(res.plan)
        assert (await quota.usage("acme")).in_flight == 0
        await quota.aclose()

    async def test_a_reserve_sent_twice_takes_once(self, prefix: str) -> None:
        quota = direct(prefix)
        t = tenants({"max_concurrent": 1, "usd_per_day": 1})
        res = await reserve(quota, t, est_cost_usd=0.4)
        again = await quota.store.reserve(res.plan)  # redis-py resends a command that timed out
        assert not isinstance(again, Exception)
        usage = await quota.usage("acme")
        assert (usage.in_flight, usage.day.requests, usage.day.usd) == (1, 1, 0.4)
        await quota.aclose()


    async def test_a_reserve_queues_for_a_busy_pool_longer_than_a_command_may_take(self, prefix: str) -> None:
        """Waiting for a free connection is our own queue, not Redis failing: it does not fail closed."""
        store = RedisStore.from_url(f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}",
                                    timeout_s=0.2, max_connections=1, pool_timeout_s=5.0)
        quota = QuotaManager(store)
        t = tenants({"max_concurrent": 10, "usd_per_day": 1})
        pool = store._client.connection_pool
        held = await pool.get_connection()  # type: ignore[no-untyped-call]  # the only connection, busy for longer than timeout_s
        try:
            waiting = asyncio.create_task(reserve(quota, t, est_cost_usd=0.1))
            await asyncio.sleep(0.5)
            assert not waiting.done()
        finally:
            await pool.release(held)
        res = await asyncio.wait_for(waiting, 5.0)
        assert not res.degraded
        assert (await quota.usage("acme")).in_flight == 1
        await quota.refund(res)
        await quota.aclose()


class CountingDown(QuotaStore):
    """A store that is down, counting how often it was asked."""

    name = "down://"

    def __init__(self) -> None:
        self.calls = 0

    async def _fail(self) -> Any:
        self.calls += 1
        raise QuotaStoreError("down")

    async def reserve(self, plan: Any) -> Any:
        return await self._fail()

    async def settle(self, plan: Any) -> bool:
        return bool(await self._fail())

    async def top_up(self, plan: Any) -> Any:
        return await self._fail()

    async def usage(self, window_keys: Any, open_key: str) -> Any:
        return await self._fail()


class TestLocalLimiter:
    async def test_rate_limits_hold_per_process_while_the_store_is_down(self,
                                                                       clock: FakeClock) -> None:
        """100 requests in a minute against a 50 rpm limit: the same verdicts as a healthy store."""
        t = tenants({"requests_per_minute": 50})
        start = clock.now

        async def run(quota: QuotaManager) -> list[bool]:
            clock.now = start
            verdicts = []
            for _ in range(100):
                try:
                    await reserve(quota, t)
                    verdicts.append(True)
                except QuotaExceeded:
                    verdicts.append(False)
                clock.now += 0.6
            return verdicts

        down = QuotaManager(store_from_url("redis://127.0.0.1:1/0"), clock=clock)
        healthy = QuotaManager(MemoryStore(clock=clock), clock=clock)
        outage, normal = await run(down), await run(healthy)
        assert outage == normal
        assert sum(outage) <= 50 + 9  # the limit plus its burst (ten seconds' worth), not 98
        assert down.store_errors == 100
        await down.aclose()

    async def test_store_is_probed_once_per_interval(self, clock: FakeClock) -> None:
        store = CountingDown()
        quota = QuotaManager(store, clock=clock, outage_probe_s=1.0)
        for _ in range(20):
            assert (await reserve(quota, tenants({}))).degraded
        assert store.calls == 1  # the rest did not wait out a timeout
        clock.now += 1.0
        await reserve(quota, tenants({}))
        assert store.calls == 2


class CountingClient:
    """Wraps a redis.asyncio client, counting the commands sent through it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.commands: list[str] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return await self._inner.execute_command(*args, **options)

    async def evalsha(self, *args: Any) -> Any:
        return await self.execute_command("EVALSHA", *args)

    async def script_load(self, script: str) -> Any:
        return await self.execute_command("SCRIPT LOAD", script)

    async def aclose(self) -> None:
        await self._inner.aclose()


@needs_redis
class TestRoundTrips:
    async def test_reserve_is_one_round_trip_and_settle_is_off_the_path(self, prefix: str) -> None:
        store = RedisStore.from_url(f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}")
        client = CountingClient(store._client)
        store._client = client  # type: ignore[assignment]
        quota = QuotaManager(store)
        t = tenants({"requests_per_minute": 600, "usd_per_day": 5, "max_concurrent": 10,
                     "routes": {"default": {"usd_per_day": 1}}})
        await quota.settle(await reserve(quota, t), tokens=1, cost_usd=0)  # scripts now loaded
        client.commands.clear()

        async def handle_request() -> str:
            res = await reserve(quota, t, est_tokens=100, est_cost_usd=0.01)
            answer = "hello"  # the provider call
            quota.settle_soon(res, tokens=50, cost_usd=0.004)
            return answer

        assert await handle_request() == "hello"
        assert client.commands == ["EVALSHA"]  # reserve only
        assert quota.pending_settles == 1
        assert await quota.flush(timeout_s=10) == 0
        assert client.commands == ["EVALSHA", "EVALSHA"]  # the settle, after the response
        day = (await quota.usage("acme")).day
        assert (day.tokens, day.usd) == (1 + 50, 0.004)  # the warm-up call, then this one
        await quota.aclose()


class TestBackgroundSettle:
    async def test_settle_soon_lands_on_flush(self, clock: FakeClock) -> None:
        quota = QuotaManager(MemoryStore(clock=clock), clock=clock)
        t = tenants({"usd_per_day": 1})
        res = await reserve(quota, t, est_cost_usd=0.1)
        quota.settle_soon(res, tokens=3, cost_usd=0.02)
        assert quota.pending_settles == 1  # returned at once, nothing sent yet
        assert await quota.flush() == 0
        assert (await quota.usage("acme")).day.usd == 0.02

    async def test_usage_waits_for_this_process_pending_settles(self, clock: FakeClock) -> None:
        quota = QuotaManager(MemoryStore(clock=clock), clock=clock)
        res = await reserve(quota, tenants({"usd_per_day": 1}), est_cost_usd=0.1)
        quota.settle_soon(res, tokens=3, cost_usd=0.02)
        assert (await quota.usage("acme")).day.usd == 0.02  # read-your-writes within a process
        assert quota.pending_settles == 0

    async def test_retried_until_the_store_returns(self, clock: FakeClock) -> None:
        class Flaky(MemoryStore):
            failures = 3

            async def settle(self, plan: Any) -> bool:
                if self.failures:
                    self.failures -= 1
                    raise QuotaStoreError("blip")
                return await super().settle(plan)

        waits: list[float] = []

        async def sleep(s: float) -> None:
            waits.append(s)
            clock.now += s

        store = Flaky(clock=clock)
        quota = QuotaManager(store, clock=clock, sleep=sleep, outage_probe_s=0.1)
        t = tenants({"max_concurrent": 1})
        res = await reserve(quota, t)
        assert await quota.settle(res, tokens=1, cost_usd=0) is False  # failed in line
        assert await quota.flush(timeout_s=5) == 0
        assert waits == [0.1, 0.1, 0.2]  # the probe interval, then backoff
        assert (await quota.usage("acme")).in_flight == 0

    async def test_gives_up_when_the_lease_is_over(self, clock: FakeClock) -> None:
        async def sleep(s: float) -> None:
            clock.now += s

        store = CountingDown()
        quota = QuotaManager(store, clock=clock, sleep=sleep, lease_s=10)
        res = await reserve(QuotaManager(MemoryStore(clock=clock), clock=clock, lease_s=10),
                            tenants({}))
        quota.refund_soon(res)
        assert await quota.flush(timeout_s=5) == 0
        assert 3 <= store.calls <= 10  # backoff doubling to 2 s within 10 s


async def test_aclose_cancels_what_cannot_land(clock: FakeClock) -> None:
    quota = QuotaManager(CountingDown(), clock=clock)
    res = await reserve(QuotaManager(MemoryStore(clock=clock), clock=clock), tenants({}))
    quota.settle_soon(res, tokens=0, cost_usd=0)
    started = time.monotonic()
    await quota.aclose(flush_timeout_s=0.05)
    assert quota.pending_settles == 0 and time.monotonic() - started < 5
