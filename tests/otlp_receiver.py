"""An in-test OTLP receiver: proves spans and metrics really leave the process.

It listens on 127.0.0.1 with an OS-chosen port, speaking either OTLP/gRPC
(TraceService and MetricsService Export) or OTLP/HTTP with protobuf bodies
(POST /v1/traces and /v1/metrics), and keeps every request it decodes.

    receiver = OtlpReceiver.start_grpc()      # or .start_http()
    try:
        providers = providers_from_env(receiver.env())
        ...                                   # make spans, then flush the providers
        [span] = receiver.spans()
        assert span.attributes["router.route"] == "default"
    finally:
        receiver.stop()

As a pytest fixture: `with OtlpReceiver.start_http() as receiver: yield receiver`.
Export calls are synchronous, so once `force_flush()` returns the spans are here;
`wait_for_spans` covers exporters that flush on their own thread.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

Protocol = Literal["grpc", "http/protobuf"]


def decode_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as the plain Python value it carries."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [decode_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, kind)


def decode_attributes(pairs: Any) -> dict[str, Any]:
    """OTLP KeyValue pairs as a dict."""
    return {kv.key: decode_value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass(frozen=True)
class ReceivedEvent:
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, decoded; ids are hex, kind and status are short names."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: str  # "INTERNAL", "CLIENT", ...
    status_code: str  # "UNSET", "OK", "ERROR"
    status_message: str
    attributes: dict[str, Any]
    events: tuple[ReceivedEvent, ...] = ()
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""

    def event(self, name: str) -> ReceivedEvent:
        return next(e for e in self.events if e.name == name)


def _decode_span(span: Span, resource: dict[str, Any], scope: str) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex() or None,
        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        status_code=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        status_message=span.status.message,
        attributes=decode_attributes(span.attributes),
        events=tuple(ReceivedEvent(e.name, decode_attributes(e.attributes)) for e in span.events),
        resource=resource,
        scope=scope,
    )


class OtlpReceiver:
    """Collects ExportTraceServiceRequest / ExportMetricsServiceRequest messages."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol: Protocol = protocol
        self.endpoint = ""
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._changed = threading.Condition()
        self._stop: Callable[[], None] = lambda: None

    @classmethod
    def start_grpc(cls) -> OtlpReceiver:
        """A receiver speaking OTLP/gRPC on 127.0.0.1:<free port>."""
        receiver = cls("grpc")
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(receiver), server)  # type: ignore[no-untyped-call]
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _MetricsServicer(receiver), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        receiver.endpoint = f"http://127.0.0.1:{port}"
        receiver._stop = lambda: server.stop(grace=None).wait(5)
        return receiver

    @classmethod
    def start_http(cls) -> OtlpReceiver:
        """A receiver speaking OTLP/HTTP (protobuf) on 127.0.0.1:<free port>."""
        receiver = cls("http/protobuf")
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(receiver))
        server.daemon_threads = True
        # A short poll interval so stop() returns within milliseconds.
        thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
        thread.start()
        receiver.endpoint = f"http://127.0.0.1:{server.server_address[1]}"

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        receiver._stop = stop
        return receiver

    def env(self, **extra: str) -> dict[str, str]:
        """OTEL_* variables pointing an exporter here (for `providers_from_env`)."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": self.protocol,
        } | extra

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._changed:
            requests = list(self.trace_requests)
        out: list[ReceivedSpan] = []
        for request in requests:
            for rs in request.resource_spans:
                resource = decode_attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    out.extend(_decode_span(s, resource, ss.scope.name) for s in ss.spans)
        return out

    def metric_names(self) -> set[str]:
        """Names of every metric received so far."""
        with self._changed:
            requests = list(self.metric_requests)
        return {
            m.name
            for request in requests
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }

    def wait_for_spans(self, count: int, timeout_s: float = 5.0) -> list[ReceivedSpan]:
        """Block until `count` spans have arrived (or fail after `timeout_s`)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: self._span_count() >= count, timeout_s)
        if not arrived:
            raise AssertionError(f"expected {count} spans, got {self._span_count()}")
        return self.spans()

    def clear(self) -> None:
        with self._changed:
            self.trace_requests.clear()
            self.metric_requests.clear()

    def stop(self) -> None:
        self._stop()

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _span_count(self) -> int:
        return sum(len(ss.spans) for r in self.trace_requests for rs in r.resource_spans for ss in rs.scope_spans)

    def _add_traces(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._changed:
            self.trace_requests.append(request)
            self._changed.notify_all()

    def _add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with self._changed:
            self.metric_requests.append(request)
            self._changed.notify_all()


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self._receiver._add_traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self._receiver._add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _handler_for(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            response: Any
            if self.path == "/v1/traces":
                trace_request = trace_service_pb2.ExportTraceServiceRequest()
                trace_request.ParseFromString(body)
                receiver._add_traces(trace_request)
                response = trace_service_pb2.ExportTraceServiceResponse()
            elif self.path == "/v1/metrics":
                metric_request = metrics_service_pb2.ExportMetricsServiceRequest()
                metric_request.ParseFromString(body)
                receiver._add_metrics(metric_request)
                response = metrics_service_pb2.ExportMetricsServiceResponse()
            else:
                self.send_error(404)
                return
            payload = response.SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            return None

    return Handler
