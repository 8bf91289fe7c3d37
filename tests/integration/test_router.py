"""The router end to end: through LiteLLM, over HTTP, to the simulator."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from router import (
    AllAttemptsFailed,
    DeadlineExceeded,
    InvalidRequest,
    LLMMessage,
    NoRouteAvailable,
    RouterSettings,
    StreamInterrupted,
    create_default_router,
)
from router.sim import Fault, SimServer
from tests.conftest import RouterFactory

POLICY = """\
default_route: default
embedding_route: embeddings
model_aliases: {smart: premium}
routes:
  default:
    strategy: fallback
    targets: [sim-flaky, sim-fast]
    retry: {attempts: 2, backoff_s: 0.01}
    deadline_s: 5
  premium:
    strategy: best_quality
    targets: [sim-smart, sim-fast]
  small-first:
    strategy: cheapest
    targets: [sim-cheap, sim-smart]
    max_tokens: 50
  slow:
    targets: [sim-slow]
    retry: {attempts: 5, backoff_s: 0.01}
    deadline_s: 0.8
  locked:
    targets: [sim-locked, sim-fast]
  flaky-only:
    targets: [sim-flaky]
    retry: {attempts: 2, backoff_s: 0.01}
  embeddings:
    targets: [sim-embed]
rules:
  - name: batch
    when: {tags: [batch]}
    route: small-first
"""


async def test_issue_snippet_runs_against_the_simulator(make_router: RouterFactory) -> None:
    router = await make_router(POLICY)
    r = await router.complete("What is 2+2?")
    assert r.text == "4" and r.deployment == "sim-flaky"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens == 1
    # price sim-flaky: 0.05 in / 0.15 out per Mtok
    assert r.cost_usd == pytest.approx((r.usage.input_tokens * 0.05 + 1 * 0.15) / 1e6)
    r = await router.chat([LLMMessage(role="system", content="Be brief."),
                           LLMMessage(role="user", content="Tell me a joke")],
                          tenant="acme", route="default", tags=["batch"])
    assert r.route == "default" and r.provider == "openai" and r.model
    chunks = [c async for c in router.stream([LLMMessage(role="user", content="Tell me a story")])]
    assert chunks[-1].done and chunks[-1].usage is not None and chunks[-1].usage.output_tokens == 8
    assert "".join(c.delta for c in chunks) != ""
    e = await router.embed("Some text to embed")
    assert len(e.embeddings) == 1 and len(e.embeddings[0]) == 16 and e.deployment == "sim-embed"


async def test_rules_and_aliases_pick_routes(make_router: RouterFactory) -> None:
    router = await make_router(POLICY)
    assert (await router.complete("hi", tags=["batch"])).route == "small-first"
    assert (await router.complete("hi", model="smart")).deployment == "sim-smart"


async def test_retry_on_the_same_deployment(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    fresh_sim.script("sim-flaky", [Fault.SERVER_ERROR, Fault.NONE])
    r = await router.complete("hi")
    assert r.deployment == "sim-flaky"
    assert [(a.deployment, a.outcome) for a in r.attempts] == [("sim-flaky", "error"), ("sim-flaky", "ok")]
    assert fresh_sim.stats("sim-flaky").requests == 2


async def test_fallback_after_retries(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    fresh_sim.script("sim-flaky", [Fault.UNAVAILABLE, Fault.RATE_LIMIT])
    r = await router.complete("hi")
    assert r.deployment == "sim-fast" and r.fallback_used
    assert [a.error_type for a in r.attempts] == ["unavailable", "rate_limited", None]


async def test_malformed_and_hung_responses_fall_back(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    fresh_sim.script("sim-flaky", [Fault.MALFORMED, Fault.MALFORMED])
    r = await router.complete("hi")
    assert r.deployment == "sim-fast"
    assert [a.error_type for a in r.attempts] == ["malformed_response", "malformed_response", None]


async def test_context_window_error_falls_back_to_a_larger_window(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY)
    long_prompt = "word " * 2500  # ~3000 tokens by the simulator's count: over sim-cheap's real 2000
    r = await router.complete(long_prompt, route="small-first")
    assert r.deployment == "sim-smart"
    assert r.attempts[0].error_type == "context_window"
    assert fresh_sim.stats("sim-cheap").context_errors == 1


async def test_prompt_larger_than_every_window_is_refused_before_any_call(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY)
    with pytest.raises(NoRouteAvailable):
        await router.complete("word " * 40000, route="default")
    assert fresh_sim.stats("sim-fast").requests == 0


async def test_bad_request_fails_fast(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    fresh_sim.script("sim-flaky", [Fault.BAD_REQUEST])
    with pytest.raises(InvalidRequest):
        await router.complete("hi")
    assert fresh_sim.stats("sim-fast").requests == 0


async def test_auth_error_skips_deployment_and_never_leaks_the_key(
    make_router: RouterFactory, fresh_sim: SimServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    router = await make_router(POLICY)
    r = await router.complete("hi", route="locked")
    assert r.deployment == "sim-fast"
    assert r.attempts[0].error_type == "auth"
    secret = os.environ["SIM_LOCKED_KEY"]
    assert secret not in repr(r) and secret not in caplog.text
    assert all(secret not in (a.error or "") for a in r.attempts)
    assert secret not in repr(router)


async def test_deadline_stops_retries(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded) as info:
        await router.complete("hi", route="slow")
    elapsed = loop.time() - started
    assert elapsed < 1.5  # the sim hangs 5 s; the 0.8 s deadline cut it short
    assert all(a.error_type == "timeout" for a in info.value.attempts)


async def test_all_failed_lists_every_attempt(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    fresh_sim.script("sim-flaky", [Fault.SERVER_ERROR, Fault.UNAVAILABLE])
    with pytest.raises(AllAttemptsFailed) as info:
        await router.complete("hi", route="flaky-only")
    assert [a.error_type for a in info.value.attempts] == ["unavailable", "unavailable"]
    assert "sim-flaky" in str(info.value)


async def test_stream_falls_back_before_the_first_chunk(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    fresh_sim.script("sim-flaky", [Fault.SERVER_ERROR, Fault.SERVER_ERROR])
    chunks = [c async for c in router.stream("Tell me a story")]
    assert {c.deployment for c in chunks} == {"sim-fast"}
    assert chunks[-1].done and len(chunks[-1].attempts) == 3


async def test_stream_cut_after_first_chunk_raises(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await make_router(POLICY)
    fresh_sim.script("sim-flaky", [Fault.STREAM_CUT])
    received = []
    with pytest.raises(StreamInterrupted):
        async for chunk in router.stream("Tell me a story", route="flaky-only"):
            received.append(chunk)
    assert received and not received[-1].done


async def test_embeddings_batch_in_order(make_router: RouterFactory) -> None:
    router = await make_router(POLICY)
    e = await router.embed(["alpha", "beta", "alpha"])
    assert len(e.embeddings) == 3
    assert e.embeddings[0] == e.embeddings[2] and e.embeddings[0] != e.embeddings[1]
    assert e.cost_usd > 0


async def test_reload_during_traffic_keeps_serving(
    make_router: RouterFactory, fresh_sim: SimServer, tmp_path: Path
) -> None:
    router = await make_router(POLICY)
    policy_file = tmp_path / "policies" / "main.yaml"
    results: list[str] = []

    async def traffic() -> None:
        for _ in range(30):
            results.append((await router.complete("hi")).deployment)

    async def edits() -> None:
        await asyncio.sleep(0.01)
        policy_file.write_text(POLICY.replace("targets: [sim-flaky, sim-fast]", "targets: [sim-fast]"))
        assert (await router.reload()).changed
        await asyncio.sleep(0.01)
        policy_file.write_text("routes: [this is: not valid")
        bad = await router.reload()
        assert not bad.ok and bad.error is not None and "main.yaml" in str(bad.error)

    await asyncio.gather(traffic(), edits())
    assert len(results) == 30
    assert results[-1] == "sim-fast"  # the good edit took effect; the bad one left it serving
    assert router.last_reload_error is not None
    assert router.source.current.version == 1


async def test_polling_watcher_picks_up_edits(make_router: RouterFactory, tmp_path: Path) -> None:
    router = await make_router(POLICY, reload_interval_s=0.05)
    edited = POLICY.replace("targets: [sim-flaky, sim-fast]", "targets: [sim-smart]")
    (tmp_path / "policies" / "main.yaml").write_text(edited)
    for _ in range(100):
        if router.source.current.version == 1:
            break
        await asyncio.sleep(0.02)
    assert (await router.complete("hi")).deployment == "sim-smart"


async def test_zero_yaml_mode_from_the_original_variables(
    fresh_sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-legacy-0123456789")
    monkeypatch.setenv("OPENAI_API_BASE", fresh_sim.base_url)
    monkeypatch.setenv("OPENAI_MODEL", "sim-fast")
    monkeypatch.setenv("OPENAI_EMBEDDING_MODEL", "sim-embed")
    monkeypatch.setenv("LLM_ROUTER_STRATEGY", "cheapest")
    monkeypatch.setenv("OPENAI_MAX_TOKENS", "5")
    router = await create_default_router(RouterSettings(config_dir=tmp_path / "none", policy_dir=tmp_path / "none"))
    async with router:
        r = await router.complete("Tell me a long story")
        assert r.deployment == "openai" and r.model.endswith("sim-fast")
        assert r.usage.output_tokens == 5
        assert len((await router.embed("x")).embeddings[0]) == 16


@pytest.mark.parametrize("contents", [["What is 2+2? " * 5], ["Be brief.", "Tell me a joke"], ["hi"], ["word " * 3000]])
async def test_prompt_token_count_matches_litellms_counter(contents: list[str]) -> None:
    from router import backend
    from router.tokens import count_tokens

    litellm = backend.litellm_module()
    messages = [{"role": "user", "content": c} for c in contents]
    ours, theirs = count_tokens(messages), litellm.token_counter(messages=messages)
    # exact for chat-sized prompts; on very long ones LiteLLM splits the text and counts ~0.4% more
    assert ours == theirs if theirs < 1000 else abs(ours - theirs) <= 0.01 * theirs
