"""Strategies on large routes: a cheaply chosen head, every target exactly once, seeded randomness.

No timing here (see tests/benchmarks/bench_decisions.py): these check what
the order says, on routes too large for the exact small-route paths.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from router.context import RequestContext
from router.health import AttemptResult, BreakerConfig, HealthTracker
from router.pricing import PriceBook
from router.schema import Deployment, Price, Route, Slo
from router.strategies import (
    BUSY_DRAWS,
    EXACT_ROUTE,
    RANKED_HEAD,
    REFRESH_HEAD,
    REFRESH_SWEEP,
    STRATEGIES,
    HeadThenRest,
    Strategy,
    build_strategy,
)
from tests.conftest import FakeClock

pytestmark = pytest.mark.timeout(60)

CTX = RequestContext(operation="chat", tenant="t")
PRICES = PriceBook(cost_map={})
N = 200  # well above EXACT_ROUTE and REFRESH_HEAD + REFRESH_SWEEP


def deployments(n: int = N) -> list[Deployment]:
    return [Deployment(name=f"d{i}", model=f"openai/d{i}", price=Price(input_per_mtok=1.0 + i % 7),
                       latency_prior_ms=500.0 + i) for i in range(n)]


def tracker() -> HealthTracker:
    return HealthTracker(BreakerConfig(latency_warmup_samples=0), clock=FakeClock())


def names(order: Sequence[Deployment]) -> list[str]:
    return [d.name for d in order]


def strategy_for(name: str, deps: list[Deployment], **route: object) -> Strategy:
    r = Route(strategy=name, targets=tuple(d.name for d in deps), **route)
    return build_strategy(r, deps, PRICES.per_mtok)


def measure(health: HealthTracker, name: str, latency_s: float, times: int = 1) -> None:
    for _ in range(times):
        health.begin(name)
        health.record(AttemptResult(deployment=name, ok=True, latency_s=latency_s))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_orders_each_target_once_on_a_large_route(name: str) -> None:
    deps = deployments()
    weights = {d.name: 1.0 + i % 3 for i, d in enumerate(deps)} if name == "weighted" else None
    s = build_strategy(Route(strategy=name, targets=tuple(d.name for d in deps), weights=weights),
                       deps, PRICES.per_mtok)
    health, rng = tracker(), random.Random(5)
    measure(health, "d7", 0.05)
    for _ in range(20):
        order = s.order(CTX, health, rng)
        assert len(order) == N
        assert sorted(names(order)) == sorted(d.name for d in deps)
        assert order[0] is next(iter(order))  # indexing and iterating agree


@pytest.mark.parametrize("name", ["least_busy", "lowest_latency_p2c", "weighted"])
def test_randomised_strategies_repeat_themselves_under_the_same_seed(name: str) -> None:
    deps = deployments()
    weights = {d.name: 1.0 + i % 3 for i, d in enumerate(deps)} if name == "weighted" else None
    s = strategy_for(name, deps, weights=weights)
    health = tracker()
    runs = [[names(s.order(CTX, health, rng)) for _ in range(10)]
            for rng in (random.Random(11), random.Random(11))]
    assert runs[0] == runs[1]
    assert len({tuple(o) for o in runs[0]}) > 1  # and it does vary from request to request


def test_head_then_rest_puts_the_head_first_then_the_rotated_rest() -> None:
    pool = tuple(deployments(6))
    order = HeadThenRest((pool[4], pool[1]), (4, 1), pool, start=3)
    assert names(order) == ["d4", "d1", "d3", "d5", "d0", "d2"]
    assert order[0].name == "d4" and order[2].name == "d3" and order[-1].name == "d2"
    assert names(order[1:3]) == ["d1", "d3"]
    assert len(order) == 6
    assert names(HeadThenRest((pool[0],), (0,), pool)) == ["d0", "d1", "d2", "d3", "d4", "d5"]


@pytest.mark.parametrize("seed", range(40))
def test_head_then_rest_is_the_head_then_the_rotated_pool_without_it(seed: int) -> None:
    rng = random.Random(seed)
    pool = tuple(deployments(rng.randint(1, 12)))
    head_at = rng.sample(range(len(pool)), rng.randint(1, len(pool)))
    start = rng.randrange(len(pool))
    order = HeadThenRest(tuple(pool[i] for i in head_at), head_at, pool, start)
    rotated = [pool[(start + k) % len(pool)] for k in range(len(pool))]
    expected = [pool[i] for i in head_at] + [d for d in rotated if d.name not in {pool[i].name for i in head_at}]
    assert names(order) == names(expected)
    assert [order[k].name for k in range(len(pool))] == names(expected)


def test_least_busy_on_a_large_route_leads_with_an_idle_target_spread_evenly() -> None:
    deps = deployments()
    s = strategy_for("least_busy", deps)
    health = tracker()
    idle = {f"d{i}" for i in range(0, N, 4)}  # a quarter idle, the rest busy
    for d in deps:
        if d.name not in idle:
            for _ in range(3):
                health.begin(d.name)
    rng = random.Random(1)
    firsts = Counter(s.order(CTX, health, rng)[0].name for _ in range(5000))
    # P(no idle target among BUSY_DRAWS draws) = 0.75**8 = 10%; an idle one leads otherwise
    assert sum(firsts[n] for n in idle) / 5000 > 0.85
    assert len(set(firsts) & idle) == len(idle)  # every idle target gets its turn ...
    assert max(firsts[n] for n in idle) < 3 * min(firsts[n] for n in idle)  # ... about evenly


def test_least_busy_on_a_large_route_puts_the_less_loaded_of_the_drawn_first() -> None:
    deps = deployments()
    s = strategy_for("least_busy", deps)
    health = tracker()
    for i, d in enumerate(deps):
        for _ in range(1 + i % 5):  # nobody idle: loads 1..5
            health.begin(d.name)
    rng = random.Random(2)
    for _ in range(200):
        order = s.order(CTX, health, rng)
        head = [health.in_flight(d.name) for d in order[:BUSY_DRAWS]]
        assert head == sorted(head)
    assert len(deps) > EXACT_ROUTE


def test_p2c_on_a_large_route_prefers_the_faster_targets() -> None:
    deps = deployments()
    s = strategy_for("lowest_latency_p2c", deps)
    health = tracker()
    for i, d in enumerate(deps):
        measure(health, d.name, 0.01 * (i + 1))  # d0 fastest ... d199 slowest
    rng = random.Random(3)
    firsts = Counter(s.order(CTX, health, rng)[0].name for _ in range(6000))
    assert firsts[f"d{N - 1}"] == 0  # the slowest loses to whatever it is drawn with
    fast_half = sum(firsts[f"d{i}"] for i in range(N // 2)) / 6000
    assert 0.70 < fast_half < 0.80  # the better of two uniform draws is in the faster half 3/4 of the time


def test_p2c_on_a_large_route_weighs_load_against_latency() -> None:
    deps = deployments(2 * EXACT_ROUTE)
    s = strategy_for("lowest_latency_p2c", deps)
    health = tracker()
    for d in deps:
        measure(health, d.name, 0.1)
    for _ in range(5):
        health.begin("d0")  # same latency, five requests in flight
    rng = random.Random(4)
    for _ in range(500):
        order = s.order(CTX, health, rng)
        if "d0" in names(order[:2]):
            assert order[1].name == "d0"


def test_fastest_on_a_large_route_drops_a_head_that_slows_down_at_the_next_request() -> None:
    deps = deployments()
    s = strategy_for("fastest", deps)
    health = tracker()
    rng = random.Random(0)
    assert s.order(CTX, health, rng)[0].name == "d0"
    measure(health, "d0", 5.0, times=3)  # the head is re-read on every request
    assert s.order(CTX, health, rng)[0].name == "d1"
    order = names(s.order(CTX, health, rng))
    assert "d0" not in order[:RANKED_HEAD]
    assert order[:RANKED_HEAD] == [f"d{i}" for i in range(1, RANKED_HEAD + 1)]  # the ranking leads ...
    assert order[RANKED_HEAD:] == ["d0", *(f"d{i}" for i in range(RANKED_HEAD + 1, N))]  # ... the rest as declared


def test_fastest_on_a_small_route_is_exact_on_every_request() -> None:
    deps = deployments(REFRESH_HEAD + REFRESH_SWEEP)
    s = strategy_for("fastest", deps)
    health = tracker()
    measure(health, deps[-1].name, 0.001)
    assert s.order(CTX, health, random.Random(0))[0].name == deps[-1].name


def test_fastest_keeps_stream_and_non_stream_rankings_apart() -> None:
    deps = deployments()
    s = strategy_for("fastest", deps)
    health = tracker()
    health.begin("d3")
    health.record(AttemptResult(deployment="d3", ok=True, latency_s=0.9, ttft_s=0.001))
    stream = RequestContext(operation="chat", tenant="t", stream=True)
    for _ in range(-(-N // REFRESH_SWEEP)):
        first_stream = s.order(stream, health, random.Random(0))[0].name
        first_plain = s.order(CTX, health, random.Random(0))[0].name
    assert (first_stream, first_plain) == ("d3", "d0")


def test_slo_on_a_large_route_keeps_cheapest_that_fits_first_as_latencies_move() -> None:
    deps = deployments()
    s = strategy_for("cheapest", deps, slo=Slo(latency_ms=505, stat="p95"))
    health = tracker()
    rng = random.Random(0)
    # priors: d0..d5 fit (500..505 ms); among them d0 is the cheapest (price 1 + i % 7)
    assert names(s.order(CTX, health, rng)[:6]) == ["d0", "d1", "d2", "d3", "d4", "d5"]
    measure(health, "d0", 2.0)  # d0 no longer fits; d7 (price 1) now does
    measure(health, "d7", 0.1)
    for _ in range(-(-N // REFRESH_SWEEP)):
        order = names(s.order(CTX, health, rng))
    assert order[:2] == ["d7", "d1"]
    assert "d0" not in order[:RANKED_HEAD]  # it is the slowest of those that do not fit
