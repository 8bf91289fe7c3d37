"""A health view made of a log's figures, so a replay orders deployments as they then behaved.

Latency percentiles and the EWMA stand-in come from the logged successful
attempts; a deployment whose logged attempts mostly failed is treated as
down (its circuit would have been open). Nothing is measured now, no
provider is called.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable

from router.decision_log import DecisionRecord

_QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


def _quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class SyntheticHealth:
    """A `HealthView` frozen at the log's figures: nothing in flight, a clock that never moves.

    `down_error_rate` and `min_attempts`: a deployment with at least that
    many logged attempts, of which at least that share failed, is `down`.
    """

    def __init__(self, latencies: dict[str, list[float]], errors: dict[str, int], calls: dict[str, int], *,
                 down_error_rate: float = 0.5, min_attempts: int = 10) -> None:
        self._stats: dict[str, dict[str, float]] = {}
        for name, values in latencies.items():
            ordered = sorted(values)
            if ordered:
                stats = {k: _quantile(ordered, q) for k, q in _QUANTILES.items()}
                stats["ewma"] = sum(ordered) / len(ordered)
                self._stats[name] = stats
        self._down = frozenset(n for n, c in calls.items()
                               if c >= min_attempts and errors.get(n, 0) / c >= down_error_rate)
        self._errors = dict(errors)
        self._calls = dict(calls)

    @classmethod
    def from_records(cls, records: Iterable[DecisionRecord], **options: float) -> SyntheticHealth:
        """Collect every logged attempt's latency (successes) and failure (upstream errors)."""
        latencies: dict[str, list[float]] = defaultdict(list)
        errors: dict[str, int] = defaultdict(int)
        calls: dict[str, int] = defaultdict(int)
        for r in records:
            if r.outcome is None:
                continue
            for a in r.outcome.attempts:
                if a.kind == "circuit_open":
                    continue
                calls[a.deployment] += 1
                if a.kind == "ok":
                    latencies[a.deployment].append(a.latency_ms)
                elif a.kind not in ("invalid_request", "context_window", "cancelled"):
                    errors[a.deployment] += 1  # only upstream faults say something about health
        return cls(latencies, errors, calls, down_error_rate=options.get("down_error_rate", 0.5),
                   min_attempts=int(options.get("min_attempts", 10)))

    @property
    def clock(self) -> Callable[[], float]:
        return _zero

    def latency_ms(self, deployment: str, stat: str) -> float | None:
        stats = self._stats.get(deployment)
        return None if stats is None else stats.get(stat)

    def peak_ewma_ms(self, deployment: str) -> float | None:
        return self.latency_ms(deployment, "ewma")

    def in_flight(self, deployment: str) -> int:
        return 0

    def down(self, deployment: str) -> bool:
        """Whether the log says this deployment was failing (its circuit would be open)."""
        return deployment in self._down

    def error_rate(self, deployment: str) -> float | None:
        calls = self._calls.get(deployment, 0)
        return self._errors.get(deployment, 0) / calls if calls else None


def _zero() -> float:
    return 0.0
