"""The response cache on the real request path: through LiteLLM to the simulator, counting provider hits.

Each test uses prompts of its own (a uuid in the text), so no answer another
test stored can be served; Redis tests use a uuid key prefix and delete it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import pytest

from router import ConfigError, InvalidRequest, Router
from router.backend import ChatResult, EmbedResult, StreamPiece
from router.models import StreamChunk
from router.quality import FeedbackNotFound
from router.schema import Deployment
from router.sim import SimServer
from router.tokens import count_text
from tests.conftest import RouterFactory
from tests.test_cache_support import delete_prefix, needs_redis, new_prefix, redis_url

pytestmark = pytest.mark.timeout(60)

POLICY = """\
default_route: cached
embedding_route: embed
routes:
  cached:
    targets: [sim-fast]
    retry: {attempts: 1}
    cache: {mode: read_write, ttl_s: 600}
  shared:
    targets: [sim-fast]
    retry: {attempts: 1}
    cache: {mode: read_write, ttl_s: 600, shared_across_tenants: true}
  any-temperature:
    targets: [sim-fast]
    retry: {attempts: 1}
    cache: {mode: read_write, ttl_s: 600, deterministic_only: false}
  embed:
    targets: [sim-embed]
    cache: {mode: read_write, ttl_s: 600}
"""

TENANTS = """\
unknown_tenants: reject
tenants:
  acme: {requests_per_minute: 1000, tokens_per_day: 1000000, usd_per_day: 100}
  reseller: {requests_per_minute: 1000, tokens_per_day: 1000000, usd_per_day: 100, budgets_count_cache_hits: true}
"""


REDIS_PATIENCE = "&socket_timeout=5&socket_connect_timeout=5&timeout=5"


def prompt(label: str) -> list[dict[str, str]]:
    """A prompt no other test (or earlier run on a shared Redis) has sent."""
    return [{"role": "user", "content": f"{label} {uuid.uuid4().hex}"}]


def fast_hits(sim: SimServer) -> int:
    return sim.stats("sim-fast").requests


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    name = new_prefix()
    yield name
    delete_prefix(name)


async def test_second_identical_chat_is_served_from_cache_for_free(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY)
    messages = prompt("What is 2+2?")
    first = await router.chat(messages, temperature=0)
    second = await router.chat(messages, temperature=0)
    assert fast_hits(fresh_sim) == 1
    assert not first.cached and first.cost_usd > 0
    assert second.cached and second.cost_usd == 0
    assert second.text == first.text and second.deployment == "sim-fast"


@pytest.mark.parametrize("setup", ["memory", pytest.param("redis", marks=needs_redis),
                                   pytest.param("two-routers-on-redis", marks=needs_redis)])
async def test_fifty_concurrent_identical_chats_reach_the_provider_once(
    make_router: RouterFactory, fresh_sim: SimServer, redis_prefix: str, setup: str
) -> None:
    # The store's 0.5 s command timeout is for production; on a loaded test machine a timeout would
    # degrade to computing without the lock (by design), so the test gives Redis longer (URL options win).
    url = "memory://" if setup == "memory" else redis_url(redis_prefix) + REDIS_PATIENCE
    routers = [await make_router(POLICY, cache_store_url=url)
               for _ in range(2 if setup == "two-routers-on-redis" else 1)]
    # A slower answer keeps the first call in flight while the others arrive.
    fresh_sim.update("sim-fast", ttft_ms=(100, 0))
    messages = prompt("Name a prime.")
    answers = await asyncio.gather(*(routers[i % len(routers)].chat(messages, temperature=0) for i in range(50)))
    assert fast_hits(fresh_sim) == 1
    assert sum(not a.cached for a in answers) == 1
    assert {a.text for a in answers} == {answers[0].text}
    assert all(a.cost_usd == 0 for a in answers if a.cached)


async def test_another_tenant_reaches_the_provider_unless_the_route_shares_its_cache(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY)
    private = prompt("Private question")
    await router.chat(private, tenant="acme", temperature=0)
    other = await router.chat(private, tenant="globex", temperature=0)
    again = await router.chat(private, tenant="acme", temperature=0)
    assert fast_hits(fresh_sim) == 2
    assert not other.cached and again.cached

    fresh_sim.reset_stats()
    public = prompt("Public question")
    await router.chat(public, tenant="acme", route="shared", temperature=0)
    other = await router.chat(public, tenant="globex", route="shared", temperature=0)
    assert fast_hits(fresh_sim) == 1
    assert other.cached


async def collect(router: Router, messages: list[dict[str, str]], tenant: str | None = None) -> list[StreamChunk]:
    return [chunk async for chunk in router.stream(messages, temperature=0, tenant=tenant)]


async def test_a_stream_replays_from_cache_with_the_same_chunks(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY)
    messages = prompt("Tell me a short story.")
    live = await collect(router, messages)
    replayed = await collect(router, messages)
    assert fast_hits(fresh_sim) == 1
    assert live[-1].done and replayed[-1].done
    assert [c.delta for c in replayed] == [c.delta for c in live]
    assert "".join(c.delta for c in replayed) == "".join(c.delta for c in live) != ""
    assert replayed[-1].message == live[-1].message
    assert not any(c.cached for c in live) and all(c.cached for c in replayed)
    assert replayed[-1].cost_usd == 0 and (live[-1].cost_usd or 0) > 0


async def test_an_embedding_batch_sends_only_the_new_text(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    a, b, c = (f"{word} {uuid.uuid4().hex}" for word in ("alpha", "beta", "gamma"))
    first = await router.embed([a, b])
    second = await router.embed([a, c, b])
    sent = [r.body["input"] for r in fresh_sim.requests("sim-embed")]
    assert sent == [[a, b], [c]]
    assert second.embeddings[0] == first.embeddings[0] and second.embeddings[2] == first.embeddings[1]
    assert len(second.embeddings[1]) == 16 and not second.cached

    third = await router.embed([b, a])
    assert len(fresh_sim.requests("sim-embed")) == 2
    assert third.cached and third.cost_usd == 0
    assert third.embeddings == [first.embeddings[1], first.embeddings[0]]


async def test_no_cache_skips_the_read_and_no_store_skips_the_write(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY)
    messages = prompt("Fresh answer please")
    await router.chat(messages, temperature=0)
    fresh = await router.chat(messages, temperature=0, cache="no-cache")
    assert fast_hits(fresh_sim) == 2 and not fresh.cached

    fresh_sim.reset_stats()
    private = prompt("Do not keep this")
    kept_nothing = await router.chat(private, temperature=0, cache="no-store")
    after = await router.chat(private, temperature=0)
    assert fast_hits(fresh_sim) == 2
    assert not kept_nothing.cached and not after.cached
    assert (await router.chat(private, temperature=0)).cached  # the default call stored it
    assert fast_hits(fresh_sim) == 2


async def test_non_deterministic_requests_are_not_cached_when_the_route_says_deterministic_only(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY)
    creative = prompt("Write a poem")
    answers = [await router.chat(creative, temperature=0.7) for _ in range(2)]
    assert fast_hits(fresh_sim) == 2 and not any(a.cached for a in answers)

    fresh_sim.reset_stats()
    seeded = prompt("Write a seeded poem")
    answers = [await router.chat(seeded, temperature=0.7, seed=42) for _ in range(2)]
    assert fast_hits(fresh_sim) == 1 and answers[1].cached  # a fixed seed makes it deterministic

    fresh_sim.reset_stats()
    loose = prompt("Write a loose poem")
    answers = [await router.chat(loose, route="any-temperature", temperature=0.7) for _ in range(2)]
    assert fast_hits(fresh_sim) == 1 and answers[1].cached


@pytest.mark.parametrize(("tenant", "hits_pay"), [("acme", False), ("reseller", True)])
async def test_a_hit_counts_against_request_rates_and_against_budgets_only_if_the_tenant_says_so(
    make_router: RouterFactory, fresh_sim: SimServer, tenant: str, hits_pay: bool
) -> None:
    """acme (the default): a hit costs a request, no tokens, no USD. reseller
    (`budgets_count_cache_hits: true`): also the replayed answer's tokens at its list price."""
    router = await make_router(POLICY, tenants=TENANTS)
    assert router.quota is not None
    messages = prompt("Budgeted question")
    first = await router.chat(messages, tenant=tenant, temperature=0)
    second = await router.chat(messages, tenant=tenant, temperature=0)
    assert second.cached and second.cost_usd == 0 and fast_hits(fresh_sim) == 1
    story = prompt("Budgeted story")
    live = await collect(router, story, tenant=tenant)
    replayed = await collect(router, story, tenant=tenant)
    assert replayed[-1].cached and replayed[-1].cost_usd == 0 and fast_hits(fresh_sim) == 2
    assert live[-1].usage is not None and live[-1].cost_usd
    assert await router.quota.flush(timeout_s=10) == 0
    usage = await router.usage(tenant)
    assert usage.minute.requests == 4 and usage.day.requests == 4 and usage.in_flight == 0
    times = 2 if hits_pay else 1
    assert usage.day.tokens == times * (first.usage.total_tokens + live[-1].usage.total_tokens)
    assert usage.day.usd == pytest.approx(times * (first.cost_usd + live[-1].cost_usd), rel=1e-6)


async def test_a_tenant_whose_budgets_count_hits_pays_for_the_texts_its_embedding_batch_found(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY, tenants=TENANTS)
    assert router.quota is not None
    a, b, c = (f"{word} {uuid.uuid4().hex}" for word in ("alpha", "beta", "gamma"))
    for tenant in ("acme", "reseller"):  # the same texts: each tenant's cache is its own
        await router.embed([a, b], tenant=tenant)
        partial = await router.embed([a, c, b], tenant=tenant)
        whole = await router.embed([b, a], tenant=tenant)
        assert not partial.cached and whole.cached
    assert [r.body["input"] for r in fresh_sim.requests("sim-embed")] == [[a, b], [c]] * 2
    assert await router.quota.flush(timeout_s=10) == 0
    plain, resold = await router.usage("acme"), await router.usage("reseller")
    assert plain.day.requests == resold.day.requests == 3

    # the reseller also pays for a and b when the second batch found them, and for the whole third,
    # each text's tokens as the tokenizer counts them (no usage is stored per text), without chat framing
    assert resold.day.tokens - plain.day.tokens == 2 * (count_text(a) + count_text(b))
    assert resold.day.usd > plain.day.usd > 0


async def test_a_bad_cache_mode_is_refused_without_holding_quota(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY, tenants=TENANTS)
    assert router.quota is not None
    with pytest.raises(InvalidRequest) as refused:
        await router.chat(prompt("Bad mode"), tenant="acme", temperature=0, cache="sometimes")  # type: ignore[arg-type]
    assert refused.value.field == "cache" and fast_hits(fresh_sim) == 0
    assert await router.quota.flush(timeout_s=10) == 0
    usage = await router.usage("acme")
    assert usage.in_flight == 0 and usage.day.usd == 0 and usage.day.tokens == 0


@pytest.mark.parametrize(("setting", "url"), [
    ("cache_store_url", "redis://:hunter2pass@127.0.0.1:6379/0?prefx=app:"),  # a misspelt option
    ("quota_store_url", "redis://:hunter2pass@127.0.0.1:6379/0?nope=1"),
    ("history_store_url", "redsi://:hunter2pass@127.0.0.1:6379/0"),  # a misspelt scheme
    ("quality_store_url", "redis://:hunter2pass@127.0.0.1:6379/0?prefix=q:&prefx=q:"),
    ("health_store_url", "redis://:hunter2pass@127.0.0.1:6379/0?prefix=h:&retries=3"),
    ("health_store_url", "ftp://:hunter2pass@127.0.0.1/0"),
])
async def test_a_store_url_it_cannot_use_is_a_config_error_naming_the_setting(
    make_router: RouterFactory, setting: str, url: str
) -> None:
    """Refused when the router is built, not by a TypeError on the first request; no password shown."""
    with pytest.raises(ConfigError) as refused:
        await make_router(POLICY, **{setting: url})
    assert refused.value.field == f"{setting} (ROUTER_{setting.upper()})"
    assert "hunter2pass" not in str(refused.value) and refused.value.__cause__ is None
    assert refused.value.__context__ is None or "hunter2pass" not in str(refused.value.__context__)
    if url.startswith("ftp:"):  # our wording, like every other store's, not redis-py's
        assert "unknown health store URL" in str(refused.value)


async def test_a_stream_read_up_to_its_done_chunk_is_cached(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    messages = prompt("Stop at done")
    for _ in range(2):
        async for chunk in router.stream(messages, temperature=0):
            if chunk.done:
                break
    assert fast_hits(fresh_sim) == 1


async def test_a_cache_hit_has_an_id_of_its_own(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    messages = prompt("Whose answer?")
    original = await router.chat(messages, temperature=0)
    hit = await router.chat(messages, temperature=0)
    assert hit.cached and hit.id and hit.id != original.id
    with contextlib.suppress(FeedbackNotFound):
        await router.feedback(hit.id, 0.9)
    await router.feedback(original.id, 0.2)  # the original caller's one score is still there


async def test_an_answer_the_content_filter_flagged_is_never_cached(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY)
    real = router.pipeline.backend

    class Flagging:
        """The real backend (LiteLLM to the simulator), with the answer marked as filtered."""

        async def chat(self, d: Deployment, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], *,
                       timeout_s: float) -> ChatResult:
            answer = await real.chat(d, messages, params, timeout_s=timeout_s)
            return dataclasses.replace(answer, finish_reason="content_filter")

        def stream(self, d: Deployment, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], *,
                   timeout_s: float) -> AsyncIterator[StreamPiece]:
            return real.stream(d, messages, params, timeout_s=timeout_s)

        async def embed(self, d: Deployment, inputs: Sequence[str], *, timeout_s: float) -> EmbedResult:
            return await real.embed(d, inputs, timeout_s=timeout_s)

    router.pipeline.backend = Flagging()
    messages = prompt("Something the filter flags")
    for _ in range(2):
        answer = await router.chat(messages, temperature=0)
        assert answer.finish_reason == "content_filter" and not answer.cached
    assert fast_hits(fresh_sim) == 2
