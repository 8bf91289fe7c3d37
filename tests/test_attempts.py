"""The attempt loop's retry, fallback, deadline and panic behaviour, with a fake clock and fake calls."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from router.attempts import AttemptLoop, Plan
from router.context import RequestContext
from router.errors import (
    AllAttemptsFailed,
    AuthenticationFailed,
    ContextWindowExceeded,
    DeadlineExceeded,
    InvalidRequest,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from router.health import BreakerConfig, HealthTracker
from router.schema import Deployment, Retry
from router.tracing import Telemetry
from tests.conftest import FakeClock

CTX = RequestContext(operation="chat", tenant="t", prompt_tokens=100, max_tokens=100)


def dep(name: str, window: int = 8000) -> Deployment:
    return Deployment(name=name, model=f"openai/{name}", context_window=window, timeout_s=5)


def plan(*deps: Deployment, attempts: int = 1, deadline: float = 60.0, backoff: float = 0.1) -> Plan:
    return Plan(route="r", order=deps, retry=Retry(attempts=attempts, backoff_s=backoff, jitter=0),
                deadline_s=deadline, attempt_timeout_s=None, fit_context=True)


def scripted(script: dict[str, list[ProviderError | str]], clock: FakeClock, cost: float = 0.01):  # type: ignore[no-untyped-def]
    calls: list[tuple[str, float]] = []

    async def call(d: Deployment, timeout: float) -> str:
        calls.append((d.name, timeout))
        clock.now += cost
        outcome = script[d.name].pop(0)
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    return call, calls


def make_loop(clock: FakeClock, **breaker: object) -> AttemptLoop:
    health = HealthTracker(BreakerConfig(**breaker), clock=clock)
    return AttemptLoop(health=health, clock=clock, rng=random.Random(0), sleep=clock.sleep)


TRACE = Telemetry().start_request(operation="chat", tenant="t", route="r")


def err(cls: Callable[..., ProviderError], **kw: object) -> ProviderError:
    return cls("boom", deployment="x", **kw)


async def test_retries_then_succeeds_on_same_deployment() -> None:
    clock = FakeClock(0.0)
    call, _ = scripted({"a": [err(ProviderUnavailable), "ok"]}, clock)
    ok = await make_loop(clock).run(plan(dep("a"), attempts=2), CTX, call, TRACE)
    assert ok.value == "ok" and ok.deployment.name == "a"
    assert [a.outcome for a in ok.attempts] == ["error", "ok"]
    assert clock.sleeps == [pytest.approx(0.1)]


async def test_backoff_is_exponential_and_honours_retry_after() -> None:
    clock = FakeClock(0.0)
    loop = make_loop(clock)
    retry = Retry(attempts=5, backoff_s=0.1, max_backoff_s=10, jitter=0)
    assert [loop.backoff_s(retry, n, None) for n in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.4])
    assert loop.backoff_s(retry, 1, 2.5) == 2.5
    jittered = Retry(attempts=5, backoff_s=1.0, jitter=0.5)
    delays = [loop.backoff_s(jittered, 1, None) for _ in range(200)]
    assert min(delays) >= 0.5 and max(delays) <= 1.0 and len(set(delays)) > 100


async def test_falls_back_after_retries_are_spent() -> None:
    clock = FakeClock(0.0)
    call, calls = scripted({"a": [err(ProviderUnavailable)] * 2, "b": ["from-b"]}, clock)
    ok = await make_loop(clock).run(plan(dep("a"), dep("b"), attempts=2), CTX, call, TRACE)
    assert ok.deployment.name == "b"
    assert [c[0] for c in calls] == ["a", "a", "b"]


async def test_caller_error_fails_fast_without_fallback() -> None:
    clock = FakeClock(0.0)
    call, calls = scripted({"a": [err(InvalidRequest)], "b": ["never"]}, clock)
    with pytest.raises(InvalidRequest):
        await make_loop(clock).run(plan(dep("a"), dep("b"), attempts=3), CTX, call, TRACE)
    assert [c[0] for c in calls] == ["a"]


async def test_context_window_error_skips_to_a_larger_window() -> None:
    clock = FakeClock(0.0)
    call, calls = scripted({"a": [err(ContextWindowExceeded)], "b": ["never"], "c": ["big"]}, clock)
    ok = await make_loop(clock).run(
        plan(dep("a", 4000), dep("b", 4000), dep("c", 100000), attempts=3), CTX, call, TRACE)
    assert ok.deployment.name == "c"
    assert [c[0] for c in calls] == ["a", "c"]


async def test_deployments_too_small_for_the_prompt_are_not_called() -> None:
    clock = FakeClock(0.0)
    call, calls = scripted({"b": ["ok"]}, clock)
    ctx = RequestContext(operation="chat", tenant="t", prompt_tokens=5000, max_tokens=500)
    ok = await make_loop(clock).run(plan(dep("a", 4000), dep("b", 8000)), ctx, call, TRACE)
    assert ok.deployment.name == "b" and calls == [("b", 5.0)]


async def test_auth_error_skips_the_deployment_without_retry() -> None:
    clock = FakeClock(0.0)
    call, calls = scripted({"a": [err(AuthenticationFailed)], "b": ["ok"]}, clock)
    ok = await make_loop(clock).run(plan(dep("a"), dep("b"), attempts=3), CTX, call, TRACE)
    assert ok.deployment.name == "b" and [c[0] for c in calls] == ["a", "b"]


async def test_long_retry_after_falls_back_instead_of_waiting() -> None:
    clock = FakeClock(0.0)
    call, _ = scripted({"a": [err(RateLimited, retry_after=30.0)], "b": ["ok"]}, clock)
    ok = await make_loop(clock).run(plan(dep("a"), dep("b"), attempts=3), CTX, call, TRACE)
    assert ok.deployment.name == "b" and clock.sleeps == []


async def test_all_failed_lists_every_attempt() -> None:
    clock = FakeClock(0.0)
    call, _ = scripted({"a": [err(ProviderUnavailable)], "b": [err(RateLimited)]}, clock)
    with pytest.raises(AllAttemptsFailed) as info:
        await make_loop(clock).run(plan(dep("a"), dep("b")), CTX, call, TRACE)
    assert [(a.deployment, a.error_type) for a in info.value.attempts] == [
        ("a", "unavailable"), ("b", "rate_limited")]
    assert "a -> error" in str(info.value) and "b -> error" in str(info.value)


async def test_deadline_bounds_the_attempt_timeout_and_stops_the_loop() -> None:
    clock = FakeClock(0.0)
    call, calls = scripted({"a": [err(ProviderUnavailable)] * 5}, clock, cost=1.0)
    with pytest.raises(DeadlineExceeded):
        await make_loop(clock).run(plan(dep("a"), attempts=5, deadline=2.5, backoff=0.2), CTX, call, TRACE)
    # The call is told the configured timeout (a constant: LiteLLM keys its HTTP clients on it);
    # the loop itself bounds each call by what the deadline leaves (next test).
    assert calls[0][1] == calls[1][1] == dep("a").timeout_s
    assert len(calls) == 2


async def test_the_loop_cuts_a_call_at_what_the_deadline_leaves() -> None:
    clock = FakeClock(0.0)  # the deadline is read on this clock; the cut is a real 0.2 s timer

    async def hangs(d: Deployment, timeout: float) -> str:
        await asyncio.sleep(30)
        return "late"

    with pytest.raises(AllAttemptsFailed) as info:
        await make_loop(clock).run(plan(dep("a"), deadline=0.2), CTX, hangs, TRACE)
    assert [a.error_type for a in info.value.attempts] == ["timeout"]


async def test_the_timeout_handed_to_calls_is_the_same_on_every_attempt() -> None:
    clock = FakeClock(0.0)
    call, calls = scripted({"a": [err(ProviderUnavailable)] * 3 + ["ok"]}, clock, cost=0.7)
    await make_loop(clock).run(plan(dep("a"), attempts=4, deadline=50, backoff=0.0), CTX, call, TRACE)
    assert len({t for _, t in calls}) == 1  # never the shrinking time left


async def test_open_circuits_are_skipped() -> None:
    clock = FakeClock(0.0)
    loop = make_loop(clock, consecutive_failures=1, cooldown_s=30)
    call, _ = scripted({"a": [err(ProviderUnavailable)], "b": ["ok", "ok"]}, clock)
    await loop.run(plan(dep("a"), dep("b")), CTX, call, TRACE)
    call2, calls2 = scripted({"a": ["never"], "b": ["ok"]}, clock)
    ok = await loop.run(plan(dep("a"), dep("b")), CTX, call2, TRACE)
    assert [c[0] for c in calls2] == ["b"]
    assert ok.attempts[0].outcome == "skipped" and ok.attempts[0].error_type == "circuit_open"


async def test_panic_mode_calls_the_deployment_that_recovers_first() -> None:
    clock = FakeClock(0.0)
    loop = make_loop(clock, consecutive_failures=1, cooldown_s=30)
    call, _ = scripted({"a": [err(ProviderUnavailable)], "b": [err(ProviderUnavailable)]}, clock)
    with pytest.raises(AllAttemptsFailed):
        await loop.run(plan(dep("a"), dep("b")), CTX, call, TRACE)
    assert not loop.health.available("a") and not loop.health.available("b")
    call2, calls2 = scripted({"a": ["a-ok"], "b": ["b-ok"]}, clock)
    ok = await loop.run(plan(dep("a"), dep("b")), CTX, call2, TRACE)
    assert calls2 == [("a", 5.0)]  # a opened first, so it recovers first
    assert ok.attempts[-1].panic is True and ok.value == "a-ok"
