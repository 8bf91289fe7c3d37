"""The attempt loop under faults that are not the provider's, and when most of a route is ejected."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from router.attempts import AttemptLoop
from router.errors import AllAttemptsFailed, ProviderTimeout, ProviderUnavailable
from router.health import AttemptResult, BreakerConfig, CircuitState, HealthTracker
from router.loop_lag import LoopLag
from router.schema import Deployment
from tests.conftest import FakeClock
from tests.test_attempts import CTX, TRACE, dep, err, make_loop, plan, scripted

pytestmark = pytest.mark.timeout(30)


def lagging_loop(clock: FakeClock, lag: LoopLag) -> AttemptLoop:
    health = HealthTracker(BreakerConfig(consecutive_failures=1, cooldown_s=30), clock=clock)
    return AttemptLoop(health=health, clock=clock, rng=random.Random(0), sleep=clock.sleep, lag=lag)


def timeout_during(clock: FakeClock, lag: LoopLag, stall_s: float):  # type: ignore[no-untyped-def]
    """A call to "a" that times out while the loop stalled `stall_s`; "b" answers."""
    calls: list[str] = []

    async def call(d: Deployment, timeout: float) -> str:
        calls.append(d.name)
        if d.name == "b":
            return "from-b"
        clock.now += d.timeout_s  # the call's own bound is the deadline; the attempt's is d.timeout_s
        lag.record(clock.now, stall_s)
        raise ProviderTimeout("no answer", deployment=d.name)

    return call, calls


@pytest.mark.parametrize(("stall_s", "state"), [(2.0, CircuitState.CLOSED), (0.1, CircuitState.OPEN)])
async def test_a_timeout_while_the_loop_lagged_is_not_the_providers_fault(
    stall_s: float, state: CircuitState
) -> None:
    clock = FakeClock(0.0)
    lag = LoopLag(clock=clock)
    loop = lagging_loop(clock, lag)
    call, calls = timeout_during(clock, lag, stall_s)
    ok = await loop.run(plan(dep("a"), dep("b"), attempts=1), CTX, call, TRACE)
    assert ok.value == "from-b" and calls == ["a", "b"]  # falls back either way
    assert ok.attempts[0].error_type == "timeout"
    # A 2 s stall is >= 25% of a's 5 s timeout: neutral, so one timeout does not open the circuit;
    # a 0.1 s stall is not, and consecutive_failures=1 opens it.
    assert loop.health.state("a") == state


async def test_starved_timeouts_are_retried_as_timeouts_but_never_open_the_circuit() -> None:
    clock = FakeClock(0.0)
    lag = LoopLag(clock=clock)
    loop = lagging_loop(clock, lag)
    call, calls = timeout_during(clock, lag, 3.0)
    await loop.run(plan(dep("a"), dep("b"), attempts=3), CTX, call, TRACE)
    assert calls == ["a", "a", "a", "b"]  # the attempt's own kind (timeout) is what retry.on sees
    assert loop.health.state("a") == CircuitState.CLOSED  # three starved timeouts, still no fault


class FixedLag(LoopLag):
    """Reports that the loop ran `late_s` late since any mark."""

    def __init__(self, late_s: float) -> None:
        super().__init__()
        self.late_s = late_s

    def late_since(self, mark: float) -> float:
        return self.late_s


def slow_then_fast(seconds: float):  # type: ignore[no-untyped-def]
    calls: list[tuple[str, float]] = []

    async def call(d: Deployment, timeout: float) -> str:
        calls.append((d.name, timeout))
        if d.name == "a":
            await asyncio.sleep(seconds)
        return f"from-{d.name}"

    return call, calls


async def test_the_loop_times_out_a_hung_call_itself_when_it_measures_lag() -> None:
    clock = FakeClock(0.0)
    loop = lagging_loop(clock, FixedLag(0.0))
    call, calls = slow_then_fast(30)
    ok = await loop.run(plan(Deployment(name="a", model="openai/a", timeout_s=0.05), dep("b")), CTX, call, TRACE)
    assert ok.value == "from-b"
    assert ok.attempts[0].error_type == "timeout" and "0.05s" in (ok.attempts[0].error or "")
    assert calls[0] == ("a", 60.0)  # the call itself is bounded only by the deadline


async def test_an_answer_delayed_by_our_own_lag_is_not_timed_out() -> None:
    clock = FakeClock(0.0)
    loop = lagging_loop(clock, FixedLag(30.0))  # the loop "ran late" 30 s during the call
    call, _ = slow_then_fast(0.2)
    ok = await loop.run(plan(Deployment(name="a", model="openai/a", timeout_s=0.05), dep("b")), CTX, call, TRACE)
    assert ok.value == "from-a" and [a.outcome for a in ok.attempts] == ["ok"]


def open_circuit(loop: AttemptLoop, name: str) -> None:
    """One fault: enough with consecutive_failures=1."""
    loop.health.record(AttemptResult(deployment=name, ok=False, latency_s=0.1, error_kind="unavailable"))
    assert not loop.health.available(name)


@pytest.mark.parametrize(("cap", "ejected", "called"), [
    (100, ["a", "b"], ["c"]),  # the default: open circuits are always skipped
    (50, ["a", "b"], ["a"]),  # 2 of 3 ejected is over 50%: a open one is tried anyway
    (50, ["a"], ["b"]),  # 1 of 3 is within 50%: skipped
    (0, ["a"], ["a"]),  # no ejection at all
])
async def test_max_ejection_percent_caps_how_much_of_a_route_is_skipped(
    cap: int, ejected: list[str], called: list[str]
) -> None:
    clock = FakeClock(0.0)
    loop = make_loop(clock, consecutive_failures=1, cooldown_s=30)
    for name in ejected:
        open_circuit(loop, name)
    call, calls = scripted({"a": ["from-a"], "b": ["from-b"], "c": ["from-c"]}, clock)
    route = replace(plan(dep("a"), dep("b"), dep("c")), max_ejection_percent=cap)
    ok = await loop.run(route, CTX, call, TRACE)
    assert [c[0] for c in calls] == called
    assert ok.deployment.name == called[0]
    skipped = [a.deployment for a in ok.attempts if a.outcome == "skipped"]
    assert skipped == [n for n in ("a", "b", "c") if n in ejected and n not in called and n < called[0]]


async def test_panic_after_an_error_tries_every_skipped_deployment_soonest_to_recover_first() -> None:
    clock = FakeClock(0.0)
    loop = make_loop(clock, consecutive_failures=1, cooldown_s=30)
    open_circuit(loop, "c")  # c opened first, so it recovers first
    clock.now += 5
    open_circuit(loop, "a")
    assert loop.health.recovers_at("c") < loop.health.recovers_at("a")
    call, calls = scripted({"b": [err(ProviderUnavailable)], "c": [err(ProviderUnavailable)], "a": ["from-a"]},
                           clock)
    ok = await loop.run(plan(dep("a"), dep("b"), dep("c")), CTX, call, TRACE)
    assert [c[0] for c in calls] == ["b", "c", "a"]  # the healthy one first, then both open ones
    assert ok.value == "from-a"
    assert [(a.deployment, a.outcome, a.panic) for a in ok.attempts] == [
        ("a", "skipped", False), ("b", "error", False), ("c", "skipped", False),
        ("c", "error", True), ("a", "ok", True)]


async def test_panic_mode_that_fails_reports_every_attempt() -> None:
    clock = FakeClock(0.0)
    loop = make_loop(clock, consecutive_failures=1, cooldown_s=30)
    open_circuit(loop, "a")
    call, calls = scripted({"b": [err(ProviderUnavailable)], "a": [err(ProviderUnavailable)]}, clock)
    with pytest.raises(AllAttemptsFailed) as info:
        await loop.run(plan(dep("a"), dep("b")), CTX, call, TRACE)
    assert [c[0] for c in calls] == ["b", "a"]
    assert [(a.deployment, a.outcome) for a in info.value.attempts] == [
        ("a", "skipped"), ("b", "error"), ("a", "error")]


async def test_latency_stats_blame_the_provider_only_for_its_own_time() -> None:
    clock = FakeClock(0.0)
    lag = LoopLag(clock=clock)
    health = HealthTracker(BreakerConfig(latency_warmup_samples=0), clock=clock)
    loop = AttemptLoop(health=health, clock=clock, rng=random.Random(0), sleep=clock.sleep, lag=lag)

    async def call(d: Deployment, timeout: float) -> str:
        clock.now += 3.0  # 3 s went by for the caller ...
        lag.record(clock.now, 2.0)  # ... 2 s of them with our loop stalled
        return "ok"

    ok = await loop.run(plan(dep("a")), CTX, call, TRACE)
    assert ok.attempts[0].latency_ms == pytest.approx(3000)  # the caller's view is the wall time
    assert health.latency_ms("a", "p50") == pytest.approx(1000)  # the provider's is its own share
