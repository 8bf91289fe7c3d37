"""The router's metric instruments, made once per `Telemetry` from a meter provider.

GenAI client metrics follow GenAI semconv as of semantic-conventions 1.44
(opentelemetry-semantic-conventions 0.66b2), names from its constants, with the
spec's explicit bucket boundaries given as `explicit_bucket_boundaries_advisory`:

| metric | unit | attributes |
|---|---|---|
| gen_ai.client.operation.duration | s | gen_ai.operation.name, gen_ai.provider.name, |
| | | gen_ai.request.model, gen_ai.response.model, error.type |
| gen_ai.client.token.usage | {token} | the same and gen_ai.token.type |
| gen_ai.client.operation.time_to_first_chunk | s | the same as duration |
| router.requests | {request} | router.route, router.deployment, router.outcome, error.type |
| router.request.duration | s | the same as router.requests |
| router.cost | USD | router.route, router.deployment |
| router.fallbacks | {fallback} | router.route, router.fallback.from/.to/.reason |
| router.quota.rejections | {request} | router.route, router.quota.limit |
| router.circuit.state | 1 (gauge) | router.deployment; 0 closed, 1 half-open, 2 open |
| router.circuit.transitions | {transition} | router.deployment, router.circuit.from/.to |
| router.policy.reloads | {reload} | router.policy.reload.ok |
| router.cache.events | {event} | router.route, router.cache.event (hit, coalesced, miss, bypass, write, decode_error) |
| router.cache.bytes | By | router.route, router.cache.event (bytes read on hits, written on writes) |
| router.quality | 1 (gauge) | router.route, router.deployment; decayed mean feedback score in [0, 1] |
| router.quality.samples | {sample} (gauge) | router.route, router.deployment; scores recorded |

The two quality gauges exist once `observe_quality` is given a source (a
`QualityTracker`); they carry no task label, to keep their cardinality low.

`router.tenant` joins the router.* request metrics only when the caller opts in.

>>> from opentelemetry.sdk.metrics import MeterProvider
>>> metrics = RouterMetrics(MeterProvider())
>>> metrics.circuit_changed("gpt-4o-mini", "closed", "open")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Protocol

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GEN_AI_TOKEN_TYPE
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.util.types import AttributeValue

from router.quality.base import QualityEstimate
from router.tracing_attributes import DURATION_BUCKETS, SCHEMA_URL, TOKEN_BUCKETS

Attrs = dict[str, AttributeValue]
CIRCUIT_STATE_CODES: Mapping[str, int] = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}


class RouteQualitySource(Protocol):
    """What the quality gauges read (`QualityTracker` implements it)."""

    def route_estimates(self) -> Iterable[tuple[str, str, QualityEstimate]]:
        """(route, deployment, estimate) per route-level key; called on the metric reader's thread."""
        ...


def _state_name(state: str) -> str:
    # CircuitState is a str Enum; str() of it would be "CircuitState.OPEN".
    return str(state.value) if isinstance(state, Enum) else state


class RouterMetrics:
    """Records the metrics above; every method is cheap and never raises on bad labels."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("router.tracing", schema_url=SCHEMA_URL)
        self._meter = meter
        self._quality: RouteQualitySource | None = None
        hist, count = meter.create_histogram, meter.create_counter
        self._duration = hist(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._tokens = hist(
            gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._ttft = hist(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._request_duration = hist(
            "router.request.duration",
            unit="s",
            description="A whole routed request, retries and fallbacks included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._requests = count("router.requests", unit="{request}", description="By outcome.")
        self._cost = count("router.cost", unit="USD", description="Spend in US dollars.")
        self._fallbacks = count("router.fallbacks", unit="{fallback}")
        self._quota_rejections = count("router.quota.rejections", unit="{request}")
        self._transitions = count("router.circuit.transitions", unit="{transition}")
        self._reloads = count("router.policy.reloads", unit="{reload}")
        self._cache_events = count("router.cache.events", unit="{event}", description="Response cache events.")
        self._cache_bytes = count("router.cache.bytes", unit="By", description="Cache bytes read or written.")
        self._circuits: dict[str, str] = {}
        meter.create_observable_gauge(
            "router.circuit.state",
            callbacks=[self._observe_circuits],
            unit="1",
            description="Circuit state per deployment: 0 closed, 1 half-open, 2 open.",
        )

    def attempt_ended(
        self,
        labels: Attrs,
        *,
        duration_s: float,
        ttft_s: float | None,
        input_tokens: int | None,
        output_tokens: int | None,
        context: Context,
    ) -> None:
        """A successful call: its duration, time to first chunk and tokens."""
        self._duration.record(duration_s, labels, context)
        if ttft_s is not None:
            self._ttft.record(ttft_s, labels, context)
        for token_type, tokens in (("input", input_tokens), ("output", output_tokens)):
            if tokens is not None:
                self._tokens.record(tokens, labels | {GEN_AI_TOKEN_TYPE: token_type}, context)

    def attempt_failed(self, labels: Attrs, *, duration_s: float, error_type: str, context: Context) -> None:
        """A failed call: its duration, labelled with error.type."""
        self._duration.record(duration_s, labels | {ERROR_TYPE: error_type}, context)

    def request_ended(
        self,
        labels: Attrs,
        *,
        duration_s: float,
        cost_usd: float,
        error_type: str | None,
        context: Context,
    ) -> None:
        """A routed request's outcome ("ok" or "error"), duration and spend."""
        outcome = labels | {"router.outcome": "error" if error_type else "ok"}
        if error_type:
            outcome[ERROR_TYPE] = error_type
        self._requests.add(1, outcome, context)
        self._request_duration.record(duration_s, outcome, context)
        if cost_usd > 0:
            self._cost.add(cost_usd, labels, context)

    def quota_rejected(self, labels: Attrs, context: Context) -> None:
        self._quota_rejections.add(1, labels, context)

    def fallback(self, labels: Attrs, context: Context) -> None:
        self._fallbacks.add(1, labels, context)

    def cache_event(self, route: str, kind: str, nbytes: int) -> None:
        attrs: Attrs = {"router.route": route, "router.cache.event": kind}
        self._cache_events.add(1, attrs)
        if nbytes:
            self._cache_bytes.add(nbytes, attrs)

    def policy_reloaded(self, ok: bool) -> None:
        self._reloads.add(1, {"router.policy.reload.ok": ok})

    def circuit_changed(self, deployment: str, old: str, new: str) -> None:
        """Count the transition and remember the state the gauge reports."""
        old, new = _state_name(old), _state_name(new)
        self._circuits[deployment] = new
        attrs = {"router.deployment": deployment, "router.circuit.from": old}
        self._transitions.add(1, attrs | {"router.circuit.to": new})

    def _observe_circuits(self, options: CallbackOptions) -> Iterable[Observation]:
        # Called on the metric reader's thread: iterate over a snapshot.
        return [
            Observation(CIRCUIT_STATE_CODES.get(state, -1), {"router.deployment": name})
            for name, state in list(self._circuits.items())
        ]

    def observe_quality(self, source: RouteQualitySource) -> None:
        """Report `source`'s route-level quality as the `router.quality` and `router.quality.samples`
        gauges. The gauges are made on the first call; a later call swaps the source they read."""
        first = self._quality is None
        self._quality = source
        if not first:
            return
        self._meter.create_observable_gauge(
            "router.quality",
            callbacks=[self._observe_quality_mean],
            unit="1",
            description="Decayed mean feedback score per deployment and route, in [0, 1].",
        )
        self._meter.create_observable_gauge(
            "router.quality.samples",
            callbacks=[self._observe_quality_samples],
            unit="{sample}",
            description="Feedback scores recorded per deployment and route.",
        )

    def _quality_now(self) -> list[tuple[Attrs, QualityEstimate]]:
        source = self._quality
        if source is None:
            return []
        return [({"router.route": route, "router.deployment": deployment}, est)
                for route, deployment, est in source.route_estimates()]

    def _observe_quality_mean(self, options: CallbackOptions) -> Iterable[Observation]:
        # Evidence decayed to nothing has no mean: no point rather than a made-up one.
        return [Observation(est.mean, attrs) for attrs, est in self._quality_now() if est.mean is not None]

    def _observe_quality_samples(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(est.samples, attrs) for attrs, est in self._quality_now()]
