"""Active probes close a recovered deployment's circuit without user traffic."""

from __future__ import annotations

from router.errors import ProviderUnavailable
from router.health import AttemptResult, BreakerConfig, CircuitState, HealthTracker
from router.policy.reload import PolicySource
from router.policy.snapshot import compile_snapshot
from router.probes import Prober
from router.schema import Deployment, PolicyFile, Probe, Route
from tests.conftest import FakeClock


def setup(fail: list[bool]) -> tuple[Prober, HealthTracker, FakeClock, list[str]]:
    clock = FakeClock(100.0)
    deployments = [Deployment(name="p", model="openai/p", probe=Probe(interval_s=2)),
                   Deployment(name="q", model="openai/q")]
    snap = compile_snapshot(deployments, "d.yaml", [("p.yaml", PolicyFile(routes={"r": Route(targets=("p", "q"))}))])
    health = HealthTracker(BreakerConfig(consecutive_failures=1, cooldown_s=5), clock=clock)
    calls: list[str] = []

    async def call(d: Deployment, probe: Probe) -> None:
        calls.append(d.name)
        if fail.pop(0):
            raise ProviderUnavailable("down", deployment=d.name)

    prober = Prober(PolicySource(snap), health, call=call, clock=clock)
    for name in ("p", "q"):
        health.begin(name)
        health.record(AttemptResult(deployment=name, ok=False, latency_s=0.1, error_kind="unavailable"))
    return prober, health, clock, calls


async def test_probe_waits_for_the_cooldown_then_closes_the_circuit() -> None:
    prober, health, clock, calls = setup([False])
    assert health.state("p") == CircuitState.OPEN
    assert await prober.run_once() == []  # cooling down: no trial admitted yet
    clock.now += 5.1
    assert await prober.run_once() == ["p"]
    assert health.state("p") == CircuitState.CLOSED and health.available("p")
    assert calls == ["p"]  # q has no probe configured: it waits for user traffic
    assert health.state("q") != CircuitState.CLOSED


async def test_failed_probe_reopens_and_probes_respect_the_interval() -> None:
    prober, health, clock, calls = setup([True, False])
    clock.now += 5.1
    assert await prober.run_once() == ["p"]
    assert health.state("p") == CircuitState.OPEN
    clock.now += 1.0
    assert await prober.run_once() == []  # within interval_s
    clock.now += 20.0  # past the doubled cooldown
    assert await prober.run_once() == ["p"]
    assert health.state("p") == CircuitState.CLOSED
    assert calls == ["p", "p"]
