"""The schema of what ops write: deployments, routes, rules.

Every model is frozen and rejects unknown keys, so a typo is an error that
names its field rather than a setting silently ignored.

Example `config/deployments.yaml`::

    deployments:
      - name: gpt-4o-mini
        model: openai/gpt-4o-mini
        api_key_env: OPENAI_API_KEY
        quality: 0.7
        context_window: 128000
        capabilities: [tools, json, vision]

Example `policies/default.yaml`::

    routes:
      default:
        strategy: cheapest
        targets: [gpt-4o-mini, claude-haiku]
        retry: {attempts: 2, backoff_s: 0.2, on: [rate_limited, timeout]}
    rules:
      - when: {tags: [batch]}
        route: default
    default_route: default
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.errors import DEFAULT_RETRY_ON, RETRYABLE_KINDS

Capability = Literal["chat", "tools", "vision", "audio", "json", "embeddings", "streaming"]
LatencyStat = Literal["p50", "p95", "p99", "ewma", "ttft"]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Spec(BaseModel):
    """Base of every ops-written model: frozen, strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Price(Spec):
    """USD per million tokens; overrides LiteLLM's cost map for a deployment.

    `cached_input_per_mtok` prices prompt tokens read from the provider's
    prompt cache (default: the input rate) and `cache_write_per_mtok` those
    written to it (default: the input rate), as OpenAI and Anthropic bill them.
    """

    input_per_mtok: NonNegFloat
    output_per_mtok: NonNegFloat = 0.0
    cached_input_per_mtok: NonNegFloat | None = None
    cache_write_per_mtok: NonNegFloat | None = None


class Probe(Spec):
    """An active health probe sent while the deployment's circuit is open."""

    interval_s: PositiveFloat = 10.0
    prompt: str = "ping"
    max_tokens: int = Field(default=1, ge=1)


class Deployment(Spec):
    """One model at one provider endpoint, called through LiteLLM.

    `model` is LiteLLM's model string (`openai/gpt-4o-mini`,
    `anthropic/claude-haiku-4-5`, `ollama/llama3.1`, ...): a new
    provider is a new entry here, not new code. The key is named by the
    environment variable that holds it, never written here.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:/-]+$")
    model: str = Field(min_length=3, pattern=r"^[A-Za-z0-9_-]+/.+$")
    api_base: str | None = None
    #: Environment variable holding the api_base (used when `api_base` is not set).
    api_base_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_version: str | None = None
    price: Price | None = None
    quality: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)
    context_window: int = Field(default=8192, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    capabilities: frozenset[Capability] = frozenset({"chat", "streaming"})
    timeout_s: PositiveFloat = 30.0
    #: A stream that sends no content (keep-alive comments and empty deltas do not count) for
    #: this long before its first token falls back; default `timeout_s`.
    stream_ttft_timeout_s: PositiveFloat | None = None
    #: A stream silent this long between content chunks is cut; default `timeout_s`.
    stream_idle_timeout_s: PositiveFloat | None = None
    latency_prior_ms: PositiveFloat = 1000.0
    probe: Probe | None = None

    @property
    def provider(self) -> str:
        """LiteLLM's provider prefix, e.g. "openai" for "openai/gpt-4o-mini"."""
        return self.model.split("/", 1)[0]

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # A password in a URL (https://user:secret@host) never reaches a repr, a log or a decision.
        for name, value in super().__repr_args__():
            yield name, hide_url_password(value) if name == "api_base" and isinstance(value, str) else value


def hide_url_password(url: str) -> str:
    """`url` with the credential of its userinfo replaced by "***".

    A user with a password keeps the user; a user alone is usually a token
    (`https://TOKEN@host`), so it is hidden whole.

    >>> hide_url_password("https://user:secret@host/v1")
    'https://user:***@host/v1'
    >>> hide_url_password("https://ghp_token123@host/v1")
    'https://***@host/v1'
    >>> hide_url_password("https://user:pa/ss@host/v1")
    'https://user:***@host/v1'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # The last "@" anywhere, not just before the first "/": a password written with a raw "/"
    # must not slip through (an "@" in a path hides too much, which is the safe side).
    userinfo, at, host_and_path = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon and user and "/" not in user else "***"
    return f"{scheme}://{shown}@{host_and_path}"


class DeploymentsFile(Spec):
    deployments: tuple[Deployment, ...] = Field(min_length=1)

    @field_validator("deployments")
    @classmethod
    def _unique_names(cls, value: tuple[Deployment, ...]) -> tuple[Deployment, ...]:
        seen: set[str] = set()
        for d in value:
            if d.name in seen:
                raise ValueError(f"deployment name {d.name!r} is used twice")
            seen.add(d.name)
        return value




class Retry(Spec):
    """How often to try one deployment again before falling back."""

    attempts: int = Field(default=1, ge=1, le=10)
    backoff_s: NonNegFloat = 0.1
    max_backoff_s: NonNegFloat = 5.0
    jitter: float = Field(default=0.5, ge=0, le=1)
    #: Error kinds worth trying again on the same deployment (`router.errors.ERROR_KINDS`).
    on: frozenset[str] = DEFAULT_RETRY_ON

    @field_validator("on")
    @classmethod
    def _known_kinds(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = sorted(value - RETRYABLE_KINDS)
        if unknown:
            raise ValueError(f"cannot retry on {unknown}; retryable kinds are {sorted(RETRYABLE_KINDS)}")
        return value


class Constraints(Spec):
    """Filters a deployment must pass to be a candidate."""

    min_quality: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    max_price_per_mtok: NonNegFloat | None = None
    capabilities: frozenset[Capability] = frozenset()
    fit_context: bool = True


class Slo(Spec):
    """Prefer the cheapest deployment whose latency stat fits; else the fastest."""

    latency_ms: PositiveFloat
    stat: LatencyStat = "p95"


CacheMode = Literal["read_write", "read_only", "write_only", "off"]


class CacheSpec(Spec):
    """A route's response cache (`router.cache`): off unless ops turn it on.

    `read_write` answers from the cache and stores new answers; `read_only`
    answers from it but stores nothing; `write_only` always calls a provider
    and stores the answer (to warm a cache). Entries live `ttl_s` seconds.
    Entries are kept per tenant unless `shared_across_tenants`; with
    `deterministic_only`, only requests whose answer does not vary (temperature
    0 or a fixed seed) are cached. Example::

        cache: {mode: read_write, ttl_s: 600}
    """

    mode: CacheMode = "off"
    ttl_s: PositiveFloat = 3600.0
    shared_across_tenants: bool = False
    deterministic_only: bool = True

    @property
    def reads(self) -> bool:
        """Whether a request on this route may be answered from the cache."""
        return self.mode in ("read_write", "read_only")

    @property
    def writes(self) -> bool:
        """Whether a provider's answer on this route is stored."""
        return self.mode in ("read_write", "write_only")


StrategyName = Literal[
    "fallback",
    "cheapest",
    "fastest",
    "best_quality",
    "weighted",
    "least_busy",
    "lowest_latency_p2c",
    "thompson",
]


class Route(Spec):
    """A named way to serve a request: strategy over targets, then fallbacks."""

    strategy: StrategyName = "fallback"
    targets: tuple[str, ...] = Field(min_length=1)
    weights: dict[str, float] | None = None
    latency_stat: LatencyStat = "p50"
    slo: Slo | None = None
    preferred: str | None = None
    constraints: Constraints = Constraints()
    retry: Retry = Retry()
    attempt_timeout_s: PositiveFloat | None = None
    deadline_s: PositiveFloat = 60.0
    #: Override the deployments' stream time-to-first-token and idle timeouts on this route.
    stream_ttft_timeout_s: PositiveFloat | None = None
    stream_idle_timeout_s: PositiveFloat | None = None
    #: Continue a stream cut after content on the next deployment, the partial answer sent as
    #: an assistant prefix (never for tool calls or n > 1). Off by default.
    resume_streams: bool = False
    #: At most this share of the route's deployments is ejected (skipped for an open circuit) at
    #: once; beyond it the open ones are tried anyway (Envoy's max_ejection_percent).
    max_ejection_percent: int = Field(default=100, ge=0, le=100)
    fallbacks: tuple[str, ...] = ()
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    cache: CacheSpec = CacheSpec()

    @field_validator("weights")
    @classmethod
    def _finite_weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        for name, w in value.items():
            if not isinstance(w, int | float) or math.isnan(w) or math.isinf(w):
                raise ValueError(f"weight of {name!r} must be a finite number, got {w!r}")
            if w < 0:
                raise ValueError(f"weight of {name!r} must not be negative, got {w!r}")
        if value and not any(w > 0 for w in value.values()):
            raise ValueError("weights must not all be zero")
        return value

    @model_validator(mode="after")
    def _strategy_needs(self) -> Route:
        if self.strategy == "weighted" and not self.weights:
            raise ValueError("strategy 'weighted' needs 'weights'")
        if self.weights:
            unknown = set(self.weights) - set(self.targets)
            if unknown:
                raise ValueError(f"weights name deployments not in targets: {sorted(unknown)}")
        if self.preferred is not None and self.preferred not in self.targets:
            raise ValueError(f"preferred {self.preferred!r} is not one of the targets")
        return self


class Match(Spec):
    """Conditions of a rule; all given conditions must hold (AND)."""

    operation: Literal["chat", "embeddings"] | None = None
    tenant: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    metadata: dict[str, str] | None = None
    model: tuple[str, ...] | None = None
    min_prompt_tokens: int | None = Field(default=None, ge=0)
    max_prompt_tokens: int | None = Field(default=None, ge=0)

    @field_validator("tenant", "tags", "model", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value


class Rule(Spec):
    """First matching rule picks the route."""

    name: str | None = None
    when: Match = Match()
    route: str


class PolicyFile(Spec):
    """One file in `policies/`: routes, rules and (optionally) the default route."""

    routes: dict[str, Route] = {}
    rules: tuple[Rule, ...] = ()
    default_route: str | None = None
    #: Route for `embed()` calls that no rule routes; defaults to a route named "embeddings".
    embedding_route: str | None = None
    #: Model names callers may pass (`model="smart"`) mapped to routes.
    model_aliases: dict[str, str] = {}
