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

**Orders are sequences, sometimes lazy.** The attempt loop walks the order
until one attempt succeeds, so only its head has to be right. On routes of
more than `EXACT_ROUTE` targets, every strategy but the static three returns
a `HeadThenRest` (`weighted` at any size): the few targets it chose (the randomised strategies' draws,
the first `RANKED_HEAD` of a latency ranking), then every other target in a
rotated declared order (any order would do; rotating spreads fallbacks).
Nothing past the head is computed until someone reads it, and materialising
it costs C-speed slicing only. Up to `EXACT_ROUTE` targets the whole order
is exact.

**Latency rankings learn incrementally.** `fastest` and `slo` keep every
target's latency as last read, sorted; each request re-reads the targets at
the head of the ranking (those taking the traffic, whose numbers move) and
`REFRESH_SWEEP` more in turn. A route of at most `REFRESH_HEAD +
REFRESH_SWEEP` targets is therefore exact on every request; a larger one sees
a change elsewhere within `n / REFRESH_SWEEP` requests. A new snapshot
starts from the YAML priors.

>>> strategy = STRATEGIES["cheapest"](route, candidates, prices.per_mtok)  # doctest: +SKIP
>>> strategy.order(ctx, health, rng)[0].name  # doctest: +SKIP
'sim-cheap'
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, Protocol, overload

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

#: Routes up to this size are ordered exactly (a full sort) by `least_busy` and `lowest_latency_p2c`.
EXACT_ROUTE = 16
#: Latency rankings re-read the first `REFRESH_HEAD` targets and `REFRESH_SWEEP` more, in turn, per request.
REFRESH_HEAD = 2
REFRESH_SWEEP = 8
#: On a route above `EXACT_ROUTE` targets, the first this many of a latency ranking lead the order.
RANKED_HEAD = 8
#: `least_busy` on a large route draws at most this many targets while looking for two idle ones.
BUSY_DRAWS = 8


class HeadThenRest(Sequence[Deployment]):
    """`head`, then the rest of `pool` from position `start` on, wrapping around.

    `head_at` are the head's positions in `pool` (they are not repeated).
    Reading `[0]` or `[1]` costs nothing; iterating or reading further builds
    the whole tuple once, by slicing.
    """

    __slots__ = ("_all", "_head", "_head_at", "_pool", "_start")

    def __init__(self, head: tuple[Deployment, ...], head_at: Sequence[int], pool: tuple[Deployment, ...],
                 start: int = 0) -> None:
        self._head, self._head_at, self._pool, self._start = head, head_at, pool, start
        self._all: tuple[Deployment, ...] | None = None

    def __len__(self) -> int:
        return len(self._pool)

    @overload
    def __getitem__(self, index: int) -> Deployment: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Deployment, ...]: ...
    def __getitem__(self, index: int | slice) -> Deployment | tuple[Deployment, ...]:
        if isinstance(index, int) and 0 <= index < len(self._head):
            return self._head[index]
        return self.materialise()[index]

    def __iter__(self) -> Iterator[Deployment]:
        return iter(self.materialise())

    def __repr__(self) -> str:
        return f"HeadThenRest(head={[d.name for d in self._head]}, of={len(self._pool)})"

    def materialise(self) -> tuple[Deployment, ...]:
        """The whole order as a tuple (built on first use, then kept)."""
        if self._all is None:
            pool, start, n = self._pool, self._start, len(self._pool)
            parts: list[tuple[Deployment, ...]] = [self._head]
            previous = start  # walk pool[start:] then pool[:start], stepping over the head's positions
            for at in sorted(self._head_at, key=lambda at: (at - start) % n):
                parts += _wrapped(pool, previous, at)
                previous = at + 1
            parts += _wrapped(pool, previous, start) if self._head_at else (pool[start:], pool[:start])
            self._all = tuple(itertools.chain.from_iterable(parts))
        return self._all


def _wrapped(pool: tuple[Deployment, ...], a: int, b: int) -> tuple[tuple[Deployment, ...], ...]:
    """pool from position a up to b, wrapping past the end (a == b, or a == n and b == 0, is empty)."""
    n = len(pool)
    a %= n
    return (pool[a:b],) if a <= b else (pool[a:], pool[:b])


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


class _Ranked:
    """Deployments kept sorted by `(number, position)` keys: bisect to find, C-speed list moves."""

    __slots__ = ("deps", "keys")

    def __init__(self) -> None:
        self.keys: list[tuple[float, int]] = []
        self.deps: list[Deployment] = []

    def add(self, key: tuple[float, int], d: Deployment) -> None:
        at = bisect.bisect_left(self.keys, key)
        self.keys.insert(at, key)
        self.deps.insert(at, d)

    def remove(self, key: tuple[float, int]) -> None:
        at = bisect.bisect_left(self.keys, key)
        del self.keys[at]
        del self.deps[at]


class _LatencyRanking:
    """Targets whose latency fits `budget` by price rank, then the others by latency, kept incrementally.

    With no budget nothing fits: a plain fastest-first ranking. `latency[i]`
    is target i's latency as last read; `refresh` re-reads the head and the
    next `REFRESH_SWEEP` targets in turn and moves those that changed.
    """

    def __init__(self, candidates: tuple[Deployment, ...], budget: float | None, price_rank: Sequence[int]) -> None:
        self.candidates, self.budget, self.price_rank = candidates, budget, price_rank
        self.latency = [d.latency_prior_ms for d in candidates]
        self.fits, self.misses = _Ranked(), _Ranked()
        for i, d in enumerate(candidates):
            ranked, key = self._key(i)
            ranked.add(key, d)
        self._cursor = 0
        self._order: Sequence[Deployment] | None = None

    def _key(self, i: int) -> tuple[_Ranked, tuple[float, int]]:
        latency = self.latency[i]
        if self.budget is not None and latency <= self.budget:
            return self.fits, (float(self.price_rank[i]), i)
        return self.misses, (latency, i)

    def refresh(self, read: Callable[[Deployment], float]) -> None:
        n = len(self.candidates)
        if n <= REFRESH_HEAD + REFRESH_SWEEP:
            due: Sequence[int] = range(n)
        else:
            head = (self.fits.keys[:REFRESH_HEAD] + self.misses.keys[:REFRESH_HEAD])[:REFRESH_HEAD]
            cursor = self._cursor
            self._cursor = (cursor + REFRESH_SWEEP) % n
            due = [*(i for _, i in head), *((cursor + k) % n for k in range(REFRESH_SWEEP))]
        for i in due:
            d = self.candidates[i]
            latency = read(d)
            if latency != self.latency[i]:
                ranked, key = self._key(i)
                ranked.remove(key)
                self.latency[i] = latency
                ranked, key = self._key(i)
                ranked.add(key, d)
                self._order = None

    def order(self) -> Sequence[Deployment]:
        if self._order is None:
            if len(self.candidates) <= EXACT_ROUTE:
                self._order = (*self.fits.deps, *self.misses.deps)
            else:  # copying a 10,000-long ranking per change would cost more than the decision
                head = (self.fits.keys[:RANKED_HEAD] + self.misses.keys[:RANKED_HEAD])[:RANKED_HEAD]
                at = [i for _, i in head]
                self._order = HeadThenRest(tuple(self.candidates[i] for i in at), at, self.candidates)
        return self._order


class Fastest(Strategy):
    """Lowest measured latency first; the YAML prior stands in while a deployment is cold.

    The route's `latency_stat` picks p50, p95, p99 or EWMA; streams use time
    to first token when it has been measured. The ranking is kept and
    refreshed a few targets per request (see the module docstring).
    """

    name = "fastest"

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf) -> None:
        super().__init__(route, candidates, price_of)
        self._rankings: dict[bool, _LatencyRanking] = {}

    def _latency(self, d: Deployment, ctx: RequestContext, health: HealthView) -> float:
        stat = "ttft" if ctx.stream else self.route.latency_stat
        measured = health.latency_ms(d.name, stat)
        if measured is None and stat == "ttft":
            measured = health.latency_ms(d.name, self.route.latency_stat)
        return d.latency_prior_ms if measured is None else measured

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        ranking = self._rankings.get(ctx.stream)
        if ranking is None:
            ranking = self._rankings[ctx.stream] = _LatencyRanking(self.candidates, None, ())
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
        self._ranking = _LatencyRanking(self.candidates, route.slo.latency_ms, rank)

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
