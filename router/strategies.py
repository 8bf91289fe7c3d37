"""Routing strategies: each orders a route's candidates for one request.

A strategy is built once per route when a policy is compiled, so whatever can
be sorted ahead of time (price, quality, declared order) is; `order()` then
costs next to nothing per request. Strategies never filter by health: the
attempt loop skips open circuits as it walks the order, so choosing among
1000 deployments does not mean asking the tracker about 1000 of them.

>>> strategy = STRATEGIES["cheapest"](route, candidates)  # doctest: +SKIP
>>> strategy.order(ctx, health, rng)[0].name  # doctest: +SKIP
'sim-cheap'
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from router.context import RequestContext
from router.schema import Deployment, Route


class HealthView(Protocol):
    """What strategies may ask of the health tracker."""

    @property
    def clock(self) -> Callable[[], float]: ...
    def latency_ms(self, deployment: str, stat: str) -> float | None: ...
    def peak_ewma_ms(self, deployment: str) -> float | None: ...
    def in_flight(self, deployment: str) -> int: ...


PriceOf = Callable[[Deployment], tuple[float, float]]


class Strategy:
    """Orders candidates; subclasses set `name` and override `order`."""

    name: ClassVar[str]

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf) -> None:
        self.route = route
        self.candidates = tuple(candidates)
        self.price_of = price_of

    def order(
        self, ctx: RequestContext, health: HealthView, rng: random.Random
    ) -> Sequence[Deployment]:
        return self.candidates

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        """The number each candidate was ranked by (for `explain`); lower is better."""
        return {d.name: float(i) for i, d in enumerate(self.candidates)}

    def _with_preferred_first(self, ordered: Sequence[Deployment]) -> tuple[Deployment, ...]:
        preferred = self.route.preferred
        if preferred is None:
            return tuple(ordered)
        return tuple(sorted(ordered, key=lambda d: d.name != preferred))


class Fallback(Strategy):
    """The targets in the order written (preferred first)."""

    name = "fallback"

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf) -> None:
        super().__init__(route, candidates, price_of)
        self._order = self._with_preferred_first(self.candidates)

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        return self._order


class Cheapest(Fallback):
    """Lowest blended price first (input + output USD per million tokens)."""

    name = "cheapest"

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf) -> None:
        super().__init__(route, candidates, price_of)
        self._scores = {d.name: sum(price_of(d)) for d in self.candidates}
        self._order = self._with_preferred_first(
            sorted(self.candidates, key=lambda d: (self._scores[d.name], -d.quality))
        )

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        return dict(self._scores)


class BestQuality(Fallback):
    """Highest declared quality first, cheaper first among equals."""

    name = "best_quality"

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf) -> None:
        super().__init__(route, candidates, price_of)
        self._order = self._with_preferred_first(
            sorted(self.candidates, key=lambda d: (-d.quality, sum(price_of(d))))
        )

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        return {d.name: -d.quality for d in self.candidates}


#: Above this many candidates, latency-ordered strategies reuse their order for `ORDER_TTL_S`:
#: ordering 1000 deployments by measured latency costs ~1 ms, and latency moves slower than that.
LARGE_ROUTE = 32
ORDER_TTL_S = 0.25


class Fastest(Strategy):
    """Lowest measured latency first; the YAML prior stands in while a deployment is cold.

    The route's `latency_stat` picks p50, p95, p99 or EWMA; streams use time
    to first token when it has been measured. Routes of more than
    `LARGE_ROUTE` targets reuse their order for `ORDER_TTL_S` seconds.
    """

    name = "fastest"

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf) -> None:
        super().__init__(route, candidates, price_of)
        self._cached: dict[bool, tuple[float, list[Deployment]]] = {}

    def _latency(self, d: Deployment, ctx: RequestContext, health: HealthView) -> float:
        stat = "ttft" if ctx.stream else self.route.latency_stat
        measured = health.latency_ms(d.name, stat)
        if measured is None and stat == "ttft":
            measured = health.latency_ms(d.name, self.route.latency_stat)
        return d.latency_prior_ms if measured is None else measured

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        if len(self.candidates) <= LARGE_ROUTE:
            return sorted(self.candidates, key=lambda d: self._latency(d, ctx, health))
        now = health.clock()
        cached = self._cached.get(ctx.stream)
        if cached is None or now - cached[0] >= ORDER_TTL_S:
            cached = (now, sorted(self.candidates, key=lambda d: self._latency(d, ctx, health)))
            self._cached[ctx.stream] = cached
        return cached[1]

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        return {d.name: self._latency(d, ctx, health) for d in self.candidates}


class Weighted(Strategy):
    """One target drawn by weight, then the rest by weight (heaviest first)."""

    name = "weighted"

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf) -> None:
        super().__init__(route, candidates, price_of)
        weights = route.weights or {}
        self._weighted = [d for d in self.candidates if weights.get(d.name, 0.0) > 0]
        self._cumulative = list(itertools.accumulate(weights[d.name] for d in self._weighted))
        self._by_weight = sorted(self.candidates, key=lambda d: -weights.get(d.name, 0.0))
        self._weights = weights

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        if not self._cumulative:
            return self._by_weight
        pick = rng.random() * self._cumulative[-1]
        first = self._weighted[bisect.bisect_right(self._cumulative, pick)]
        return [first, *(d for d in self._by_weight if d is not first)]

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        return {d.name: -self._weights.get(d.name, 0.0) for d in self.candidates}


class LeastBusy(Strategy):
    """Fewest requests in flight first; ties broken at random."""

    name = "least_busy"

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        return sorted(self.candidates, key=lambda d: (health.in_flight(d.name), rng.random()))

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        return {d.name: float(health.in_flight(d.name)) for d in self.candidates}


class LowestLatencyP2C(Strategy):
    """Power of two choices over peak-EWMA latency x load (as Finagle and Linkerd do).

    Two candidates are drawn at random; the one with the lower
    `peak_ewma * (in_flight + 1)` goes first, the rest follow by that cost.
    """

    name = "lowest_latency_p2c"

    def _cost(self, d: Deployment, health: HealthView) -> float:
        ewma = health.peak_ewma_ms(d.name)
        return (d.latency_prior_ms if ewma is None else ewma) * (health.in_flight(d.name) + 1)

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        if len(self.candidates) < 2:
            return self.candidates
        a, b = rng.sample(self.candidates, 2)
        first = a if self._cost(a, health) <= self._cost(b, health) else b
        rest = sorted((d for d in self.candidates if d is not first), key=lambda d: self._cost(d, health))
        return [first, *rest]

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        return {d.name: self._cost(d, health) for d in self.candidates}


class SloGuard(Strategy):
    """Wraps a route with an SLO: cheapest deployment whose latency fits, else the fastest."""

    name = "slo"

    def _latency(self, d: Deployment, health: HealthView) -> float:
        assert self.route.slo is not None
        measured = health.latency_ms(d.name, self.route.slo.stat)
        return d.latency_prior_ms if measured is None else measured

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        assert self.route.slo is not None
        budget = self.route.slo.latency_ms
        latency = {d.name: self._latency(d, health) for d in self.candidates}
        fits = sorted(
            (d for d in self.candidates if latency[d.name] <= budget),
            key=lambda d: sum(self.price_of(d)),
        )
        rest = sorted((d for d in self.candidates if latency[d.name] > budget), key=lambda d: latency[d.name])
        return [*fits, *rest]

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        return {d.name: self._latency(d, health) for d in self.candidates}


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (Fallback, Cheapest, Fastest, BestQuality, Weighted, LeastBusy, LowestLatencyP2C)
}


def build_strategy(route: Route, candidates: Sequence[Deployment], price_of: PriceOf) -> Strategy:
    """The strategy object for one compiled route (an SLO overrides the named strategy)."""
    if route.slo is not None:
        return SloGuard(route, candidates, price_of)
    return STRATEGIES[route.strategy](route, candidates, price_of)
