"""What the router costs the client: CPU and throughput against LiteLLM, import time, decision time.

The simulator runs in a separate process with zero-latency models, so the CPU
time of this process (`time.process_time`, all its threads) is the client's
alone. Every configuration makes the same LiteLLM call to the same two
simulated models; each is warmed up, then timed at concurrency 1 and 50.

    python tests/benchmarks/bench_overhead.py               # ~3 minutes
    python tests/benchmarks/bench_overhead.py --quick       # ~40 seconds
    python tests/benchmarks/bench_overhead.py --only ours --profile "ours + tracing"   # cProfile it

Not collected by pytest (pyproject ignores tests/benchmarks). See README.md here.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import gc
import importlib.metadata
import logging
import os
import platform
import pstats
import random
import re
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
for _var in [v for v in os.environ if v.startswith(("OTEL_", "ROUTER_"))]:
    del os.environ[_var]  # the ambient environment must not switch exporters or stores on

KEY_ENV, KEY = "BENCH_SIM_KEY", "sk-bench-0123456789abcdef"
MODELS = ("bench-a", "bench-b")
MESSAGES = [{"role": "user", "content": "Say something short."}]
#: USD per token, declared for the simulated models as ops would; the router then passes them
#: to LiteLLM, which spares LiteLLM its cost-map misses. The "+ prices" rows pass the same.
PRICE = (1e-7, 3e-7)
PRICE_ARGS = {"input_cost_per_token": PRICE[0], "output_cost_per_token": PRICE[1]}
Call = Callable[[], Awaitable[Any]]


@dataclass
class Result:
    config: str
    group: str  # "a" bare litellm, "a+" with prices, "b" litellm.Router, "ours", "ours+" tracing/quota
    concurrency: int
    requests: int
    wall_s: float
    cpu_s: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.requests * 1e6


# -- environment -------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
            f"litellm {importlib.metadata.version('litellm')}; {datetime.datetime.now().isoformat(' ', 'seconds')}")


class SimProcess:
    """`python -m router.sim` with zero-latency models, in its own process."""

    def __init__(self, tmp: Path) -> None:
        models = tmp / "sim-models.yaml"
        models.write_text("".join(f"- {{name: {m}, ttft_ms: [0, 0], output_tokens: 8}}\n" for m in MODELS))
        self.proc = subprocess.Popen([sys.executable, "-m", "router.sim", "--port", "0", "--models", str(models)],
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"(http://\S+/v1)", line)
        if match is None:
            self.proc.kill()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = match.group(1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def write_config(tmp: Path, url: str) -> Path:
    config, policies = tmp / "config", tmp / "policies"
    config.mkdir()
    policies.mkdir()
    (config / "deployments.yaml").write_text("deployments:\n" + "".join(
        f"  - {{name: {m}, model: openai/{m}, api_base: '{url}', api_key_env: {KEY_ENV}, timeout_s: 10, "
        f"price: {{input_per_mtok: {PRICE[0] * 1e6:g}, output_per_mtok: {PRICE[1] * 1e6:g}}}}}\n" for m in MODELS))
    (policies / "bench.yaml").write_text(
        "default_route: fallback\nroutes:\n"
        f"  fallback: {{strategy: fallback, targets: [{', '.join(MODELS)}]}}\n"
        f"  weighted: {{strategy: weighted, targets: [{', '.join(MODELS)}], "
        f"weights: {{{MODELS[0]}: 1, {MODELS[1]}: 1}}}}\n"
        f"  fastest: {{strategy: fastest, targets: [{', '.join(MODELS)}]}}\n")
    (config / "tenants.yaml").write_text(
        "tenants:\n  default: {requests_per_minute: 10000000, tokens_per_minute: 1000000000, usd_per_day: 1000000}\n"
        "  bench: {requests_per_minute: 10000000, tokens_per_minute: 1000000000, usd_per_day: 1000000}\n")
    return tmp


# -- the configurations -------------------------------------------------------------------------


async def bare_litellm(url: str, **extra: Any) -> Call:
    from router.backend import litellm_module

    litellm = litellm_module()  # the same module switches the router sets
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)  # not "custom pricing ... not in cost map" per model

    async def call() -> Any:
        return await litellm.acompletion(model=f"openai/{MODELS[0]}", messages=MESSAGES, api_base=url, api_key=KEY,
                                         num_retries=0, max_retries=0, timeout=10, **extra)
    return call


async def litellm_router(url: str, prices: bool = False, **options: Any) -> Call:
    from router.backend import litellm_module

    litellm = litellm_module()
    model_list = [{"model_name": "bench", "litellm_params": {
        "model": f"openai/{m}", "api_base": url, "api_key": KEY, **(PRICE_ARGS if prices else {})}} for m in MODELS]
    router = litellm.Router(model_list=model_list, **options)

    async def call() -> Any:
        return await router.acompletion(model="bench", messages=MESSAGES, timeout=10)
    return call


async def ours(stack: AsyncExitStack, tmp: Path, route: str, *, quota_url: str | None = None,
               tracing: bool = False) -> Call:
    from router import RouterSettings, create_default_router

    kwargs: dict[str, Any] = {}
    if tracing:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Discard(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        tp = TracerProvider()
        tp.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 17))  # never drop
        mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
        stack.callback(tp.shutdown)
        stack.callback(mp.shutdown)
        kwargs = {"tracer_provider": tp, "meter_provider": mp}
    settings = RouterSettings(config_dir=tmp / "config", policy_dir=tmp / "policies", reload_interval_s=0,
                              tenants_file="tenants.yaml" if quota_url else "no-tenants.yaml",
                              quota_store_url=quota_url or "memory://", seed=1)
    router = await create_default_router(settings, **kwargs)
    stack.push_async_callback(router.aclose)
    tenant = "bench" if quota_url else None

    async def call() -> Any:
        return await router.chat(MESSAGES, route=route, tenant=tenant)
    return call


def settle_heap() -> None:
    """Collect once and freeze what survives (LiteLLM's large heap), so that later
    collections scan only what the configs allocate, alike for all of them."""
    gc.collect()
    gc.freeze()


async def measure(call: Call, requests: int, concurrency: int) -> tuple[float, float, int]:
    remaining, errors = requests, 0

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            try:
                await call()
            except Exception:
                errors += 1

    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - wall0, time.process_time() - cpu0, errors


async def run_configs(tmp: Path, url: str, args: argparse.Namespace) -> list[Result]:
    """Build every config, warm each up, then time them in interleaved rounds (best round kept).

    Interleaving spreads any background load over all configs alike; the
    best of the rounds is the cost with the least interference.
    """
    os.environ[KEY_ENV] = KEY
    redis_url = f"redis://127.0.0.1:6379/0?prefix=bench-{uuid.uuid4().hex[:8]}:"
    configs: list[tuple[str, str, Callable[[AsyncExitStack], Awaitable[Call]]]] = [
        ("litellm.acompletion", "a", lambda s: bare_litellm(url)),
        ("litellm.acompletion + prices", "a+", lambda s: bare_litellm(url, **PRICE_ARGS)),
        ("litellm.Router default", "b", lambda s: litellm_router(url)),
        ("litellm.Router tuned", "b", lambda s: litellm_router(
            url, prices=True, routing_strategy="simple-shuffle", num_retries=0, disable_cooldowns=True)),
        *_our_configs(tmp, redis_url),
    ]
    if not _redis_up():
        configs.pop()
        print("(redis://127.0.0.1:6379 is not answering: the Redis quota row is skipped)")
    configs = [c for c in configs if not args.only or args.only in c[0]]
    results = []
    async with AsyncExitStack() as stack:
        calls = [(name, group, await make(stack)) for name, group, make in configs]
        settle_heap()
        for concurrency, requests in ((1, args.requests // 3), (50, args.requests)):
            per_round = max(20, requests // args.rounds)
            best: dict[str, Result] = {}
            for _name, _, call in calls:
                await measure(call, max(50, per_round), concurrency)  # warm-up: imports, pools, caches
            for _ in range(args.rounds):
                for name, group, call in calls:
                    wall, cpu, errors = await measure(call, per_round, concurrency)
                    r = Result(name, group, concurrency, per_round, wall, cpu, errors)
                    if name not in best or r.cpu_us < best[name].cpu_us:
                        best[name] = r
            for name, _, _ in calls:
                r = best[name]
                results.append(r)
                print(f"  {name:<24} c={concurrency:<3} {r.rps:8.0f} req/s {r.cpu_us:8.0f} µs CPU/req"
                      + (f"  {r.errors} errors" if r.errors else ""), flush=True)
            if args.profile:
                for name, _, call in calls:
                    if args.profile in name:
                        prof = cProfile.Profile()
                        prof.enable()
                        await measure(call, requests, concurrency)
                        prof.disable()
                        _print_profile(prof, f"{name} c={concurrency}", requests)
    return results


def _our_configs(tmp: Path, redis_url: str) -> list[tuple[str, str, Callable[[AsyncExitStack], Awaitable[Call]]]]:
    return [
        ("ours fallback", "ours", lambda s: ours(s, tmp, "fallback")),
        ("ours weighted", "ours", lambda s: ours(s, tmp, "weighted")),
        ("ours fastest", "ours", lambda s: ours(s, tmp, "fastest")),
        ("ours + tracing", "ours+", lambda s: ours(s, tmp, "fallback", tracing=True)),
        ("ours + quota memory", "ours+", lambda s: ours(s, tmp, "fallback", quota_url="memory://")),
        ("ours + quota redis", "ours+", lambda s: ours(s, tmp, "fallback", quota_url=redis_url)),
    ]


async def our_code_alone(tmp: Path, requests: int) -> dict[tuple[str, int], float]:
    """CPU µs per request of the router's own code: LiteLLM's `acompletion` replaced by a stub.

    The stub returns a canned response at once, so what is left is rules,
    strategy, attempt loop, health, quota, tracing and the backend's mapping
    (token counting included). No HTTP, so it runs thousands of calls a second.
    """
    from types import SimpleNamespace

    from router.backend import litellm_module

    litellm = litellm_module()
    canned = SimpleNamespace(model=MODELS[0], usage=SimpleNamespace(prompt_tokens=10, completion_tokens=8),
                             choices=[SimpleNamespace(message=SimpleNamespace(content="ok"), finish_reason="stop")])

    async def stub(**kwargs: Any) -> Any:
        return canned

    redis_url = f"redis://127.0.0.1:6379/0?prefix=bench-{uuid.uuid4().hex[:8]}:"
    configs = [c for c in _our_configs(tmp, redis_url) if _redis_up() or "redis" not in c[0]]
    out: dict[tuple[str, int], float] = {}
    real, litellm.acompletion = litellm.acompletion, stub
    try:
        async with AsyncExitStack() as stack:
            calls = [(name, await make(stack)) for name, _, make in configs]
            settle_heap()
            for concurrency in (1, 50):
                for name, call in calls:
                    await measure(call, requests // 5, concurrency)
                    runs = [await measure(call, requests, concurrency) for _ in range(2)]
                    out[(name, concurrency)] = min(cpu for _, cpu, _ in runs) / requests * 1e6
    finally:
        litellm.acompletion = real
    return out


def _redis_up() -> bool:
    try:
        done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"], capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return "PONG" in done.stdout


def _print_profile(prof: cProfile.Profile, name: str, requests: int) -> None:
    print(f"\n  cProfile of {name!r}, {requests} requests (tottime per request, top 25; router frames marked *):")
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:25]  # type: ignore[attr-defined]
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in rows:
        mark = "*" if "/router/" in file and "site-packages" not in file else " "
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}:{func}"
        print(f"   {mark} {tottime / requests * 1e6:7.1f} µs self {cumtime / requests * 1e6:8.1f} µs cum "
              f"{calls / requests:6.1f} calls  {where}")
    print()


# -- import time and decision time --------------------------------------------------------------


def import_times(repeat: int) -> dict[str, float]:
    """Seconds: wall time of fresh interpreters (best of `repeat`), and `-X importtime` cumulatives.

    "router after litellm" is the cumulative import time of the `router`
    package in `import litellm; import router`: what router adds to a process
    that has LiteLLM already (it shares pydantic, httpx, opentelemetry, ...).
    """
    out: dict[str, float] = {}
    commands = [("python", "pass"), ("import router", "import router")]
    if repeat > 1:
        commands += [("import litellm", "import litellm"), ("import litellm, router", "import litellm, router")]
    for label, code in commands:
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
            runs.append(time.perf_counter() - t0)
        out[label] = min(runs)
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import litellm; import router"],
                          check=True, cwd=ROOT, capture_output=True, text=True)
    for line in done.stderr.splitlines():  # "import time: self [us] | cumulative | imported package"
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() in ("litellm", "router") and parts[2].startswith(" ") \
                and not parts[2].startswith("  "):
            name = "litellm (importtime)" if parts[2].strip() == "litellm" else "router after litellm (importtime)"
            out[name] = int(parts[1]) / 1e6
    return out


def decision_times(sizes: tuple[int, ...]) -> dict[tuple[str, int], float]:
    """µs per `Router.decide(ctx)`; "fastest, warm" once every deployment has latency samples."""
    from router import Router
    from router.context import RequestContext
    from router.health import AttemptResult
    from router.policy.reload import PolicySource
    from router.policy.snapshot import compile_snapshot
    from router.schema import Deployment, PolicyFile, Price, Route

    rng = random.Random(3)
    out = {}

    def timed(router: Any, ctx: Any) -> float:
        timer = timeit.Timer(lambda: router.decide(ctx))
        number = max(10, int(0.05 / max(timer.timeit(10) / 10, 1e-7)))  # ~50 ms a repeat
        return min(timer.repeat(3, number)) / number * 1e6

    for n in sizes:
        deps = [Deployment(name=f"d{i}", model=f"openai/m{i}", price=Price(input_per_mtok=rng.uniform(0.1, 10)),
                           quality=rng.random(), latency_prior_ms=rng.uniform(100, 2000), context_window=32000)
                for i in range(n)]
        names = tuple(d.name for d in deps)
        routes = {s: Route(strategy=s, targets=names, weights={x: 1.0 + i % 3 for i, x in enumerate(names)}
                           if s == "weighted" else None) for s in ("fallback", "cheapest", "weighted", "fastest")}
        snap = compile_snapshot(deps, "bench", [("bench", PolicyFile(routes=routes, default_route="fallback"))])
        router = Router(PolicySource(snap))
        for strategy in routes:
            out[(strategy, n)] = timed(router, RequestContext(
                operation="chat", tenant="t", route=strategy, prompt_tokens=100, max_tokens=100))
        for d in deps:  # five successes each: p50 now comes from samples, not the YAML prior
            for _ in range(5):
                router.tracker.record(AttemptResult(d.name, ok=True, latency_s=rng.uniform(0.1, 2.0)))
        out[("fastest, warm", n)] = timed(router, RequestContext(
            operation="chat", tenant="t", route="fastest", prompt_tokens=100, max_tokens=100))
    return out


# -- report -------------------------------------------------------------------------------------


def report(results: list[Result], alone: dict[tuple[str, int], float], imports: dict[str, float],
           decisions: dict[tuple[str, int], float]) -> None:
    print("\nThroughput and client CPU, end to end (simulator in another process, zero latency; best of rounds)\n")
    print(f"  {'config':<30} {'conc':>4} {'req/s':>7} {'CPU µs/req':>11} {'CPU vs (a)':>11} {'req/s vs best b':>16}")
    print("  " + "-" * 84)
    for conc in sorted({r.concurrency for r in results}):
        rows = [r for r in results if r.concurrency == conc]
        base = next((r for r in rows if r.group == "a"), None)
        best_b = max((r.rps for r in rows if r.group == "b"), default=None)
        for r in rows:
            cpu_ratio = f"{r.cpu_us / base.cpu_us:.3f}" if base else "-"
            rps_ratio = f"{r.rps / best_b:.2f}x" if best_b else "-"
            print(f"  {r.config:<30} {conc:>4} {r.rps:>7.0f} {r.cpu_us:>11.0f} {cpu_ratio:>11} {rps_ratio:>16}"
                  + (f"   ({r.errors} errors)" if r.errors else ""))
        print()
    if alone:
        base = {r.concurrency: r.cpu_us for r in results if r.group == "a"}
        print("The router's own code: CPU µs per request with LiteLLM's acompletion stubbed out (best of 2)\n")
        print(f"  {'config':<30} {'c=1':>8} {'c=50':>8} {'% of (a) c=50':>14}")
        for name in dict.fromkeys(n for n, _ in alone):
            share = f"{alone[(name, 50)] / base[50]:.1%}" if 50 in base else "-"
            print(f"  {name:<30} {alone[(name, 1)]:>8.1f} {alone[(name, 50)]:>8.1f} {share:>14}")
    print("\nImport time (fresh interpreter; wall is the best of runs)\n")
    for label, seconds in imports.items():
        print(f"  {label:<36} {seconds * 1000:8.0f} ms")
    print("\nRouting decision: Router.decide(ctx), µs per decision (timeit, best of 3)\n")
    sizes = sorted({n for _, n in decisions})
    print(f"  {'strategy':<14}" + "".join(f"{n:>10}" for n in sizes))
    for strategy in dict.fromkeys(s for s, _ in decisions):
        print(f"  {strategy:<14}" + "".join(f"{decisions[(strategy, n)]:>10.1f}" for n in sizes))
    goals(results, alone, imports, decisions)


def goals(results: list[Result], alone: dict[tuple[str, int], float], imports: dict[str, float],
          decisions: dict[tuple[str, int], float]) -> None:
    print("\nGoals\n")

    def show(ok: bool, text: str) -> None:
        print(f"  [{'met ' if ok else 'MISS'}] {text}")

    for conc in sorted({r.concurrency for r in results}):
        rows = [r for r in results if r.concurrency == conc]
        base = next((r for r in rows if r.group == "a"), None)
        same = next((r for r in rows if r.group == "a+"), None)  # the very call our backend makes
        plain = [r for r in rows if r.group == "ours"]
        best_b = max((r for r in rows if r.group == "b"), key=lambda r: r.rps, default=None)
        if base and plain:
            worst = max(plain, key=lambda r: r.cpu_us)
            extra = worst.cpu_us - base.cpu_us
            show(extra <= 0.05 * base.cpu_us, f"c={conc}: ours <= +5% CPU/request over (a), end to end: worst "
                 f"{worst.config!r} {worst.cpu_us:.0f} vs {base.cpu_us:.0f} µs ({extra / base.cpu_us:+.1%})")
            if same:
                print(f"         (against the same call with prices, {same.cpu_us:.0f} µs: "
                      f"{worst.cpu_us / same.cpu_us - 1:+.1%}; end to end, differences under ~10% are noise here)")
            own = [v for (name, c), v in alone.items() if c == conc and not name.startswith("ours +")]
            if own:
                show(max(own) <= 0.05 * base.cpu_us, f"c={conc}: the router's own code (LiteLLM stubbed) "
                     f"<= 5% of (a): worst {max(own):.0f} µs = {max(own) / base.cpu_us:.1%} of {base.cpu_us:.0f} µs")
        if best_b and plain:
            slowest = min(plain, key=lambda r: r.rps)
            ceiling = f"; the same bare call is {same.rps / best_b.rps:.2f}x" if same else ""
            show(slowest.rps >= 1.3 * best_b.rps, f"c={conc}: ours >= 1.3x the best litellm.Router: slowest "
                 f"{slowest.config!r} {slowest.rps:.0f} req/s vs {best_b.config!r} {best_b.rps:.0f} req/s "
                 f"({slowest.rps / best_b.rps:.2f}x{ceiling})")
    big = max(n for _, n in decisions)
    worst_strategy = max((s for s, n in decisions if n == big), key=lambda s: decisions[(s, big)])
    show(decisions[(worst_strategy, big)] < 50,
         f"decision among {big} deployments < 50 µs: worst {worst_strategy} {decisions[(worst_strategy, big)]:.1f} µs")
    added = imports.get("router after litellm (importtime)")
    if added is not None:
        show(added < 0.150, f"import router adds < 150 ms over import litellm: {added * 1000:.0f} ms "
             "(cumulative import of `router` after `import litellm`)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=None, help="requests per config at concurrency 50 "
                        "(a third of it at concurrency 1); default 1500, or 200 with --quick")
    parser.add_argument("--quick", action="store_true", help="fewer requests, rounds and import runs (~40 s)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per config (default 15, 2 quick)")
    parser.add_argument("--only", help="run only the end-to-end configs whose name contains this")
    parser.add_argument("--profile", metavar="CONFIG", help="then cProfile the configs whose name contains this")
    args = parser.parse_args()
    args.requests = args.requests or (200 if args.quick else 1500)
    args.rounds = args.rounds or (2 if args.quick else 15)
    print(f"llm-policy-router overhead benchmark\nmachine: {machine()}\n")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sim = SimProcess(tmp)
        try:
            print(f"simulator: {sim.url} (pid {sim.proc.pid}); per config {args.requests} requests at c=50 and "
                  f"{args.requests // 3} at c=1, in {args.rounds} interleaved rounds\n")
            write_config(tmp, sim.url)
            results = asyncio.run(run_configs(tmp, sim.url, args))
        finally:
            sim.stop()
        phases = {"end to end": time.perf_counter() - started}
        alone = asyncio.run(our_code_alone(tmp, 500 if args.quick else 3000))
        phases["router code alone"] = time.perf_counter() - started - sum(phases.values())
    imports = import_times(1 if args.quick else 2)
    phases["imports"] = time.perf_counter() - started - sum(phases.values())
    decisions = decision_times((10, 100, 1000))
    phases["decisions"] = time.perf_counter() - started - sum(phases.values())
    report(results, alone, imports, decisions)
    split = ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
    print(f"\ntotal {time.perf_counter() - started:.0f} s ({split})")


if __name__ == "__main__":
    main()
