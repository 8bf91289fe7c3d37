"""The routing decision: which route serves a request, and in which order its deployments are tried.

Used by the router on every request and by `explain` for a dry run, so both
give the same answer. Nothing here calls a provider.

>>> choice = choose_route(snapshot, ctx)  # doctest: +SKIP
>>> choice.name, choice.source  # doctest: +SKIP
('batch', "rule 'batch-jobs'")
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from router.attempts import Plan
from router.context import RequestContext
from router.errors import NoRouteAvailable
from router.policy.snapshot import CompiledRoute, Snapshot, SourcedRule
from router.strategies import HealthView


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """The route a request goes to, and why (for spans and `explain`)."""

    name: str
    rule: SourcedRule | None
    source: str


def choose_route(snap: Snapshot, ctx: RequestContext) -> RouteChoice:
    """Explicit route, else model alias, else first matching rule, else the defaults.

    The defaults, in order: the embedding route for `embed()`, the tenant's
    own default route (tenants.yaml), the policy's `default_route`.
    """
    if ctx.route is not None:
        return RouteChoice(ctx.route, None, "explicit route")
    if ctx.model_alias is not None and ctx.model_alias in snap.model_aliases:
        return RouteChoice(snap.model_aliases[ctx.model_alias], None, f"model alias {ctx.model_alias!r}")
    rule = snap.match_rule(ctx)
    if rule is not None:
        return RouteChoice(rule.rule.route, rule, f"rule {rule.label!r}")
    if ctx.operation == "embeddings" and snap.embedding_route is not None:
        return RouteChoice(snap.embedding_route, None, "embedding route")
    if snap.tenants is not None:
        limits = snap.tenants.tenants.get(ctx.tenant)
        if limits is not None and limits.default_route is not None:
            return RouteChoice(limits.default_route, None, f"tenant {ctx.tenant!r} default route")
    return RouteChoice(snap.default_route, None, "default route")


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes: the rule that matched, the route, the order to try."""

    snapshot: Snapshot
    route: CompiledRoute
    rule: SourcedRule | None
    plan: Plan
    ctx: RequestContext

    def params(self, max_tokens: int | None, temperature: float | None) -> dict[str, Any]:
        """Call parameters: the caller's, else the route's defaults."""
        params: dict[str, Any] = {}
        max_tokens = max_tokens if max_tokens is not None else self.route.spec.max_tokens
        temperature = temperature if temperature is not None else self.route.spec.temperature
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if temperature is not None:
            params["temperature"] = temperature
        return params


def decide(snap: Snapshot, ctx: RequestContext, health: HealthView, rng: random.Random) -> Decision:
    """Choose the route and order its deployments (then its fallback routes') for `ctx`."""
    choice = choose_route(snap, ctx)
    route = snap.routes.get(choice.name)
    if route is None:
        raise NoRouteAvailable(route=choice.name, reasons={"route": "no such route"})
    spec = route.spec
    if spec.max_tokens is not None and ctx.max_tokens is None:
        ctx = replace(ctx, max_tokens=spec.max_tokens)
    order = tuple(route.strategy.order(ctx, health, rng))
    if route.fallback_chain:
        seen = {d.name for d in order}
        extra = []
        for fb in route.fallback_chain:
            for d in snap.routes[fb].strategy.order(ctx, health, rng):
                if d.name not in seen:
                    seen.add(d.name)
                    extra.append(d)
        order += tuple(extra)
    plan = Plan(route=choice.name, order=order, retry=spec.retry, deadline_s=spec.deadline_s,
                attempt_timeout_s=spec.attempt_timeout_s, fit_context=spec.constraints.fit_context)
    needed = ctx.needed_context
    if plan.fit_context and not any(d.context_window >= needed for d in order):
        raise NoRouteAvailable(route=choice.name, reasons={
            d.name: f"context window {d.context_window} < {needed} tokens" for d in order})
    return Decision(snap, route, choice.rule, plan, ctx)
