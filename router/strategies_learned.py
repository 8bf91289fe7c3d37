"""Strategies that learn from feedback: a measured `best_quality`, and Thompson sampling.

Both read measured quality through `QualityView` when the view they are
given implements it (the router's health view does once a `QualityTracker`
is wired in) and otherwise fall back to the YAML `quality` alone.

The blend is a Beta posterior whose prior is the YAML figure worth
`PRIOR_WEIGHT` samples: with YAML quality `q`, `k = PRIOR_WEIGHT` and measured
counts `alpha`, `beta` (decayed, see `router.quality`)::

    posterior = Beta(k*q + alpha, k*(1-q) + beta)
    mean      = (k*q + alpha) / (k + alpha + beta)

so with no feedback the ranking is exactly the YAML's, after `k` samples
measurement and prior weigh the same, and after a few hundred the measurement
rules. The task label is the request's `metadata["task"]` (None if absent).

>>> strategy = LearnedBestQuality(route, candidates, prices.per_mtok, route_name="default")  # doctest: +SKIP
>>> strategy.order(ctx, health_and_quality_view, rng)  # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from router.context import RequestContext
from router.quality.base import QualityEstimate, QualityView
from router.schema import Deployment, Route
from router.strategies import EXACT_ROUTE, HealthView, PriceOf, Strategy

#: Routes of more targets than this reuse a ranking for `ORDER_TTL_S` seconds per task.
LARGE_ROUTE = EXACT_ROUTE
ORDER_TTL_S = 0.25

#: How many samples the YAML `quality` counts as.
PRIOR_WEIGHT = 20.0
#: The metadata key whose value names the request's task.
TASK_KEY = "task"


def task_of(ctx: RequestContext) -> str | None:
    """The request's task label: `metadata["task"]`, or None."""
    return ctx.metadata.get(TASK_KEY)


class _Learned(Strategy):
    """Shared posterior arithmetic; `route_name` keys the feedback ("" = deployment-wide)."""

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf, *,
                 route_name: str = "", prior_weight: float = PRIOR_WEIGHT) -> None:
        super().__init__(route, candidates, price_of)
        if not prior_weight > 0:
            raise ValueError(f"prior_weight must be positive, got {prior_weight!r}")
        self.route_name = route_name
        self.prior_weight = prior_weight

    def posterior(self, d: Deployment, task: str | None, health: HealthView) -> tuple[float, float]:
        """Beta(alpha, beta) of `d`'s quality: the YAML prior plus whatever was measured."""
        alpha, beta = self.prior_weight * d.quality, self.prior_weight * (1.0 - d.quality)
        if isinstance(health, QualityView):
            est = health.quality(d.name, self.route_name, task)
            if est is not None:
                alpha, beta = alpha + est.alpha, beta + est.beta
        return alpha, beta

    def mean(self, d: Deployment, task: str | None, health: HealthView) -> float:
        alpha, beta = self.posterior(d, task, health)
        return alpha / (alpha + beta)

    def scores(self, ctx: RequestContext, health: HealthView) -> dict[str, float]:
        """Minus the posterior mean quality (lower is better, as `explain` expects)."""
        task = task_of(ctx)
        return {d.name: -self.mean(d, task, health) for d in self.candidates}


class LearnedBestQuality(_Learned):
    """Highest posterior mean quality first (cheaper first among equals; `preferred` first of all).

    Without feedback it orders exactly as the YAML-only `best_quality`.
    Routes of more than `LARGE_ROUTE` targets reuse their order for
    `ORDER_TTL_S` seconds per task.
    """

    name = "best_quality"

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf, *,
                 route_name: str = "", prior_weight: float = PRIOR_WEIGHT) -> None:
        super().__init__(route, candidates, price_of, route_name=route_name, prior_weight=prior_weight)
        self._price = {d.name: sum(price_of(d)) for d in self.candidates}
        self._cached: dict[str | None, tuple[float, tuple[Deployment, ...]]] = {}

    def _rank(self, task: str | None, health: HealthView) -> tuple[Deployment, ...]:
        mean = {d.name: self.mean(d, task, health) for d in self.candidates}
        return self._with_preferred_first(
            sorted(self.candidates, key=lambda d: (-mean[d.name], self._price[d.name])))

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        task = task_of(ctx)
        if len(self.candidates) <= LARGE_ROUTE:
            return self._rank(task, health)
        now = health.clock()
        cached = self._cached.get(task)
        if cached is None or now - cached[0] >= ORDER_TTL_S:
            cached = (now, self._rank(task, health))
            self._cached[task] = cached
        return cached[1]


class ThompsonSampling(_Learned):
    """Thompson sampling: each request draws a quality from every posterior and tries the best draw first.

    Deployments that look good get most traffic, uncertain ones still get
    some until the evidence settles them: the explore/exploit balance comes
    from the posteriors' widths, not from a tuned epsilon. Draws use the rng
    the router passes (seeded in tests and replay).

    `cost_weight` (default 0: quality only) subtracts `cost_weight x price /
    the route's highest price` from each draw, so 0.1 gives up at most 0.1 of
    quality to save the whole price spread. It is a constructor option; the
    route schema has no field for it yet.
    """

    name = "thompson"

    def __init__(self, route: Route, candidates: Sequence[Deployment], price_of: PriceOf, *,
                 route_name: str = "", prior_weight: float = PRIOR_WEIGHT, cost_weight: float = 0.0) -> None:
        super().__init__(route, candidates, price_of, route_name=route_name, prior_weight=prior_weight)
        if not cost_weight >= 0:
            raise ValueError(f"cost_weight must not be negative, got {cost_weight!r}")
        prices = {d.name: sum(price_of(d)) for d in self.candidates}
        top = max(prices.values(), default=0.0)
        self._penalty = {n: cost_weight * p / top if top > 0 else 0.0 for n, p in prices.items()}

    def order(self, ctx: RequestContext, health: HealthView, rng: random.Random) -> Sequence[Deployment]:
        task = task_of(ctx)
        draw: dict[str, float] = {}
        for d in self.candidates:
            alpha, beta = self.posterior(d, task, health)
            # a YAML quality of exactly 0 or 1 with no evidence leaves one parameter 0, which Beta forbids
            draw[d.name] = rng.betavariate(max(alpha, 1e-9), max(beta, 1e-9)) - self._penalty[d.name]
        return sorted(self.candidates, key=lambda d: -draw[d.name])


#: The strategies of this module by name, for the registry the policy compiler builds from.
LEARNED_STRATEGIES: dict[str, type[_Learned]] = {
    cls.name: cls for cls in (LearnedBestQuality, ThompsonSampling)
}


class HealthWithQuality:
    """One object that is both the `HealthView` and the `QualityView` strategies are given.

    The router passes this to `decide()` once a `QualityTracker` exists:
    latency and load questions go to the health view, quality questions to
    the quality view.

    >>> view = HealthWithQuality(health_tracker, quality_tracker)  # doctest: +SKIP
    >>> decide(snapshot, ctx, view, rng)  # doctest: +SKIP
    """

    def __init__(self, health: HealthView, quality: QualityView) -> None:
        self._health = health
        self._quality = quality

    @property
    def clock(self) -> Callable[[], float]:
        return self._health.clock

    def latency_ms(self, deployment: str, stat: str) -> float | None:
        return self._health.latency_ms(deployment, stat)

    def peak_ewma_ms(self, deployment: str) -> float | None:
        return self._health.peak_ewma_ms(deployment)

    def in_flight(self, deployment: str) -> int:
        return self._health.in_flight(deployment)

    def quality(self, deployment: str, route: str, task: str | None) -> QualityEstimate | None:
        return self._quality.quality(deployment, route, task)
