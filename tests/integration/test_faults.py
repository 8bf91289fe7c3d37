"""Real faults and hostile input, end to end through LiteLLM to the simulator.

Each test pins one behaviour of the issue "Correct under real faults and
hostile input": what the router must do when a provider misbehaves (keep-alives
instead of tokens, a stalled stream, a context-window or content-policy 400, an
unset key) or a caller sends what cannot be sent (a lone surrogate, a NaN).
"""

from __future__ import annotations

import asyncio
import math
import os
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from router import (
    AllAttemptsFailed,
    InvalidRequest,
    Router,
    RouterError,
    RouterSettings,
    StreamInterrupted,
    create_default_router,
)
from router.health import CircuitState
from router.sim import Fault, SimError, SimModel, SimServer
from tests.conftest import close_routers

pytestmark = pytest.mark.timeout(60)

KEY_ENV = "FAULTS_TEST_KEY"


def deployment(name: str, base_url: str, *, window: int = 32768, timeout_s: float = 2, price: str | None = None,
               extra: str = "") -> str:
    priced = f", price: {price}" if price else ""
    return (f"  - {{name: {name}, model: openai/{name}, api_base: '{base_url}', api_key_env: {KEY_ENV},"
            f" context_window: {window}, timeout_s: {timeout_s}{priced}{extra}}}\n")


@pytest.fixture
async def own_sim() -> AsyncIterator[SimServer]:
    """A simulator per test, its models replaced by `update()` as each test needs."""
    models = [SimModel(name=n, ttft_ms=(2, 0), output_tokens=8, context_window=200_000)
              for n in ("p-one", "p-two", "p-three")]
    os.environ[KEY_ENV] = "sk-faults-0123456789abcdef"
    async with SimServer(models, seed=3) as server:
        yield server


async def build(tmp_path: Path, policy: str, deployments: str, *, tenants: str | None = None,
                tracer_provider: TracerProvider | None = None, **settings: object) -> Router:
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "config" / "deployments.yaml").write_text("deployments:\n" + deployments)
    (tmp_path / "policies" / "main.yaml").write_text(textwrap.dedent(policy))
    if tenants is not None:
        (tmp_path / "config" / "tenants.yaml").write_text(textwrap.dedent(tenants))
    options: dict[str, object] = {"config_dir": tmp_path / "config", "policy_dir": tmp_path / "policies",
                                  "reload_interval_s": 0, "seed": 1}
    options.update(settings)
    return await create_default_router(RouterSettings(**options),  # type: ignore[arg-type]
                                       tracer_provider=tracer_provider)


@pytest.fixture
async def routers() -> AsyncIterator[list[Router]]:
    made: list[Router] = []
    yield made
    await close_routers(made)


def three(base_url: str, **kw: object) -> str:
    return "".join(deployment(n, base_url, **kw) for n in ("p-one", "p-two", "p-three"))  # type: ignore[arg-type]


FALLBACK = """\
routes:
  default:
    strategy: fallback
    targets: [p-one, p-two, p-three]
    retry: {attempts: 3, backoff_s: 0.01}
    deadline_s: 10
"""


# -- 2: hostile input ---------------------------------------------------------------------


async def test_unsendable_input_fails_fast_without_touching_any_provider(
    tmp_path: Path, own_sim: SimServer, routers: list[Router]
) -> None:
    router = await build(tmp_path, FALLBACK, three(own_sim.base_url),
                         breaker={"consecutive_failures": 1, "min_calls": 1})
    routers.append(router)
    hostile: list[tuple[str, dict[str, Any], str]] = [
        ("a lone \ud800 surrogate", {}, "messages"),
        ("hi", {"temperature": math.nan}, "temperature"),
        ("hi", {"temperature": math.inf}, "temperature"),
    ]
    for i in range(12):
        text, params, field = hostile[i % len(hostile)]
        with pytest.raises(InvalidRequest) as info:
            await router.chat(text, tenant="mallory", **params)
        assert info.value.field.startswith(field), info.value.field
        assert "\ud800" not in str(info.value)
    for name in ("p-one", "p-two", "p-three"):
        assert own_sim.stats(name).requests == 0  # no call, so no retry and no fallback
        assert router.tracker.state(name) == CircuitState.CLOSED
    assert (await router.complete("hi", tenant="acme")).deployment == "p-one"  # others are served as before


# -- 3: streams that send nothing useful ---------------------------------------------------

STREAMING = """\
routes:
  default:
    strategy: fallback
    targets: [p-one, p-two]
    retry: {attempts: 1}
    deadline_s: 4
"""


async def test_keepalives_are_not_a_first_token(tmp_path: Path, own_sim: SimServer, routers: list[Router]) -> None:
    own_sim.update("p-one", error_rates={Fault.KEEPALIVE: 1.0}, keepalive_s=8, keepalive_interval_s=0.2)
    router = await build(tmp_path, STREAMING, three(own_sim.base_url, timeout_s=1))
    routers.append(router)
    started = time.monotonic()
    chunks = [c async for c in router.stream("hi")]
    elapsed = time.monotonic() - started
    last = chunks[-1]
    assert last.done and last.deployment == "p-two" and last.message is not None and last.message.content
    assert [(a.deployment, a.error_type) for a in last.attempts] == [("p-one", "timeout"), ("p-two", None)]
    # Fell back after the 1 s first-token timeout, not after 8 s of keep-alives (nor at the 4 s deadline).
    assert elapsed < 3.0, elapsed
    assert own_sim.stats("p-one").faults[Fault.KEEPALIVE] == 1


IDLE = """\
routes:
  default:
    strategy: fallback
    targets: [p-one, p-two]
    retry: {attempts: 1}
    deadline_s: 6
    stream_idle_timeout_s: 0.5
    resume_streams: RESUME
"""


async def test_stream_idle_after_first_content_is_cut(
    tmp_path: Path, own_sim: SimServer, routers: list[Router]
) -> None:
    own_sim.update("p-one", tokens_per_s=0.25)  # one token, then 4 s of silence
    router = await build(tmp_path, IDLE.replace("RESUME", "false"), three(own_sim.base_url))
    routers.append(router)
    got: list[str] = []
    started = time.monotonic()
    with pytest.raises(StreamInterrupted) as info:
        async for chunk in router.stream("hi"):
            got.append(chunk.delta)
    assert "".join(got) and "idle" in str(info.value)
    assert time.monotonic() - started < 3.0  # cut after 0.5 s of silence, not at the next token
    assert own_sim.stats("p-two").requests == 0  # no resume unless the route asks for it


async def test_stream_idle_is_resumed_on_the_next_deployment_when_the_route_says_so(
    tmp_path: Path, own_sim: SimServer, routers: list[Router]
) -> None:
    own_sim.update("p-one", tokens_per_s=0.25)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    router = await build(tmp_path, IDLE.replace("RESUME", "true"), three(own_sim.base_url),
                         tracer_provider=provider)
    routers.append(router)
    chunks = [c async for c in router.stream("hi")]
    last = chunks[-1]
    assert last.done and last.deployment == "p-two" and last.message is not None
    by_deployment = [(c.deployment, c.delta) for c in chunks[:-1] if c.delta]
    first = by_deployment[0]
    assert first[0] == "p-one"
    rest = "".join(d for name, d in by_deployment if name == "p-two")
    assert rest and last.message.content == first[1] + rest  # one answer, spliced
    continuation = own_sim.last_request("p-two")
    assert continuation is not None
    sent = continuation.body["messages"]
    assert sent[-1] == {"role": "assistant", "content": first[1]}  # the partial answer as a prefix
    assert [(a.deployment, a.error_type) for a in last.attempts] == [
        ("p-one", None), ("p-one", "stream_interrupted"), ("p-two", None)]
    await router.aclose()
    request_span = next(s for s in exporter.get_finished_spans() if s.name.startswith("router "))
    resumed = [e for e in request_span.events if e.name == "router.stream.resumed"]
    assert resumed and resumed[0].attributes == {"from": "p-one", "to": "p-two", "chars": len(first[1])}


# -- 4: provider refusals that another deployment may not share -----------------------------

WINDOWS = FALLBACK + "    constraints: {fit_context: true}\n"


@pytest.mark.parametrize("wording", [
    None,  # the simulator's "... is too large for model with 32768 maximum context length"
    # Wordings LiteLLM leaves as a plain BadRequestError; our classifier knows them.
    "Requested 40000 tokens exceed context window of 32768",
    "Input length 40000 exceeds the maximum of 32768 tokens",
])
async def test_context_overflow_falls_back_to_a_larger_window(
    tmp_path: Path, own_sim: SimServer, routers: list[Router], wording: str | None
) -> None:
    if wording is None:
        own_sim.update("p-one", error_rates={Fault.CONTEXT_OVERFLOW: 1.0}, context_window=32768)
    else:
        own_sim.update("p-one", error_rates={Fault.CUSTOM_ERROR: 1.0},
                       custom_error=SimError(status=400, message=wording, type="invalid_request_error"))
    deps = (deployment("p-one", own_sim.base_url, window=32768) + deployment("p-two", own_sim.base_url, window=32768)
            + deployment("p-three", own_sim.base_url, window=128000))
    router = await build(tmp_path, WINDOWS, deps)
    routers.append(router)
    r = await router.complete("a long prompt")
    assert r.deployment == "p-three"
    assert [(a.deployment, a.error_type) for a in r.attempts] == [("p-one", "context_window"), ("p-three", None)]
    assert own_sim.stats("p-one").requests == 1 and own_sim.stats("p-two").requests == 0
    assert router.tracker.state("p-one") == CircuitState.CLOSED


@pytest.mark.parametrize("fault", [Fault.CONTENT_POLICY, Fault.CONTENT_FILTER])
async def test_content_refusal_falls_back_and_opens_no_circuit(
    tmp_path: Path, own_sim: SimServer, routers: list[Router], fault: Fault
) -> None:
    own_sim.update("p-one", error_rates={fault: 1.0})
    router = await build(tmp_path, FALLBACK, three(own_sim.base_url),
                         breaker={"consecutive_failures": 2, "min_calls": 2, "failure_rate": 0.5})
    routers.append(router)
    for _ in range(6):
        r = await router.complete("something the first provider refuses")
        assert r.deployment == "p-two"
        assert [(a.deployment, a.error_type) for a in r.attempts] == [("p-one", "content_filtered"), ("p-two", None)]
    assert own_sim.stats("p-one").requests == 6  # refused once per request: not retried, never skipped
    assert router.tracker.state("p-one") == CircuitState.CLOSED


# -- 5: a budget that fallbacks to a pricier deployment cannot overshoot --------------------

# Output-only prices make the estimate exact: each answer is max_tokens=8 tokens.
CHEAP = "{input_per_mtok: 0, output_per_mtok: 500}"  # $0.004 a request
PRICEY = "{input_per_mtok: 0, output_per_mtok: 1500}"  # $0.012 a request: 3x

BUDGET_POLICY = """\
routes:
  default:
    strategy: fallback
    targets: [p-one, p-two]
    max_tokens: 8
    retry: {attempts: 1}
    deadline_s: 10
"""

BUDGET = """\
unknown_tenants: reject
tenants:
  acme: {usd_per_day: 0.05}
"""


async def test_fallbacks_to_a_pricier_deployment_never_overshoot_the_budget(
    tmp_path: Path, own_sim: SimServer, routers: list[Router]
) -> None:
    own_sim.update("p-one", error_rates={Fault.SERVER_ERROR: 1.0}, output_tokens=8)
    own_sim.update("p-two", output_tokens=8)
    deps = deployment("p-one", own_sim.base_url, price=CHEAP) + deployment("p-two", own_sim.base_url, price=PRICEY)
    router = await build(tmp_path, BUDGET_POLICY, deps, tenants=BUDGET,
                         breaker={"consecutive_failures": 1000, "min_calls": 1000})
    routers.append(router)

    async def one() -> str:
        try:
            r = await router.chat([{"role": "user", "content": "hi"}], tenant="acme")
        except RouterError as exc:
            return type(exc).__name__
        return r.deployment

    outcomes = [await one() for _ in range(12)]  # replayed one after another
    outcomes += await asyncio.gather(*(one() for _ in range(12)))  # and at once
    assert router.quota is not None
    assert await router.quota.flush(5.0) == 0
    spent = (await router.usage("acme")).day.usd
    served = outcomes.count("p-two")
    assert spent <= 0.05 + 1e-9, (spent, outcomes)
    assert spent == pytest.approx(served * 0.012)  # every served request paid the pricier price
    assert served == 4  # $0.05 holds four $0.012 answers; a fifth would overshoot
    assert own_sim.stats("p-two").requests == served  # the unaffordable fallback was never called


# -- 9: a new replica adopts circuits another one opened -------------------------------------


async def test_new_router_skips_a_circuit_another_replica_opened(
    tmp_path: Path, own_sim: SimServer, routers: list[Router]
) -> None:
    url = f"redis://127.0.0.1:6379/0?prefix=llmr-test-{uuid.uuid4().hex}:"
    breaker = {"consecutive_failures": 2, "cooldown_s": 60}
    policy = FALLBACK.replace("attempts: 3", "attempts: 1")
    first = await build(tmp_path / "a", policy, three(own_sim.base_url), health_store_url=url, breaker=breaker)
    routers.append(first)
    own_sim.update("p-one", error_rates={Fault.SERVER_ERROR: 1.0})
    for _ in range(2):
        await first.complete("hi")
    assert first.tracker.state("p-one") == CircuitState.OPEN
    for _ in range(20):  # the open is published off the request path
        if await first.tracker.sync():
            break
        await asyncio.sleep(0.05)
    before = own_sim.stats("p-one").requests

    second = await build(tmp_path / "b", policy, three(own_sim.base_url), health_store_url=url, breaker=breaker)
    routers.append(second)
    r = await second.complete("hi")  # its very first call
    assert r.deployment == "p-two"
    assert r.attempts[0].deployment == "p-one" and r.attempts[0].error_type == "circuit_open"
    assert own_sim.stats("p-one").requests == before


# -- 10: the deadline skips a fallback that cannot answer in the time left -------------------

DEADLINE = """\
routes:
  default:
    strategy: fallback
    targets: [p-one, p-two, p-three]
    retry: {attempts: 1}
    deadline_s: 3.5
  warm:
    targets: [p-two]
    deadline_s: 30
"""


async def test_deadline_skips_a_fallback_whose_measured_latency_cannot_fit(
    tmp_path: Path, own_sim: SimServer, routers: list[Router]
) -> None:
    own_sim.update("p-one", error_rates={Fault.HANG: 1.0}, hang_s=20)
    own_sim.update("p-two", ttft_ms=(2500, 0))
    deps = (deployment("p-one", own_sim.base_url, timeout_s=2) + deployment("p-two", own_sim.base_url, timeout_s=10)
            + deployment("p-three", own_sim.base_url, timeout_s=10))
    router = await build(tmp_path, DEADLINE, deps)
    routers.append(router)
    await asyncio.gather(*(router.complete("warm up", route="warm") for _ in range(4)))
    p95 = router.tracker.latency_ms("p-two", "p95")
    assert p95 is not None and p95 >= 2000  # ~2.5 s, less any stall of our own loop

    r = await router.complete("hi")  # p-one hangs for 2 s, leaving ~1.5 s: p-two's ~2.5 s cannot fit
    assert r.deployment == "p-three"
    outcomes = [(a.deployment, a.outcome) for a in r.attempts]
    assert outcomes == [("p-one", "error"), ("p-two", "skipped"), ("p-three", "ok")], r.attempts
    why = r.attempts[1].error or ""
    assert why.startswith("expected latency") and "left" in why, why
    assert own_sim.stats("p-two").requests == 4  # only the warm-up calls


# -- 11: a deployment whose key is not set -----------------------------------------------------


async def test_unset_api_key_names_the_variable_once_per_deployment(
    tmp_path: Path, own_sim: SimServer, routers: list[Router], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAULTS_UNSET_KEY_A", raising=False)
    monkeypatch.delenv("FAULTS_UNSET_KEY_B", raising=False)
    deps = (deployment("p-one", own_sim.base_url).replace(KEY_ENV, "FAULTS_UNSET_KEY_A")
            + deployment("p-two", own_sim.base_url).replace(KEY_ENV, "FAULTS_UNSET_KEY_B"))
    router = await build(tmp_path, FALLBACK.replace(", p-three", ""), deps)
    routers.append(router)
    with pytest.raises(AllAttemptsFailed) as info:
        await router.complete("hi")
    attempts = info.value.attempts
    assert [(a.deployment, a.error_type) for a in attempts] == [("p-one", "auth"), ("p-two", "auth")]  # no retry
    assert "FAULTS_UNSET_KEY_A" in (attempts[0].error or "") and "FAULTS_UNSET_KEY_B" in (attempts[1].error or "")
    assert "FAULTS_UNSET_KEY_A" in str(info.value)
    assert own_sim.stats("p-one").requests == 0 and own_sim.stats("p-two").requests == 0
