"""Build OTLP-exporting tracer and meter providers from `OTEL_*` variables.

The router never sets global providers: the caller passes these to
`Telemetry` (or `build_router` does) and shuts them down with
`shutdown_providers`. The exporter classes ignore `OTEL_EXPORTER_OTLP_PROTOCOL`,
so the class is chosen here.

Read from `env` (a mapping, so tests pass their own): OTEL_SDK_DISABLED,
OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT, ..._PROTOCOL ("grpc", the spec's
default, or "http/protobuf"), ..._HEADERS, ..._INSECURE (gRPC),
OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER ("none" turns a signal off),
OTEL_METRIC_EXPORT_INTERVAL (ms), OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
The exporters and processors still read their other settings (certificates,
compression, timeouts, OTEL_BSP_*, sampler) from `os.environ` themselves.

>>> providers_from_env({}) is None
True
>>> tp, mp = providers_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
...                              "OTEL_METRICS_EXPORTER": "none"})
>>> tp.resource.attributes["service.name"]
'llm-policy-router'
>>> import asyncio; asyncio.run(shutdown_providers(tp, mp))
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Literal
from urllib.parse import unquote

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.util.re import parse_env_headers

__all__ = ["DEFAULT_SERVICE_NAME", "providers_from_env", "shutdown_providers"]

DEFAULT_SERVICE_NAME = "llm-policy-router"
Signal = Literal["traces", "metrics"]
_PROTOCOLS = ("grpc", "http/protobuf")


def _get(env: Mapping[str, str], signal: Signal | None, name: str) -> str | None:
    """The signal-specific variable if set, else the generic one (empty counts as unset)."""
    if signal is not None:
        specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}", "").strip()
        if specific:
            return specific
    return env.get(f"OTEL_EXPORTER_OTLP_{name}", "").strip() or None


def _protocol(env: Mapping[str, str], signal: Signal) -> str:
    protocol = _get(env, signal, "PROTOCOL") or "grpc"
    if protocol not in _PROTOCOLS:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use one of {_PROTOCOLS}")
    return protocol


def _endpoint(env: Mapping[str, str], signal: Signal, protocol: str) -> str | None:
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    if specific:
        return specific  # the spec says signal endpoints are used as given
    generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not generic:
        return None
    if protocol == "http/protobuf":
        return f"{generic.rstrip('/')}/v1/{signal}"
    return generic


def _insecure(env: Mapping[str, str], signal: Signal) -> bool | None:
    value = _get(env, signal, "INSECURE")
    return None if value is None else value.lower() == "true"


def _headers(env: Mapping[str, str], signal: Signal) -> dict[str, str]:
    return dict(parse_env_headers(_get(env, signal, "HEADERS") or "", liberal=True))


def _span_exporter(env: Mapping[str, str], endpoint: str, protocol: str) -> SpanExporter:
    # Imported here: each protocol pulls in its own stack (grpcio or requests).
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=_insecure(env, "traces"), headers=_headers(env, "traces"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=endpoint, headers=_headers(env, "traces"))


def _metric_exporter(env: Mapping[str, str], endpoint: str, protocol: str) -> MetricExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(
            endpoint=endpoint, insecure=_insecure(env, "metrics"), headers=_headers(env, "metrics")
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=endpoint, headers=_headers(env, "metrics"))


def _resource(env: Mapping[str, str]) -> Resource:
    # Parsed from `env` (Resource.create alone reads only os.environ); these win over it.
    attributes: dict[str, str] = {}
    for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    if service := env.get("OTEL_SERVICE_NAME", "").strip():
        attributes[SERVICE_NAME] = service
    resource = Resource.create(attributes)
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def providers_from_env(
    env: Mapping[str, str] = os.environ,
) -> tuple[TracerProvider, MeterProvider] | None:
    """OTLP-exporting providers, or None unless a traces endpoint is configured.

    Returns None when OTEL_SDK_DISABLED is "true" or neither
    OTEL_EXPORTER_OTLP_ENDPOINT nor OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.
    Spans go through a BatchSpanProcessor; metrics through a
    PeriodicExportingMetricReader, unless OTEL_METRICS_EXPORTER is "none" or no
    metrics endpoint is known (then the MeterProvider has no reader). Raises
    ValueError for a protocol other than grpc or http/protobuf.
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    traces_protocol = _protocol(env, "traces")
    traces_endpoint = _endpoint(env, "traces", traces_protocol)
    if traces_endpoint is None:
        return None
    resource = _resource(env)
    tracer_provider = TracerProvider(resource=resource)
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none":
        exporter = _span_exporter(env, traces_endpoint, traces_protocol)
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    readers: list[PeriodicExportingMetricReader] = []
    metrics_protocol = _protocol(env, "metrics")
    metrics_endpoint = _endpoint(env, "metrics", metrics_protocol)
    metrics_on = env.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() != "none"
    if metrics_on and metrics_endpoint is not None:
        interval_ms = float(env.get("OTEL_METRIC_EXPORT_INTERVAL", "") or 60_000)
        exporter_m = _metric_exporter(env, metrics_endpoint, metrics_protocol)
        readers.append(PeriodicExportingMetricReader(exporter_m, interval_ms))
    return tracer_provider, MeterProvider(resource=resource, metric_readers=readers)


def _shutdown(tracer_provider: TracerProvider, meter_provider: MeterProvider, ms: int) -> None:
    try:
        tracer_provider.force_flush(ms)
        meter_provider.force_flush(ms)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown(ms)


async def shutdown_providers(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, *, timeout_s: float = 10.0
) -> None:
    """Flush and shut both providers down, in a thread: the SDK calls block on export.

    >>> import asyncio
    >>> asyncio.run(shutdown_providers(TracerProvider(), MeterProvider()))
    """
    await asyncio.to_thread(_shutdown, tracer_provider, meter_provider, int(timeout_s * 1000))
