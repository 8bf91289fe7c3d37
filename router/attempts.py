"""The attempt loop: retry a deployment, then fall back to the next, within a deadline.

What each failure means here is the `router.errors.ERROR_KINDS` table:

| error | what the loop does |
|---|---|
| rate limited, timeout, 5xx, connection, malformed, stream cut | retry (if `retry.on` names it), then fall back |
| content filtered | fall back (another provider's policy may answer); retried only if `retry.on` names it |
| context window exceeded | fall back to a deployment with a larger window |
| authentication, not found | skip that deployment (its circuit cools down for long) |
| invalid request (the caller's) | fail fast, no fallback |

Open circuits are skipped, and so is a deployment the `admit` hook refuses
(it says why: e.g. the tenant's budget cannot cover its price). If no call
succeeded and some deployments were skipped for health, the loop tries them
anyway, the soonest to recover first ("panic mode", marked in the attempt
record), rather than failing while a deployment might answer.

>>> loop = AttemptLoop(health=tracker, clock=time.monotonic, rng=random.Random(1))  # doctest: +SKIP
>>> result, deployment, attempts = await loop.run(plan, ctx, call, trace)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from router.breaker import Transition
from router.context import RequestContext
from router.errors import (
    AllAttemptsFailed,
    ContextWindowExceeded,
    DeadlineExceeded,
    ProviderError,
    ProviderTimeout,
    error_kind,
)
from router.health import AttemptResult, HealthTracker
from router.loop_lag import LoopLag, deadlines
from router.models import Attempt
from router.records import record
from router.schema import Deployment, Retry
from router.tracing import RequestTrace

T = TypeVar("T")

#: `call(deployment, timeout_s)` makes one attempt and returns what it got.
AttemptCall = Callable[[Deployment, float], Awaitable[T]]
#: `admit(deployment, seconds_left)` is None to try it, else why to skip it.
AdmitHook = Callable[[Deployment, float], Awaitable[str | None]]


@record
class Plan:
    """The routing decision: which deployments, in which order, under which rules."""

    route: str
    #: The deployments to try, in order (a strategy's lazy sequence on a large route).
    order: Sequence[Deployment]
    retry: Retry
    deadline_s: float
    attempt_timeout_s: float | None
    fit_context: bool
    #: Above this share of ejected (open-circuit) deployments, open ones are tried anyway.
    max_ejection_percent: int = 100


@record
class Success(Generic[T]):
    value: T
    deployment: Deployment
    attempts: tuple[Attempt, ...]
    started: float


@dataclass(slots=True)
class _Run:
    """The state of one request's walk through its plan."""

    started: float
    deadline: float
    attempts: list[Attempt] = field(default_factory=list)
    retry_cut_by_deadline: bool = False


class AttemptLoop:
    """Runs a plan; owns no state across requests besides what it is given."""

    def __init__(
        self,
        *,
        health: HealthTracker,
        clock: Callable[[], float],
        rng: random.Random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lag: LoopLag | None = None,
        starved_share: float = 0.25,
    ) -> None:
        self.health = health
        self.clock = clock
        self.rng = rng
        self.sleep = sleep
        self.lag = lag
        #: A timeout during which the loop lagged this share of the attempt's timeout is ours.
        self.starved_share = starved_share

    def backoff_s(self, retry: Retry, failures: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; never shorter than the provider's Retry-After."""
        base = min(retry.max_backoff_s, retry.backoff_s * 2.0 ** (failures - 1))
        delay = base * (1.0 - retry.jitter * self.rng.random())
        return max(delay, retry_after or 0.0)

    async def run(
        self,
        plan: Plan,
        ctx: RequestContext,
        call: AttemptCall[T],
        trace: RequestTrace,
        *,
        record_success: bool = True,
        admit: AdmitHook | None = None,
    ) -> Success[T]:
        started = self.clock()
        run = _Run(started, started + plan.deadline_s)
        attempts = run.attempts
        skipped: list[Deployment] = []
        min_window = ctx.needed_context if plan.fit_context else 0
        previous: str | None = None
        last = len(plan.order) - 1
        for i, d in enumerate(plan.order):
            if d.context_window < min_window:
                continue
            # The last candidate is tried whatever its expected latency: skipping it would fail
            # the request for sure, and the deadline bounds the try anyway.
            late = self._cannot_finish(d, run.deadline - self.clock()) if i < last else None
            if late is not None:
                attempts.append(Attempt(deployment=d.name, outcome="skipped", error=late, error_type="deadline"))
                continue
            if admit is not None:
                why = await admit(d, run.deadline - self.clock())
                if why is not None:
                    attempts.append(Attempt(deployment=d.name, outcome="skipped", error=why, error_type="skipped"))
                    continue
            if not self.health.admit(d.name) and not self._over_ejection_cap(plan):
                skipped.append(d)
                attempts.append(Attempt(deployment=d.name, outcome="skipped", error="circuit open",
                                        error_type="circuit_open"))
                continue
            if previous is not None:
                trace.event("router.fallback", {"from": previous, "to": d.name,
                                                "reason": attempts[-1].error_type or ""})
            previous = d.name
            outcome = await self._try_deployment(plan, d, call, trace, run, record_success)
            if isinstance(outcome, Success):
                return outcome
            if isinstance(outcome, ContextWindowExceeded):
                min_window = max(min_window, d.context_window + 1)
        # Panic mode: every healthy choice is spent; the skipped ones may still answer.
        for d in sorted(skipped, key=lambda s: self.health.recovers_at(s.name)):
            if self.clock() >= run.deadline or d.context_window < min_window:
                break
            if admit is not None and await admit(d, run.deadline - self.clock()) is not None:
                continue
            outcome = await self._try_deployment(plan, d, call, trace, run, record_success, panic=True)
            if isinstance(outcome, Success):
                return outcome
        if self.clock() >= run.deadline or run.retry_cut_by_deadline:
            raise DeadlineExceeded(route=plan.route, deadline_s=plan.deadline_s, attempts=attempts)
        raise AllAttemptsFailed(route=plan.route, attempts=attempts)

    async def _try_deployment(
        self,
        plan: Plan,
        d: Deployment,
        call: AttemptCall[T],
        trace: RequestTrace,
        run: _Run,
        record_success: bool,
        *,
        panic: bool = False,
    ) -> Success[T] | ProviderError:
        """Up to `retry.attempts` tries at one deployment: the request's `Success` (every
        attempt so far, `started` the request's start), or the last error if none worked."""
        error: ProviderError | None = None
        attempts, deadline = run.attempts, run.deadline
        for n in range(1, plan.retry.attempts + 1):
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise DeadlineExceeded(route=plan.route, deadline_s=plan.deadline_s, attempts=attempts)
            timeout = min(plan.attempt_timeout_s or d.timeout_s, remaining)
            self.health.begin(d.name)
            t0 = self.clock()
            mark = self.lag.now() if self.lag is not None else 0.0
            try:
                value = await self._call(call, d, timeout, remaining, self._wire_timeout(plan, d))
            except ProviderError as exc:
                error = exc
                latency = self.clock() - t0
                health_kind = exc.kind
                if exc.kind == "timeout" and self._starved(mark, timeout):
                    health_kind = "timeout_starved"
                    trace.event("router.loop_lag", {"deployment": d.name,
                                                    "lag_s": round(self.lag.max_since(mark), 4) if self.lag else 0})
                self.record(d, trace, AttemptResult(
                    deployment=d.name, ok=False, latency_s=self._provider_latency(latency, mark),
                    error_kind=health_kind, status_code=exc.status_code, retry_after_s=exc.retry_after))
                attempts.append(Attempt(deployment=d.name, outcome="error", error=exc.message,
                                        error_type=exc.kind, status_code=exc.status_code,
                                        latency_ms=latency * 1000, panic=panic))
                kind = error_kind(exc.kind)
                if not kind.falls_back:
                    raise
                if not (kind.retryable and exc.kind in plan.retry.on) or n == plan.retry.attempts:
                    return exc
                delay = self.backoff_s(plan.retry, n, exc.retry_after)
                if self.clock() + delay >= deadline:
                    run.retry_cut_by_deadline = True
                    return exc  # fall back at once; a retry here could not finish in time
                if delay > plan.retry.max_backoff_s:
                    return exc  # waiting for Retry-After would cost more than falling back
                trace.event("router.retry", {"deployment": d.name, "attempt": n,
                                             "backoff_s": round(delay, 4), "error.type": exc.kind})
                await self.sleep(delay)
                continue
            except BaseException:
                self.record(d, trace, AttemptResult(deployment=d.name, ok=False,
                                                     latency_s=self.clock() - t0, error_kind="cancelled"))
                raise
            latency = self.clock() - t0
            if record_success:
                self._changed(d, trace, self.health.succeeded(d.name, self._provider_latency(latency, mark)))
            attempts.append(Attempt(deployment=d.name, outcome="ok", latency_ms=latency * 1000, panic=panic))
            return Success(value, d, tuple(attempts), run.started)
        assert error is not None
        return error

    def _cannot_finish(self, d: Deployment, seconds_left: float) -> str | None:
        """Why `d` cannot answer in the time left: its measured p95 (else a declared
        `latency_prior_ms`) is longer. Checked only near the deadline: a percentile costs a sort."""
        if seconds_left >= d.timeout_s:
            return None
        expected_ms = self.health.latency_ms(d.name, "p95")
        if expected_ms is None and "latency_prior_ms" in d.model_fields_set:
            expected_ms = d.latency_prior_ms
        if expected_ms is not None and expected_ms / 1000 > seconds_left:
            return f"expected latency {expected_ms:.0f} ms exceeds the {seconds_left * 1000:.0f} ms left"
        return None

    def _wire_timeout(self, plan: Plan, d: Deployment) -> float:
        """The timeout handed to the call (and so to LiteLLM): a configured constant, never the
        time left. LiteLLM keys its cached HTTP clients on the timeout, so a value that changed
        with every request built a new client per call (+3.5 M instructions, a new connection).
        The loop enforces the real bound around the call."""
        if self.lag is not None:
            return plan.deadline_s  # the credited timeout may outlast the attempt timeout
        return plan.attempt_timeout_s or d.timeout_s

    async def _call(self, call: AttemptCall[T], d: Deployment, timeout: float, remaining: float,
                    wire_timeout: float) -> T:
        """One call, timed out after `timeout` seconds of the loop's time: the one place an
        attempt's timeout is enforced (the backend only passes it on to LiteLLM).

        With a lag meter, the timeout cuts the call after `timeout` plus however long
        the loop ran late meanwhile, never past the deadline: an answer that arrived while the
        process was starved of CPU is not thrown away (and the request then failed) for a
        delay that was ours. A timeout it makes is a `ProviderTimeout` like the call's own.
        """
        watch = deadlines().watch(self.lag, timeout, limit_s=remaining)
        try:
            return await call(d, wire_timeout)
        except asyncio.CancelledError:
            if not watch.close(cancelled=True):
                raise  # not this timeout's: the caller's cancellation
        except TimeoutError:
            pass
        finally:
            watch.close(cancelled=False)  # disarms; a second close does nothing
        raise ProviderTimeout(f"no answer within {timeout:g}s (loop stalls not counted)", deployment=d.name)

    def _provider_latency(self, elapsed: float, mark: float) -> float:
        """The attempt's latency less the time our loop ran late meanwhile: what the health
        tracker's latency stats (strategies, the deadline's expected latency) should blame
        on the provider. The attempt record keeps the wall time the caller saw."""
        if self.lag is None:
            return elapsed
        return max(0.0, elapsed - self.lag.late_since(mark))

    def _starved(self, mark: float, timeout: float) -> bool:
        return self.lag is not None and self.lag.max_since(mark) >= self.starved_share * timeout

    def _over_ejection_cap(self, plan: Plan) -> bool:
        """True when skipping one more open deployment would eject more than the route's cap."""
        if plan.max_ejection_percent >= 100:
            return False
        ejected = sum(1 for d in plan.order if not self.health.available(d.name))
        return ejected * 100 > plan.max_ejection_percent * len(plan.order)

    def record(self, d: Deployment, trace: RequestTrace, result: AttemptResult) -> None:
        """Tell the tracker how an attempt ended; a circuit change becomes an event on the request span."""
        self._changed(d, trace, self.health.record(result))

    @staticmethod
    def _changed(d: Deployment, trace: RequestTrace, transition: Transition | None) -> None:
        if transition is not None and transition[0] is not transition[1]:
            trace.event("router.circuit.state_change",
                        {"deployment": d.name, "from": transition[0].value, "to": transition[1].value})
