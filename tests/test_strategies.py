"""Each strategy orders candidates as its name promises; randomness and clocks are injected."""

from __future__ import annotations

import random
from collections import Counter

from router.context import RequestContext
from router.health import AttemptResult, BreakerConfig, HealthTracker
from router.pricing import PriceBook
from router.schema import Deployment, Price, Route, Slo
from router.strategies import STRATEGIES, build_strategy
from tests.conftest import FakeClock

CTX = RequestContext(operation="chat", tenant="t")


def dep(name: str, price: float, quality: float, prior: float = 1000.0) -> Deployment:
    return Deployment(name=name, model=f"openai/{name}", price=Price(input_per_mtok=price, output_per_mtok=price),
                      quality=quality, latency_prior_ms=prior)


A, B, C = dep("a", 5.0, 0.9, 300), dep("b", 0.5, 0.6, 100), dep("c", 1.0, 0.8, 200)
PRICES = PriceBook(cost_map={})
NO_WARMUP = BreakerConfig(latency_warmup_samples=0)  # every recorded latency counts here


def names(seq: object) -> list[str]:
    return [d.name for d in seq]  # type: ignore[attr-defined]


def order(strategy: str, health: HealthTracker | None = None, seed: int = 0, **route: object) -> list[str]:
    r = Route(strategy=strategy, targets=("a", "b", "c"), **route)
    s = build_strategy(r, [A, B, C], PRICES.per_mtok)
    return names(s.order(CTX, health or HealthTracker(NO_WARMUP, clock=FakeClock()), random.Random(seed)))


def test_registry_has_every_strategy() -> None:
    assert set(STRATEGIES) == {"fallback", "cheapest", "fastest", "best_quality", "weighted",
                               "least_busy", "lowest_latency_p2c"}


def test_fallback_keeps_declared_order_and_preferred_goes_first() -> None:
    assert order("fallback") == ["a", "b", "c"]
    assert order("fallback", preferred="c") == ["c", "a", "b"]


def test_cheapest_orders_by_blended_price() -> None:
    assert order("cheapest") == ["b", "c", "a"]


def test_best_quality_orders_by_quality() -> None:
    assert order("best_quality") == ["a", "c", "b"]


def test_fastest_uses_priors_when_cold_then_measurements() -> None:
    clock = FakeClock()
    health = HealthTracker(NO_WARMUP, clock=clock)
    assert order("fastest", health) == ["b", "c", "a"]
    for _ in range(20):
        for name, latency in (("a", 0.05), ("b", 0.9), ("c", 0.4)):
            health.begin(name)
            health.record(AttemptResult(deployment=name, ok=True, latency_s=latency))
            clock.now += 0.01
    assert order("fastest", health) == ["a", "c", "b"]


def test_weighted_follows_weights() -> None:
    route = Route(strategy="weighted", targets=("a", "b", "c"), weights={"a": 3, "b": 1, "c": 0})
    s = build_strategy(route, [A, B, C], PRICES.per_mtok)
    rng = random.Random(42)
    health = HealthTracker(NO_WARMUP, clock=FakeClock())
    firsts = Counter(s.order(CTX, health, rng)[0].name for _ in range(4000))
    assert firsts["c"] == 0
    assert 0.72 < firsts["a"] / 4000 < 0.78
    # everything stays in the order as a fallback
    assert sorted(names(s.order(CTX, health, rng))) == ["a", "b", "c"]


def test_least_busy_prefers_fewest_in_flight() -> None:
    health = HealthTracker(NO_WARMUP, clock=FakeClock())
    for _ in range(3):
        health.begin("a")
    health.begin("b")
    assert order("least_busy", health) == ["c", "b", "a"]


def test_p2c_picks_the_better_of_two_random_choices() -> None:
    clock = FakeClock()
    health = HealthTracker(NO_WARMUP, clock=clock)
    for name, latency in (("a", 0.5), ("b", 0.01), ("c", 0.2)):
        health.begin(name)
        health.record(AttemptResult(deployment=name, ok=True, latency_s=latency))
    route = Route(strategy="lowest_latency_p2c", targets=("a", "b", "c"))
    s = build_strategy(route, [A, B, C], PRICES.per_mtok)
    rng = random.Random(3)
    firsts = Counter(s.order(CTX, health, rng)[0].name for _ in range(3000))
    # the slowest one can only win if drawn with itself, which sampling without replacement forbids
    assert firsts["a"] == 0
    assert firsts["b"] > firsts["c"]


def test_slo_prefers_cheapest_that_fits_else_fastest() -> None:
    route = Route(strategy="cheapest", targets=("a", "b", "c"), slo=Slo(latency_ms=250, stat="p95"))
    s = build_strategy(route, [A, B, C], PRICES.per_mtok)
    health = HealthTracker(NO_WARMUP, clock=FakeClock())
    # priors: a 300ms, b 100ms, c 200ms -> b and c fit; b is cheaper
    assert names(s.order(CTX, health, random.Random(0))) == ["b", "c", "a"]
    tight = Route(strategy="cheapest", targets=("a", "b", "c"), slo=Slo(latency_ms=50))
    s = build_strategy(tight, [A, B, C], PRICES.per_mtok)
    assert names(s.order(CTX, health, random.Random(0))) == ["b", "c", "a"]  # none fits: fastest first


def test_fastest_on_a_large_route_sees_a_change_within_one_sweep() -> None:
    from router.strategies import REFRESH_HEAD, REFRESH_SWEEP

    health = HealthTracker(NO_WARMUP, clock=FakeClock())
    many = [dep(f"d{i}", 1.0, 0.5, prior=100.0 + i) for i in range(REFRESH_HEAD + REFRESH_SWEEP + 30)]
    route = Route(strategy="fastest", targets=tuple(d.name for d in many))
    s = build_strategy(route, many, PRICES.per_mtok)
    assert s.order(CTX, health, random.Random(0))[0].name == "d0"
    health.begin("d25")
    health.record(AttemptResult(deployment="d25", ok=True, latency_s=0.001))
    sweep = -(-len(many) // REFRESH_SWEEP)  # requests for the sweep to pass every target once
    firsts = [s.order(CTX, health, random.Random(0))[0].name for _ in range(sweep)]
    assert firsts[-1] == "d25"
    assert firsts.count("d0") >= 1  # not seen at once: only the head and a sweep are re-read per request
