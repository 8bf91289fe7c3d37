"""How a routing decision scales: 10 to 10,000 deployments, every strategy, against litellm.Router.

    python tests/benchmarks/bench_decisions.py            # ~4 minutes
    python tests/benchmarks/bench_decisions.py --quick    # ~30 seconds, litellm.Router up to 1,000 only

For each route size, a snapshot holds one route per strategy over the same
deployments, and a health tracker that has seen three latency samples of
every deployment, with one in ten busy (1-3 requests in flight). Measured:

- `strategy.order(ctx, health, rng)`: the strategy's own decision;
- `Router.decide(ctx)`: rule matching, route lookup, the strategy, and
  the plan (what a request pays before its first attempt);
- `fastest, churn`: `fastest` when the head's latency changes before every
  request (one new sample recorded for it; the recording's own cost is
  measured apart and subtracted), so the ranking moves on every call;
- `litellm.Router.select(...)` (the deployment pick behind
  `async_get_available_deployment`) with each routing strategy, over the
  same number of deployments in one model group, with no traffic history.

Each figure is the best of several timed repeats (µs per decision); the
machine may be busy, and the least disturbed repeat is the closest to the cost.
Results go to the "decisions" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from results import machine_lines, table, write_section  # noqa: E402

OURS = ("fallback", "cheapest", "best_quality", "weighted", "fastest", "least_busy", "lowest_latency_p2c", "slo")
THEIRS = ("simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2", "cost-based-routing")
#: The issue's targets, µs per decision by `strategy.order`.
TARGETS = {1000: 50.0, 10_000: 300.0}
P2C_TARGET = (10_000, 10.0)


def best_us(fn: Callable[[], object], *, budget_s: float, repeats: int) -> float:
    """µs per call: the best of `repeats` timed loops of about `budget_s / repeats` each."""
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(budget_s / repeats / once))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best * 1e6


def ours(sizes: list[int], budget_s: float) -> dict[tuple[str, str, int], float]:
    out: dict[tuple[str, str, int], float] = {}
    for n in sizes:
        out.update(ours_at(n, budget_s))
        print(f"  ours, {n} deployments: " + ", ".join(
            f"{s} {out[('order', s, n)]:.1f}" for s in (*OURS, "fastest, churn")) + " µs", flush=True)
    return out


def ours_at(n: int, budget_s: float) -> dict[tuple[str, str, int], float]:
    from router import Router
    from router.context import RequestContext
    from router.health import AttemptResult, BreakerConfig, HealthTracker
    from router.policy.reload import PolicySource
    from router.policy.snapshot import compile_snapshot
    from router.schema import Deployment, PolicyFile, Price, Route, Slo
    from router.strategies import Strategy

    rng = random.Random(n)
    deps = [Deployment(name=f"d{i}", model=f"openai/m{i}", price=Price(input_per_mtok=rng.uniform(0.1, 10)),
                       quality=rng.random(), latency_prior_ms=rng.uniform(100, 2000), context_window=32000)
            for i in range(n)]
    names = tuple(d.name for d in deps)
    routes = {s: Route(strategy=s, targets=names) for s in OURS if s not in ("weighted", "slo")}
    weights = {x: 1.0 + i % 3 for i, x in enumerate(names)}
    routes["weighted"] = Route(strategy="weighted", targets=names, weights=weights)
    routes["slo"] = Route(strategy="cheapest", targets=names, slo=Slo(latency_ms=800, stat="p95"))
    snap = compile_snapshot(deps, "bench", [("bench", PolicyFile(routes=routes, default_route="fallback"))])
    health = HealthTracker(BreakerConfig(latency_warmup_samples=0))
    for d in deps:
        for _ in range(3):
            health.begin(d.name)
            health.record(AttemptResult(d.name, ok=True, latency_s=rng.uniform(0.1, 2.0)))
        if rng.random() < 0.1:
            for _ in range(rng.randint(1, 3)):
                health.begin(d.name)
    router = Router(PolicySource(snap), health=health, rng=random.Random(1))
    pick = random.Random(2)
    out: dict[tuple[str, str, int], float] = {}

    def timed(s: str) -> None:
        ctx = RequestContext(operation="chat", tenant="t", route=s, prompt_tokens=100, max_tokens=100)
        strategy = snap.routes[s].strategy
        out[("order", s, n)] = best_us(lambda: strategy.order(ctx, health, pick), budget_s=budget_s, repeats=5)
        out[("decide", s, n)] = best_us(lambda: router.decide(ctx), budget_s=budget_s, repeats=5)

    for s in OURS:
        timed(s)
    ctx = RequestContext(operation="chat", tenant="t", route="fastest")
    fastest: Strategy = snap.routes["fastest"].strategy

    def churn() -> None:
        head = fastest.order(ctx, health, pick)[0].name
        health.begin(head)
        health.record(AttemptResult(head, ok=True, latency_s=0.1 + pick.random()))

    def record_only() -> None:
        health.begin("d0")
        health.record(AttemptResult("d0", ok=True, latency_s=0.1 + pick.random()))

    out[("order", "fastest, churn", n)] = max(
        0.0, best_us(churn, budget_s=budget_s, repeats=5) - best_us(record_only, budget_s=budget_s, repeats=5))
    return out


def theirs(sizes: list[int], budget_s: float) -> dict[tuple[str, int], float]:
    from router.backend import litellm_module

    litellm: Any = litellm_module()  # the same switches the router sets
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)  # not one "custom pricing" warning per deployment
    out: dict[tuple[str, int], float] = {}
    for n in sizes:
        model_list = [{"model_name": "bench", "model_info": {"id": f"id{i}"}, "litellm_params": {
            "model": f"openai/m{i}", "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-bench",
            "input_cost_per_token": 1e-7 * (1 + i % 5), "output_cost_per_token": 3e-7}} for i in range(n)]
        for strategy in THEIRS:
            router = litellm.Router(model_list=model_list, routing_strategy=strategy, num_retries=0,
                                    disable_cooldowns=True)
            out[(strategy, n)] = asyncio.run(litellm_pick_us(router, budget_s))
        print(f"  litellm.Router, {n} deployments: " + ", ".join(
            f"{s} {out[(s, n)]:.0f}" for s in THEIRS) + " µs", flush=True)
    return out


async def litellm_pick_us(router: Any, budget_s: float) -> float:
    """Best µs of `select` (or the deprecated `async_get_available_deployment`), at least 3 calls."""
    messages = [{"role": "user", "content": "Say something short."}]

    async def pick() -> Any:
        if hasattr(router, "select"):
            return await router.select("bench", {}, messages=messages)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return await router.async_get_available_deployment(model="bench", request_kwargs={}, messages=messages)

    assert await pick() is not None
    t0, calls, best = time.perf_counter(), 0, float("inf")
    while calls < 3 or (time.perf_counter() - t0 < budget_s and calls < 200):
        t1 = time.perf_counter()
        await pick()
        best = min(best, time.perf_counter() - t1)
        calls += 1
    return best * 1e6


def fmt(us: float | None) -> str:
    if us is None:
        return "-"
    if us >= 1000:
        return f"{us / 1000:,.1f} ms"
    return f"{us:.1f}" if us < 100 else f"{us:.0f}"


def report(sizes: list[int], mine: dict[tuple[str, str, int], float], lite: dict[tuple[str, int], float],
           about: list[str], seconds: float) -> str:
    head = ["strategy", *(f"{n:,}" for n in sizes)]
    right = range(1, len(sizes) + 1)
    order_rows = [[s, *(fmt(mine.get(("order", s, n))) for n in sizes)] for s in (*OURS, "fastest, churn")]
    decide_rows = [[s, *(fmt(mine.get(("decide", s, n))) for n in sizes)] for s in OURS]
    lite_rows = [[s, *(fmt(lite.get((s, n))) for n in sizes)] for s in THEIRS]
    goals = []
    for n, limit in TARGETS.items():
        if n in sizes:
            worst = max(OURS, key=lambda s: mine[("order", s, n)])
            us = mine[("order", worst, n)]
            goals.append(f"- [{'met' if us < limit else 'MISSED'}] every strategy decides among {n:,} in "
                         f"< {limit:.0f} µs: slowest {worst} {us:.1f} µs")
    n, limit = P2C_TARGET
    if n in sizes:
        us = mine[("order", "lowest_latency_p2c", n)]
        goals.append(f"- [{'met' if us < limit else 'MISSED'}] lowest_latency_p2c among {n:,} in "
                     f"< {limit:.0f} µs: {us:.1f} µs")
    return "\n\n".join([
        "## Routing decision, by route size",
        "\n".join(about),
        f"`python tests/benchmarks/bench_decisions.py` ({seconds:.0f} s). µs per decision, best of 5 repeats; "
        "every deployment has latency samples, one in ten is busy.",
        "### Our strategies: `strategy.order(ctx, health, rng)`",
        table(head, order_rows, right),
        "### Our `Router.decide(ctx)` (rules, route, strategy, plan)",
        table(head, decide_rows, right),
        "### `litellm.Router` deployment selection (`select`, one model group, no traffic history)",
        table(head, lite_rows, right),
        "### Targets",
        "\n".join(goals),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter timings; litellm.Router up to 1,000")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    sizes = [10, 100, 1000, 10_000]
    started = time.perf_counter()
    about = machine_lines()
    mine = ours(sizes, budget_s=0.05 if args.quick else 0.25)
    lite = theirs(sizes[:3] if args.quick else sizes, budget_s=0.2 if args.quick else 1.0)
    text = report(sizes, mine, lite, about, time.perf_counter() - started)
    print("\n" + text)
    if not args.no_write:
        write_section("decisions", text)


if __name__ == "__main__":
    main()
