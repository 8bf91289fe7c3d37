"""What a request costs and who pays: through LiteLLM, over HTTP, to the simulator.

Cached prompt tokens are priced at LiteLLM's cache-read rate (or the YAML's
`cached_input_per_mtok`), an answer without usage is estimated and still
charged, and a cancelled request refunds its reservation and still exports
its spans.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router import Router, RouterSettings, create_default_router
from router.backend import litellm_module
from router.models import Usage
from router.sim import SimModel, SimServer
from tests.conftest import RouterFactory

pytestmark = pytest.mark.timeout(60)

OUTPUT_TOKENS = 8
REASONING_TOKENS = 50


@pytest.fixture(scope="module")
async def priced_sim() -> AsyncIterator[SimServer]:
    """A simulator serving `gpt-4o-mini` by name, so LiteLLM's price table applies to it.

    Cache blocks of 1,000 tokens make "9,000 of 10,000 prompt tokens cached" exact.
    """
    models = [
        SimModel(name="gpt-4o-mini", output_tokens=OUTPUT_TOKENS, context_window=128000, cache_block_tokens=1000),
        SimModel(name="house", output_tokens=OUTPUT_TOKENS, context_window=128000, cache_block_tokens=1000,
                 reasoning_tokens=REASONING_TOKENS),
        SimModel(name="quiet", output_tokens=OUTPUT_TOKENS, omit_usage=True),
        SimModel(name="quiet-embed", embedding_dim=8, omit_usage=True),
    ]
    async with SimServer(models, seed=3) as server:
        yield server


DEPLOYMENTS = """\
deployments:
  - name: mini
    model: openai/gpt-4o-mini
    api_base: "{own}"
    api_key_env: SIM_TEST_KEY
    context_window: 128000
  - name: house
    model: openai/house
    api_base: "{own}"
    api_key_env: SIM_TEST_KEY
    price: {input_per_mtok: 2, output_per_mtok: 8, cached_input_per_mtok: 0.5}
    context_window: 128000
  - name: quiet
    model: openai/quiet
    api_base: "{own}"
    api_key_env: SIM_TEST_KEY
    price: {input_per_mtok: 1, output_per_mtok: 2}
  - name: quiet-embed
    model: openai/quiet-embed
    api_base: "{own}"
    api_key_env: SIM_TEST_KEY
    price: {input_per_mtok: 0.5}
    capabilities: [embeddings]
  - name: fast
    model: openai/sim-fast
    api_base: "{base_url}"
    api_key_env: SIM_TEST_KEY
    price: {input_per_mtok: 1, output_per_mtok: 2}
  - name: hang
    model: openai/sim-slow
    api_base: "{base_url}"
    api_key_env: SIM_TEST_KEY
    price: {input_per_mtok: 1, output_per_mtok: 2}
    timeout_s: 30
"""

POLICY = """\
embedding_route: embed
routes:
  mini: {targets: [mini]}
  house: {targets: [house]}
  quiet: {targets: [quiet]}
  embed: {targets: [quiet-embed]}
  hang: {targets: [hang], deadline_s: 30, attempt_timeout_s: 30}
  fast: {targets: [fast]}
"""

TENANTS = """\
unknown_tenants: reject
tenants:
  acme: {usd_per_day: 10, tokens_per_minute: 1000000}
  warm: {usd_per_day: 10}
"""

# The simulator counts 4 tokens per message plus one per 4 characters: the system message is
# 9,000 tokens, the user message 1,000, and the second request shares the first's 9,000.
SYSTEM = {"role": "system", "content": "abcd" * 8996}
QUESTION = {"role": "user", "content": "wxyz" * 996}


async def build(make_router: RouterFactory, own: SimServer, **settings: object) -> Router:
    return await make_router(POLICY, deployments=DEPLOYMENTS.replace("{own}", own.base_url), tenants=TENANTS,
                             **settings)


async def answer_usage(router: Router, messages: Any, *, stream: bool, **kwargs: Any) -> tuple[Usage, float]:
    """(usage, cost) of a chat or a stream."""
    if not stream:
        r = await router.chat(messages, **kwargs)
        return r.usage, r.cost_usd
    chunks = [c async for c in router.stream(messages, **kwargs)]
    last = chunks[-1]
    assert last.done and last.usage is not None and last.cost_usd is not None
    return last.usage, last.cost_usd


# -- cached prompt tokens -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
async def test_cached_prompt_costs_what_litellms_price_table_says(
    make_router: RouterFactory, priced_sim: SimServer, stream: bool
) -> None:
    priced_sim.reset_stats()
    router = await build(make_router, priced_sim)
    await router.chat([SYSTEM], route="mini", tenant="warm")  # fills the provider's prompt cache
    usage, cost = await answer_usage(router, [SYSTEM, QUESTION], stream=stream, route="mini", tenant="acme")
    assert usage == Usage(input_tokens=10_000, cached_input_tokens=9_000, output_tokens=OUTPUT_TOKENS)

    litellm = litellm_module()
    table = litellm.model_cost["gpt-4o-mini"]
    expected = (1_000 * table["input_cost_per_token"] + 9_000 * table["cache_read_input_token_cost"]
                + OUTPUT_TOKENS * table["output_cost_per_token"])
    assert cost == pytest.approx(expected, rel=1e-9)
    # LiteLLM's own calculator agrees, and the discount is real (not the plain input rate)
    wire_usage = litellm.Usage(prompt_tokens=10_000, completion_tokens=OUTPUT_TOKENS, total_tokens=10_008,
                               prompt_tokens_details={"cached_tokens": 9_000})
    prompt_cost, completion_cost = litellm.cost_per_token(model="gpt-4o-mini", custom_llm_provider="openai",
                                                          usage_object=wire_usage)
    assert cost == pytest.approx(prompt_cost + completion_cost, rel=1e-9)
    undiscounted = 10_000 * table["input_cost_per_token"] + OUTPUT_TOKENS * table["output_cost_per_token"]
    assert cost < 0.6 * undiscounted

    spent = await router.usage("acme")
    assert spent.in_flight == 0 and spent.day.requests == 1
    assert spent.day.tokens == 10_000 + OUTPUT_TOKENS
    assert spent.day.usd == pytest.approx(expected, abs=1e-9)  # the store keeps nano-dollars


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
async def test_declared_prices_are_honoured(make_router: RouterFactory, priced_sim: SimServer, stream: bool) -> None:
    priced_sim.reset_stats()
    router = await build(make_router, priced_sim)
    await router.chat([SYSTEM], route="house", tenant="warm")
    usage, cost = await answer_usage(router, [SYSTEM, QUESTION], stream=stream, route="house", tenant="acme")
    out = OUTPUT_TOKENS + REASONING_TOKENS
    assert usage == Usage(input_tokens=10_000, cached_input_tokens=9_000, output_tokens=out,
                          reasoning_tokens=REASONING_TOKENS)
    # $2 fresh input, $0.5 cached input, $8 output (reasoning too: no separate rate declared) per Mtok
    expected = (1_000 * 2 + 9_000 * 0.5 + out * 8) / 1e6
    assert cost == pytest.approx(expected, rel=1e-9)
    spent = await router.usage("acme")
    assert spent.day.usd == pytest.approx(expected, abs=1e-9) and spent.day.tokens == 10_000 + out


# -- answers without usage ----------------------------------------------------------------------


async def test_answers_without_usage_are_estimated_and_charged(
    make_router: RouterFactory, priced_sim: SimServer
) -> None:
    router = await build(make_router, priced_sim)
    prompt = [{"role": "user", "content": "Tell me about the tenants of the old mill"}]
    charged = 0.0
    tokens = 0
    usages = []
    for stream in (False, True):
        usage, cost = await answer_usage(router, prompt, stream=stream, route="quiet", tenant="acme")
        assert usage.estimated, f"stream={stream}"
        assert usage.input_tokens > 0 and usage.output_tokens > 0
        assert cost == pytest.approx((usage.input_tokens * 1 + usage.output_tokens * 2) / 1e6) and cost > 0
        charged += cost
        tokens += usage.total_tokens
        usages.append(usage)
    assert usages[0] == usages[1]  # the same prompt and the same answer: the same estimate, streamed or not
    e = await router.embed(["some text to embed", "and another one"], tenant="acme")
    assert e.deployment == "quiet-embed" and len(e.embeddings) == 2
    assert e.usage.estimated and e.usage.input_tokens > 0 and e.usage.output_tokens == 0
    assert e.cost_usd == pytest.approx(e.usage.input_tokens * 0.5 / 1e6) and e.cost_usd > 0
    charged += e.cost_usd
    tokens += e.usage.total_tokens
    spent = await router.usage("acme")
    assert spent.day.requests == 3 and spent.in_flight == 0
    assert spent.day.tokens == tokens
    assert spent.day.usd == pytest.approx(charged, abs=3e-9)


async def test_provider_usage_is_not_marked_estimated(make_router: RouterFactory, priced_sim: SimServer) -> None:
    router = await build(make_router, priced_sim)
    for stream in (False, True):
        usage, _ = await answer_usage(router, "hi", stream=stream, route="house", tenant="acme")
        assert not usage.estimated and usage.output_tokens == OUTPUT_TOKENS + REASONING_TOKENS


# -- cancellation -------------------------------------------------------------------------------


async def traced_router(tmp_path: Path, sim: SimServer, monkeypatch: pytest.MonkeyPatch,
                        exporter: InMemorySpanExporter) -> Router:
    (tmp_path / "config").mkdir()
    (tmp_path / "policies").mkdir()
    deployments = DEPLOYMENTS.replace("{own}", sim.base_url).replace("{base_url}", sim.base_url)
    (tmp_path / "config" / "deployments.yaml").write_text(deployments)
    (tmp_path / "config" / "tenants.yaml").write_text(TENANTS)
    (tmp_path / "policies" / "main.yaml").write_text(textwrap.dedent(POLICY))
    monkeypatch.setenv("SIM_TEST_KEY", os.environ.get("SIM_TEST_KEY", "sk-test-0123456789abcdef"))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = RouterSettings(config_dir=tmp_path / "config", policy_dir=tmp_path / "policies",
                              reload_interval_s=0, seed=1)
    return await create_default_router(settings, tracer_provider=provider)


async def wait_for_request(sim: SimServer, model: str) -> None:
    """Until the simulator has the request (it then hangs); polls its counter, bounded by the test timeout."""
    while sim.stats(model).requests == 0:
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
async def test_cancelled_request_exports_both_spans_and_refunds(
    tmp_path: Path, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    exporter = InMemorySpanExporter()
    async with await traced_router(tmp_path, fresh_sim, monkeypatch, exporter) as router:

        async def call() -> None:
            if stream:
                async for _ in router.stream("Tell me a story", route="hang", tenant="acme"):
                    pass
            else:
                await router.chat("Tell me a story", route="hang", tenant="acme")

        task = asyncio.create_task(call())
        await wait_for_request(fresh_sim, "sim-slow")
        held = await router.usage("acme")
        assert held.in_flight == 1 and held.day.usd > 0 and held.day.tokens > 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after = await router.usage("acme")
        assert after.in_flight == 0 and after.day.usd == 0 and after.day.tokens == 0
        assert after.day.requests == 1  # a refund gives back tokens and dollars; the request stays counted
        health = next(h for h in router.health() if h.name == "hang")
        assert health.state == "closed" and health.fault_rate == 0.0  # the caller left: not the provider's fault

    spans = [s for s in exporter.get_finished_spans() if s.name != "router policy.reload"]
    request = next(s for s in spans if s.kind is SpanKind.INTERNAL)
    attempt = next(s for s in spans if s.kind is SpanKind.CLIENT)
    assert request.name == "router chat" and attempt.name == "chat sim-slow"
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
    for span in (request, attempt):
        assert span.attributes is not None and span.attributes["error.type"] == "cancelled", span.name
        assert span.status.status_code is StatusCode.ERROR, span.name
    assert len(spans) == 2



# A caller that stops reading a stream and closes it (`aclose()`, or `break` inside `async with aclosing(...)`)
# must free its reservation and end its spans then, not whenever the garbage collector finalizes the
# router's inner generators. Fails today: Router.stream (client.py) and Pipeline.stream (pipeline.py)
# iterate their inner async generators with a bare `async for`, which does not close them.


async def test_stream_closed_early_settles_at_once(
    tmp_path: Path, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    async with await traced_router(tmp_path, fresh_sim, monkeypatch, exporter) as router:
        stream = router.stream("Tell me a story", route="fast", tenant="acme")
        first = await anext(stream)
        assert first.delta and not first.done
        await stream.aclose()
        spent = await router.usage("acme")
        assert spent.in_flight == 0
        assert 0 < spent.day.tokens < 100  # what was read, not the reservation's estimate
        names = sorted(s.name for s in exporter.get_finished_spans() if s.name != "router policy.reload")
        assert names == ["chat sim-fast", "router chat"]


async def test_stream_closed_early_is_a_cancellation_on_its_spans(
    tmp_path: Path, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    async with await traced_router(tmp_path, fresh_sim, monkeypatch, exporter) as router:
        stream = router.stream("Tell me a story", route="fast", tenant="acme")
        await anext(stream)
        await stream.aclose()
        del stream
        for _ in range(20):  # let the event loop finalize the inner generators (the first bug)
            await asyncio.sleep(0)
        spans = [s for s in exporter.get_finished_spans() if s.name != "router policy.reload"]
        assert len(spans) == 2
        assert all(s.attributes is not None and s.attributes["error.type"] == "cancelled" for s in spans)
