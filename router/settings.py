"""Router settings: environment (prefix `ROUTER_`), then `.env`, then defaults.

>>> RouterSettings(policy_dir="policies").default_route  # doctest: +SKIP
'default'

With no YAML at all, `create_default_router()` builds deployments from the
original design's variables (`OPENAI_API_KEY`, `OPENAI_MODEL`, ...), read by
`LegacySettings`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from router.breaker import BreakerConfig
from router.schema import hide_url_password


class RouterSettings(BaseSettings):
    """Where the router finds its files and how it runs."""

    model_config = SettingsConfigDict(
        env_prefix="ROUTER_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        env_nested_delimiter="__",
    )

    config_dir: Path = Path("config")
    policy_dir: Path = Path("policies")
    #: Files in `policy_dir` not loaded by default (`demo.yaml` belongs to `llm-router demo`).
    policy_exclude: frozenset[str] = frozenset({"demo.yaml"})
    deployments_file: str = "deployments.yaml"
    tenants_file: str = "tenants.yaml"
    #: Route used when no rule matches and no policy names a default.
    default_route: str | None = None
    #: Seconds between checks of the files' modification times; 0 turns polling off.
    reload_interval_s: float = Field(default=2.0, ge=0)
    #: Bytes a policy/config file may hold; a larger file is refused unread (the last good policy keeps serving).
    policy_max_file_bytes: int = Field(default=1 << 20, gt=0)
    #: Nodes a YAML file may hold with every alias expanded; stops alias bombs while parsing.
    policy_max_yaml_nodes: int = Field(default=100_000, gt=0)
    #: Seconds the files' sizes and mtimes must stay unchanged before a live reload reads them.
    policy_settle_s: float = Field(default=0.1, ge=0)
    #: `memory://` or `redis://host:port/db` for tenant quotas.
    quota_store_url: str = "memory://"
    #: `memory://` or `redis://...` to share circuit state between replicas.
    health_store_url: str = "memory://"
    #: `memory://?max_entries=N&max_bytes=M` or `redis://host:port/db?prefix=...` for the response
    #: cache; a route caches only when its `cache:` says so.
    cache_store_url: str = "memory://"
    #: `memory://` or `redis://host:port/db?prefix=...&ttl_s=N` for conversation histories.
    history_store_url: str = "memory://"
    #: `memory://` or `redis://host:port/db?prefix=...` for quality feedback (`router.feedback`).
    quality_store_url: str = "memory://"
    #: Where to write the decision log (JSON lines, no prompt or answer text); None: no log.
    decision_log_path: Path | None = None
    decision_log_max_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    decision_log_backups: int = Field(default=5, ge=0)
    #: Metadata keys copied into the decision log (others are left out).
    decision_log_metadata_keys: frozenset[str] = frozenset()
    #: Tenant used when a call names none.
    default_tenant: str = "default"
    #: Output tokens reserved for quota when a call sets no max_tokens.
    default_max_tokens: int = Field(default=512, gt=0)
    #: Circuit-breaker and latency-window thresholds (`ROUTER_BREAKER__MIN_CALLS=20`, ...).
    breaker: BreakerConfig = BreakerConfig()
    capture_content: bool | None = None
    tenant_in_metrics: bool = False
    seed: int | None = None

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # Store URLs and api_base may carry a password (redis://:pw@host); reprs and logs never show it.
        for name, value in super().__repr_args__():
            yield name, hide_url_password(value) if isinstance(value, str) and "://" in value else value


class LegacySettings(BaseSettings):
    """The variables of the original single-file design, for the zero-YAML mode."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-4o-mini"
    openai_api_base: str | None = None
    openai_max_tokens: int | None = Field(default=None, gt=0)
    openai_temperature: float | None = Field(default=None, ge=0, le=2)
    openai_embedding_model: str = "text-embedding-3-small"
    anthropic_api_key: SecretStr | None = None
    anthropic_model: str = "claude-haiku-4-5"
    llm_router_strategy: Literal["fallback", "cheapest", "fastest", "best_quality"] = "fallback"

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # Store URLs and api_base may carry a password (redis://:pw@host); reprs and logs never show it.
        for name, value in super().__repr_args__():
            yield name, hide_url_password(value) if isinstance(value, str) and "://" in value else value
