"""The quality tracker: Beta evidence, decay, the feedback-id registry, on memory and Redis.

Redis tests use `ROUTER_TEST_REDIS_URL` (default redis://127.0.0.1:6379/0),
a fresh key prefix each, and delete only their own keys.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from router.errors import InvalidRequest
from router.quality import (
    Decay,
    FeedbackNotFound,
    QualityStoreUnavailable,
    QualityTracker,
    QualityView,
    tracker_from_url,
)
from tests.conftest import FakeClock

pytestmark = pytest.mark.timeout(20)

REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_down() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except Exception as exc:
        return f"Redis not reachable at {REDIS_URL} ({exc.__class__.__name__})"
    return None


REDIS_DOWN = _redis_down()
needs_redis = pytest.mark.skipif(REDIS_DOWN is not None, reason=REDIS_DOWN or "")


def _drop_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


Factory = Callable[..., QualityTracker]


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def make(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Factory]:
    """Builds trackers on one backend; Redis trackers made here share one fresh prefix."""
    prefix = f"test-quality-{uuid.uuid4().hex}:"
    made: list[QualityTracker] = []

    def factory(**kwargs: object) -> QualityTracker:
        url = "memory://" if request.param == "memory" else f"{REDIS_URL}?prefix={prefix}"
        tracker = tracker_from_url(url, clock=clock, **kwargs)  # type: ignore[arg-type]
        made.append(tracker)
        return tracker

    yield factory
    for tracker in made:
        await tracker.aclose()
    if request.param == "redis":
        _drop_prefix(prefix)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_fractional_scores_update_the_beta_counts(make: Factory) -> None:
    tracker = make(decay=Decay(half_life_s=None))
    for score in (1.0, 0.0, 0.8):
        await tracker.record("gpt", "default", score)
    est = tracker.estimate("gpt", "default")
    assert est.samples == 3
    assert est.alpha == pytest.approx(1.8) and est.beta == pytest.approx(1.2)
    assert est.mean == pytest.approx(0.6)
    assert tracker.estimate("claude", "default") == tracker.estimate("claude", "default")
    assert tracker.estimate("claude", "default").mean is None


async def test_sample_half_life_halves_older_evidence(make: Factory) -> None:
    tracker = make(decay=Decay(half_life_s=None, half_life_samples=1.0))
    await tracker.record("gpt", "default", 1.0)
    est = await tracker.record("gpt", "default", 0.0)
    assert est.alpha == pytest.approx(0.5) and est.beta == pytest.approx(1.0)
    assert est.samples == 2  # the count is of scores received, not decayed


async def test_time_half_life_decays_on_the_injected_clock(make: Factory, clock: FakeClock) -> None:
    tracker = make(decay=Decay(half_life_s=10.0))
    await tracker.record("gpt", "default", 1.0)
    clock.now += 10.0
    est = tracker.estimate("gpt", "default")
    assert est.alpha == pytest.approx(0.5, rel=1e-3)
    assert est.mean == pytest.approx(1.0)


async def test_time_decay_between_scores_in_memory(clock: FakeClock) -> None:
    tracker = tracker_from_url("memory://", clock=clock, decay=Decay(half_life_s=10.0))
    await tracker.record("gpt", "default", 1.0)
    clock.now += 20.0
    est = await tracker.record("gpt", "default", 0.0)
    assert est.alpha == pytest.approx(0.25) and est.beta == pytest.approx(1.0)


async def test_reads_fall_back_from_task_to_route_to_deployment(make: Factory) -> None:
    tracker = make()
    await tracker.record("gpt", "default", 1.0, task="code")
    await tracker.record("gpt", "default", 0.0, task="chat")
    assert isinstance(tracker, QualityView)
    code = tracker.quality("gpt", "default", "code")
    assert code is not None and code.mean == pytest.approx(1.0)
    unseen_task = tracker.quality("gpt", "default", "maths")
    assert unseen_task is not None and unseen_task.samples == 2 and unseen_task.mean == pytest.approx(0.5)
    other_route = tracker.quality("gpt", "premium", "code")
    assert other_route is not None and other_route.mean == pytest.approx(1.0)  # any route, same task
    assert tracker.quality("claude", "default", None) is None


async def test_feedback_counts_once_against_the_registered_response(make: Factory) -> None:
    tracker = make()
    assert await tracker.register("resp-1", deployment="gpt", route="default", task="code", tenant="acme")
    target = await tracker.feedback("resp-1", 0.25)
    assert (target.deployment, target.route, target.task, target.tenant) == ("gpt", "default", "code", "acme")
    est = tracker.estimate("gpt", "default", "code")
    assert est.samples == 1 and est.mean == pytest.approx(0.25)
    with pytest.raises(FeedbackNotFound, match="already recorded"):
        await tracker.feedback("resp-1", 1.0)
    assert tracker.estimate("gpt", "default", "code").samples == 1


async def test_feedback_task_overrides_the_registered_one(make: Factory) -> None:
    tracker = make()
    await tracker.register("resp-2", deployment="gpt", route="default", task=None, tenant="acme")
    target = await tracker.feedback("resp-2", 1.0, task="summarise")
    assert target.task == "summarise"
    assert tracker.estimate("gpt", "default", "summarise").samples == 1


async def test_unknown_and_foreign_ids_are_not_found(make: Factory) -> None:
    tracker = make()
    with pytest.raises(FeedbackNotFound, match="unknown or expired") as info:
        await tracker.feedback("never-seen", 1.0)
    assert info.value.response_id == "never-seen"
    await tracker.register("resp-3", deployment="gpt", route="default", task=None, tenant="acme")
    with pytest.raises(FeedbackNotFound, match="unknown or expired"):
        await tracker.feedback("resp-3", 1.0, tenant="globex")


@pytest.mark.parametrize("score", [math.nan, math.inf, -0.01, 1.01, True, "0.5", None])
async def test_invalid_scores_are_the_callers_error_naming_score(make: Factory, score: object) -> None:
    tracker = make()
    await tracker.register("resp-4", deployment="gpt", route="default", task=None, tenant="acme")
    with pytest.raises(InvalidRequest, match="score"):
        await tracker.feedback("resp-4", score)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="score"):
        await tracker.record("gpt", "default", score)  # type: ignore[arg-type]
    # a rejected score does not use up the response's one feedback
    assert (await tracker.feedback("resp-4", 0.5)).deployment == "gpt"


async def test_task_labels_are_validated(make: Factory) -> None:
    tracker = make()
    with pytest.raises(InvalidRequest, match="task"):
        await tracker.record("gpt", "default", 1.0, task="x" * 65)
    with pytest.raises(InvalidRequest, match="task"):
        await tracker.record("gpt", "default", 1.0, task="has\x1fseparator")


async def test_ids_expire_after_the_ttl_in_memory(clock: FakeClock) -> None:
    tracker = tracker_from_url("memory://", clock=clock, feedback_ttl_s=60.0)
    await tracker.register("resp-5", deployment="gpt", route="default", task=None, tenant="acme")
    clock.now += 61.0
    with pytest.raises(FeedbackNotFound, match="unknown or expired"):
        await tracker.feedback("resp-5", 1.0)


@needs_redis
async def test_redis_ids_carry_the_ttl_and_feedback_reaches_another_replica(clock: FakeClock) -> None:
    import redis.asyncio

    prefix = f"test-quality-{uuid.uuid4().hex}:"
    url = f"{REDIS_URL}?prefix={prefix}"
    a = tracker_from_url(url, clock=clock, feedback_ttl_s=60.0)
    b = tracker_from_url(url, clock=clock, feedback_ttl_s=60.0)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await a.register("resp-6", deployment="gpt", route="default", task=None, tenant="acme")
        ttl_ms = await client.pttl(f"{prefix}fb:resp-6")
        assert 0 < ttl_ms <= 60_000
        await b.feedback("resp-6", 0.9)  # the score arrives at the other replica
        assert a.quality("gpt", "default", None) is None
        await a.refresh()
        est = a.quality("gpt", "default", None)
        assert est is not None and est.samples == 1 and est.mean == pytest.approx(0.9)
        assert 0 < await client.pttl(f"{prefix}fb:resp-6") <= 60_000  # the tombstone keeps the TTL
    finally:
        await a.aclose()
        await b.aclose()
        await client.aclose()
        _drop_prefix(prefix)


async def test_a_full_store_refuses_new_keys_and_keeps_old_ones(make: Factory) -> None:
    tracker = make(max_keys=2)
    await tracker.record("gpt", "default", 1.0)  # two keys: (default, gpt, ""), ("", gpt, "")
    await tracker.record("claude", "default", 1.0)
    assert tracker.refused_keys == 2
    assert tracker.quality("claude", "default", None) is None
    assert tracker.estimate("gpt", "default").samples == 1
    await tracker.record("gpt", "default", 0.0)
    assert tracker.estimate("gpt", "default").samples == 2


async def test_a_store_outage_fails_feedback_but_not_registration() -> None:
    tracker = tracker_from_url("redis://127.0.0.1:1/0?prefix=nowhere:")
    try:
        assert not await tracker.register("resp-7", deployment="gpt", route="default", task=None, tenant="a")
        assert tracker.store_errors == 1
        with pytest.raises(QualityStoreUnavailable):
            await tracker.feedback("resp-7", 1.0)
        await tracker.refresh()  # logged, not raised
        assert tracker.store_errors == 2
    finally:
        await tracker.aclose()


def test_unknown_store_urls_are_rejected() -> None:
    with pytest.raises(ValueError, match="memory://"):
        tracker_from_url("mongodb://x")
