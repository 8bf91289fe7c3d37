"""The circuit breaker of one deployment: a pure state machine driven by a clock value.

```
            faults >= failure_rate (calls >= min_calls)
            or consecutive_failures faults in a row
  CLOSED ───────────────────────────────────────────▶ OPEN ◀──────────┐
    ▲                                                  │ cooldown     │ any trial fault:
    │ all half_open_trials succeed                     │ elapsed and  │ cooldown x2
    │ (cooldown halves back)                           ▼ admit()      │ (capped)
    └──────────────────────────────────────────── HALF_OPEN ──────────┘
```

Only upstream faults move it (timeout, unavailable, malformed_response,
stream_interrupted, and any unknown error kind). Caller errors
(invalid_request, context_window) are neither faults nor successes, as
resilience4j's ignored exceptions. A 429 or a 401/403 puts the deployment in a
*cooling* period instead, separate from the state: it is not a fault, must
not grow the cooldown, and traffic resumes at full rate once it is over.

Every method takes `now` rather than reading a clock, and returns the
transition it made (if any) rather than calling anyone: `HealthTracker` owns
the clock and the callbacks.

>>> b = CircuitBreaker(BreakerConfig(consecutive_failures=2))
>>> b.on_fault(0.0), b.on_fault(0.1)
(None, (<CircuitState.CLOSED: 'closed'>, <CircuitState.OPEN: 'open'>, 'consecutive_failures'))
>>> b.available(1.0), b.available(5.2)
(False, True)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from router.schema import Spec

Transition = tuple["CircuitState", "CircuitState", str]
"""(old state, new state, reason); reasons are the stable tokens listed in `REASONS`."""

CoolingReason = Literal["rate_limited", "auth", "not_found"]

REASONS = (
    "failure_rate",  # closed -> open: faults/calls in the window reached the threshold
    "consecutive_failures",  # closed -> open: N faults in a row
    "cooldown_elapsed",  # open -> half_open: admit() after the cooldown
    "trials_succeeded",  # half_open -> closed
    "trial_failed",  # half_open -> open, cooldown doubled
    "shared",  # -> open: another replica opened it (see router.health_store)
)

_BUCKETS = 10
_FAULT = "fault"


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerConfig(Spec):
    """Thresholds of the circuit breaker and the latency tracker; ops may set it in YAML.

    >>> BreakerConfig(failure_rate=0.3).min_calls
    10
    """

    window_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    min_calls: int = Field(default=10, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    consecutive_failures: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    max_cooldown_s: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    half_open_trials: int = Field(default=1, ge=1)
    #: Successful calls per deployment that feed no latency statistic: the first call through a
    #: new client pays its connection set-up (and LiteLLM's client creation), not the model's time.
    latency_warmup_samples: int = Field(default=1, ge=0)
    #: A trial admitted in half-open whose result never comes back (the caller
    #: gave up before calling `record`) frees its slot after this long, so the
    #: circuit cannot stay half-open and closed to traffic forever.
    trial_timeout_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    rate_limit_max_cooldown_s: float = Field(default=60.0, ge=0, allow_inf_nan=False)
    rate_limit_default_cooldown_s: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    auth_cooldown_s: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    ewma_alpha: float = Field(default=0.3, gt=0, le=1)
    #: Time constant of the peak-EWMA decay (Finagle's and Linkerd's default is 10 s).
    peak_ewma_decay_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    max_samples: int = Field(default=256, ge=1)


class CountWindow:
    """Calls and events by kind over the last `window_s`, in ten fixed buckets.

    Memory stays constant at any traffic. The window slides one bucket (a
    tenth of it) at a time, as resilience4j's time-based window does, so it
    covers between 90% and 100% of `window_s`.

    >>> w = CountWindow(10.0)
    >>> w.add(0.5, "timeout"); w.add(1.5, None); w.totals(2.0)
    (2, {'timeout': 1})
    >>> w.totals(10.7)
    (1, {})
    """

    __slots__ = ("_calls", "_epochs", "_events", "_width")

    def __init__(self, window_s: float) -> None:
        self._width = window_s / _BUCKETS
        self._epochs = [-1] * _BUCKETS
        self._calls = [0] * _BUCKETS
        self._events: list[dict[str, int]] = [{} for _ in range(_BUCKETS)]

    def add(self, now: float, kind: str | None) -> None:
        """Count one call, and one event of `kind` unless it is None."""
        epoch = int(now // self._width)
        slot = epoch % _BUCKETS
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._calls[slot] = 0
            self._events[slot] = {}
        self._calls[slot] += 1
        if kind is not None:
            events = self._events[slot]
            events[kind] = events.get(kind, 0) + 1

    def totals(self, now: float) -> tuple[int, dict[str, int]]:
        """(calls, events by kind) in the buckets still inside the window."""
        oldest = int(now // self._width) - _BUCKETS
        calls = 0
        events: dict[str, int] = {}
        for slot, epoch in enumerate(self._epochs):
            if epoch > oldest:
                calls += self._calls[slot]
                for kind, n in self._events[slot].items():
                    events[kind] = events.get(kind, 0) + n
        return calls, events

    def clear(self) -> None:
        self._epochs = [-1] * _BUCKETS


class CircuitBreaker:
    """State, window and cooldown ladder of one deployment's circuit.

    Not thread-safe: one tracker serves one event loop.
    """

    __slots__ = (
        "_config",
        "_trial_successes",
        "_trials",
        "_window",
        "consecutive",
        "cooldown",
        "cooling_reason",
        "cooling_until",
        "open_until",
        "state",
    )

    def __init__(self, config: BreakerConfig) -> None:
        self._config = config
        self._window = CountWindow(config.window_s)
        self.state = CircuitState.CLOSED
        self.consecutive = 0
        #: Duration of the current (or next, from closed) open period.
        self.cooldown = min(config.cooldown_s, config.max_cooldown_s)
        self.open_until = 0.0
        self.cooling_until = 0.0
        self.cooling_reason: CoolingReason | None = None
        self._trials: list[float] = []  # admission times of the trials in flight
        self._trial_successes = 0

    # -- reads (no side effects) -------------------------------------------------

    def available(self, now: float) -> bool:
        """Would `try_admit(now)` say yes?"""
        if now < self.cooling_until:
            return False
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            return now >= self.open_until
        return self._live_trials(now) + self._trial_successes < self._config.half_open_trials

    def recovers_at(self, now: float) -> float:
        """Clock time at which `available` turns true (`now` if it is)."""
        at = now
        if self.state is CircuitState.OPEN:
            at = max(at, self.open_until)
        elif self.state is CircuitState.HALF_OPEN:
            live = [t for t in self._trials if now < t + self._config.trial_timeout_s]
            if live and len(live) + self._trial_successes >= self._config.half_open_trials:
                # The soonest a slot surely frees is when the oldest trial's lease runs out.
                at = max(at, min(live) + self._config.trial_timeout_s)
        return max(at, self.cooling_until)

    def window_totals(self, now: float) -> tuple[int, int]:
        """(calls, faults) the breaker judges, since the window began or the circuit closed."""
        calls, events = self._window.totals(now)
        return calls, events.get(_FAULT, 0)

    def _live_trials(self, now: float) -> int:
        timeout = self._config.trial_timeout_s
        return sum(1 for t in self._trials if now < t + timeout)

    # -- transitions -------------------------------------------------------------

    def try_admit(self, now: float) -> tuple[bool, Transition | None]:
        """Let one call through if the state allows it; opening half-open takes a trial slot."""
        if now < self.cooling_until:
            return False, None
        if self.state is CircuitState.CLOSED:
            return True, None
        transition: Transition | None = None
        if self.state is CircuitState.OPEN:
            if now < self.open_until:
                return False, None
            transition = self._move(CircuitState.HALF_OPEN, "cooldown_elapsed")
            self._trials = []
            self._trial_successes = 0
        timeout = self._config.trial_timeout_s
        self._trials = [t for t in self._trials if now < t + timeout]
        if len(self._trials) + self._trial_successes >= self._config.half_open_trials:
            return False, transition
        self._trials.append(now)
        return True, transition

    def on_success(self, now: float) -> Transition | None:
        self.consecutive = 0
        if self.state is CircuitState.CLOSED:
            self._window.add(now, None)
            return None
        if self.state is CircuitState.HALF_OPEN:
            self._release_trial()
            self._trial_successes += 1
            if self._trial_successes >= self._config.half_open_trials:
                return self._close()
        # A success while OPEN (started before the open, or sent in panic mode)
        # does not shorten the cooldown: a trial decides, as in resilience4j.
        return None

    def on_fault(self, now: float) -> Transition | None:
        if self.state is CircuitState.CLOSED:
            self.consecutive += 1
            self._window.add(now, _FAULT)
            if self.consecutive >= self._config.consecutive_failures:
                return self._open(now, "consecutive_failures")
            calls, faults = self.window_totals(now)
            if calls >= self._config.min_calls and faults >= self._config.failure_rate * calls:
                return self._open(now, "failure_rate")
            return None
        if self.state is CircuitState.HALF_OPEN:
            self.consecutive += 1
            self.cooldown = min(self.cooldown * 2, self._config.max_cooldown_s)
            return self._open(now, "trial_failed")
        return None

    def on_neutral(self) -> None:
        """A caller error, cancel, 429 or auth failure: no verdict on health; frees a trial slot."""
        if self.state is CircuitState.HALF_OPEN:
            self._release_trial()

    def cool(self, now: float, seconds: float, reason: CoolingReason) -> None:
        """Keep the deployment out of rotation for `seconds` without opening the circuit."""
        until = now + max(seconds, 0.0)
        if until > self.cooling_until:
            self.cooling_until = until
            self.cooling_reason = reason

    def cooling(self, now: float) -> CoolingReason | None:
        return self.cooling_reason if now < self.cooling_until else None

    def force_open(self, until: float, cooldown: float) -> Transition | None:
        """Adopt an open decided elsewhere (another replica) lasting until `until`."""
        self.cooldown = min(max(self.cooldown, cooldown), self._config.max_cooldown_s)
        self.open_until = max(self.open_until, until)
        if self.state is CircuitState.OPEN:
            return None
        self._trials = []
        return self._move(CircuitState.OPEN, "shared")

    def _open(self, now: float, reason: str) -> Transition:
        self.open_until = now + self.cooldown
        self._trials = []
        return self._move(CircuitState.OPEN, reason)

    def _close(self) -> Transition:
        # Faults seen before the open must not reopen it at once.
        self._window.clear()
        self.consecutive = 0
        floor = min(self._config.cooldown_s, self._config.max_cooldown_s)
        self.cooldown = max(self.cooldown / 2, floor)
        self._trials = []
        return self._move(CircuitState.CLOSED, "trials_succeeded")

    def _release_trial(self) -> None:
        if self._trials:
            self._trials.pop(0)

    def _move(self, new: CircuitState, reason: str) -> Transition:
        old, self.state = self.state, new
        return (old, new, reason)
