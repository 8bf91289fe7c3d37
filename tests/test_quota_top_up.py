"""Top-ups: a fallback to a pricier deployment raises the reservation first, or is skipped.

Runs on memory and on Redis (the `quota` fixture of test_quota.py, same injected clock).
"""

from __future__ import annotations

import pytest

from router.quota import MemoryStore, QuotaManager, Reservation
from tests import test_quota
from tests.conftest import FakeClock
from tests.test_quota import (
    DownStore,
    at,
    reserve,
    tenants,
)

# the fixtures of test_quota.py, shared by name
clock = test_quota.clock
prefix = test_quota.prefix
quota = test_quota.quota

pytestmark = pytest.mark.timeout(30)


class TestTopUp:
    async def test_raise_that_fits_is_held_then_settled_to_actual(self, quota: QuotaManager) -> None:
        t = tenants({"usd_per_day": 0.05})
        res = await reserve(quota, t, est_tokens=100, est_cost_usd=0.01)
        assert await quota.top_up(res, tokens=100, cost_usd=0.03) is True
        assert (res.held.tokens, res.held.nano_usd) == (100, 30_000_000)
        assert (await quota.usage("acme")).day.usd == pytest.approx(0.03)
        await quota.settle(res, tokens=90, cost_usd=0.025, deployment="pricier")
        day = (await quota.usage("acme")).day
        assert day.tokens == 90 and day.usd == pytest.approx(0.025)

    async def test_raise_past_a_limit_changes_nothing(self, quota: QuotaManager) -> None:
        t = tenants({"usd_per_day": 0.05})
        first = await reserve(quota, t, est_cost_usd=0.02)
        second = await reserve(quota, t, est_cost_usd=0.02)
        assert await quota.top_up(first, tokens=0, cost_usd=0.03) is True  # 0.03 + 0.02 = 0.05
        assert await quota.top_up(second, tokens=0, cost_usd=0.03) is False  # would be 0.06
        assert second.held.nano_usd == 20_000_000
        assert (await quota.usage("acme")).day.usd == pytest.approx(0.05)

    async def test_lower_or_equal_amounts_are_a_no_op(self, quota: QuotaManager) -> None:
        t = tenants({"usd_per_day": 0.05})
        res = await reserve(quota, t, est_tokens=500, est_cost_usd=0.04)
        assert await quota.top_up(res, tokens=100, cost_usd=0.01) is True
        assert (res.held.tokens, res.held.nano_usd) == (500, 40_000_000)
        assert (await quota.usage("acme")).day.usd == pytest.approx(0.04)

    async def test_tokens_per_minute_is_checked(self, quota: QuotaManager) -> None:
        t = tenants({"tokens_per_minute": 1000, "tokens_per_day": 5000})
        a = await reserve(quota, t, est_tokens=400)
        b = await reserve(quota, t, est_tokens=300)
        assert await quota.top_up(a, tokens=700, cost_usd=0) is True  # bucket at 1000
        assert await quota.top_up(b, tokens=301, cost_usd=0) is False
        await quota.settle(a, tokens=200, cost_usd=0)  # 500 back
        assert await quota.top_up(b, tokens=800, cost_usd=0) is True
        assert (await quota.usage("acme")).day.tokens == 200 + 800

    async def test_per_route_and_per_deployment_limits_are_checked(self, quota: QuotaManager) -> None:
        t = tenants({"routes": {"default": {"usd_per_day": 0.1}},
                     "deployments": {"gpt-4o-mini": {"usd_per_month": 0.05}}})
        res = await reserve(quota, t, est_cost_usd=0.01)
        assert await quota.top_up(res, tokens=0, cost_usd=0.06) is False  # the deployment's month
        assert await quota.top_up(res, tokens=0, cost_usd=0.05) is True

    async def test_settle_elsewhere_after_a_top_up_undoes_what_was_held(self,
                                                                       quota: QuotaManager) -> None:
        t = tenants({"deployments": {"a": {"usd_per_day": 0.05}}})
        res = await reserve(quota, t, deployment="a", est_cost_usd=0.01)
        assert await quota.top_up(res, tokens=0, cost_usd=0.04)
        await quota.settle(res, tokens=10, cost_usd=0.04, deployment="b")
        await reserve(quota, t, deployment="a", est_cost_usd=0.05)  # a holds nothing now

    async def test_closed_reservation_cannot_grow(self, quota: QuotaManager) -> None:
        t = tenants({"usd_per_day": 1})
        res = await reserve(quota, t, est_cost_usd=0.01)
        await quota.refund(res)
        assert await quota.top_up(res, tokens=0, cost_usd=0.5) is False
        assert (await quota.usage("acme")).day.usd == 0

    async def test_top_up_renews_the_leases(self, quota: QuotaManager, clock: FakeClock) -> None:
        t = tenants({"max_concurrent": 1, "routes": {"default": {"max_concurrent": 1}}})
        res = await reserve(quota, t, est_cost_usd=0.01)
        clock.now += 200  # the fixture's lease is 300 s
        assert await quota.top_up(res, tokens=0, cost_usd=0.02)
        clock.now += 200  # 400 s after reserving, 200 s after the top-up
        assert (await quota.usage("acme")).in_flight == 1
        with pytest.raises(Exception, match="max_concurrent"):
            await reserve(quota, t)
        assert await quota.settle(res, tokens=0, cost_usd=0.02) is True

    async def test_a_window_that_ended_is_left_alone(self, quota: QuotaManager,
                                                     clock: FakeClock) -> None:
        t = tenants({"usd_per_day": 0.05})
        clock.now = at(2024, 3, 10, 23, 59, 59)
        res = await reserve(quota, t, est_cost_usd=0.01)
        clock.now = at(2024, 3, 11, 0, 0, 1)
        assert await quota.top_up(res, tokens=0, cost_usd=0.04) is True
        assert (await quota.usage("acme")).day.usd == 0  # the new day starts clean

    async def test_fallbacks_to_a_pricier_deployment_never_pass_the_budget(
            self, quota: QuotaManager) -> None:
        """The issue's replay: first priced at $0.004, answered by a 3x pricier fallback."""
        t = tenants({"usd_per_day": 0.05})
        spent, served, skipped = 0.0, 0, 0
        for _ in range(30):
            try:
                res = await reserve(quota, t, deployment="cheap", est_tokens=1000, est_cost_usd=0.004)
            except Exception:
                break
            # the cheap deployment failed: before trying the pricier one, raise the reservation
            if await quota.top_up(res, tokens=1000, cost_usd=0.012):
                await quota.settle(res, tokens=950, cost_usd=0.0114, deployment="pricey")
                spent += 0.0114
                served += 1
            else:
                await quota.refund(res)
                skipped += 1
        day = (await quota.usage("acme")).day
        assert day.usd == pytest.approx(spent) and day.usd <= 0.05
        assert served == 4 and skipped >= 1  # 4 x 0.0114 = 0.0456; a 5th would pass 0.05


class TestTopUpOutage:
    async def test_money_fails_closed_rates_open(self, clock: FakeClock) -> None:
        store = MemoryStore(clock=clock)
        up = QuotaManager(store, clock=clock)
        money = await reserve(up, tenants({"usd_per_day": 1}), est_cost_usd=0.01)
        rates = await reserve(up, tenants({"requests_per_minute": 10}), tenant="b")
        down = QuotaManager(DownStore(), clock=clock)
        assert await down.top_up(money, tokens=0, cost_usd=0.1) is False
        assert await down.top_up(rates, tokens=10, cost_usd=0.1) is True
        assert rates.held.nano_usd == 0  # nothing was counted, so nothing is held
        assert down.store_errors == 2

    async def test_a_degraded_reservation_grows_in_the_local_limiter(self, clock: FakeClock) -> None:
        down = QuotaManager(DownStore(), clock=clock)
        t = tenants({"tokens_per_minute": 1000})
        res = await reserve(down, t, est_tokens=600)
        assert res.degraded
        assert await down.top_up(res, tokens=900, cost_usd=0) is True
        other = await reserve(down, t, tenant="acme", est_tokens=100)
        assert await down.top_up(other, tokens=200, cost_usd=0) is False  # 900 + 200 > 1000


def test_reservation_held_starts_at_the_estimate() -> None:
    res = Reservation(id="x", tenant="t", route="r", deployment=None, est_tokens=7,
                      est_cost_usd=0.5, plan=None)  # type: ignore[arg-type]
    assert (res.held.tokens, res.held.nano_usd) == (7, 500_000_000)
