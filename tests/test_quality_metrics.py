"""Quality feedback as metrics: the `router.quality` and `router.quality.samples` gauges per route and deployment."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, NumberDataPoint

from router.quality import QualityTracker
from router.tracing import Telemetry
from tests.conftest import FakeClock

pytestmark = pytest.mark.timeout(30)


def gauges(reader: InMemoryMetricReader) -> dict[str, dict[tuple[str, str], Any]]:
    """metric name -> (route, deployment) -> value, for the quality gauges."""
    data = reader.get_metrics_data()
    out: dict[str, dict[tuple[str, str], Any]] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name.startswith("router.quality"):
                    assert m.unit == ("1" if m.name == "router.quality" else "{sample}")
                    assert isinstance(m.data, Gauge)
                    points = out.setdefault(m.name, {})
                    for p in m.data.data_points:
                        assert isinstance(p, NumberDataPoint) and p.attributes is not None
                        assert set(p.attributes) == {"router.route", "router.deployment"}  # no task label
                        points[(str(p.attributes["router.route"]), str(p.attributes["router.deployment"]))] = p.value
    return out


@pytest.fixture
def tracker(clock: FakeClock) -> QualityTracker:
    return QualityTracker(clock=clock)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def telemetry(reader: InMemoryMetricReader) -> Telemetry:
    return Telemetry(meter_provider=MeterProvider(metric_readers=[reader]))


async def test_the_gauges_report_feedback_per_route_and_deployment(
        tracker: QualityTracker, telemetry: Telemetry, reader: InMemoryMetricReader) -> None:
    telemetry.observe_quality(tracker)
    assert gauges(reader).get("router.quality", {}) == {}  # nothing measured yet: no point
    for i, score in enumerate([1.0, 0.5, 0.0, 1.0]):
        tracker.register_now(f"r{i}", deployment="gpt", route="default", task="code", tenant="acme")
        await tracker.feedback(f"r{i}", score)
    await tracker.record("claude", "batch", 0.25, task="summarise")
    seen = gauges(reader)
    assert seen["router.quality"] == {("default", "gpt"): pytest.approx(0.625), ("batch", "claude"): 0.25}
    assert seen["router.quality.samples"] == {("default", "gpt"): 4, ("batch", "claude"): 1}


async def test_the_gauges_follow_new_feedback_and_a_swapped_tracker(
        tracker: QualityTracker, telemetry: Telemetry, reader: InMemoryMetricReader, clock: FakeClock) -> None:
    telemetry.observe_quality(tracker)
    await tracker.record("gpt", "default", 1.0)
    assert gauges(reader)["router.quality"] == {("default", "gpt"): 1.0}
    await tracker.record("gpt", "default", 0.0)
    assert gauges(reader)["router.quality"] == {("default", "gpt"): pytest.approx(0.5)}
    other = QualityTracker(clock=clock)
    await other.record("mistral", "default", 0.75)
    telemetry.observe_quality(other)  # a second call swaps the source; no duplicate instrument
    seen = gauges(reader)
    assert seen["router.quality"] == {("default", "mistral"): 0.75}
    assert seen["router.quality.samples"] == {("default", "mistral"): 1}


async def test_route_estimates_leave_out_task_and_deployment_wide_keys(tracker: QualityTracker) -> None:
    await tracker.record("gpt", "default", 0.8, task="code")
    assert [(r, d, e.samples) for r, d, e in tracker.route_estimates()] == [("default", "gpt", 1)]


async def test_without_a_meter_provider_nothing_is_registered(tracker: QualityTracker) -> None:
    telemetry = Telemetry()
    telemetry.observe_quality(tracker)  # no provider: a no-op, never the global one
    assert not telemetry.enabled
