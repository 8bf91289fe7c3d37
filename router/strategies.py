"""Routing strategies: each orders a route's candidates for one request.

A strategy is built once per route when a policy is compiled, so whatever can
be sorted ahead of time (price, quality, declared order) is. Strategies never
filter by health: the attempt loop skips open circuits as it walks the order,
so choosing among 10,000 deployments does not mean asking the tracker about
10,000 of them.

What a request costs, n being the route's size:

| strategy | per request |
|---|---|
| fallback, cheapest, best_quality | O(1): the order is a tuple built at compile time |
| weighted | O(log n) draw, then the compile-time order (a `HeadThenRest`) |
| fastest, slo | `REFRESH_HEAD + REFRESH_SWEEP` latency reads; those that moved change place in a kept ranking |
| least_busy | a sort up to `EXACT_ROUTE` targets; above, random draws until two are idle (`BUSY_DRAWS` at most) |
| lowest_latency_p2c | O(1): two random draws |

How the lazy orders and the kept latency rankings work, and the size
constants (`EXACT_ROUTE`, `REFRESH_HEAD`, `REFRESH_SWEEP`, `RANKED_HEAD`),
live in `router.orders`; they are re-exported here.

>>> strategy = STRATEGIES["cheapest"](route, candidates, prices.per_mtok)  # doctest: +SKIP
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
from router.orders import EXACT_ROUTE as EXACT_ROUTE  # re-exported: the size constants were defined here
from router.orders import RANKED_HEAD as RANKED_HEAD
from router.orders import REFRESH_HEAD as REFRESH_HEAD
from router.orders import REFRESH_SWEEP as REFRESH_SWEEP
from router.orders import HeadThenRest as HeadThenRest
from router.orders import LatencyRanking
from router.schema import Deployment, Route


class HealthView(Protocol):
    """What strategies may ask of the health tracker."""

    @property
    def clock(self) -> Callable[[], float]: ...
    def latency_ms(self, deployment: str, stat: str) -> float | None: ...
    def peak_ewma_ms(self, deployment: str) -> float | None: ...
    def in_flight(self, deployment: str) -> int: ...


PriceOf = Callable[[Deployment], tuple[float, float]]

#: `least_busy` on a large route draws at most this many targets while looking for two idle ones.
BUSY_DRAWS = 8


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

    def _draw(self, rng: random.Random, taken: Sequence[int] = ()) -> int:
        """A uniformly random candidate position not in `taken` (len(taken) < len(candidates))."""
        n = len(self.candidates)
        while True:  # expected < 2 rounds while taken holds at most half the route
            at = int(rng.random() * n)
            if at not in taken:
                return at


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


class Fastest(Strategy):
    """Lowest measured latency first; the YAML prior stands in while a deployment is cold.

    The route's `latency_stat` picks p50, p95, p99 or EWMA; streams use time
    to first token when it has been measured. The ranking is kept and
    refreshed a few targets per request (see `router.orders`).
    """

    name = "fastest"

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf) -> None:
        super().__init__(route, candidates, price_of)
        self._rankings: dict[bool, LatencyRanking] = {}

    def _latency(self, d: Deployment, ctx: RequestContext, health: HealthView) -> float:
        stat = "ttft" if ctx.stream else self.route.latency_stat
        measured = health.latency_ms(d.name, stat)
        if measured is None and stat == "ttft":
            measured = health.latency_ms(d.name, self.route.latency_stat)
        return d.latency_prior_ms if measured is None else measured

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        ranking = self._rankings.get(ctx.stream)
        if ranking is None:
            ranking = self._rankings[ctx.stream] = LatencyRanking(self.candidates, None, ())
        ranking.refresh(lambda d: self._latency(d, ctx, health))
        return ranking.order()

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        return {d.name: self._latency(d, ctx, health) for d in self.candidates}


class Weighted(Strategy):
    """One target drawn by weight, then the rest by weight (heaviest first)."""

    name = "weighted"

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf) -> None:
        super().__init__(route, candidates, price_of)
        weights = route.weights or {}
        self._by_weight = tuple(sorted(self.candidates, key=lambda d: -weights.get(d.name, 0.0)))
        drawable = [i for i, d in enumerate(self._by_weight) if weights.get(d.name, 0.0) > 0]
        self._drawable = drawable  # positions in _by_weight
        self._cumulative = list(itertools.accumulate(weights[self._by_weight[i].name] for i in drawable))
        self._weights = weights

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        if not self._cumulative:
            return self._by_weight
        pick = rng.random() * self._cumulative[-1]
        at = self._drawable[bisect.bisect_right(self._cumulative, pick)]
        return HeadThenRest((self._by_weight[at],), (at,), self._by_weight)

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        return {d.name: -self._weights.get(d.name, 0.0) for d in self.candidates}


class LeastBusy(Strategy):
    """Fewest requests in flight first; ties broken at random.

    Routes above `EXACT_ROUTE` targets draw targets at random until two are
    idle (at most `BUSY_DRAWS`); the drawn ones go first, least busy first,
    then the rest in a rotated declared order. While at least half the
    route is idle, an idle target leads with probability >= 1 - 2**-BUSY_DRAWS.
    """

    name = "least_busy"

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        candidates = self.candidates
        if len(candidates) <= EXACT_ROUTE:
            return sorted(candidates, key=lambda d: (health.in_flight(d.name), rng.random()))
        drawn: list[int] = []
        busy: list[int] = []
        idle = 0
        while idle < 2 and len(drawn) < BUSY_DRAWS:
            at = self._draw(rng, drawn)
            drawn.append(at)
            load = health.in_flight(candidates[at].name)
            busy.append(load)
            idle += load == 0
        head = sorted(range(len(drawn)), key=busy.__getitem__)  # stable: draw order breaks ties
        return HeadThenRest(tuple(candidates[drawn[k]] for k in head), drawn, candidates,
                            int(rng.random() * len(candidates)))

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        return {d.name: float(health.in_flight(d.name)) for d in self.candidates}


class LowestLatencyP2C(Strategy):
    """Power of two choices over peak-EWMA latency x load (as Finagle and Linkerd do).

    Two candidates are drawn at random; the one with the lower
    `peak_ewma * (in_flight + 1)` goes first, the other second. Up to
    `EXACT_ROUTE` targets the rest follow by that cost; above it, in a
    rotated declared order.
    """

    name = "lowest_latency_p2c"

    def _cost(self, d: Deployment, health: HealthView) -> float:
        ewma = health.peak_ewma_ms(d.name)
        return (d.latency_prior_ms if ewma is None else ewma) * (health.in_flight(d.name) + 1)

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        candidates = self.candidates
        n = len(candidates)
        if n < 2:
            return candidates
        i = int(rng.random() * n)
        j = int(rng.random() * (n - 1))
        j += j >= i  # a second, different target
        a, b = candidates[i], candidates[j]
        if self._cost(b, health) < self._cost(a, health):
            i, j, a, b = j, i, b, a
        if n <= EXACT_ROUTE:
            rest = sorted((d for d in candidates if d is not a and d is not b), key=lambda d: self._cost(d, health))
            return (a, b, *rest)
        return HeadThenRest((a, b), (i, j), candidates, int(rng.random() * n))

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        return {d.name: self._cost(d, health) for d in self.candidates}


class SloGuard(Strategy):
    """Wraps a route with an SLO: cheapest deployment whose latency fits, else the fastest.

    Those that fit go first, cheapest first; the others follow, fastest
    first. Kept incrementally like `fastest`.
    """

    name = "slo"

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf) -> None:
        super().__init__(route, candidates, price_of)
        assert route.slo is not None
        by_price = sorted(range(len(self.candidates)), key=lambda i: sum(price_of(self.candidates[i])))
        rank = [0] * len(by_price)
        for r, i in enumerate(by_price):
            rank[i] = r
        self._ranking = LatencyRanking(self.candidates, route.slo.latency_ms, rank)

    def _latency(self, d: Deployment, health: HealthView) -> float:
        assert self.route.slo is not None
        measured = health.latency_ms(d.name, self.route.slo.stat)
        return d.latency_prior_ms if measured is None else measured

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        self._ranking.refresh(lambda d: self._latency(d, health))
        return self._ranking.order()

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
