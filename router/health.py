"""Health of each deployment: latency, errors, circuit breaking, shared across replicas.

The router asks `available`/`admit` before an attempt, calls `begin` when it
starts and `record` when it ends; strategies read `latency_ms`,
`peak_ewma_ms` and `in_flight`. These calls are synchronous, never touch the
network and cost a few microseconds.

How results count (Envoy outlier detection, resilience4j, Finagle):

- what each error kind does is the `health` column of
  `router.errors.ERROR_KINDS`: upstream faults (timeout, unavailable,
  malformed_response, stream_interrupted, or an unknown kind) drive the
  breaker, see `router.breaker`;
- caller errors (invalid_request, context_window), content-filter refusals
  and cancelled attempts count for nothing but the error tally: they say
  nothing of the deployment's health;
- rate_limited (429) *cools* the deployment for Retry-After (clamped, or a
  default); auth (401/403) and not_found (404, a misconfigured model) cool it
  for `auth_cooldown_s`. Cooling is not a circuit state: `state()` stays what
  the breaker says, `available()` is False, the snapshot's `cooling` names
  the reason and `retry_at` says until when, and `on_state_change` is not
  called (nothing changed state). Cooling is local to a replica;
- only successes feed the latency percentiles and EWMAs; a timeout also
  feeds peak-EWMA, since it proves the deployment is at least that slow.

`on_state_change(deployment, old, new, reason)` hears every transition, with
`reason` one of `router.breaker.REASONS`.

>>> now = [0.0]
>>> health = HealthTracker(BreakerConfig(consecutive_failures=1), clock=lambda: now[0])
>>> health.record(AttemptResult("gpt", ok=False, latency_s=2.0, error_kind="timeout"))
(<CircuitState.CLOSED: 'closed'>, <CircuitState.OPEN: 'open'>, 'consecutive_failures')
>>> health.state("gpt"), health.available("gpt"), health.recovers_at("gpt")
(<CircuitState.OPEN: 'open'>, False, 5.0)
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from router.breaker import (
    BreakerConfig,
    CircuitBreaker,
    CircuitState,
    CoolingReason,
    CountWindow,
    Transition,
)
from router.errors import error_kind
from router.health_store import SharedHealth, SharedOpen, SharedSync
from router.latency import LatencyStats

__all__ = [
    "AttemptResult",
    "BreakerConfig",
    "CircuitState",
    "DeploymentHealth",
    "HealthTracker",
    "parse_retry_after",
]

logger = logging.getLogger("router.health")

StateListener = Callable[[str, CircuitState, CircuitState, str], None]



def _cooling_reason(kind: str) -> CoolingReason:
    return "rate_limited" if kind == "rate_limited" else "not_found" if kind == "not_found" else "auth"


_QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
_STATS = frozenset({*_QUANTILES, "ewma", "ttft"})
# Redis and local clocks are compared through a round trip: a remote open
# within this much of what we already know is our own echo, not news.
_SHARED_TOLERANCE_S = 0.25


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one attempt at one deployment ended; `error_kind` is `ProviderError.kind`.

    >>> AttemptResult("gpt", ok=False, latency_s=0.1, error_kind="rate_limited").ok
    False
    """

    deployment: str
    ok: bool
    latency_s: float
    error_kind: str | None = None
    status_code: int | None = None
    retry_after_s: float | None = None
    ttft_s: float | None = None
    output_tokens: int = 0


class DeploymentHealth(BaseModel):
    """One deployment's health at one instant, for `status` and dashboards.

    `error_rate` is errors of any kind over `calls_in_window`; `fault_rate` is
    what the breaker judges (upstream faults over faults and successes since
    the window began or the circuit last closed). `retry_at` is clock time.
    `state` moves from open to half_open on the first `admit` after the
    cooldown, so an open circuit whose cooldown is over reads "open" with
    `available` True until then.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    state: CircuitState
    available: bool
    cooling: CoolingReason | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    ewma_ms: float | None = None
    ttft_ms: float | None = None
    peak_ewma_ms: float | None = None
    tokens_per_s: float | None = None
    error_rate: float = 0.0
    fault_rate: float = 0.0
    calls_in_window: int = 0
    errors_by_kind: dict[str, int] = {}
    in_flight: int = 0
    retry_at: float | None = None
    retry_in_s: float | None = None
    consecutive_failures: int = 0
    cooldown_s: float = 0.0


def parse_retry_after(value: str | float | None, *, now_wall: float) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP-date.

    Negative or past values give 0; anything unreadable gives None.

    >>> parse_retry_after("12", now_wall=0.0)
    12.0
    >>> parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", now_wall=10.0)
    20.0
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            # parsedate_to_datetime leaves "-0000" dates naive; RFC 9110 dates are GMT.
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            seconds = when.timestamp() - now_wall
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


class _Deployment:
    """Everything the tracker keeps about one deployment; its size does not grow with traffic."""

    __slots__ = ("breaker", "errors", "in_flight", "latency", "shared_until", "warm")

    def __init__(self, config: BreakerConfig) -> None:
        self.breaker = CircuitBreaker(config)
        self.latency = LatencyStats(
            window_s=config.window_s,
            max_samples=config.max_samples,
            alpha=config.ewma_alpha,
            decay_s=config.peak_ewma_decay_s,
        )
        self.errors = CountWindow(config.window_s)
        self.in_flight = 0
        self.warm = 0  # successes seen, up to config.latency_warmup_samples
        self.shared_until = -math.inf  # the latest open published or adopted, local clock


class HealthTracker:
    """Latency and circuit state of every deployment one router calls.

    With `shared`, opens are published to the other replicas and theirs
    adopted. The hot path never waits on it: a background task pulls every
    `shared.refresh_interval_s`, started by `await tracker.start()` or, lazily,
    by the first `admit()` made inside a running event loop; opens are pushed
    by fire-and-forget tasks. `await tracker.sync()` pushes and pulls once.
    If the store is down the tracker works on local state and logs once.

    Not thread-safe: use one tracker per event loop.

    >>> health = HealthTracker(clock=lambda: 0.0)
    >>> health.admit("gpt"), health.begin("gpt"), health.in_flight("gpt")
    (True, None, 1)
    >>> health.record(AttemptResult("gpt", ok=True, latency_s=0.9))  # the first success: warm-up only
    >>> health.record(AttemptResult("gpt", ok=True, latency_s=0.25))
    >>> health.latency_ms("gpt", "p50"), health.in_flight("gpt")
    (250.0, 0)
    """

    def __init__(
        self,
        config: BreakerConfig = BreakerConfig(),  # noqa: B008 - frozen, safe to share
        *,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedHealth | None = None,
        on_state_change: StateListener | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._on_state_change = on_state_change
        self._deployments: dict[str, _Deployment] = {}
        self._sync = (
            None if shared is None else SharedSync(shared, still_open=self._still_open, adopt=self._adopt, log=logger)
        )

    # -- hot path ----------------------------------------------------------------

    def available(self, deployment: str) -> bool:
        """May the deployment be tried now? A pure read; see `admit`."""
        dep = self._deployments.get(deployment)
        return dep is None or dep.breaker.available(self._clock())

    def admit(self, deployment: str) -> bool:
        """Take the right to call the deployment now (a trial slot when half-open)."""
        if self._sync is not None and not self._sync.running:
            self._sync.run_in_background()
        admitted, transition = self._get(deployment).breaker.try_admit(self._clock())
        if transition is not None:
            self._changed(deployment, transition)
        return admitted

    def begin(self, deployment: str) -> None:
        """An attempt starts (admitted, or sent anyway in panic mode)."""
        self._get(deployment).in_flight += 1

    def succeeded(self, deployment: str, latency_s: float, ttft_s: float | None = None,
                  output_tokens: int = 0) -> Transition | None:
        """`record` of a success, without building an `AttemptResult`; the circuit's transition or None."""
        dep = self._get(deployment)
        now = self._clock()
        if dep.in_flight > 0:
            dep.in_flight -= 1
        dep.errors.add(now, None)
        if dep.warm < self._config.latency_warmup_samples:
            dep.warm += 1  # a first call pays client and connection set-up: not the deployment's speed
        else:
            dep.latency.observe(now, latency_s, ttft_s, output_tokens)
        transition = dep.breaker.on_success(now)
        if transition is not None:
            self._changed(deployment, transition)
        return transition

    def record(self, result: AttemptResult) -> Transition | None:
        """An attempt ended: learn from it and drive the breaker. Returns the circuit's
        transition (from, to, reason) when the attempt changed its state, else None."""
        if result.ok:
            return self.succeeded(result.deployment, result.latency_s, result.ttft_s, result.output_tokens)
        dep = self._get(result.deployment)
        now = self._clock()
        if dep.in_flight > 0:
            dep.in_flight -= 1
        breaker = dep.breaker
        kind = result.error_kind or "unknown"
        dep.errors.add(now, kind)
        transition = None
        effect = error_kind(kind).health
        if effect == "cool_retry_after":
            wait = result.retry_after_s
            if wait is None:
                wait = self._config.rate_limit_default_cooldown_s
            breaker.cool(now, min(wait, self._config.rate_limit_max_cooldown_s), _cooling_reason(kind))
            breaker.on_neutral()
        elif effect == "cool_long":
            breaker.cool(now, self._config.auth_cooldown_s, _cooling_reason(kind))
            breaker.on_neutral()
        elif effect == "neutral":
            breaker.on_neutral()
        else:
            if kind == "timeout":
                dep.latency.observe_peak(now, result.latency_s)
            transition = breaker.on_fault(now)
        if transition is not None:
            self._changed(result.deployment, transition)
            if transition[1] is CircuitState.OPEN and self._sync is not None:
                dep.shared_until = breaker.open_until  # our own open, read back, is no news
                self._sync.publish_later(result.deployment)
        return transition

    # -- reads -------------------------------------------------------------------

    @property
    def clock(self) -> Callable[[], float]:
        """The clock every time this tracker reports is read on."""
        return self._clock

    def unavailable_reason(self, deployment: str) -> str | None:
        """Why `available()` is False: "open", "half_open" (no free trial slot), or the
        cooling reason ("rate_limited", "auth", "not_found"); None when available.

        >>> HealthTracker().unavailable_reason("gpt") is None
        True
        """
        dep = self._deployments.get(deployment)
        if dep is None:
            return None
        now = self._clock()
        breaker = dep.breaker
        if breaker.available(now):
            return None
        return breaker.cooling(now) or breaker.state.value

    def recovers_at(self, deployment: str) -> float:
        """Clock time at which the deployment admits again (<= now if it does now)."""
        now = self._clock()
        dep = self._deployments.get(deployment)
        return now if dep is None else dep.breaker.recovers_at(now)

    def latency_ms(self, deployment: str, stat: str) -> float | None:
        """`stat` is p50, p95, p99 (over the window), ewma, or ttft (median); None when cold."""
        if stat not in _STATS:
            raise ValueError(f"unknown latency stat {stat!r}; expected one of {sorted(_STATS)}")
        dep = self._deployments.get(deployment)
        if dep is None:
            return None
        if stat == "ewma":
            seconds = dep.latency.ewma_s
        elif stat == "ttft":
            seconds = dep.latency.ttft_s(self._clock())
        else:
            seconds = dep.latency.percentile(self._clock(), _QUANTILES[stat])
        return _ms(seconds)

    def peak_ewma_ms(self, deployment: str) -> float | None:
        """Peak-EWMA latency decayed to now, for power-of-two-choices; None when cold."""
        dep = self._deployments.get(deployment)
        return None if dep is None else _ms(dep.latency.peak_ewma_s(self._clock()))

    def in_flight(self, deployment: str) -> int:
        dep = self._deployments.get(deployment)
        return 0 if dep is None else dep.in_flight

    def state(self, deployment: str) -> CircuitState:
        """The breaker's state; a 429/auth cooling shows in `available` and `snapshot` instead."""
        dep = self._deployments.get(deployment)
        return CircuitState.CLOSED if dep is None else dep.breaker.state

    def snapshot(self, deployments: Iterable[str] | None = None) -> list[DeploymentHealth]:
        """Health of the given deployments (default: every one seen, by name)."""
        now = self._clock()
        names = sorted(self._deployments) if deployments is None else list(deployments)
        return [self._describe(name, now) for name in names]

    def _describe(self, name: str, now: float) -> DeploymentHealth:
        dep = self._deployments.get(name) or _Deployment(self._config)
        breaker, latency = dep.breaker, dep.latency
        calls, errors = dep.errors.totals(now)
        judged, faults = breaker.window_totals(now)
        retry_at = breaker.recovers_at(now)

        return DeploymentHealth(
            name=name,
            state=breaker.state,
            available=breaker.available(now),
            cooling=breaker.cooling(now),
            p50_ms=_ms(latency.percentile(now, 0.5)),
            p95_ms=_ms(latency.percentile(now, 0.95)),
            p99_ms=_ms(latency.percentile(now, 0.99)),
            ewma_ms=_ms(latency.ewma_s),
            ttft_ms=_ms(latency.ttft_s(now)),
            peak_ewma_ms=_ms(latency.peak_ewma_s(now)),
            tokens_per_s=latency.tokens_per_s,
            error_rate=sum(errors.values()) / calls if calls else 0.0,
            fault_rate=faults / judged if judged else 0.0,
            calls_in_window=calls,
            errors_by_kind=errors,
            in_flight=dep.in_flight,
            retry_at=retry_at if retry_at > now else None,
            retry_in_s=retry_at - now if retry_at > now else None,
            consecutive_failures=breaker.consecutive,
            cooldown_s=breaker.cooldown,
        )

    # -- shared state --------------------------------------------------------------

    async def start(self) -> None:
        """Pull the other replicas' opens once, then keep pulling in the background."""
        if self._sync is not None:
            await self._sync.start()

    async def sync(self) -> bool:
        """Push local opens and pull remote ones now; False if the store could not be reached."""
        return True if self._sync is None else await self._sync.sync()

    async def aclose(self) -> None:
        """Stop the background tasks and close the shared store."""
        if self._sync is not None:
            await self._sync.aclose()

    def _still_open(self, name: str) -> tuple[float, float] | None:
        dep = self._deployments.get(name)
        if dep is None or dep.breaker.state is not CircuitState.OPEN:
            return None
        remaining = dep.breaker.open_until - self._clock()
        return (remaining, dep.breaker.cooldown) if remaining > 0 else None

    def _adopt(self, opens: dict[str, SharedOpen]) -> None:
        now = self._clock()
        for name, remote in opens.items():
            dep = self._get(name)
            until = now + remote.remaining_s
            if until <= max(dep.shared_until, dep.breaker.open_until) + _SHARED_TOLERANCE_S:
                continue
            dep.shared_until = until
            transition = dep.breaker.force_open(until, remote.cooldown_s)
            if transition is not None:
                self._changed(name, transition)

    # -- helpers -------------------------------------------------------------------

    def _get(self, name: str) -> _Deployment:
        dep = self._deployments.get(name)
        if dep is None:
            dep = self._deployments[name] = _Deployment(self._config)
        return dep

    def _changed(self, name: str, transition: Transition) -> None:
        if self._on_state_change is None:
            return
        old, new, reason = transition
        try:
            self._on_state_change(name, old, new, reason)
        except Exception:  # a listener's bug must not fail the request
            logger.exception("on_state_change listener failed for %s", name)
