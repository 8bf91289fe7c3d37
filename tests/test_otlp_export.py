"""Spans and metrics really leave the process, over OTLP/gRPC and OTLP/HTTP.

The exporters are the ones `providers_from_env` builds; the far end is the
in-test receiver of tests/otlp_receiver.py on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from router.errors import ProviderUnavailable
from router.otel_setup import providers_from_env, shutdown_providers
from router.schema import Deployment
from router.tracing import Telemetry
from tests.otlp_receiver import OtlpReceiver

GPT = Deployment(name="gpt-mini", model="openai/gpt-4o-mini", api_base="http://127.0.0.1:9/v1")
CLAUDE = Deployment(name="claude", model="anthropic/claude-3-5-haiku-latest")


@pytest.fixture(params=["grpc", "http/protobuf"])
def receiver(request: pytest.FixtureRequest) -> Iterator[OtlpReceiver]:
    start = OtlpReceiver.start_grpc if request.param == "grpc" else OtlpReceiver.start_http
    with start() as r:
        yield r


def send_request_with_fallback(tel: Telemetry) -> None:
    rt = tel.start_request(operation="chat", tenant="acme", route="default")
    rt.decision(rule=None, route="default", strategy="fallback", candidates=["gpt-mini", "claude"])
    first = rt.start_attempt(deployment=GPT, attempt=1, request_params={"max_tokens": 16})
    first.fail(ProviderUnavailable("connection refused", deployment="gpt-mini"), error_type="unavailable")
    rt.event("router.fallback", {"from": "gpt-mini", "to": "claude", "reason": "unavailable"})
    second = rt.start_attempt(deployment=CLAUDE, attempt=1, request_params={"max_tokens": 16})
    second.end(response_model="claude-3-5-haiku", input_tokens=7, output_tokens=3, finish_reasons=["stop"])
    rt.end(deployment="claude", attempts=2, fallback_used=True, cost_usd=0.0001)


async def test_one_trace_with_two_attempts_is_exported(receiver: OtlpReceiver) -> None:
    providers = providers_from_env(receiver.env(OTEL_SERVICE_NAME="router-under-test"))
    assert providers is not None
    tracer_provider, meter_provider = providers
    send_request_with_fallback(Telemetry(tracer_provider, meter_provider, capture_content=False))
    await shutdown_providers(tracer_provider, meter_provider, timeout_s=5)

    spans = {s.name: s for s in receiver.spans()}
    assert set(spans) == {"router chat", "chat gpt-4o-mini", "chat claude-3-5-haiku-latest"}
    request, failed, ok = (
        spans["router chat"],
        spans["chat gpt-4o-mini"],
        spans["chat claude-3-5-haiku-latest"],
    )
    assert len({s.trace_id for s in spans.values()}) == 1
    assert request.parent_span_id is None and request.kind == "INTERNAL"
    assert failed.parent_span_id == request.span_id and ok.parent_span_id == request.span_id
    assert failed.kind == "CLIENT" and ok.kind == "CLIENT"
    assert failed.status_code == "ERROR" and failed.attributes["error.type"] == "unavailable"
    assert failed.event("exception").attributes["exception.message"] == "gpt-mini: connection refused"
    assert failed.attributes["server.address"] == "127.0.0.1" and failed.attributes["server.port"] == 9
    assert ok.status_code == "UNSET"
    assert ok.attributes["gen_ai.provider.name"] == "anthropic"
    assert ok.attributes["gen_ai.usage.output_tokens"] == 3
    assert ok.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert request.attributes["router.candidates"] == ["gpt-mini", "claude"]
    assert request.attributes["router.fallback_used"] is True
    assert request.event("router.fallback").attributes["to"] == "claude"
    assert request.resource["service.name"] == "router-under-test"
    assert request.scope == "router.tracing"
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage", "router.requests",
            "router.fallbacks", "router.cost"} <= receiver.metric_names()  # fmt: skip


async def test_signal_specific_endpoint_is_used_as_given() -> None:
    with OtlpReceiver.start_http() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.endpoint}/v1/traces",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        }
        providers = providers_from_env(env)
        assert providers is not None
        send_request_with_fallback(Telemetry(*providers))
        await shutdown_providers(*providers, timeout_s=5)
        assert len(receiver.spans()) == 3
        assert receiver.metric_requests == []  # no metrics endpoint was given


async def test_metrics_exporter_none_sends_only_spans() -> None:
    with OtlpReceiver.start_grpc() as receiver:
        providers = providers_from_env(receiver.env(OTEL_METRICS_EXPORTER="none"))
        assert providers is not None
        send_request_with_fallback(Telemetry(*providers))
        await shutdown_providers(*providers, timeout_s=5)
        assert len(receiver.wait_for_spans(3)) == 3
        assert receiver.metric_requests == []


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:4317"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "  "},
    ],
)
def test_no_providers_without_a_traces_endpoint(env: dict[str, str]) -> None:
    assert providers_from_env(env) is None


def test_unsupported_protocol_is_refused() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
    }
    with pytest.raises(ValueError, match="http/json"):
        providers_from_env(env)


async def test_resource_comes_from_the_given_env() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=staging,team=ml%20ops",
    }
    providers = providers_from_env(env)
    assert providers is not None
    attributes = providers[0].resource.attributes
    assert attributes["service.name"] == "llm-policy-router"
    assert attributes["deployment.environment.name"] == "staging"
    assert attributes["team"] == "ml ops"
    await shutdown_providers(*providers)
