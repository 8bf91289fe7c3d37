"""Spans and metrics for routed LLM calls; providers come in, nothing global is set.

GenAI semconv as of semantic-conventions 1.44 (python package
opentelemetry-semantic-conventions 0.66b2, schema 1.44.0, which marks the
gen_ai names "moved to the semantic-conventions-genai repository", unchanged).
gen_ai/server/error names come from that package's constants; `router.*` are ours.

One request gives this tree. The request span is a child of the caller's
current span; attempts get it as an explicit parent, so nothing is attached to
the ambient context and concurrent requests never mix::

    router chat               INTERNAL  router.route, router.strategy, router.candidates, ...
    ├── chat gpt-4o-mini      CLIENT    gen_ai.*, server.address, error.type (failed)
    └── chat claude-haiku     CLIENT    gen_ai.usage.*, gen_ai.response.*

Metrics (`router/tracing_metrics.py` lists them) have low-cardinality
attributes: no tenant unless `tenant_in_metrics`.

Message text is recorded only with `capture_content` (default from
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT). Keys, headers and URL
credentials never are: api_base yields only host and port, error text is scrubbed.

>>> tel = Telemetry()  # no providers: a no-op
>>> rt = tel.start_request(operation="chat", tenant="acme", route="default")
>>> rt.end(deployment="gpt-4o-mini", attempts=1, fallback_used=False)
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from router.cache.metrics import CacheEvent
from router.context import Operation
from router.redact import scrub
from router.schema import Deployment
from router.tracing_attributes import (
    SCHEMA_URL,
    input_messages_json,
    output_messages_json,
    provider_name,
    request_attributes,
    request_model,
    server_attributes,
)
from router.tracing_metrics import RouteQualitySource, RouterMetrics

__all__ = ["AttemptTrace", "RequestTrace", "Telemetry"]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
EVENT_FALLBACK = "router.fallback"
EVENT_QUOTA_REJECTED = "router.quota.rejected"

QuotaDecision = Literal["reserved", "rejected", "skipped"]
EventValue = str | int | float | bool
Attrs = dict[str, AttributeValue]


def _record_error(span: Span, error: BaseException, error_type: str) -> None:
    # Not span.record_exception(): its traceback includes chained causes, whose
    # messages come from provider SDKs and are not scrubbed.
    message = scrub(str(error))
    kind = f"{type(error).__module__}.{type(error).__qualname__}"
    stack = "".join(traceback.format_tb(error.__traceback__)) + f"{kind}: {message}"
    span.set_status(Status(StatusCode.ERROR, message))
    span.set_attribute(ERROR_TYPE, error_type)
    span.add_event(
        "exception",
        {EXCEPTION_TYPE: kind, EXCEPTION_MESSAGE: message, EXCEPTION_STACKTRACE: stack},
    )


class Telemetry:
    """Starts request traces. Without providers it is a no-op that creates no span.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> Telemetry(TracerProvider(), capture_content=False).enabled
    True
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        capture_content: bool | None = None,
        content_max_chars: int = 2000,
        tenant_in_metrics: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if capture_content is None:
            flag = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower()
            capture_content = flag in ("true", "1", "span_only", "span_and_event")
        self.capture_content = capture_content
        self.content_max_chars = content_max_chars
        self.tenant_in_metrics = tenant_in_metrics
        self._clock = clock
        # provider.get_tracer, never trace.get_tracer: the latter falls back to globals.
        self._tracer = None if tracer_provider is None else tracer_provider.get_tracer(__name__, schema_url=SCHEMA_URL)
        self._metrics = RouterMetrics(meter_provider) if meter_provider is not None else None
        self.enabled = self._tracer is not None or self._metrics is not None
        self._noop = _NoopRequestTrace()

    def start_request(self, operation: Operation = "chat", *, tenant: str, route: str | None = None) -> RequestTrace:
        """Start the span "router {operation}" as a child of the caller's current span."""
        if not self.enabled:
            return self._noop
        span: Span = trace.INVALID_SPAN
        if self._tracer is not None:
            attrs: Attrs = {"router.operation": operation, "router.tenant": tenant}
            if route is not None:
                attrs["router.route"] = route
            span = self._tracer.start_span(f"router {operation}", kind=SpanKind.INTERNAL, attributes=attrs)
        return RequestTrace(self, span, operation, tenant, route)

    def circuit_changed(self, deployment: str, old: str, new: str, reason: str = "") -> None:
        """Record a circuit breaker transition; fits `HealthTracker(on_state_change=...)`.

        `reason` is free text, so it stays out of metric attributes.
        """
        if self._metrics is not None:
            self._metrics.circuit_changed(deployment, old, new)

    def observe_quality(self, source: RouteQualitySource) -> None:
        """Export `source`'s (a `QualityTracker`'s) quality per route and deployment as the
        `router.quality` and `router.quality.samples` gauges, through this telemetry's meter
        provider; a no-op without one. Call it once the tracker exists (a later call swaps it).

        >>> from router.quality import QualityTracker
        >>> Telemetry().observe_quality(QualityTracker())  # no meter provider: nothing is registered
        """
        if self._metrics is not None:
            self._metrics.observe_quality(source)

    @property
    def metered(self) -> bool:
        """True when a meter provider was given (the metrics are recorded)."""
        return self._metrics is not None

    def cache_event(self, event: CacheEvent) -> None:
        """Count a response-cache event; fits `ResponseCache(observer=...)`."""
        if self._metrics is not None:
            self._metrics.cache_event(event.route, event.kind, event.nbytes)

    def policy_reloaded(self, *, ok: bool, version: int, error: str | None = None) -> None:
        """Record a policy reload: a count and a span "router policy.reload", ERROR if rejected."""
        if self._metrics is not None:
            self._metrics.policy_reloaded(ok)
        if self._tracer is None:
            return
        attrs: Attrs = {"router.policy.version": version, "router.policy.reload.ok": ok}
        # An empty context: a reload belongs to no request, whatever task runs it.
        span = self._tracer.start_span("router policy.reload", Context(), attributes=attrs)
        if not ok:
            span.set_status(Status(StatusCode.ERROR, scrub(error or "rejected")))
            span.set_attribute(ERROR_TYPE, "config_error")
        span.end()


class RequestTrace:
    """One routed request. End it once with `end` or `fail`; later calls are ignored.

    >>> rt = Telemetry().start_request(operation="chat", tenant="acme")
    >>> rt.decision(rule=None, route="default", strategy="cheapest", candidates=["a", "b"])
    >>> rt.fail(TimeoutError("slow"), error_type="timeout")
    """

    def __init__(self, tel: Telemetry, span: Span, operation: Operation, tenant: str, route: str | None) -> None:
        self._tel, self._span, self._operation = tel, span, operation
        self._tenant, self._route = tenant, route
        self._recording = span.is_recording()
        self._context = trace.set_span_in_context(span)
        self._ended = False
        self._start = tel._clock()

    @property
    def context(self) -> Context:
        """A context holding this request's span, for code that should nest under it."""
        return self._context

    @property
    def recording(self) -> bool:
        """False when attributes would be dropped anyway (no tracer, or a sampled-out span)."""
        return self._recording

    def decision(self, *, rule: str | None, route: str, strategy: str, candidates: Sequence[str]) -> None:
        """Record the rule that matched (None: default route), the route and its candidates."""
        self._route = route
        if self._recording:
            attrs: Attrs = {"router.route": route, "router.strategy": strategy}
            attrs["router.candidates"] = tuple(candidates)
            if rule is not None:
                attrs["router.rule"] = rule
            self._span.set_attributes(attrs)

    def quota(self, *, decision: QuotaDecision, limit: str | None = None, retry_after: float | None = None) -> None:
        """Record the quota outcome; "rejected" also adds an event and counts a rejection."""
        if self._recording:
            self._span.set_attribute("router.quota.decision", decision)
        if decision != "rejected":
            return
        limit = limit or "unknown"
        if self._recording:
            event: Attrs = {"router.quota.limit": limit}
            if retry_after is not None:
                event["router.quota.retry_after_s"] = retry_after
            self._span.add_event(EVENT_QUOTA_REJECTED, event)
        if self._tel._metrics is not None:
            attrs = self._metric_attrs({"router.quota.limit": limit})
            self._tel._metrics.quota_rejected(attrs, self._context)

    def cache(self, *, hit: bool) -> None:
        """Record whether the response cache answered (`router.cache.hit`)."""
        if self._recording:
            self._span.set_attribute("router.cache.hit", hit)

    def prompt(self, name: str, version: str) -> None:
        """Record the prompt template used (never its rendered text)."""
        if self._recording:
            self._span.set_attributes({"router.prompt.name": name, "router.prompt.version": version})

    def event(self, name: str, attributes: Mapping[str, EventValue | None] | None = None) -> None:
        """Add a span event. One named "router.fallback" ({from, to, reason}) also counts
        in the router.fallbacks metric."""
        attrs: Attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
        if self._recording:
            self._span.add_event(name, attrs)
        if name == EVENT_FALLBACK and self._tel._metrics is not None:
            keys = ("from", "to", "reason")
            fallback = {f"router.fallback.{k}": attrs.get(k) for k in keys}
            self._tel._metrics.fallback(self._metric_attrs(fallback), self._context)

    def start_attempt(
        self,
        *,
        deployment: Deployment,
        attempt: int,
        request_params: Mapping[str, object] | None = None,
        messages: Sequence[Mapping[str, object]] | None = None,
    ) -> AttemptTrace:
        """Start the CLIENT span "{operation} {model}" for one call to one deployment."""
        model = request_model(deployment)
        metric_attrs: Attrs = {
            genai.GEN_AI_OPERATION_NAME: self._operation,
            genai.GEN_AI_PROVIDER_NAME: provider_name(deployment),
            genai.GEN_AI_REQUEST_MODEL: model,
        }
        span: Span = trace.INVALID_SPAN
        tracer = self._tel._tracer
        if tracer is not None and self._recording:
            attrs = metric_attrs | server_attributes(deployment.api_base)
            attrs |= {"router.deployment": deployment.name, "router.attempt": attempt}
            attrs |= request_attributes(request_params or {})
            if self._tel.capture_content and messages:
                attrs[genai.GEN_AI_INPUT_MESSAGES] = input_messages_json(messages, self._tel.content_max_chars)
            span = tracer.start_span(
                f"{self._operation} {model}",
                context=self._context,
                kind=SpanKind.CLIENT,
                attributes=attrs,
            )
        return AttemptTrace(self._tel, span, metric_attrs)

    def end(
        self,
        *,
        deployment: str,
        attempts: int,
        fallback_used: bool,
        cost_usd: float = 0.0,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """End the request successfully, answered by `deployment`."""
        if self._ended:
            return
        self._ended = True
        if self._recording:
            attrs: Attrs = {"router.deployment": deployment, "router.attempts": attempts}
            attrs |= {"router.fallback_used": fallback_used, "router.cost_usd": cost_usd}
            if input_tokens is not None:
                attrs["router.usage.input_tokens"] = input_tokens
            if output_tokens is not None:
                attrs["router.usage.output_tokens"] = output_tokens
            self._span.set_attributes(attrs)
        self._span.end()
        self._record_outcome(deployment, cost_usd, error_type=None)

    def fail(self, error: BaseException, *, error_type: str) -> None:
        """End the request with status ERROR and `error.type`."""
        if self._ended:
            return
        self._ended = True
        if self._recording:
            _record_error(self._span, error, error_type)
        self._span.end()
        self._record_outcome(None, 0.0, error_type=error_type)

    def _metric_attrs(self, extra: Mapping[str, AttributeValue | None]) -> Attrs:
        attrs: Attrs = {k: v for k, v in extra.items() if v is not None}
        if self._route is not None:
            attrs["router.route"] = self._route
        if self._tel.tenant_in_metrics:
            attrs["router.tenant"] = self._tenant
        return attrs

    def _record_outcome(self, deployment: str | None, cost_usd: float, error_type: str | None) -> None:
        metrics = self._tel._metrics
        if metrics is None:
            return
        metrics.request_ended(
            self._metric_attrs({"router.deployment": deployment}),
            duration_s=self._tel._clock() - self._start,
            cost_usd=cost_usd,
            error_type=error_type,
            context=self._context,
        )


class AttemptTrace:
    """One call to one deployment. End it once with `end` or `fail`; later calls are ignored."""

    __slots__ = ("_context", "_ended", "_metric_attrs", "_span", "_start", "_tel")

    def __init__(self, tel: Telemetry, span: Span, metric_attrs: Attrs) -> None:
        self._tel, self._span, self._metric_attrs = tel, span, metric_attrs
        self._context = trace.set_span_in_context(span)
        self._ended = False
        self._start = tel._clock()

    @property
    def context(self) -> Context:
        """A context holding this attempt's span (e.g. to nest HTTP client spans under it)."""
        return self._context

    def end(
        self,
        *,
        response_model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        finish_reasons: Sequence[str] = (),
        cost_usd: float | None = None,
        ttft_s: float | None = None,
        output_text: str | None = None,
    ) -> None:
        """End the attempt successfully with what the provider reported."""
        if self._ended:
            return
        self._ended = True
        if self._span.is_recording():
            attrs: dict[str, AttributeValue | None] = {
                genai.GEN_AI_RESPONSE_MODEL: response_model,
                genai.GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
                genai.GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
                genai.GEN_AI_RESPONSE_FINISH_REASONS: tuple(finish_reasons) or None,
                genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: ttft_s,
                "router.cost_usd": cost_usd,
            }
            if self._tel.capture_content and output_text is not None:
                attrs[genai.GEN_AI_OUTPUT_MESSAGES] = output_messages_json(
                    output_text, finish_reasons, self._tel.content_max_chars
                )
            self._span.set_attributes({k: v for k, v in attrs.items() if v is not None})
        self._span.end()
        metrics = self._tel._metrics
        if metrics is None:
            return
        labels = self._metric_attrs
        if response_model:
            labels = labels | {genai.GEN_AI_RESPONSE_MODEL: response_model}
        metrics.attempt_ended(
            labels,
            duration_s=self._tel._clock() - self._start,
            ttft_s=ttft_s,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            context=self._context,
        )

    def fail(self, error: BaseException, *, error_type: str) -> None:
        """End the attempt with status ERROR and `error.type` (e.g. ProviderError.kind)."""
        if self._ended:
            return
        self._ended = True
        if self._span.is_recording():
            _record_error(self._span, error, error_type)
        self._span.end()
        if self._tel._metrics is not None:
            elapsed = self._tel._clock() - self._start
            self._tel._metrics.attempt_failed(
                self._metric_attrs, duration_s=elapsed, error_type=error_type, context=self._context
            )


class _NoopAttemptTrace(AttemptTrace):
    """A disabled attempt: born ended, so `end` and `fail` return at their first line."""

    __slots__ = ()

    def __init__(self) -> None:
        self._context, self._ended = Context(), True


class _NoopRequestTrace(RequestTrace):
    """What a disabled Telemetry hands out: shared, stateless, every method returns at once."""

    def __init__(self) -> None:
        self._context, self._ended, self._attempt = Context(), True, _NoopAttemptTrace()
        self._recording = False

    def decision(self, *, rule: str | None, route: str, strategy: str, candidates: Sequence[str]) -> None:
        return None

    def quota(self, *, decision: QuotaDecision, limit: str | None = None, retry_after: float | None = None) -> None:
        return None

    def cache(self, *, hit: bool) -> None:
        return None

    def prompt(self, name: str, version: str) -> None:
        return None

    def event(self, name: str, attributes: Mapping[str, EventValue | None] | None = None) -> None:
        return None

    def start_attempt(
        self,
        *,
        deployment: Deployment,
        attempt: int,
        request_params: Mapping[str, object] | None = None,
        messages: Sequence[Mapping[str, object]] | None = None,
    ) -> AttemptTrace:
        return self._attempt
