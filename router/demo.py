"""`llm-router demo`: a real router over a simulated fleet, driven by a production trace.

The simulator (router/sim) serves five models shaped like
`config/demo-deployments.yaml`: they differ in price, quality, latency and
reliability. The router loads `policies/demo.yaml`, those deployments and
`config/demo-tenants.yaml`, and for `duration_s` seconds receives requests
whose arrival gaps and token sizes come from `router/data/trace-sample.csv`
(Azure LLM inference trace 2023, CC-BY 4.0, see TRACE-ATTRIBUTION.md). Half way
through, `sim-flaky` degrades: its circuit opens and its traffic moves away.

>>> import asyncio
>>> asyncio.run(run_demo(DemoOptions(duration_s=3), Output(plain=True)))  # doctest: +SKIP
0
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from router import backend
from router.cli_render import Output
from router.client import Router
from router.context import RequestContext
from router.demo_report import DemoStats, print_demo_summary
from router.errors import ConfigError, ConfigIssue, QuotaExceeded, RouterError, TenantNotAllowed
from router.factory import StateListener, create_default_router
from router.health import BreakerConfig, CircuitState
from router.models import LLMMessage
from router.policy.reload import ConfigFiles
from router.settings import RouterSettings
from router.sim import Fault, SimModel, SimServer
from router.tokens import count_tokens

__all__ = [
    "DemoOptions", "DemoRequest", "TraceRow", "build_demo_router", "demo_files", "demo_models",
    "load_trace", "plan_workload", "run_demo",
]

TRACE_PATH = Path(__file__).with_name("data") / "trace-sample.csv"
_REPO_ROOT = Path(__file__).resolve().parent.parent
#: The trace's replies run to 1,899 tokens; the demo caps the output budget so
#: no single simulated reply outlasts the routes' two-second attempt timeout.
MAX_OUTPUT_TOKENS = 256
#: Longest pause of the trace kept, in trace seconds, before scaling to `--rate`.
MAX_TRACE_GAP_S = 2.0
#: Requests still running this long after the last arrival are cancelled.
GRACE_S = 3.0
TENANT_MIX = (("acme", 0.5), ("globex", 0.3), ("initech", 0.2))
DEGRADED = {"error_rates": {Fault.SERVER_ERROR: 0.6, Fault.HANG: 0.1}, "hang_s": 2.5}
# Three-letter words: each is one token to tiktoken and four characters with its
# space, which is also what the simulator's and the router's estimates count.
_WORDS = ("the", "cat", "sat", "dog", "ran", "big", "red", "sun", "day", "way", "new", "old", "one", "two")
_FILLER = "".join(" " + _WORDS[(i * 7 + i // 16) % len(_WORDS)] for i in range(8192))

Kind = Literal["chat", "stream", "embed"]


def demo_models() -> list[SimModel]:
    """Simulated models matching config/demo-deployments.yaml (windows, rough latency)."""
    long = (400.0, 50.0)  # longer than any budget: `max_tokens` sets the reply length
    return [
        SimModel(name="sim-fast", ttft_ms=(110, 25), tokens_per_s=600, output_tokens=long,
                 context_window=16000),
        SimModel(name="sim-cheap", ttft_ms=(320, 80), tokens_per_s=250, output_tokens=long,
                 context_window=8000),
        SimModel(name="sim-smart", ttft_ms=(750, 150), tokens_per_s=120, output_tokens=long,
                 context_window=128000),
        SimModel(name="sim-flaky", ttft_ms=(200, 50), tokens_per_s=400, output_tokens=long,
                 context_window=32000, retry_after_s=0.5,
                 error_rates={Fault.RATE_LIMIT: 0.02, Fault.SERVER_ERROR: 0.03}),
        SimModel(name="sim-embed", ttft_ms=(30, 10), context_window=8191, embedding_dim=64),
    ]


def demo_files(settings: RouterSettings | None = None) -> ConfigFiles:
    """The demo's files: under the settings' directories, else beside this package."""
    settings = settings or RouterSettings()
    for config, policies in ((settings.config_dir, settings.policy_dir),
                             (_REPO_ROOT / "config", _REPO_ROOT / "policies")):
        deployments, policy = config / "demo-deployments.yaml", policies / "demo.yaml"
        if deployments.exists() and policy.exists():
            tenants = config / "demo-tenants.yaml"
            return ConfigFiles(deployments=deployments, policies=(policy,),
                               tenants=tenants if tenants.exists() else None)
    raise ConfigError([ConfigIssue(str(settings.config_dir / "demo-deployments.yaml"), "",
                                   "demo files not found (run from the project's root)")])


async def build_demo_router(
    files: ConfigFiles,
    *,
    seed: int | None = None,
    on_circuit_change: StateListener | None = None,
) -> Router:
    """`create_default_router` over the demo's files (so `OTEL_*` export works here too).

    The breaker judges failure rates over 5 s rather than 30 s, so a 20 s demo shows a
    degraded deployment's circuit opening within seconds of the change.
    """
    settings = RouterSettings(reload_interval_s=0, seed=seed, breaker=BreakerConfig(window_s=5))
    return await create_default_router(settings, files=files, on_circuit_change=on_circuit_change)


@contextlib.asynccontextmanager
async def simulator(seed: int = 7) -> AsyncIterator[SimServer]:
    """Start the demo models in-process and point SIM_API_BASE / SIM_API_KEY at them."""
    async with SimServer(demo_models(), seed=seed) as sim:
        os.environ["SIM_API_BASE"] = sim.base_url
        os.environ.setdefault("SIM_API_KEY", "sk-sim-demo-key")
        yield sim


# -- the workload --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One request of the trace: seconds since its first request, tokens in and out."""

    offset_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class DemoRequest:
    """One request the demo will send, `at_s` seconds after it starts."""

    index: int
    at_s: float
    kind: Kind
    tenant: str
    tags: tuple[str, ...]
    prompt_tokens: int
    max_tokens: int

    def messages(self) -> list[LLMMessage]:
        head = f"Request {self.index} from {self.tenant}:"
        body = _FILLER[: 4 * max(0, self.prompt_tokens - 12)]
        return [LLMMessage(role="user", content=head + body)]

    def texts(self) -> list[str]:
        size = 4 * min(self.prompt_tokens, 256)
        return [_FILLER[i * 40: i * 40 + size] for i in range(1 + self.index % 3)]


def load_trace(path: Path = TRACE_PATH) -> list[TraceRow]:
    """Read the trace sample (lines starting with `#` are comments)."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(line for line in f if not line.startswith("#"))
        raw = [(datetime.fromisoformat(r["TIMESTAMP"][:26]), int(r["ContextTokens"]),
                int(r["GeneratedTokens"])) for r in reader]
    t0 = raw[0][0]
    return [TraceRow((t - t0).total_seconds(), p, g) for t, p, g in raw]


def plan_workload(rows: list[TraceRow], *, duration_s: float, rate: float,
                  rng: random.Random) -> list[DemoRequest]:
    """`rate * duration_s` requests: a stretch of the trace, its gaps scaled into `duration_s`.

    The stretch starts at a random row (wrapping around) and keeps the trace's
    bursts; gaps longer than `MAX_TRACE_GAP_S` are cut to it first (the trace
    has silences of minutes). Tenants, tags and the kind of call are drawn
    from `rng`; token sizes come from the trace.
    """
    count, start = max(1, round(rate * duration_s)), rng.randrange(len(rows))
    picked = [rows[(start + k) % len(rows)] for k in range(count + 1)]
    # wrapping around from the last row to the first gives a negative gap: none
    gaps = [min(MAX_TRACE_GAP_S, max(0.0, b.offset_s - a.offset_s)) for a, b in itertools.pairwise(picked)]
    scale = duration_s / sum(gaps) if sum(gaps) > 0 else 0.0
    tenants, weights = [t for t, _ in TENANT_MIX], [w for _, w in TENANT_MIX]
    out, at = [], 0.0
    for k, row in enumerate(picked[:-1]):
        roll = rng.random()
        kind: Kind = "embed" if roll < 0.08 else "stream" if roll < 0.2 else "chat"
        tags = ("interactive",) if kind != "embed" and rng.random() < 0.3 else ()
        out.append(DemoRequest(k, at, kind, rng.choices(tenants, weights)[0], tags,
                               max(16, row.prompt_tokens), min(MAX_OUTPUT_TOKENS, row.output_tokens)))
        at += gaps[k] * scale
    return out


# -- running it ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration_s: float = 20.0
    rate: float = 8.0
    seed: int = 7
    concurrency: int = 32


async def send(router: Router, req: DemoRequest, stats: DemoStats) -> None:
    """Send one request and record what happened."""
    try:
        if req.kind == "embed":
            e = await router.embed(req.texts(), tenant=req.tenant, tags=req.tags)
            stats.served(req.tenant, e.route, e.deployment, e.attempts, e.usage.input_tokens,
                         e.cost_usd, None)
        elif req.kind == "stream":
            msgs = req.messages()
            route = router.decide(RequestContext(
                operation="chat", tenant=req.tenant, tags=frozenset(req.tags), stream=True,
                prompt_tokens=count_tokens([m.as_dict() for m in msgs]),
                max_tokens=req.max_tokens)).route.name
            async for chunk in router.stream(msgs, tenant=req.tenant, tags=req.tags,
                                             max_tokens=req.max_tokens):
                if chunk.done and chunk.usage is not None:
                    stats.served(req.tenant, route, chunk.deployment, chunk.attempts,
                                 chunk.usage.total_tokens, chunk.cost_usd or 0.0, chunk.latency_ms)
        else:
            r = await router.chat(req.messages(), tenant=req.tenant, tags=req.tags,
                                  max_tokens=req.max_tokens)
            stats.served(req.tenant, r.route, r.deployment, r.attempts, r.usage.total_tokens,
                         r.cost_usd, None)
    except (QuotaExceeded, TenantNotAllowed) as exc:
        stats.rejected(req.tenant, exc.limit if isinstance(exc, QuotaExceeded) else exc.reason)
    except RouterError as exc:
        stats.failed(req.tenant, type(exc).__name__, getattr(exc, "attempts", ()))
    except asyncio.CancelledError:
        stats.cancelled(req.tenant)
        raise


async def run_demo(opts: DemoOptions, out: Output, *, settings: RouterSettings | None = None) -> int:
    """Run the demo end to end and print its summary; returns the exit status."""
    files = demo_files(settings)
    rows = load_trace()
    plan = plan_workload(rows, duration_s=opts.duration_s, rate=opts.rate, rng=random.Random(opts.seed))
    out.line(f"llm-router demo: {len(plan)} requests over {opts.duration_s:g}s at ~{opts.rate:g}/s "
             f"(seed {opts.seed}, up to {opts.concurrency} at once)", style="bold")
    out.line(f"  policy {files.policies[0]}, deployments {files.deployments}, "
             f"tenants {files.tenants or '(none)'}")
    out.line(f"  workload: {TRACE_PATH.name}, {len(rows)} requests of the Azure LLM inference trace "
             "2023 (CC-BY 4.0, Patel et al., ISCA 2024);")
    out.line(f"  arrival gaps scaled to {opts.rate:g}/s, prompts of the trace's ContextTokens, "
             f"max_tokens = GeneratedTokens capped at {MAX_OUTPUT_TOKENS}")
    out.line("  loading LiteLLM ...")
    await backend.warm_up()  # seconds, paid once, before the clock starts
    async with simulator(opts.seed) as sim:
        stats = DemoStats(clock=time.monotonic)
        router = await build_demo_router(files, seed=opts.seed, on_circuit_change=_announce(stats, out))
        async with router:
            out.line(f"  simulator at {sim.base_url}: {', '.join(sim.models)}")
            out.line("")
            await _drive(router, sim, plan, opts, stats, out)
            for name in sim.models:
                stats.sim_faults[name] = sum(sim.stats(name).faults.values())
            stats.final_health = {h.name: h.state.value for h in router.health()}
    print_demo_summary(stats, out)
    return 0


def _announce(stats: DemoStats, out: Output) -> Callable[[str, CircuitState, CircuitState, str], None]:
    def on_change(name: str, old: CircuitState, new: CircuitState, reason: str) -> None:
        stats.circuit_changed(name, old.value, new.value, reason)
        style = "red" if new is CircuitState.OPEN else "green" if new is CircuitState.CLOSED else "yellow"
        out.event(f"[{stats.elapsed():5.1f}s] circuit {name}: {old.value} {out.arrow} {new.value} "
                  f"({reason})", style=style)
    return on_change


async def _drive(router: Router, sim: SimServer, plan: list[DemoRequest], opts: DemoOptions,
                 stats: DemoStats, out: Output) -> None:
    sem = asyncio.Semaphore(opts.concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def one(req: DemoRequest) -> None:
        async with sem:
            await send(router, req, stats)

    def degrade() -> None:
        sim.update("sim-flaky", **DEGRADED)
        out.event(f"[{stats.elapsed():5.1f}s] sim-flaky degrades: 60% server errors, 10% hangs "
                  f"of {DEGRADED['hang_s']}s", style="bold red")

    stats.start(len(plan))
    out.live_start()
    ticker = asyncio.create_task(_progress(router, stats, out, opts.duration_s))
    timer = asyncio.get_running_loop().call_later(opts.duration_s / 2, degrade)
    try:
        for req in plan:
            await asyncio.sleep(max(0.0, req.at_s - stats.elapsed()))
            task = asyncio.create_task(one(req))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(set(tasks), timeout=max(0.0, opts.duration_s + GRACE_S - stats.elapsed()))
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        timer.cancel()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        out.live_stop()


async def _progress(router: Router, stats: DemoStats, out: Output, duration_s: float) -> None:
    every = 0.25 if out.tty else max(2.0, duration_s / 4)
    while True:
        await asyncio.sleep(every)
        opened = [h.name for h in router.health() if h.state is not CircuitState.CLOSED]
        out.live_update(stats.progress_line(duration_s, opened))


# -- what happened -------------------------------------------------------------------------
