"""Traces of real routed requests leave the process over OTLP (gRPC and HTTP) with no code in the service.

`create_default_router()` sees `OTEL_EXPORTER_OTLP_ENDPOINT`, builds its own
providers (never the global ones) and `aclose()` flushes them to the in-test
receiver.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace as otel_trace

from router.sim import Fault, SimServer
from tests.conftest import RouterFactory
from tests.otlp_receiver import OtlpReceiver

POLICY = """\
routes:
  default:
    strategy: fallback
    targets: [sim-flaky, sim-fast]
    retry: {attempts: 1}
"""

SECRET_PROMPT = "zebra-marker-7731 tell me about the weather"


@pytest.fixture(params=["grpc", "http/protobuf"])
def receiver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    rx = OtlpReceiver.start_grpc() if request.param == "grpc" else OtlpReceiver.start_http()
    with rx:
        for key, value in rx.env(OTEL_SERVICE_NAME="router-it").items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
        yield rx


async def test_fallback_exports_one_trace_with_two_attempt_spans(
    make_router: RouterFactory, fresh_sim: SimServer, receiver: OtlpReceiver
) -> None:
    router = await make_router(POLICY)
    fresh_sim.script("sim-flaky", [Fault.UNAVAILABLE])
    response = await router.complete(SECRET_PROMPT, tenant="acme")
    assert response.deployment == "sim-fast"
    await router.aclose()  # flushes the router's own providers

    spans = [s for s in receiver.spans() if s.name != "router policy.reload"]
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"router chat", "chat sim-flaky", "chat sim-fast"}
    parent, failed, ok = by_name["router chat"], by_name["chat sim-flaky"], by_name["chat sim-fast"]
    assert len({s.trace_id for s in spans}) == 1
    assert failed.parent_span_id == parent.span_id and ok.parent_span_id == parent.span_id
    assert parent.resource["service.name"] == "router-it"
    assert parent.attributes["router.route"] == "default"
    assert parent.attributes["router.deployment"] == "sim-fast"
    assert parent.attributes["router.attempts"] == 2
    assert parent.attributes["router.fallback_used"] is True
    assert parent.event("router.fallback").attributes["to"] == "sim-fast"
    assert failed.kind == "CLIENT" and failed.status_code == "ERROR"
    assert failed.attributes["error.type"] == "unavailable"
    assert ok.status_code != "ERROR"
    assert ok.attributes["gen_ai.operation.name"] == "chat"
    assert ok.attributes["gen_ai.provider.name"] == "openai"
    assert ok.attributes["gen_ai.request.model"] == "sim-fast"
    assert ok.attributes["gen_ai.usage.output_tokens"] == response.usage.output_tokens
    assert ok.attributes["server.address"] == "127.0.0.1"
    assert ok.attributes["server.port"] == fresh_sim.port
    # content capture is off: the prompt and the answer appear nowhere
    for span in spans:
        blobs = [str(v) for v in span.attributes.values()]
        blobs += [str(v) for e in span.events for v in e.attributes.values()]
        assert not any("zebra-marker" in b for b in blobs), span.name
        assert not any(response.text in b for b in blobs if len(response.text) > 8), span.name
        assert not any("sk-test" in b for b in blobs), span.name
    assert "gen_ai.client.operation.duration" in receiver.metric_names()


async def test_request_span_joins_the_callers_trace(
    make_router: RouterFactory, receiver: OtlpReceiver
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    caller = TracerProvider().get_tracer("service")
    router = await make_router(POLICY)
    with caller.start_as_current_span("handle request") as outer:
        await router.complete("hi")
    await router.aclose()
    parent = next(s for s in receiver.spans() if s.name == "router chat")
    assert parent.trace_id == format(outer.get_span_context().trace_id, "032x")
    assert parent.parent_span_id == format(outer.get_span_context().span_id, "016x")
    assert otel_trace.get_tracer_provider().__class__.__name__ != "TracerProvider"  # no global was set
