"""The configurations bench_overhead.py compares: one table, one builder each.

A configuration is built inside its own worker process (bench_worker.py)
and turns into a `Client`: `call()` makes one request, `flush()` finishes
whatever the request left to background work (span export), so a measured
block pays for all of its own work and none of the previous block's.

To add a configuration (a Redis cache hit, say), write a builder
`async def build(setup: Setup, stack: AsyncExitStack) -> Client` and add a
`Config` row to `CONFIGS`; `default=False` keeps it out of a run unless
named with `--configs`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY_ENV, KEY = "BENCH_SIM_KEY", "sk-bench-0123456789abcdef"
MODELS = ("bench-a", "bench-b")
MESSAGES = [{"role": "user", "content": "Say something short."}]
#: USD per token, declared for the simulated models as ops would; the router then passes them to
#: LiteLLM, which spares LiteLLM its cost-map misses. The "+ prices" configurations pass the same.
PRICE = (1e-7, 3e-7)
PRICE_ARGS = {"input_cost_per_token": PRICE[0], "output_cost_per_token": PRICE[1]}


@dataclass(frozen=True)
class Setup:
    """What every builder may use: the simulator's URL, a scratch folder with our YAML, a Redis URL."""

    sim_url: str
    folder: Path
    redis_url: str


@dataclass
class Client:
    call: Callable[[], Awaitable[Any]]
    flush: Callable[[], None] = lambda: None


Builder = Callable[[Setup, AsyncExitStack], Awaitable[Client]]


@dataclass(frozen=True)
class Config:
    name: str
    #: "bare" is the reference for ratios, "litellm.Router" the other one; "ours-only" rows are not end to end.
    group: str
    build: Builder
    what: str
    default: bool = True
    needs: frozenset[str] = field(default_factory=frozenset)  # "redis"
    #: Callgrind blocks are this many times longer: a cheap request needs more of them for a steady count.
    block_scale: int = 1
    #: Another configuration this one is also timed against in the same process, block for block
    #: (bench_worker.py --pair): what this one adds to it, free of the noise between processes.
    paired_with: str | None = None


def write_yaml(folder: Path, sim_url: str) -> None:
    """Our deployments, one fallback route over both models, and generous tenant limits."""
    config, policies = folder / "config", folder / "policies"
    config.mkdir(parents=True, exist_ok=True)
    policies.mkdir(exist_ok=True)
    (config / "deployments.yaml").write_text("deployments:\n" + "".join(
        f"  - {{name: {m}, model: openai/{m}, api_base: '{sim_url}', api_key_env: {KEY_ENV}, timeout_s: 10, "
        f"price: {{input_per_mtok: {PRICE[0] * 1e6:g}, output_per_mtok: {PRICE[1] * 1e6:g}}}}}\n" for m in MODELS))
    (policies / "bench.yaml").write_text(
        f"default_route: fallback\nroutes:\n  fallback: {{strategy: fallback, targets: [{', '.join(MODELS)}]}}\n"
        f"  cached: {{strategy: fallback, targets: [{', '.join(MODELS)}], cache: {{mode: read_write}}}}\n")
    (config / "tenants.yaml").write_text(
        "tenants:\n  default: {requests_per_minute: 100000000, tokens_per_minute: 10000000000, usd_per_day: 1000000}\n")


def _litellm() -> Any:
    from router.backend import litellm_module

    module = litellm_module()  # the same module switches the router sets, for every configuration
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)  # not "custom pricing ... not in cost map" per model
    return module


async def bare(setup: Setup, stack: AsyncExitStack, **extra: Any) -> Client:
    litellm = _litellm()

    async def call() -> Any:
        return await litellm.acompletion(model=f"openai/{MODELS[0]}", messages=MESSAGES, api_base=setup.sim_url,
                                         api_key=KEY, num_retries=0, max_retries=0, timeout=10, **extra)
    return Client(call)


async def bare_priced(setup: Setup, stack: AsyncExitStack) -> Client:
    return await bare(setup, stack, **PRICE_ARGS)


async def litellm_router(setup: Setup, stack: AsyncExitStack, *, tuned: bool = True) -> Client:
    litellm = _litellm()
    model_list = [{"model_name": "bench", "litellm_params": {
        "model": f"openai/{m}", "api_base": setup.sim_url, "api_key": KEY, **(PRICE_ARGS if tuned else {})}}
        for m in MODELS]
    options: dict[str, Any] = dict(routing_strategy="simple-shuffle", num_retries=0, disable_cooldowns=True)
    router = litellm.Router(model_list=model_list, **(options if tuned else {}))

    async def call() -> Any:
        return await router.acompletion(model="bench", messages=MESSAGES, timeout=10)
    return Client(call)


async def litellm_router_default(setup: Setup, stack: AsyncExitStack) -> Client:
    return await litellm_router(setup, stack, tuned=False)


async def ours(setup: Setup, stack: AsyncExitStack, *, quota_url: str | None = None,
               tracing: bool = False) -> Client:
    """`create_default_router` over the YAML in `setup.folder`; the fallback route over both models."""
    from router import RouterSettings, create_default_router

    _litellm()
    kwargs: dict[str, Any] = {}
    flush: Callable[[], None] = lambda: None  # noqa: E731
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

        def flush() -> None:
            tp.force_flush()
    settings = RouterSettings(config_dir=setup.folder / "config", policy_dir=setup.folder / "policies",
                              reload_interval_s=0, tenants_file="tenants.yaml" if quota_url else "no-tenants.yaml",
                              quota_store_url=quota_url or "memory://", seed=1)
    router = await create_default_router(settings, **kwargs)
    stack.push_async_callback(router.aclose)

    async def call() -> Any:
        return await router.chat(MESSAGES)
    return Client(call, flush)


async def ours_cache_hit(setup: Setup, stack: AsyncExitStack) -> Client:
    """The `cached` route, the same temperature-0 request every time: every call after the first is a hit."""
    return await _ours_cached(setup, stack, unique=False)


async def ours_cache_miss(setup: Setup, stack: AsyncExitStack) -> Client:
    """The `cached` route, a new temperature-0 request every time: a lookup, a miss and a store per call."""
    return await _ours_cached(setup, stack, unique=True)


async def ours_uncached_twin(setup: Setup, stack: AsyncExitStack) -> Client:
    """The cache-miss configuration's exact calls on the `fallback` route (no cache): its baseline."""
    return await _ours_cached(setup, stack, unique=True, route="fallback")


#: The store of the cache-miss configurations: small enough that warm-up fills it, so every measured
#: miss also evicts the least recently used answer, as a miss does in a cache that has been running.
MISS_STORE_URL = "memory://?max_entries=100"


async def _ours_cached(setup: Setup, stack: AsyncExitStack, *, unique: bool, route: str = "cached") -> Client:
    from router import RouterSettings, create_default_router

    _litellm()
    settings = RouterSettings(config_dir=setup.folder / "config", policy_dir=setup.folder / "policies",
                              reload_interval_s=0, tenants_file="no-tenants.yaml", seed=1,
                              cache_store_url=MISS_STORE_URL if unique else "memory://")
    router = await create_default_router(settings)
    stack.push_async_callback(router.aclose)
    counter = iter(range(1 << 62))

    async def call() -> Any:
        text = f"{MESSAGES[0]['content']} #{next(counter)}" if unique else MESSAGES[0]["content"]
        return await router.chat(text, route=route, temperature=0)
    return Client(call)


async def ours_memory_quota(setup: Setup, stack: AsyncExitStack) -> Client:
    return await ours(setup, stack, quota_url="memory://")


async def ours_redis_quota(setup: Setup, stack: AsyncExitStack) -> Client:
    return await ours(setup, stack, quota_url=setup.redis_url)


async def ours_tracing(setup: Setup, stack: AsyncExitStack) -> Client:
    return await ours(setup, stack, tracing=True)


def _stub_litellm(stack: AsyncExitStack) -> None:
    """Replace LiteLLM's `acompletion` with one returning a canned response, until `stack` closes."""
    from types import SimpleNamespace

    litellm = _litellm()
    canned = SimpleNamespace(model=MODELS[0], usage=SimpleNamespace(prompt_tokens=10, completion_tokens=8),
                             choices=[SimpleNamespace(message=SimpleNamespace(content="ok"), finish_reason="stop")])

    async def stub(**kwargs: Any) -> Any:
        return canned

    real, litellm.acompletion = litellm.acompletion, stub
    stack.callback(setattr, litellm, "acompletion", real)


async def ours_stubbed(setup: Setup, stack: AsyncExitStack) -> Client:
    """Ours with LiteLLM's `acompletion` replaced by a canned response: the router's own work alone."""
    _stub_litellm(stack)
    return await ours(setup, stack)


async def ours_cache_miss_stubbed(setup: Setup, stack: AsyncExitStack) -> Client:
    """The cache miss with LiteLLM stubbed: what the cache adds shows in CPU time, not lost in LiteLLM's."""
    _stub_litellm(stack)
    return await _ours_cached(setup, stack, unique=True)


async def ours_uncached_twin_stubbed(setup: Setup, stack: AsyncExitStack) -> Client:
    _stub_litellm(stack)
    return await _ours_cached(setup, stack, unique=True, route="fallback")


CONFIGS: dict[str, Config] = {c.name: c for c in (
    Config("litellm.acompletion", "bare", bare, "the bare call, as LiteLLM's docs show it"),
    Config("litellm.acompletion + prices", "bare+prices", bare_priced,
           "plus `input_cost_per_token`/`output_cost_per_token`, as our backend passes for a priced deployment"),
    Config("litellm.Router", "litellm.Router", litellm_router,
           "its best set-up here: simple-shuffle, `num_retries=0`, `disable_cooldowns=True`, the same prices"),
    Config("litellm.Router, defaults", "litellm.Router", litellm_router_default,
           "`litellm.Router(model_list=...)` with nothing else", default=False),
    Config("ours", "ours", ours, "`create_default_router` from YAML: fallback route, no quotas, no tracing"),
    Config("ours + memory quotas", "ours", ours_memory_quota, "plus tenant quotas in `memory://`"),
    Config("ours + Redis quotas", "ours", ours_redis_quota, "plus tenant quotas in `redis://127.0.0.1:6379`",
           needs=frozenset({"redis"})),
    Config("ours + tracing", "ours", ours_tracing,
           "plus an SDK `TracerProvider` (batch processor, discarding exporter) and `MeterProvider`"),
    Config("ours + cache hit", "ours", ours_cache_hit,
           "the `cached` route (`cache: {mode: read_write}`, memory store), the same temperature-0 request",
           block_scale=10),
    Config("ours + cache miss", "ours", ours_cache_miss,
           "the `cached` route, a new temperature-0 request each time: lookup, provider call, store, and the "
           "eviction of the oldest answer (a 100-entry memory store, full after warm-up)"),
    Config("ours (the miss's calls without cache)", "ours", ours_uncached_twin,
           "the cache-miss configuration's calls on a route without a cache: what a miss is compared with"),
    Config("ours (LiteLLM stubbed)", "ours-only", ours_stubbed,
           "ours with `litellm.acompletion` returning a canned response: the router's own work only",
           block_scale=10),
    Config("ours + cache miss (LiteLLM stubbed)", "ours-only", ours_cache_miss_stubbed,
           "the cache miss, with `litellm.acompletion` stubbed as above", block_scale=10,
           paired_with="ours (the miss's calls without cache; LiteLLM stubbed)"),
    Config("ours (the miss's calls without cache; LiteLLM stubbed)", "ours-only", ours_uncached_twin_stubbed,
           "its calls on the route without a cache, stubbed: a miss's own cost is the difference",
           block_scale=10),
)}
