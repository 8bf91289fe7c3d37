"""`create_default_router()`: a ready router from settings, files and the environment.

With `config/deployments.yaml` and `policies/*.yaml` present the router
serves those and reloads them live. With no YAML at all it builds one route
from the original design's variables (`OPENAI_API_KEY`, `OPENAI_MODEL`,
`ANTHROPIC_API_KEY`, `LLM_ROUTER_STRATEGY`, ...).

>>> router = await create_default_router()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from router import backend
from router.cache import ResponseCache, cache_store_from_url
from router.client import Router
from router.decision_log import DecisionLog
from router.errors import ConfigError, ConfigIssue, ProviderTimeout
from router.health import CircuitState, HealthTracker
from router.health_store import SharedHealth
from router.history import history_store_from_url
from router.loop_lag import LoopLag
from router.policy.loader import YamlLimits
from router.policy.reload import ConfigFiles, PolicySource, ReloadResult
from router.policy.snapshot import Snapshot, compile_snapshot
from router.probes import Prober
from router.quality import tracker_from_url
from router.quota import QuotaManager, store_from_url
from router.redact import scrub, url_for_display
from router.redis_client import store_kind
from router.schema import Deployment, PolicyFile, Probe, Route
from router.settings import LegacySettings, RouterSettings
from router.templates import TemplateSource
from router.tracing import Telemetry

log = logging.getLogger("router.health")  # circuits and the health store
mode_log = logging.getLogger(__name__)  # which configuration the router runs on
T = TypeVar("T")

StateListener = Callable[[str, CircuitState, CircuitState, str], None]


def config_files(settings: RouterSettings) -> ConfigFiles:
    """The files `settings` points at."""
    return ConfigFiles(
        deployments=settings.config_dir / settings.deployments_file,
        policies=(),
        tenants=settings.config_dir / settings.tenants_file,
        policy_dir=settings.policy_dir,
        exclude=settings.policy_exclude,
        limits=YamlLimits(max_file_bytes=settings.policy_max_file_bytes, max_nodes=settings.policy_max_yaml_nodes),
        settle_s=settings.policy_settle_s,
    )


def legacy_snapshot(env: LegacySettings) -> Snapshot:
    """One route over OpenAI and/or Anthropic deployments from the original variables."""
    deployments: list[Deployment] = []
    if env.openai_api_key is not None or env.openai_api_base is not None:
        deployments.append(Deployment(
            name="openai", model=f"openai/{env.openai_model}", api_base=env.openai_api_base,
            api_key_env="OPENAI_API_KEY", context_window=128000, quality=0.7,
            capabilities=frozenset({"chat", "streaming", "tools", "json"}),
        ))
        deployments.append(Deployment(
            name="openai-embeddings", model=f"openai/{env.openai_embedding_model}",
            api_base=env.openai_api_base, api_key_env="OPENAI_API_KEY", context_window=8191,
            capabilities=frozenset({"embeddings"}),
        ))
    if env.anthropic_api_key is not None:
        deployments.append(Deployment(
            name="anthropic", model=f"anthropic/{env.anthropic_model}", api_key_env="ANTHROPIC_API_KEY",
            context_window=200000, quality=0.7, capabilities=frozenset({"chat", "streaming", "tools"}),
        ))
    chat_targets = tuple(d.name for d in deployments if "chat" in d.capabilities)
    if not chat_targets:
        raise ConfigError([ConfigIssue(
            "environment", "OPENAI_API_KEY",
            "no deployments: create config/deployments.yaml and policies/, or set OPENAI_API_KEY "
            "(or OPENAI_API_BASE) and/or ANTHROPIC_API_KEY")])
    routes = {"default": Route(strategy=env.llm_router_strategy, targets=chat_targets,
                               max_tokens=env.openai_max_tokens, temperature=env.openai_temperature)}
    if any(d.name == "openai-embeddings" for d in deployments):
        routes["embeddings"] = Route(targets=("openai-embeddings",))
    policy = PolicyFile(routes=routes, default_route="default")
    return compile_snapshot(deployments, "environment", [("environment", policy)])


def initial_source(files: ConfigFiles, settings: RouterSettings) -> PolicySource:
    """The YAML files when there are any, else the zero-YAML mode from the original variables."""
    if files.deployments.exists() or any(files.current_policies()):
        mode_log.info("router mode: YAML files (%s, %s)", files.deployments, files.policy_dir)
        return PolicySource.from_files(files, default_route=settings.default_route)
    mode_log.info("router mode: environment only (no %s and no policies in %s): OPENAI_*/ANTHROPIC_* variables",
             files.deployments, files.policy_dir)
    return PolicySource(legacy_snapshot(LegacySettings()))


async def create_default_router(
    settings: RouterSettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    files: ConfigFiles | None = None,
    on_circuit_change: StateListener | None = None,
) -> Router:
    """Build a router from `RouterSettings` (env `ROUTER_*`), the YAML files and `OTEL_*`.

    When no providers are passed and `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the
    router builds its own (never the global ones) and `aclose()` flushes them.
    `files` replaces the files the settings name (the demo uses its own);
    `on_circuit_change` hears every circuit transition, after logging and telemetry.
    """
    settings = settings or RouterSettings()
    files = files or config_files(settings)
    # Stores first: a bad URL fails here, naming its setting, before anything starts.
    quota_store = _from_setting("quota_store_url", lambda: store_from_url(settings.quota_store_url))
    cache_store = _from_setting("cache_store_url", lambda: cache_store_from_url(settings.cache_store_url))
    history_store = _from_setting("history_store_url", lambda: history_store_from_url(settings.history_store_url))
    shared = _from_setting("health_store_url", lambda: shared_health(settings.health_store_url))
    quality = _from_setting("quality_store_url", lambda: tracker_from_url(settings.quality_store_url, clock=clock))
    await backend.warm_up()
    closers: list[Callable[[], Awaitable[None]]] = []
    if tracer_provider is None and meter_provider is None:
        from router.otel_setup import providers_from_env, shutdown_providers

        own = providers_from_env()
        if own is not None:
            tracer_provider, meter_provider = own
            closers.append(lambda: shutdown_providers(*own))
    telemetry = Telemetry(tracer_provider, meter_provider, capture_content=settings.capture_content,
                          tenant_in_metrics=settings.tenant_in_metrics)

    def on_reload(result: ReloadResult) -> None:
        telemetry.policy_reloaded(ok=result.ok, version=result.version,
                                  error=str(result.error) if result.error else None)

    source = initial_source(files, settings)
    source.on_reload = on_reload

    def on_state_change(deployment: str, old: CircuitState, new: CircuitState, reason: str) -> None:
        log.warning("circuit of %s: %s -> %s (%s)", deployment, old, new, reason)
        telemetry.circuit_changed(deployment, old, new, reason)
        if on_circuit_change is not None:
            on_circuit_change(deployment, old, new, reason)

    health = HealthTracker(settings.breaker, clock=clock, shared=shared, on_state_change=on_state_change)
    # A new replica adopts the circuits others opened before its first call, not after it.
    if not await health.sync():
        log.warning("health store %s unreachable at start; circuits are local until it answers",
                    scrub(settings.health_store_url))
    quota = QuotaManager(quota_store, clock=time.time)
    cache = ResponseCache(cache_store,
                          observer=telemetry.cache_event if telemetry.metered else None)
    templates = await load_prompts(settings)
    quality.start()
    telemetry.observe_quality(quality)  # router.quality / router.quality.samples, through the given meter provider
    decision_log = None
    if settings.decision_log_path is not None:
        decision_log = DecisionLog(settings.decision_log_path, max_bytes=settings.decision_log_max_bytes,
                                   backups=settings.decision_log_backups)
    lag = LoopLag()
    lag.start()
    closers.append(lag.aclose)
    router = Router(source, settings=settings, health=health, quota=quota, telemetry=telemetry, cache=cache,
                    history=history_store, templates=templates,
                    quality=quality, decision_log=decision_log, lag=lag,
                    clock=clock, rng=rng, sleep=sleep, on_close=closers)
    source.start_watching(settings.reload_interval_s)
    prober = Prober(source, health, call=send_probe, clock=clock)
    prober.start()
    router.add_closer(prober.aclose)
    return router


async def load_prompts(settings: RouterSettings) -> TemplateSource | None:
    """The prompt templates in `policy_dir/prompts/` (read off the event loop), watched for edits;
    None when there is no such directory. Raises ConfigError for invalid files."""
    directory = settings.policy_dir / "prompts"
    if not directory.is_dir():
        return None
    templates = await asyncio.to_thread(TemplateSource, directory)
    templates.start_watching(settings.reload_interval_s)
    return templates


async def send_probe(d: Deployment, probe: Probe) -> None:
    """One tiny completion, the probe's prompt, bounded by the deployment's timeout."""
    try:
        async with asyncio.timeout(d.timeout_s):
            await backend.DEFAULT_BACKEND.chat(d, [{"role": "user", "content": probe.prompt}],
                                               {"max_tokens": probe.max_tokens}, timeout_s=d.timeout_s)
    except TimeoutError:
        raise ProviderTimeout(f"probe: no answer within {d.timeout_s:g}s", deployment=d.name) from None


def _from_setting(setting: str, make: Callable[[], T]) -> T:
    """`make()` (a store from a URL setting); its ValueError, a URL it cannot use, as a
    `ConfigError` naming the setting and its environment variable, credentials scrubbed."""
    try:
        return make()
    except ValueError as exc:
        raise ConfigError([ConfigIssue("settings", f"{setting} (ROUTER_{setting.upper()})", scrub(str(exc)))]) from None


def build_health(
    settings: RouterSettings, *, clock: Callable[[], float] = time.monotonic,
    on_state_change: StateListener | None = None,
) -> HealthTracker:
    """The health tracker the settings describe: breaker thresholds and, for Redis, shared opens."""
    return HealthTracker(settings.breaker, clock=clock, shared=shared_health(settings.health_store_url),
                         on_state_change=on_state_change)


def shared_health(url: str) -> SharedHealth | None:
    """None for `memory://` (each process alone); Redis for `redis://host:port/db?prefix=...`.
    Raises ValueError for any other scheme."""
    kind = store_kind(url)
    if kind == "memory":
        return None
    if kind != "redis":
        raise ValueError(f"unknown health store URL {url_for_display(url)!r}: use memory:// or redis://host:port/db")
    from router.health_store import RedisSharedHealth

    return RedisSharedHealth(url)  # it reads `?prefix=` itself
