"""Latency of one deployment: windowed percentiles, EWMA, peak-EWMA, TTFT and throughput.

Memory is bounded whatever the traffic: samples live in deques of at most
`max_samples` entries and are dropped once older than `window_s`.

>>> stats = LatencyStats(window_s=30.0, max_samples=256, alpha=0.5, decay_s=10.0)
>>> for i, s in enumerate((0.1, 0.2, 0.3)):
...     stats.observe(float(i), s)
>>> round(stats.percentile(2.0, 0.5) or 0, 3), round(stats.ewma_s or 0, 3)
(0.2, 0.225)
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque


class _Samples:
    """Timestamped values within a time window, also kept sorted so percentiles are O(1)."""

    __slots__ = ("_items", "_sorted", "_window")

    def __init__(self, window_s: float, max_samples: int) -> None:
        self._window = window_s
        self._items: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self._sorted: list[float] = []  # the same values, in order

    def __len__(self) -> int:
        return len(self._items)

    def add(self, now: float, value: float) -> None:
        items = self._items
        if len(items) == items.maxlen:
            self._forget(items[0][1])  # append() is about to evict it
        items.append((now, value))
        insort(self._sorted, value)
        self._prune(now)

    def percentile(self, now: float, q: float) -> float | None:
        """Linear-interpolated percentile (numpy's default) of the values in the window."""
        self._prune(now)
        values = self._sorted
        if not values:
            return None
        pos = q * (len(values) - 1)
        low = int(pos)
        high = min(low + 1, len(values) - 1)
        return values[low] + (values[high] - values[low]) * (pos - low)

    def _prune(self, now: float) -> None:
        oldest = now - self._window
        items = self._items
        while items and items[0][0] < oldest:
            self._forget(items.popleft()[1])

    def _forget(self, value: float) -> None:
        del self._sorted[bisect_left(self._sorted, value)]


class LatencyStats:
    """What a deployment's successful calls say about its speed; all times in seconds.

    Percentiles cover the window; the EWMAs remember the past beyond it.
    Peak-EWMA (Finagle's `PeakEwma`, Linkerd's balancer) jumps up at once to
    a slow sample and decays with time, so an idle deployment looks cheaper
    and gets tried again.
    """

    __slots__ = (
        "_alpha",
        "_decay",
        "_latency",
        "_peak",
        "_peak_at",
        "_ttft",
        "ewma_s",
        "tokens_per_s",
    )

    def __init__(self, *, window_s: float, max_samples: int, alpha: float, decay_s: float) -> None:
        self._alpha = alpha
        self._decay = decay_s
        self._latency = _Samples(window_s, max_samples)
        self._ttft = _Samples(window_s, max_samples)
        self.ewma_s: float | None = None
        self.tokens_per_s: float | None = None
        self._peak: float | None = None
        self._peak_at = 0.0

    def observe(self, now: float, latency_s: float, ttft_s: float | None = None, output_tokens: int = 0) -> None:
        """Learn from one successful call."""
        if not 0 <= latency_s < math.inf:
            return  # a broken clock reading must not poison the sorted samples
        if ttft_s is not None and not 0 <= ttft_s < math.inf:
            ttft_s = None
        self._latency.add(now, latency_s)
        self.ewma_s = self._smooth(self.ewma_s, latency_s)
        self.observe_peak(now, latency_s)
        if ttft_s is not None:
            self._ttft.add(now, ttft_s)
        if output_tokens > 0:
            # Generation speed: the time after the first token, when there is one.
            generating = latency_s - ttft_s if ttft_s is not None else latency_s
            if generating > 0:
                self.tokens_per_s = self._smooth(self.tokens_per_s, output_tokens / generating)

    def observe_peak(self, now: float, latency_s: float) -> None:
        """Feed peak-EWMA alone (a timeout is a lower bound on latency worth knowing)."""
        if not 0 <= latency_s < math.inf:
            return
        if self._peak is None:
            self._peak = latency_s
        else:
            w = math.exp(-max(now - self._peak_at, 0.0) / self._decay)  # one exp for the decay and the weight
            cost = self._peak * w
            self._peak = latency_s if latency_s > cost else cost * w + latency_s * (1.0 - w)
        self._peak_at = now

    def peak_ewma_s(self, now: float) -> float | None:
        """The peak-EWMA cost decayed to `now` (Finagle's `get`, without mutating)."""
        if self._peak is None:
            return None
        return self._peak_decayed(now)

    def _peak_decayed(self, now: float) -> float:
        assert self._peak is not None
        return self._peak * math.exp(-max(now - self._peak_at, 0.0) / self._decay)

    def percentile(self, now: float, q: float) -> float | None:
        return self._latency.percentile(now, q)

    def ttft_s(self, now: float) -> float | None:
        """Median time to first token in the window."""
        return self._ttft.percentile(now, 0.5)

    def stored_samples(self) -> int:
        """Samples held in memory (latency and TTFT), for tests of the memory bound."""
        return len(self._latency) + len(self._ttft)

    def _smooth(self, current: float | None, sample: float) -> float:
        return sample if current is None else current + self._alpha * (sample - current)
