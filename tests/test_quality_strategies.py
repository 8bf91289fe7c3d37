"""Learned strategies: the YAML prior until feedback says otherwise; Thompson sampling finds the best."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from router.context import RequestContext
from router.health import BreakerConfig, HealthTracker
from router.pricing import PriceBook
from router.quality import Decay, QualityTracker
from router.schema import Deployment, Price, Route
from router.strategies import BestQuality
from router.strategies_learned import (
    LEARNED_STRATEGIES,
    PRIOR_WEIGHT,
    HealthWithQuality,
    LearnedBestQuality,
    ThompsonSampling,
)
from tests.conftest import FakeClock

pytestmark = pytest.mark.timeout(30)

PRICES = PriceBook(cost_map={})


def dep(name: str, quality: float, price: float = 1.0) -> Deployment:
    return Deployment(name=name, model=f"openai/{name}", quality=quality,
                      price=Price(input_per_mtok=price, output_per_mtok=price))


def names(seq: Sequence[Deployment]) -> list[str]:
    return [d.name for d in seq]


def ctx(task: str | None = None) -> RequestContext:
    return RequestContext(operation="chat", tenant="t", metadata={"task": task} if task else {})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> HealthTracker:
    return HealthTracker(BreakerConfig(), clock=clock)


@pytest.fixture
def quality(clock: FakeClock) -> QualityTracker:
    return QualityTracker(clock=clock)


A, B, C, D = dep("a", 0.9, 5.0), dep("b", 0.7, 1.0), dep("c", 0.7, 0.5), dep("d", 0.2, 0.1)
ROUTE = Route(strategy="best_quality", targets=("a", "b", "c", "d"))


def test_registry_names() -> None:
    assert set(LEARNED_STRATEGIES) == {"best_quality", "thompson"}


@pytest.mark.parametrize("preferred", [None, "d"])
def test_without_feedback_the_order_is_the_yamls(
        health: HealthTracker, quality: QualityTracker, preferred: str | None) -> None:
    route = ROUTE.model_copy(update={"preferred": preferred})
    yaml_only = BestQuality(route, [D, C, B, A], PRICES.per_mtok).order(ctx(), health, random.Random(0))
    learned = LearnedBestQuality(route, [D, C, B, A], PRICES.per_mtok, route_name="default")
    assert names(learned.order(ctx(), health, random.Random(0))) == names(yaml_only)  # no QualityView at all
    view = HealthWithQuality(health, quality)  # a QualityView with nothing measured
    assert names(learned.order(ctx(), view, random.Random(0))) == names(yaml_only)
    expected = ["a", "c", "b", "d"] if preferred is None else ["d", "a", "c", "b"]
    assert names(yaml_only) == expected


async def test_two_hundred_scores_reverse_the_yaml_ranking(health: HealthTracker, quality: QualityTracker) -> None:
    route = Route(strategy="best_quality", targets=("a", "b"))
    strategy = LearnedBestQuality(route, [A, B], PRICES.per_mtok, route_name="default")
    view = HealthWithQuality(health, quality)
    assert names(strategy.order(ctx(), view, random.Random(0))) == ["a", "b"]
    for i in range(100):
        await quality.record("a", "default", 0.3 if i % 2 else 0.4)
        await quality.record("b", "default", 0.95)
    assert names(strategy.order(ctx(), view, random.Random(0))) == ["b", "a"]
    scores = strategy.scores(ctx(), view)
    # posterior mean: (k*q + alpha) / (k + n)
    assert scores["b"] == pytest.approx(-(PRIOR_WEIGHT * 0.7 + 95.0) / (PRIOR_WEIGHT + 100))
    assert scores["a"] == pytest.approx(-(PRIOR_WEIGHT * 0.9 + 35.0) / (PRIOR_WEIGHT + 100))


async def test_a_few_scores_do_not_outweigh_the_prior(health: HealthTracker, quality: QualityTracker) -> None:
    strategy = LearnedBestQuality(Route(targets=("a", "b")), [A, B], PRICES.per_mtok, route_name="default")
    view = HealthWithQuality(health, quality)
    for _ in range(3):
        await quality.record("a", "default", 0.0)
    # (18 + 0) / 23 = 0.78 > 0.7: three bad scores are not yet enough
    assert names(strategy.order(ctx(), view, random.Random(0))) == ["a", "b"]


async def test_feedback_per_task_ranks_per_task(health: HealthTracker, quality: QualityTracker) -> None:
    strategy = LearnedBestQuality(Route(targets=("a", "b")), [A, B], PRICES.per_mtok, route_name="default")
    view = HealthWithQuality(health, quality)
    for _ in range(100):
        await quality.record("a", "default", 0.1, task="code")
        await quality.record("b", "default", 1.0, task="code")
        await quality.record("a", "default", 1.0, task="chat")
        await quality.record("b", "default", 0.1, task="chat")
    assert names(strategy.order(ctx("code"), view, random.Random(0))) == ["b", "a"]
    assert names(strategy.order(ctx("chat"), view, random.Random(0))) == ["a", "b"]


async def test_a_strategy_without_its_route_name_reads_deployment_wide_figures(
        health: HealthTracker, quality: QualityTracker) -> None:
    strategy = LearnedBestQuality(Route(targets=("a", "b")), [A, B], PRICES.per_mtok)
    view = HealthWithQuality(health, quality)
    for _ in range(200):
        await quality.record("a", "some-route", 0.0)
    assert names(strategy.order(ctx(), view, random.Random(0))) == ["b", "a"]


async def test_thompson_sends_most_traffic_to_the_hidden_best(
        health: HealthTracker, clock: FakeClock) -> None:
    hidden = {"p60": 0.6, "p75": 0.75, "p90": 0.9}
    # the YAML claims they are all alike, so only feedback can tell them apart
    deps = [dep(n, 0.75) for n in hidden]
    quality = QualityTracker(clock=clock, decay=Decay(half_life_s=3600.0))
    strategy = ThompsonSampling(Route(targets=tuple(hidden)), deps, PRICES.per_mtok, route_name="default")
    view = HealthWithQuality(health, quality)
    routing_rng, world = random.Random(42), random.Random(7)
    chosen: list[str] = []
    for _ in range(1000):
        first = strategy.order(ctx(), view, routing_rng)[0].name
        chosen.append(first)
        await quality.record(first, "default", 1.0 if world.random() < hidden[first] else 0.0)
        clock.now += 1.0
    last = Counter(chosen[-200:])
    assert last["p90"] >= 160, last
    assert Counter(chosen)["p60"] < Counter(chosen)["p90"]


def test_thompson_without_feedback_follows_the_prior_and_is_seeded(health: HealthTracker) -> None:
    strategy = ThompsonSampling(Route(targets=("a", "d")), [A, D], PRICES.per_mtok)
    firsts = Counter(strategy.order(ctx(), health, random.Random(s))[0].name for s in range(200))
    assert firsts["a"] > 190  # Beta(18, 2) against Beta(4, 16)
    again = [names(strategy.order(ctx(), health, random.Random(5))) for _ in range(3)]
    assert again[0] == again[1] == again[2]


def test_thompson_cost_weight_prefers_the_cheaper_of_equals(health: HealthTracker) -> None:
    same, pricey = dep("same", 0.8, 0.1), dep("pricey", 0.8, 10.0)
    plain = ThompsonSampling(Route(targets=("same", "pricey")), [same, pricey], PRICES.per_mtok)
    weighted = ThompsonSampling(Route(targets=("same", "pricey")), [same, pricey], PRICES.per_mtok,
                                cost_weight=0.3)
    rng = random.Random(3)
    plain_cheap = sum(plain.order(ctx(), health, rng)[0].name == "same" for _ in range(400))
    weighted_cheap = sum(weighted.order(ctx(), health, rng)[0].name == "same" for _ in range(400))
    assert 120 < plain_cheap < 280
    assert weighted_cheap > 360


def test_thompson_accepts_certain_priors(health: HealthTracker) -> None:
    perfect, useless = dep("perfect", 1.0), dep("useless", 0.0)
    strategy = ThompsonSampling(Route(targets=("perfect", "useless")), [perfect, useless], PRICES.per_mtok)
    assert names(strategy.order(ctx(), health, random.Random(0))) == ["perfect", "useless"]


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="cost_weight"):
        ThompsonSampling(Route(targets=("a",)), [A], PRICES.per_mtok, cost_weight=-1.0)
    with pytest.raises(ValueError, match="prior_weight"):
        LearnedBestQuality(Route(targets=("a",)), [A], PRICES.per_mtok, prior_weight=0.0)
