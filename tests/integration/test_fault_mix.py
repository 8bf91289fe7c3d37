"""The issue's fault mix: two bad deployments in front of a good one, at concurrency 50, half streamed.

bad-a and bad-b each answer 15% 500, 15% 503, 10% hang (longer than the attempt
timeout), 10% 429 with Retry-After: 1, 5% malformed body and 5% a stream cut
after the first chunk; `good` never fails. The route falls back in that order
with `retry.attempts: 2`, `attempt_timeout_s: 1`, `deadline_s: 8` and
`resume_streams: true` (a stream cut after its first chunk cannot be retried,
only continued). The goal: at least 99.9% of requests answered and none more
than 0.5 s past its deadline, also while other processes starve the CPU.

`run_mix` is importable so the figures can be measured outside pytest (e.g.
with CPU burners running); the test runs it once with `N` requests.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from router import Router, RouterError, RouterSettings, create_default_router
from router.sim import Fault, SimModel, SimServer

#: Requests in the test: the issue's 2,000 run in ~20 s on an idle 2-core machine, ~50 s with two CPU burners.
N = 2000
CONCURRENCY = 50
DEADLINE_S = 8.0

BAD_RATES = {
    Fault.SERVER_ERROR: 0.15,
    Fault.UNAVAILABLE: 0.15,
    Fault.HANG: 0.10,
    Fault.RATE_LIMIT: 0.10,
    Fault.MALFORMED: 0.05,
    Fault.CUT_AFTER_FIRST_CHUNK: 0.05,
}


def mix_models() -> list[SimModel]:
    """bad-a, bad-b (the mix) and good (no faults); small replies so the run measures routing."""
    bad = {"ttft_ms": (5, 2), "output_tokens": 8, "hang_s": 3.0, "retry_after_s": 1.0, "error_rates": BAD_RATES}
    return [SimModel(name="bad-a", **bad), SimModel(name="bad-b", **bad),
            SimModel(name="good", ttft_ms=(5, 2), output_tokens=8)]


POLICY = f"""\
routes:
  default:
    strategy: fallback
    targets: [bad-a, bad-b, good]
    retry: {{attempts: 2}}
    attempt_timeout_s: 1
    deadline_s: {DEADLINE_S:g}
    resume_streams: true
"""


def deployments(base_url: str) -> str:
    return "deployments:\n" + "".join(
        f"  - {{name: {n}, model: openai/{n}, api_base: '{base_url}', api_key_env: FAULT_MIX_KEY,"
        " price: {input_per_mtok: 0.1, output_per_mtok: 0.3}, timeout_s: 1}\n"
        for n in ("bad-a", "bad-b", "good"))


@dataclass
class MixResult:
    """What one run of the mix did: outcomes, lateness past the deadline, attempt kinds."""

    n: int
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    #: Seconds each request ended past its deadline (only those that did).
    late_s: list[float] = field(default_factory=list)
    max_elapsed_s: float = 0.0
    attempt_kinds: Counter[str] = field(default_factory=Counter)
    #: "deployment:kind" of every attempt, for diagnosis.
    by_deployment: Counter[str] = field(default_factory=Counter)
    resumed: int = 0
    #: A few failure messages per exception type, for diagnosis.
    samples: dict[str, list[str]] = field(default_factory=dict)
    wall_s: float = 0.0
    #: Faults the simulator injected into bad-a and bad-b, by kind (what the router had to survive).
    injected: Counter[str] = field(default_factory=Counter)

    @property
    def success_rate(self) -> float:
        return self.ok / self.n

    @property
    def max_late_s(self) -> float:
        return max(self.late_s, default=0.0)


async def build_router(sim: SimServer, workdir: Path) -> Router:
    os.environ["FAULT_MIX_KEY"] = "sk-fault-mix-0123456789"
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "policies").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "deployments.yaml").write_text(deployments(sim.base_url))
    (workdir / "policies" / "main.yaml").write_text(textwrap.dedent(POLICY))
    settings = RouterSettings(config_dir=workdir / "config", policy_dir=workdir / "policies",
                              reload_interval_s=0, seed=1)
    return await create_default_router(settings)


async def one_request(router: Router, i: int, result: MixResult) -> None:
    started = time.monotonic()
    try:
        if i % 2:
            last = None
            async for chunk in router.stream(f"story {i}"):
                last = chunk
            assert last is not None and last.done and last.message is not None and last.message.content
            attempts = last.attempts
        else:
            r = await router.complete(f"question {i}")
            assert r.text
            attempts = r.attempts
    except RouterError as exc:
        result.failures[type(exc).__name__] += 1
        seen = result.samples.setdefault(type(exc).__name__, [])
        if len(seen) < 3:
            seen.append(f"{time.monotonic() - started:.2f}s: {str(exc)[:600]}")
        attempts = getattr(exc, "attempts", ())
        for a in attempts:
            result.attempt_kinds[f"failed-request:{a.error_type}"] += 1
    else:
        result.ok += 1
        # A stream continued elsewhere: an attempt that had opened fine was not the last one.
        result.resumed += any(a.outcome == "ok" for a in attempts[:-1])
    elapsed = time.monotonic() - started
    result.max_elapsed_s = max(result.max_elapsed_s, elapsed)
    if elapsed > DEADLINE_S:
        result.late_s.append(elapsed - DEADLINE_S)
    for a in attempts:
        result.attempt_kinds[a.error_type or a.outcome] += 1
        result.by_deployment[f"{a.deployment}:{a.error_type or a.outcome}"] += 1


async def run_mix(n: int, *, seed: int, workdir: Path, concurrency: int = CONCURRENCY) -> MixResult:
    """Send `n` requests (odd ones streamed) at `concurrency` through a fresh router and simulator."""
    result = MixResult(n=n)
    async with SimServer(mix_models(), seed=seed) as sim:
        router = await build_router(sim, workdir)
        try:
            todo = iter(range(n))

            async def worker() -> None:
                for i in todo:
                    await one_request(router, i, result)

            t0 = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            result.wall_s = time.monotonic() - t0
        finally:
            await router.aclose()
        for name in ("bad-a", "bad-b"):
            result.injected.update({fault.value: n for fault, n in sim.stats(name).faults.items()})
    return result


@pytest.mark.timeout(240)
async def test_fault_mix_is_answered_within_the_deadline(tmp_path: Path) -> None:
    result = await run_mix(N, seed=2026, workdir=tmp_path)
    summary = (f"ok {result.ok}/{result.n}, failures {dict(result.failures)}, max late {result.max_late_s:.3f}s, "
               f"resumed streams {result.resumed}, attempts {dict(result.attempt_kinds)}, wall {result.wall_s:.1f}s")
    assert result.success_rate >= 0.999, summary
    assert result.max_late_s <= 0.5, summary
    # The mix really happened: the simulator injected every kind of fault, and the router met each
    # kind it can tell apart. (A hang the router is still waiting on when its own loop was starved
    # gets the time back, so under load a hang may be answered late rather than time out: the
    # router not blaming a provider for its own lag. Hence no "timeout" requirement here.)
    for fault in BAD_RATES:
        assert result.injected[fault.value] > 0, (fault, dict(result.injected))
    for kind in ("unavailable", "rate_limited", "malformed_response", "stream_interrupted"):
        assert result.attempt_kinds[kind] > 0, summary
