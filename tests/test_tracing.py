"""router/tracing.py against the SDK's in-memory span exporter and metric reader."""

# OTel SDK types every span/event/point `attributes` as Optional; these tests read spans they just made.
# mypy: disable-error-code="index,operator,arg-type,union-attr"
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from router.breaker import CircuitState
from router.errors import ProviderTimeout, ProviderUnavailable, QuotaExceeded
from router.schema import Deployment
from router.tracing import CAPTURE_CONTENT_ENV, Telemetry
from tests.conftest import FakeClock

DURATION_BUCKETS = [
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
]
TOKEN_BUCKETS = [
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
]
MARKER = "PURPLE-OCTOPUS-7731"

GPT = Deployment(name="gpt-mini", model="openai/gpt-4o-mini", api_base="http://127.0.0.1:8000/v1")
CLAUDE = Deployment(name="claude", model="anthropic/claude-3-5-haiku-latest")
PARAMS = {"max_tokens": 64, "temperature": 0.2, "stream": False}
MESSAGES = [
    {"role": "system", "content": f"be brief {MARKER}"},
    {"role": "user", "content": f"tell me the secret {MARKER}"},
]


class Setup:
    def __init__(self, **telemetry_args: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.clock = FakeClock(100.0)
        telemetry_args.setdefault("capture_content", False)
        self.tel = Telemetry(self.tracer_provider, self.meter_provider, clock=self.clock, **telemetry_args)

    def spans(self) -> dict[str, ReadableSpan]:
        return {s.name: s for s in self.exporter.get_finished_spans()}

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    def points(self, name: str) -> list[Any]:
        return list(self.metrics()[name].data.data_points)

    def run_request(self, *, output_text: str = "an answer") -> None:
        """A request whose first attempt fails and second succeeds, 0.5 s and 1.5 s long."""
        rt = self.tel.start_request(operation="chat", tenant="acme", route="default")
        rt.decision(
            rule="batch-rule",
            route="default",
            strategy="cheapest",
            candidates=["gpt-mini", "claude"],
        )
        rt.quota(decision="reserved")
        first = rt.start_attempt(deployment=GPT, attempt=1, request_params=PARAMS, messages=MESSAGES)
        self.clock.now += 0.5
        first.fail(
            ProviderUnavailable("connection refused", deployment="gpt-mini"),
            error_type="unavailable",
        )
        rt.event("router.fallback", {"from": "gpt-mini", "to": "claude", "reason": "unavailable"})
        second = rt.start_attempt(deployment=CLAUDE, attempt=1, request_params=PARAMS, messages=MESSAGES)
        self.clock.now += 1.5
        second.end(
            response_model="claude-3-5-haiku-20241022",
            input_tokens=12,
            output_tokens=30,
            finish_reasons=["stop"],
            cost_usd=0.0002,
            ttft_s=0.3,
            output_text=output_text,
        )
        rt.end(
            deployment="claude",
            attempts=2,
            fallback_used=True,
            cost_usd=0.0002,
            input_tokens=12,
            output_tokens=30,
        )


@pytest.fixture
def setup() -> Iterator[Setup]:
    s = Setup()
    yield s
    s.tracer_provider.shutdown()
    s.meter_provider.shutdown()


def all_text(spans: Any) -> str:
    """Every name, attribute value, event and status message, for leak searches."""
    out: list[str] = []
    for s in spans:
        out += [s.name, s.status.description or ""]
        out += [repr(v) for v in s.attributes.values()]
        for e in s.events:
            out += [e.name] + [repr(v) for v in e.attributes.values()]
    return "\n".join(out)


def test_spans_nest_under_the_callers_current_span(setup: Setup) -> None:
    caller_tracer = setup.tracer_provider.get_tracer("caller")
    with caller_tracer.start_as_current_span("http request") as caller:
        setup.run_request()
    spans = setup.spans()
    request, first, second = (
        spans["router chat"],
        spans["chat gpt-4o-mini"],
        spans["chat claude-3-5-haiku-latest"],
    )
    assert request.kind is SpanKind.INTERNAL
    assert first.kind is SpanKind.CLIENT and second.kind is SpanKind.CLIENT
    assert request.parent is not None and request.parent.span_id == caller.get_span_context().span_id
    for attempt in (first, second):
        assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
        assert attempt.context.trace_id == caller.get_span_context().trace_id


def test_request_span_attributes(setup: Setup) -> None:
    setup.run_request()
    attrs = setup.spans()["router chat"].attributes
    assert attrs["router.rule"] == "batch-rule"
    assert attrs["router.route"] == "default"
    assert attrs["router.strategy"] == "cheapest"
    assert attrs["router.candidates"] == ("gpt-mini", "claude")
    assert attrs["router.quota.decision"] == "reserved"
    assert attrs["router.deployment"] == "claude"
    assert attrs["router.attempts"] == 2
    assert attrs["router.fallback_used"] is True
    assert attrs["router.cost_usd"] == pytest.approx(0.0002)
    assert attrs["router.tenant"] == "acme"


def test_attempt_spans_carry_genai_attributes(setup: Setup) -> None:
    setup.run_request()
    spans = setup.spans()
    first = spans["chat gpt-4o-mini"].attributes
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.provider.name"] == "openai"
    assert first["gen_ai.request.model"] == "gpt-4o-mini"
    assert first["gen_ai.request.max_tokens"] == 64
    assert first["gen_ai.request.temperature"] == pytest.approx(0.2)
    assert first["gen_ai.request.stream"] is False
    assert first["server.address"] == "127.0.0.1" and first["server.port"] == 8000
    assert first["router.deployment"] == "gpt-mini" and first["router.attempt"] == 1
    second = spans["chat claude-3-5-haiku-latest"].attributes
    assert second["gen_ai.provider.name"] == "anthropic"
    assert "server.address" not in second  # no api_base: LiteLLM's default endpoint
    assert second["gen_ai.response.model"] == "claude-3-5-haiku-20241022"
    assert second["gen_ai.usage.input_tokens"] == 12
    assert second["gen_ai.usage.output_tokens"] == 30
    assert second["gen_ai.response.finish_reasons"] == ("stop",)
    assert second["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.3)
    assert second["router.cost_usd"] == pytest.approx(0.0002)


def test_embeddings_spans_are_named_for_the_operation(setup: Setup) -> None:
    rt = setup.tel.start_request(operation="embeddings", tenant="acme")
    model = Deployment(name="emb", model="openai/text-embedding-3-small")
    rt.start_attempt(deployment=model, attempt=1).end(input_tokens=5)
    rt.end(deployment="emb", attempts=1, fallback_used=False)
    spans = setup.spans()
    assert set(spans) == {"router embeddings", "embeddings text-embedding-3-small"}
    assert spans["embeddings text-embedding-3-small"].attributes["gen_ai.operation.name"] == "embeddings"


def test_failed_attempt_has_error_status_type_and_scrubbed_exception(setup: Setup) -> None:
    rt = setup.tel.start_request(operation="chat", tenant="acme", route="default")
    at = rt.start_attempt(deployment=GPT, attempt=1)
    try:
        try:
            raise RuntimeError("provider said: Incorrect API key sk-live-abcdefgh12345678")
        except RuntimeError as cause:
            raise ProviderTimeout("no answer in 30s", deployment="gpt-mini") from cause
    except ProviderTimeout as exc:
        at.fail(exc, error_type=exc.kind)
    rt.fail(ProviderTimeout("no answer in 30s"), error_type="timeout")
    span = setup.spans()["chat gpt-4o-mini"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "gpt-mini: no answer in 30s"
    assert span.attributes["error.type"] == "timeout"
    [exception] = [e for e in span.events if e.name == "exception"]
    assert exception.attributes["exception.type"] == "router.errors.ProviderTimeout"
    assert exception.attributes["exception.message"] == "gpt-mini: no answer in 30s"
    assert "sk-live" not in all_text(setup.exporter.get_finished_spans())
    request = setup.spans()["router chat"]
    assert request.status.status_code is StatusCode.ERROR
    assert request.attributes["error.type"] == "timeout"


def test_quota_rejection_adds_event_and_counts(setup: Setup) -> None:
    rt = setup.tel.start_request(operation="chat", tenant="acme", route="default")
    rt.quota(decision="rejected", limit="tokens_per_minute", retry_after=12.5)
    exc = QuotaExceeded(tenant="acme", limit="tokens_per_minute", limit_value=100, usage=120, retry_after=12.5)
    rt.fail(exc, error_type="quota_exceeded")
    span = setup.spans()["router chat"]
    assert span.attributes["router.quota.decision"] == "rejected"
    [event] = [e for e in span.events if e.name == "router.quota.rejected"]
    assert event.attributes == {
        "router.quota.limit": "tokens_per_minute",
        "router.quota.retry_after_s": 12.5,
    }
    [point] = setup.points("router.quota.rejections")
    assert point.value == 1
    assert dict(point.attributes) == {
        "router.quota.limit": "tokens_per_minute",
        "router.route": "default",
    }


def test_generic_events_and_fallback_counter(setup: Setup) -> None:
    rt = setup.tel.start_request(operation="chat", tenant="acme", route="default")
    rt.event(
        "router.retry",
        {"deployment": "gpt-mini", "attempt": 1, "backoff_s": 0.2, "error.type": "timeout"},
    )
    rt.event("router.fallback", {"from": "gpt-mini", "to": "claude", "reason": "timeout"})
    rt.end(deployment="claude", attempts=2, fallback_used=True)
    events = {e.name: dict(e.attributes) for e in setup.spans()["router chat"].events}
    assert events["router.retry"] == {
        "deployment": "gpt-mini",
        "attempt": 1,
        "backoff_s": 0.2,
        "error.type": "timeout",
    }
    assert events["router.fallback"] == {"from": "gpt-mini", "to": "claude", "reason": "timeout"}
    [point] = setup.points("router.fallbacks")
    assert dict(point.attributes) == {
        "router.route": "default",
        "router.fallback.from": "gpt-mini",
        "router.fallback.to": "claude",
        "router.fallback.reason": "timeout",
    }


def test_spans_end_exactly_once(setup: Setup) -> None:
    rt = setup.tel.start_request(operation="chat", tenant="acme")
    at = rt.start_attempt(deployment=GPT, attempt=1)
    at.end(output_tokens=1)
    at.end(output_tokens=2)
    at.fail(TimeoutError("late"), error_type="timeout")
    rt.end(deployment="gpt-mini", attempts=1, fallback_used=False)
    rt.end(deployment="gpt-mini", attempts=1, fallback_used=False)
    rt.fail(TimeoutError("late"), error_type="timeout")
    spans = setup.exporter.get_finished_spans()
    assert len(spans) == 2
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    assert sum(p.value for p in setup.points("router.requests")) == 1


async def test_concurrent_requests_keep_their_own_parents(setup: Setup) -> None:
    async def one(name: str, started: asyncio.Event, other_started: asyncio.Event) -> None:
        rt = setup.tel.start_request(operation="chat", tenant=name, route=name)
        started.set()
        await other_started.wait()  # both requests are open before either starts its attempt
        rt.start_attempt(deployment=GPT, attempt=1).end(output_tokens=1)
        rt.end(deployment="gpt-mini", attempts=1, fallback_used=False)

    a, b = asyncio.Event(), asyncio.Event()
    await asyncio.gather(one("a", a, b), one("b", b, a))
    spans = setup.exporter.get_finished_spans()
    requests = {s.attributes["router.route"]: s for s in spans if s.name == "router chat"}
    assert requests["a"].parent is None and requests["b"].parent is None
    assert requests["a"].context.trace_id != requests["b"].context.trace_id
    attempts = [s for s in spans if s.name == "chat gpt-4o-mini"]
    parents = {a.parent.span_id for a in attempts if a.parent is not None}
    assert parents == {requests["a"].context.span_id, requests["b"].context.span_id}


def test_no_providers_is_a_shared_no_op() -> None:
    tel = Telemetry()
    assert not tel.enabled
    rt = tel.start_request(operation="chat", tenant="acme", route="default")
    assert tel.start_request(operation="chat", tenant="other") is rt  # nothing allocated
    rt.decision(rule=None, route="default", strategy="fallback", candidates=["a"])
    rt.quota(decision="rejected", limit="rpm", retry_after=1.0)
    rt.event("router.fallback", {"from": "a", "to": "b"})
    at = rt.start_attempt(deployment=GPT, attempt=1, request_params=PARAMS, messages=MESSAGES)
    assert at is rt.start_attempt(deployment=CLAUDE, attempt=2)
    at.fail(TimeoutError(), error_type="timeout")
    at.end(output_text="x")
    rt.end(deployment="a", attempts=1, fallback_used=False)
    rt.fail(TimeoutError(), error_type="timeout")
    tel.circuit_changed("a", "closed", "open", "3 failures")
    tel.policy_reloaded(ok=False, version=2, error="bad yaml")
    assert trace.get_current_span(rt.context) is trace.INVALID_SPAN
    assert trace.get_current_span(at.context) is trace.INVALID_SPAN


def test_sampled_out_requests_still_count_in_metrics() -> None:
    reader = InMemoryMetricReader()
    tel = Telemetry(TracerProvider(sampler=ALWAYS_OFF), MeterProvider(metric_readers=[reader]))
    rt = tel.start_request(operation="chat", tenant="acme", route="default")
    rt.start_attempt(deployment=GPT, attempt=1, messages=MESSAGES).end(output_tokens=3)
    rt.end(deployment="gpt-mini", attempts=1, fallback_used=False)
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {
        "router.requests",
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
    } <= names


def test_metrics_only_telemetry() -> None:
    reader = InMemoryMetricReader()
    tel = Telemetry(meter_provider=MeterProvider(metric_readers=[reader]))
    assert tel.enabled
    rt = tel.start_request(operation="chat", tenant="acme", route="default")
    rt.start_attempt(deployment=GPT, attempt=1).fail(TimeoutError(), error_type="timeout")
    rt.fail(TimeoutError(), error_type="timeout")
    assert trace.get_current_span(rt.context) is trace.INVALID_SPAN
    assert reader.get_metrics_data() is not None


def test_content_is_not_captured_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CAPTURE_CONTENT_ENV, raising=False)
    s = Setup(capture_content=None)
    assert s.tel.capture_content is False
    s.run_request(output_text=f"the answer is {MARKER}")
    text = all_text(s.exporter.get_finished_spans())
    assert MARKER not in text
    assert "gen_ai.input.messages" not in text and "gen_ai.output.messages" not in text
    for span in s.exporter.get_finished_spans():
        assert "gen_ai.input.messages" not in span.attributes


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("false", False), ("", False)])
def test_capture_content_default_comes_from_env(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, value)
    assert Telemetry().capture_content is expected
    assert Telemetry(capture_content=not expected).capture_content is not expected


def test_captured_content_is_semconv_json_and_truncated() -> None:
    s = Setup(capture_content=True, content_max_chars=30)
    long_answer = MARKER + " " + "x" * 500
    s.run_request(output_text=long_answer)
    attempt = s.spans()["chat claude-3-5-haiku-latest"].attributes
    messages = json.loads(str(attempt["gen_ai.input.messages"]))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["parts"] == [{"type": "text", "content": f"be brief {MARKER}"}]
    texts = [p["content"] for m in messages for p in m["parts"]]
    assert sum(len(t) for t in texts) <= 30
    output = json.loads(str(attempt["gen_ai.output.messages"]))
    assert output[0]["role"] == "assistant" and output[0]["finish_reason"] == "stop"
    assert output[0]["parts"][0]["content"] == long_answer[:30]
    assert "gen_ai.input.messages" not in s.spans()["router chat"].attributes


def test_api_base_credentials_are_never_exported(setup: Setup) -> None:
    secret = Deployment(
        name="private",
        model="openai/gpt-4o",
        api_base="https://alice:s3cr3t-pw@llm.example.com:8443/v1?api-key=k3y-value",
    )
    rt = setup.tel.start_request(operation="chat", tenant="acme")
    at = rt.start_attempt(deployment=secret, attempt=1)
    at.fail(
        ProviderUnavailable("502 from https://alice:s3cr3t-pw@llm.example.com"),
        error_type="unavailable",
    )
    rt.fail(
        ProviderUnavailable("502 from https://alice:s3cr3t-pw@llm.example.com"),
        error_type="unavailable",
    )
    span = setup.spans()["chat gpt-4o"]
    assert span.attributes["server.address"] == "llm.example.com"
    assert span.attributes["server.port"] == 8443
    text = all_text(setup.exporter.get_finished_spans())
    assert "s3cr3t" not in text and "k3y-value" not in text and "alice" not in text


def test_metric_names_units_and_bucket_boundaries(setup: Setup) -> None:
    setup.run_request()
    metrics = setup.metrics()
    duration = metrics["gen_ai.client.operation.duration"]
    tokens = metrics["gen_ai.client.token.usage"]
    assert duration.unit == "s" and tokens.unit == "{token}"
    assert metrics["gen_ai.client.operation.time_to_first_chunk"].unit == "s"
    assert metrics["router.cost"].unit == "USD"
    assert metrics["router.request.duration"].unit == "s"
    for point in duration.data.data_points:
        assert isinstance(point, HistogramDataPoint)
        assert list(point.explicit_bounds) == DURATION_BUCKETS
    for point in tokens.data.data_points:
        assert list(point.explicit_bounds) == TOKEN_BUCKETS


def test_metric_attributes_and_values(setup: Setup) -> None:
    setup.run_request()
    durations = {p.attributes.get("error.type"): p for p in setup.points("gen_ai.client.operation.duration")}
    failed, ok = durations["unavailable"], durations[None]
    assert dict(failed.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "error.type": "unavailable",
    }
    assert failed.sum == pytest.approx(0.5)
    assert ok.attributes["gen_ai.response.model"] == "claude-3-5-haiku-20241022"
    assert ok.sum == pytest.approx(1.5)
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in setup.points("gen_ai.client.token.usage")}
    assert tokens == {"input": 12, "output": 30}
    [request] = setup.points("router.requests")
    assert dict(request.attributes) == {
        "router.route": "default",
        "router.deployment": "claude",
        "router.outcome": "ok",
    }
    [spend] = setup.points("router.cost")
    assert spend.value == pytest.approx(0.0002)
    [whole] = setup.points("router.request.duration")
    assert whole.sum == pytest.approx(2.0)


def test_tenant_joins_metrics_only_when_asked() -> None:
    without, with_tenant = Setup(), Setup(tenant_in_metrics=True)
    without.run_request()
    with_tenant.run_request()
    assert all("router.tenant" not in p.attributes for p in without.points("router.requests"))
    assert all(p.attributes["router.tenant"] == "acme" for p in with_tenant.points("router.requests"))
    assert all("router.tenant" not in p.attributes for p in with_tenant.points("gen_ai.client.token.usage"))


def test_circuit_state_gauge_and_transitions(setup: Setup) -> None:
    setup.tel.circuit_changed("gpt-mini", CircuitState.CLOSED, CircuitState.OPEN, "5 failures in 10s")
    setup.tel.circuit_changed("claude", "closed", "half_open")
    gauge = {p.attributes["router.deployment"]: p.value for p in setup.points("router.circuit.state")}
    assert gauge == {"gpt-mini": 2, "claude": 1}
    transitions = {tuple(sorted(p.attributes.items())): p.value for p in setup.points("router.circuit.transitions")}
    assert (
        transitions[
            (
                ("router.circuit.from", "closed"),
                ("router.circuit.to", "open"),
                ("router.deployment", "gpt-mini"),
            )
        ]
        == 1
    )
    setup.tel.circuit_changed("gpt-mini", CircuitState.OPEN, CircuitState.CLOSED)
    gauge = {p.attributes["router.deployment"]: p.value for p in setup.points("router.circuit.state")}
    assert gauge["gpt-mini"] == 0


def test_policy_reload_span_and_counter(setup: Setup) -> None:
    setup.tel.policy_reloaded(ok=True, version=3)
    setup.tel.policy_reloaded(ok=False, version=3, error="policies/a.yaml: routes.x: bad token=abc")
    spans = [s for s in setup.exporter.get_finished_spans() if s.name == "router policy.reload"]
    assert [s.status.status_code for s in spans] == [StatusCode.UNSET, StatusCode.ERROR]
    assert spans[1].status.description == "policies/a.yaml: routes.x: bad token=[REDACTED]"
    counts = {p.attributes["router.policy.reload.ok"]: p.value for p in setup.points("router.policy.reloads")}
    assert counts == {True: 1, False: 1}
