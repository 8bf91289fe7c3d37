"""Quotas on the real request path: budgets hold under concurrency, failures refund, fallbacks charge once."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from router import AllAttemptsFailed, QuotaExceeded, Router
from router.sim import Fault, SimServer
from tests.conftest import RouterFactory

# Output-only pricing ($1000 per Mtok) makes the estimate exact: the simulator answers exactly
# max_tokens=8 tokens, so each request reserves and spends $0.008 whatever its prompt counts.
DEPLOYMENTS = """\
deployments:
  - name: sim-fast
    model: openai/sim-fast
    api_base: "{base_url}"
    api_key_env: SIM_TEST_KEY
    price: {input_per_mtok: 0, output_per_mtok: 1000}
  - name: sim-cheap
    model: openai/sim-cheap
    api_base: "{base_url}"
    api_key_env: SIM_TEST_KEY
    price: {input_per_mtok: 0, output_per_mtok: 1000}
"""

POLICY = """\
routes:
  default:
    targets: [sim-fast, sim-cheap]
    max_tokens: 8
    retry: {attempts: 1}
"""

PROMPT = [{"role": "user", "content": "hi"}]


def tenants(budget: float) -> str:
    return f"""\
unknown_tenants: reject
tenants:
  acme: {{usd_per_day: {budget!r}}}
"""


COST_USD = 8 * 1000 / 1e6


async def attempt(router: Router) -> str:
    try:
        await router.chat(PROMPT, tenant="acme")
    except QuotaExceeded as exc:
        assert exc.limit == "usd_per_day" and exc.tenant == "acme"
        assert exc.retry_after is not None and exc.retry_after > 0
        return "rejected"
    return "ok"


@pytest.fixture(params=["memory", "redis", "two-routers-on-redis"])
def store_setup(request: pytest.FixtureRequest) -> tuple[str, int]:
    if request.param == "memory":
        return "memory://", 1
    url = f"redis://127.0.0.1:6379/0?prefix=llmr-test-{uuid.uuid4().hex}:"
    return url, 2 if request.param == "two-routers-on-redis" else 1


async def test_budget_for_50_holds_against_200_concurrent_requests(
    make_router: RouterFactory, fresh_sim: SimServer, store_setup: tuple[str, int]
) -> None:
    url, n_routers = store_setup
    budget = 50 * COST_USD
    routers = [await make_router(POLICY, deployments=DEPLOYMENTS, tenants=tenants(budget), quota_store_url=url)
               for _ in range(n_routers)]
    fresh_sim.reset_stats()
    outcomes = await asyncio.gather(*(attempt(routers[i % n_routers]) for i in range(200)))
    reached = fresh_sim.stats("sim-fast").requests + fresh_sim.stats("sim-cheap").requests
    assert outcomes.count("ok") == 50 and outcomes.count("rejected") == 150
    assert reached == 50
    usage = await routers[0].usage("acme")
    assert usage.day.usd == pytest.approx(budget)  # spent exactly the budget, never more
    assert usage.day.requests == 50 and usage.in_flight == 0  # rejected requests are not counted


async def test_failed_call_refunds_and_fallback_charges_once(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY, deployments=DEPLOYMENTS, tenants=tenants(100.0))
    fresh_sim.script("sim-fast", [Fault.SERVER_ERROR])
    fresh_sim.script("sim-cheap", [Fault.SERVER_ERROR])
    with pytest.raises(AllAttemptsFailed):
        await router.chat(PROMPT, tenant="acme")
    usage = await router.usage("acme")
    assert usage.day.usd == 0 and usage.day.tokens == 0 and usage.in_flight == 0

    fresh_sim.script("sim-fast", [Fault.UNAVAILABLE])
    r = await router.chat(PROMPT, tenant="acme")
    assert r.deployment == "sim-cheap" and len(r.attempts) == 2
    usage = await router.usage("acme")
    assert usage.day.usd == pytest.approx(r.cost_usd, abs=1e-9)
    assert usage.day.tokens == r.usage.total_tokens


async def test_unknown_tenant_is_rejected_before_any_call(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    from router import TenantNotAllowed

    router = await make_router(POLICY, deployments=DEPLOYMENTS, tenants=tenants(1.0))
    with pytest.raises(TenantNotAllowed):
        await router.chat(PROMPT, tenant="mallory")
    assert fresh_sim.stats("sim-fast").requests == 0
