"""Quality feedback on the real request path: scores on responses the router returned change who serves next."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterator

import pytest

from router import InvalidRequest, LLMResponse, Router
from router.quality import FeedbackNotFound
from router.sim import SimServer
from tests.conftest import RouterFactory
from tests.test_cache_support import delete_prefix, needs_redis, new_prefix, redis_url

pytestmark = pytest.mark.timeout(90)

# YAML quality: sim-fast 0.75 ("A"), sim-cheap 0.6 ("B"): with no feedback, A serves first.
POLICY = """\
default_route: quality
routes:
  quality:
    strategy: best_quality
    targets: [sim-fast, sim-cheap]
    retry: {attempts: 1}
  sampled:
    strategy: thompson
    targets: [sim-fast, sim-cheap]
    retry: {attempts: 1}
"""

SCORE = {"sim-fast": 0.1, "sim-cheap": 0.95}


async def batch(router: Router, n: int, route: str = "quality") -> list[LLMResponse]:
    return list(await asyncio.gather(*(router.chat(f"question {i}", route=route, tenant="acme")
                                       for i in range(n))))


@pytest.fixture
def quality_prefix() -> Iterator[str]:
    name = new_prefix()
    yield name
    delete_prefix(name)


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=needs_redis)])
async def test_responses_carry_ids_that_take_one_score(
    make_router: RouterFactory, fresh_sim: SimServer, quality_prefix: str, store: str
) -> None:
    url = "memory://" if store == "memory" else redis_url(quality_prefix)
    router = await make_router(POLICY, quality_store_url=url)
    answers = await batch(router, 3)
    ids = [a.id for a in answers]
    assert all(ids) and len(set(ids)) == 3
    await router.feedback(ids[0], 0.8, task="summary")
    with pytest.raises(FeedbackNotFound):
        await router.feedback(ids[0], 0.8)  # one score per response
    with pytest.raises(FeedbackNotFound):
        await router.feedback(ids[1], 0.8, tenant="globex")  # another tenant cannot score it ...
    await router.feedback(ids[1], 0.8, tenant="acme")  # ... and did not use it up
    last = [c async for c in router.stream("a streamed question", route="quality", tenant="acme")][-1]
    assert last.done and last.id and last.id not in ids
    await router.feedback(last.id, 0.7)  # a stream's id takes a score too
    assert router.quality is not None
    await router.quality.refresh()
    assert router.quality.estimate("sim-fast", "quality", "summary").samples == 1
    assert router.quality.estimate("sim-fast", "quality").samples == 3


async def test_200_scores_ranking_b_above_a_reverse_best_quality(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY)
    before = await batch(router, 100)
    assert {a.deployment for a in before} == {"sim-fast"}
    for a in before:
        await router.feedback(a.id, SCORE[a.deployment])

    after = await batch(router, 100)
    assert {a.deployment for a in after} == {"sim-cheap"}
    for a in after:
        await router.feedback(a.id, SCORE[a.deployment])

    assert {a.deployment for a in await batch(router, 20)} == {"sim-cheap"}
    assert router.quality is not None
    fast, cheap = (router.quality.estimate(d, "quality") for d in ("sim-fast", "sim-cheap"))
    assert fast.samples == 100 and cheap.samples == 100
    assert cheap.mean is not None and fast.mean is not None and cheap.mean > 0.9 > 0.2 > fast.mean
    assert fresh_sim.stats("sim-fast").requests == 100 and fresh_sim.stats("sim-cheap").requests == 120


async def test_thompson_moves_traffic_to_the_deployment_scored_higher(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY)
    served: list[str] = []
    for _ in range(20):  # 20 rounds of 10: each round learns from the scores of the last
        answers = await batch(router, 10, route="sampled")
        served += [a.deployment for a in answers]
        for a in answers:
            await router.feedback(a.id, SCORE[a.deployment])
    assert len(served) == 200
    late = Counter(served[-50:])
    assert late["sim-cheap"] >= 45, late


async def test_unknown_ids_and_bad_scores_are_refused(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    with pytest.raises(FeedbackNotFound) as not_found:
        await router.feedback("chatcmpl-never-returned", 0.5)
    assert not_found.value.response_id == "chatcmpl-never-returned"

    answer = (await batch(router, 1))[0]
    for bad in (1.5, -0.1, math.nan, math.inf, True, "0.9"):
        with pytest.raises(InvalidRequest) as invalid:
            await router.feedback(answer.id, bad)  # type: ignore[arg-type]
        assert invalid.value.field == "score" and "score" in str(invalid.value)
    await router.feedback(answer.id, 0.9)  # the refused scores did not use the response up
