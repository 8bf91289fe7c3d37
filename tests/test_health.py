"""The health tracker and its circuit breaker, driven by a fake clock (no test sleeps)."""

from __future__ import annotations

import asyncio
import math
import random
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from router.breaker import REASONS
from router.health import (
    AttemptResult,
    BreakerConfig,
    CircuitState,
    DeploymentHealth,
    HealthTracker,
    parse_retry_after,
)
from router.health_store import MemorySharedHealth
from tests.conftest import FakeClock

OPEN, CLOSED, HALF_OPEN = CircuitState.OPEN, CircuitState.CLOSED, CircuitState.HALF_OPEN
D = "dep"


Change = tuple[str, CircuitState, CircuitState, str]


class Harness:
    """A tracker, its clock and the transitions it announced."""

    def __init__(self, **config: float) -> None:
        config.setdefault("latency_warmup_samples", 0)  # these tests count every sample
        self.clock = FakeClock()
        self.changes: list[Change] = []
        self.health = HealthTracker(
            BreakerConfig(**config),
            clock=self.clock,
            on_state_change=lambda *change: self.changes.append(change),
        )

    def ok(self, latency_s: float = 0.1, name: str = D, **extra: object) -> None:
        self.health.record(AttemptResult(name, ok=True, latency_s=latency_s, **extra))  # type: ignore[arg-type]

    def fail(self, kind: str = "unavailable", name: str = D, **extra: object) -> None:
        self.health.record(
            AttemptResult(name, ok=False, latency_s=0.05, error_kind=kind, **extra)  # type: ignore[arg-type]
        )

    def open_circuit(self) -> None:
        for _ in range(self.health._config.consecutive_failures):
            self.fail("timeout")
        assert self.health.state(D) is OPEN

    def reasons(self) -> list[str]:
        return [reason for *_, reason in self.changes]


@pytest.fixture
def h() -> Harness:
    return Harness()


# -- closed -> open -----------------------------------------------------------------


def test_opens_on_failure_rate_once_min_calls_reached() -> None:
    h = Harness(min_calls=10, failure_rate=0.5, consecutive_failures=100)
    for _ in range(4):
        h.ok()
        h.fail()
    h.ok()
    assert h.health.state(D) is CLOSED  # 4 faults of 9 calls: below volume anyway
    h.fail()  # 5 of 10
    assert h.health.state(D) is OPEN
    assert h.changes == [(D, CLOSED, OPEN, "failure_rate")]
    assert not h.health.available(D)


def test_below_min_calls_never_opens_on_rate() -> None:
    h = Harness(min_calls=10, consecutive_failures=100)
    for _ in range(9):
        h.fail()
    assert h.health.state(D) is CLOSED
    assert h.health.available(D)


def test_faults_leave_the_window() -> None:
    h = Harness(min_calls=10, consecutive_failures=100, window_s=30.0)
    for _ in range(9):
        h.fail()
    h.clock.advance(31)
    h.fail()
    assert h.health.state(D) is CLOSED
    assert h.health.snapshot([D])[0].calls_in_window == 1


def test_opens_on_consecutive_failures() -> None:
    h = Harness(consecutive_failures=5)
    for _ in range(4):
        h.fail("timeout")
    h.ok()
    for _ in range(4):
        h.fail("malformed_response")
    assert h.health.state(D) is CLOSED
    h.fail("stream_interrupted")
    assert h.health.state(D) is OPEN
    assert h.reasons() == ["consecutive_failures"]


def test_unknown_error_kinds_count_as_faults() -> None:
    h = Harness(consecutive_failures=2)
    h.fail("provider_error")
    h.health.record(AttemptResult(D, ok=False, latency_s=0.1))  # no kind at all
    assert h.health.state(D) is OPEN
    assert h.health.snapshot([D])[0].errors_by_kind == {"provider_error": 1, "unknown": 1}


@pytest.mark.parametrize("kind", ["invalid_request", "context_window", "cancelled"])
def test_caller_errors_never_open(kind: str) -> None:
    h = Harness(min_calls=1, consecutive_failures=1)
    for _ in range(100):
        h.fail(kind)
    assert h.health.state(D) is CLOSED
    assert h.health.available(D)
    snap = h.health.snapshot([D])[0]
    assert snap.consecutive_failures == 0
    assert snap.errors_by_kind == {kind: 100}
    assert snap.fault_rate == 0.0 and snap.error_rate == 1.0
    assert h.health.latency_ms(D, "p50") is None  # only successes teach latency


# -- open -> half-open -> closed / open ---------------------------------------------


def test_open_goes_half_open_after_cooldown_on_admit(h: Harness) -> None:
    h.open_circuit()
    assert h.health.recovers_at(D) == h.clock.now + 5.0
    assert not h.health.admit(D)
    h.clock.advance(4.999)
    assert not h.health.available(D) and not h.health.admit(D)
    h.clock.advance(0.001)
    assert h.health.available(D)
    assert h.health.state(D) is OPEN  # available() is a pure read
    assert h.health.recovers_at(D) == h.clock.now
    assert h.health.admit(D)
    assert h.health.state(D) is HALF_OPEN
    assert h.changes[-1] == (D, OPEN, HALF_OPEN, "cooldown_elapsed")


def test_half_open_closes_when_the_trial_succeeds(h: Harness) -> None:
    h.open_circuit()
    h.clock.advance(5)
    assert h.health.admit(D)
    h.ok()
    assert h.health.state(D) is CLOSED
    assert h.changes[-1] == (D, HALF_OPEN, CLOSED, "trials_succeeded")
    snap = h.health.snapshot([D])[0]
    assert snap.consecutive_failures == 0 and snap.fault_rate == 0.0
    h.fail()  # the faults before the open were forgotten
    assert h.health.state(D) is CLOSED


def test_half_open_admits_exactly_n_trials() -> None:
    h = Harness(half_open_trials=3)
    h.open_circuit()
    h.clock.advance(5)
    assert [h.health.admit(D) for _ in range(5)] == [True, True, True, False, False]
    assert not h.health.available(D)
    h.ok()
    h.ok()
    assert h.health.state(D) is HALF_OPEN
    assert not h.health.admit(D)  # a finished trial does not make room for a fourth
    h.ok()
    assert h.health.state(D) is CLOSED


def test_neutral_result_in_half_open_frees_its_trial_slot(h: Harness) -> None:
    h.open_circuit()
    h.clock.advance(5)
    assert h.health.admit(D) and not h.health.admit(D)
    h.fail("invalid_request")
    assert h.health.state(D) is HALF_OPEN
    assert h.health.admit(D)


def test_a_lost_trial_frees_its_slot_after_trial_timeout() -> None:
    h = Harness(trial_timeout_s=20.0)
    h.open_circuit()
    h.clock.advance(5)
    assert h.health.admit(D)  # and its result never comes back
    assert h.health.recovers_at(D) == h.clock.now + 20.0
    h.clock.advance(19.9)
    assert not h.health.admit(D)
    h.clock.advance(0.1)
    assert h.health.available(D) and h.health.admit(D)


def test_trial_failure_reopens_with_doubled_cooldown_up_to_the_cap() -> None:
    h = Harness(cooldown_s=5.0, max_cooldown_s=60.0)
    h.open_circuit()
    seen = []
    for _ in range(6):
        h.clock.advance(h.health.recovers_at(D) - h.clock.now)
        assert h.health.admit(D)
        h.fail("timeout")
        assert h.health.state(D) is OPEN
        seen.append(h.health.recovers_at(D) - h.clock.now)
    assert seen == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    assert h.reasons()[:3] == ["consecutive_failures", "cooldown_elapsed", "trial_failed"]


def test_cooldown_shrinks_back_after_healthy_closes() -> None:
    h = Harness(cooldown_s=5.0)
    h.open_circuit()
    for _ in range(2):  # 5 -> 10 -> 20
        h.clock.advance(h.health.recovers_at(D) - h.clock.now)
        h.health.admit(D)
        h.fail()
    durations = []
    for _ in range(3):
        h.clock.advance(h.health.recovers_at(D) - h.clock.now)
        assert h.health.admit(D)
        h.ok()
        assert h.health.state(D) is CLOSED
        h.open_circuit()
        durations.append(h.health.recovers_at(D) - h.clock.now)
    assert durations == [10.0, 5.0, 5.0]


def test_results_while_open_do_not_move_the_breaker(h: Harness) -> None:
    h.open_circuit()
    until = h.health.recovers_at(D)
    h.ok()  # an attempt that started before the open, or a panic-mode call
    h.fail()
    assert h.health.state(D) is OPEN and h.health.recovers_at(D) == until


def test_every_transition_reason_is_documented(h: Harness) -> None:
    h.open_circuit()
    h.clock.advance(5)
    h.health.admit(D)
    h.fail()
    h.clock.advance(10)
    h.health.admit(D)
    h.ok()
    assert set(h.reasons()) <= set(REASONS)
    assert [(old, new) for _, old, new, _ in h.changes] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]


def test_a_failing_listener_does_not_fail_the_request(caplog: pytest.LogCaptureFixture) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("listener bug")

    health = HealthTracker(BreakerConfig(consecutive_failures=1), clock=FakeClock(), on_state_change=boom)
    health.record(AttemptResult(D, ok=False, latency_s=1.0, error_kind="timeout"))
    assert health.state(D) is OPEN
    assert "listener failed" in caplog.text


# -- cooling: 429 and auth ----------------------------------------------------------


def test_rate_limit_cools_for_retry_after_without_opening(h: Harness) -> None:
    h.fail("rate_limited", retry_after_s=12.0)
    assert h.health.state(D) is CLOSED and not h.changes
    assert not h.health.available(D) and not h.health.admit(D)
    assert h.health.recovers_at(D) == h.clock.now + 12.0
    snap = h.health.snapshot([D])[0]
    assert snap.cooling == "rate_limited" and snap.retry_in_s == 12.0
    assert snap.consecutive_failures == 0
    h.clock.advance(12.0)
    assert h.health.available(D) and h.health.admit(D)
    assert h.health.snapshot([D])[0].cooling is None


def test_unavailable_reason_says_why(h: Harness) -> None:
    assert h.health.unavailable_reason(D) is None
    h.fail("rate_limited", retry_after_s=2.0)
    assert h.health.unavailable_reason(D) == "rate_limited"
    h.clock.advance(2.0)
    h.open_circuit()
    assert h.health.unavailable_reason(D) == "open"
    h.clock.advance(5.0)
    assert h.health.unavailable_reason(D) is None
    assert h.health.admit(D)
    assert h.health.unavailable_reason(D) == "half_open"
    assert h.health.clock() == h.clock.now


def test_rate_limit_without_retry_after_uses_the_default(h: Harness) -> None:
    h.fail("rate_limited")
    assert h.health.recovers_at(D) == h.clock.now + 1.0


def test_rate_limit_retry_after_is_clamped() -> None:
    h = Harness(rate_limit_max_cooldown_s=60.0)
    h.fail("rate_limited", retry_after_s=3600.0)
    assert h.health.recovers_at(D) == h.clock.now + 60.0


def test_rate_limit_with_an_http_date() -> None:
    h = Harness()
    wall = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    header = format_datetime(datetime(2025, 1, 2, 3, 4, 35, tzinfo=UTC), usegmt=True)
    h.fail("rate_limited", retry_after_s=parse_retry_after(header, now_wall=wall))
    assert h.health.recovers_at(D) == h.clock.now + 30.0


def test_a_later_short_retry_after_does_not_shorten_cooling(h: Harness) -> None:
    h.fail("rate_limited", retry_after_s=10.0)
    h.fail("rate_limited", retry_after_s=1.0)
    assert h.health.recovers_at(D) == h.clock.now + 10.0


@pytest.mark.parametrize("kind", ["auth", "not_found"])
def test_misconfiguration_cools_for_auth_cooldown(kind: str) -> None:
    h = Harness(auth_cooldown_s=300.0)
    h.fail(kind, status_code=401)
    assert h.health.state(D) is CLOSED and not h.health.available(D)
    assert h.health.recovers_at(D) == h.clock.now + 300.0
    assert h.health.snapshot([D])[0].cooling == kind
    h.clock.advance(300)
    assert h.health.available(D)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12.0),
        (" 1.5 ", 1.5),
        (7, 7.0),
        (2.5, 2.5),
        ("-3", 0.0),
        (-3.0, 0.0),
        ("Thu, 01 Jan 1970 00:01:00 GMT", 50.0),
        ("Thu, 01 Jan 1970 00:01:00 -0000", 50.0),  # parsed naive: read as UTC
        ("Thu, 01 Jan 1970 00:00:01 GMT", 0.0),  # in the past
        ("soon", None),
        ("", None),
        ("nan", None),
        (None, None),
        (math.inf, None),
    ],
)
def test_parse_retry_after(value: str | float | None, expected: float | None) -> None:
    assert parse_retry_after(value, now_wall=10.0) == expected


# -- in flight and latency --------------------------------------------------------


def test_in_flight_counts_begins_minus_records(h: Harness) -> None:
    assert h.health.in_flight(D) == 0
    for _ in range(3):
        h.health.begin(D)
    h.ok()
    assert h.health.in_flight(D) == 2
    h.fail()
    h.fail("rate_limited")
    h.ok()  # a record without a begin never goes negative
    assert h.health.in_flight(D) == 0


def test_percentiles_over_the_window(h: Harness) -> None:
    assert h.health.latency_ms(D, "p50") is None
    for ms in range(1, 101):
        h.ok(ms / 1000)
    assert h.health.latency_ms(D, "p50") == pytest.approx(50.5)
    assert h.health.latency_ms(D, "p95") == pytest.approx(95.05)
    assert h.health.latency_ms(D, "p99") == pytest.approx(99.01)
    h.clock.advance(30.001)
    assert h.health.latency_ms(D, "p50") is None  # cold again: the window is empty
    assert h.health.latency_ms(D, "ewma") is not None  # the EWMA remembers


def test_percentiles_follow_the_sliding_window(h: Harness) -> None:
    h.ok(1.0)
    h.clock.advance(20)
    h.ok(0.1)
    assert h.health.latency_ms(D, "p50") == pytest.approx(550.0)
    h.clock.advance(10.5)  # the 1 s sample is now older than 30 s
    assert h.health.latency_ms(D, "p50") == pytest.approx(100.0)


def test_percentiles_match_a_brute_force_reference() -> None:
    h = Harness(max_samples=50, window_s=10.0)
    rng = random.Random(7)
    kept: list[tuple[float, float]] = []
    for _ in range(2000):
        h.clock.advance(rng.choice((0.0, 0.01, 0.3, 2.0)))
        value = rng.choice((rng.random(), 0.5))  # ties on purpose
        h.ok(value)
        kept = [*kept, (h.clock.now, value)][-50:]
        window = sorted(v for t, v in kept if t >= h.clock.now - 10.0)
        pos = 0.95 * (len(window) - 1)
        low = int(pos)
        high = min(low + 1, len(window) - 1)
        expected = window[low] + (window[high] - window[low]) * (pos - low)
        assert h.health.latency_ms(D, "p95") == pytest.approx(expected * 1000)


def test_non_finite_latency_is_ignored(h: Harness) -> None:
    h.ok(math.nan)
    h.ok(-1.0)
    h.ok(math.inf)
    assert h.health.latency_ms(D, "p50") is None and h.health.peak_ewma_ms(D) is None
    h.ok(0.2)
    assert h.health.latency_ms(D, "p50") == pytest.approx(200.0)


def test_ewma(h: Harness) -> None:
    for s in (0.1, 0.2, 0.4):
        h.ok(s)
    # 100 -> 100 + 0.3 * (200 - 100) = 130 -> 130 + 0.3 * (400 - 130) = 211
    assert h.health.latency_ms(D, "ewma") == pytest.approx(211.0)


def test_ttft_and_tokens_per_second(h: Harness) -> None:
    h.ok(1.1, ttft_s=0.1, output_tokens=100)  # 100 tokens in 1.0 s after the first
    h.ok(2.2, ttft_s=0.2, output_tokens=100)  # 50 tokens/s
    h.ok(0.5, ttft_s=0.3)
    assert h.health.latency_ms(D, "ttft") == pytest.approx(200.0)  # median
    assert h.health.snapshot([D])[0].tokens_per_s == pytest.approx(100 + 0.3 * (50 - 100))


def test_unknown_latency_stat_is_an_error(h: Harness) -> None:
    with pytest.raises(ValueError, match="p90"):
        h.health.latency_ms(D, "p90")


def test_peak_ewma_jumps_up_and_decays_with_time(h: Harness) -> None:
    assert h.health.peak_ewma_ms(D) is None
    h.ok(0.1)
    assert h.health.peak_ewma_ms(D) == pytest.approx(100.0)
    h.ok(2.0)  # slow: taken at once
    assert h.health.peak_ewma_ms(D) == pytest.approx(2000.0)
    h.clock.advance(10.0)  # one decay constant
    assert h.health.peak_ewma_ms(D) == pytest.approx(2000.0 / math.e)
    h.ok(0.1)  # faster than the decayed cost: blended in by the time elapsed
    w = math.exp(-1.0)
    assert h.health.peak_ewma_ms(D) == pytest.approx(2000.0 * w * w + 100.0 * (1 - w))


def test_peak_ewma_learns_from_timeouts_only_among_faults(h: Harness) -> None:
    h.ok(0.1)
    h.fail("unavailable")  # a fast 503 must not make the deployment look fast
    assert h.health.peak_ewma_ms(D) == pytest.approx(100.0)
    h.health.record(AttemptResult(D, ok=False, latency_s=30.0, error_kind="timeout"))
    assert h.health.peak_ewma_ms(D) == pytest.approx(30000.0)
    assert h.health.latency_ms(D, "p99") == pytest.approx(100.0)


def test_memory_stays_bounded_under_heavy_traffic() -> None:
    h = Harness(max_samples=256)
    for i in range(100_000):
        h.clock.advance(0.0001)
        h.ok(0.01 + (i % 7) / 1000, ttft_s=0.005)
    stats = h.health._deployments[D].latency  # white-box: the bound is the point
    assert stats.stored_samples() <= 2 * 256
    assert h.health.snapshot([D])[0].calls_in_window == 100_000


# -- reads and snapshot -----------------------------------------------------------


def test_unknown_deployments_are_cold_and_available(h: Harness) -> None:
    assert h.health.available("never-seen")
    assert h.health.state("never-seen") is CLOSED
    assert h.health.recovers_at("never-seen") == h.clock.now
    assert h.health.snapshot() == []
    assert h.health.snapshot(["never-seen"])[0].available


def test_snapshot_content() -> None:
    h = Harness(consecutive_failures=3)
    h.health.begin(D)
    h.ok(0.2, ttft_s=0.05, output_tokens=30)
    h.fail("rate_limited", retry_after_s=3.0)
    h.ok(0.4, name="other")
    for _ in range(3):
        h.fail("timeout", name="other")
    h.health.begin("other")
    snaps = h.health.snapshot()
    assert [s.name for s in snaps] == [D, "other"]
    dep, other = snaps
    assert isinstance(dep, DeploymentHealth)
    assert dep.state is CLOSED and dep.cooling == "rate_limited" and not dep.available
    assert dep.p50_ms == pytest.approx(200.0) and dep.ttft_ms == pytest.approx(50.0)
    assert dep.tokens_per_s == pytest.approx(200.0)
    assert dep.calls_in_window == 2 and dep.errors_by_kind == {"rate_limited": 1}
    assert dep.error_rate == 0.5 and dep.fault_rate == 0.0
    assert dep.retry_at == h.clock.now + 3.0 and dep.retry_in_s == 3.0
    assert dep.in_flight == 0
    assert other.state is OPEN and not other.available and other.cooling is None
    assert other.consecutive_failures == 3 and other.errors_by_kind == {"timeout": 3}
    assert other.fault_rate == 0.75 and other.in_flight == 1
    assert other.retry_in_s == 5.0 and other.cooldown_s == 5.0
    assert other.model_dump(mode="json")["state"] == "open"


def test_breaker_config_is_strict() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(cooldown_seconds=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        BreakerConfig(failure_rate=1.5)


def test_hot_path_costs_microseconds() -> None:
    health = HealthTracker()
    names = [f"d{i}" for i in range(8)]
    n = 20_000
    start = time.perf_counter()
    for i in range(n):
        name = names[i % 8]
        health.available(name)
        health.admit(name)
        health.begin(name)
        health.record(AttemptResult(name, ok=i % 10 != 0, latency_s=0.1, error_kind="timeout"))
    per_request_us = (time.perf_counter() - start) / n * 1e6
    assert per_request_us < 100  # generous for slow CI; typically ~5 µs for all four calls


# -- sharing opens between replicas (in process) ----------------------------------


async def test_replicas_share_an_open_circuit_in_memory() -> None:
    clock = FakeClock()
    store = MemorySharedHealth(clock=clock)
    changes: list[Change] = []
    a = HealthTracker(BreakerConfig(consecutive_failures=2), clock=clock, shared=store)
    b = HealthTracker(clock=clock, shared=store, on_state_change=lambda *c: changes.append(c))
    for _ in range(2):
        a.record(AttemptResult(D, ok=False, latency_s=1.0, error_kind="timeout"))
    assert await a.sync() and await b.sync()
    assert b.state(D) is OPEN and not b.available(D)
    assert b.recovers_at(D) == clock.now + 5.0
    assert changes == [(D, CLOSED, OPEN, "shared")]
    assert await b.sync() and len(changes) == 1  # the same open is not news twice
    clock.advance(5.0)
    assert b.admit(D) and b.state(D) is HALF_OPEN  # each replica probes for itself
    assert await a.sync() and a.state(D) is OPEN  # its own open read back changes nothing
    await a.aclose()
    await b.aclose()


async def test_adopted_open_keeps_the_longer_cooldown() -> None:
    clock = FakeClock()
    store = MemorySharedHealth(clock=clock)
    a = HealthTracker(clock=clock, shared=store)
    b = HealthTracker(clock=clock, shared=store)
    await store.publish_open(D, 40.0, 40.0)  # someone's trial failed a few times
    await b.sync()
    clock.advance(40)
    assert b.admit(D)
    b.record(AttemptResult(D, ok=False, latency_s=1.0, error_kind="timeout"))
    assert b.recovers_at(D) == clock.now + 80.0  # doubled from the adopted ladder
    await a.aclose()
    await b.aclose()


async def test_first_admit_in_a_loop_starts_the_refresher() -> None:
    clock = FakeClock()
    store = MemorySharedHealth(clock=clock)
    await store.publish_open(D, 5.0, 5.0)
    b = HealthTracker(clock=clock, shared=store)
    assert b.admit("other")  # no start(): the first admit starts pulling
    for _ in range(10):  # let the background task run; no time passes
        await asyncio.sleep(0)
    assert b.state(D) is OPEN
    await b.aclose()


def test_tracker_without_loop_queues_its_opens() -> None:
    clock = FakeClock()
    store = MemorySharedHealth(clock=clock)
    a = HealthTracker(BreakerConfig(consecutive_failures=1), clock=clock, shared=store)
    assert a.admit(D)  # no running loop: nothing to start, nothing raised
    a.record(AttemptResult(D, ok=False, latency_s=1.0, error_kind="timeout"))
    assert a.state(D) is OPEN


def test_first_success_is_a_warm_up_not_a_latency_sample() -> None:
    h = Harness(latency_warmup_samples=1)
    h.ok(latency_s=3.0)  # LiteLLM's and the connection's set-up
    assert h.health.latency_ms(D, "p50") is None and h.health.latency_ms(D, "ewma") is None
    h.ok(latency_s=0.02)
    assert h.health.latency_ms(D, "ewma") == pytest.approx(20.0)
