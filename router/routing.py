"""The routing decision: which route serves a request, and in which order its deployments are tried.

One candidate function, `candidates`, returns every deployment the request
could reach (the route's, then its fallback routes') with its verdict; the
router's `decide` keeps the admitted ones, `explain` renders them all, and a
replay re-runs them. Nothing here calls a provider.

Verdicts decided here are per request and static: a capability the request
needs (tools, json, vision, audio), a context window too small, or a
deployment another tenant owns. Each candidate is seen through the tenant's
view (`router.policy.tenant_views`): a shared deployment the tenant has its own
key for, or overrides with its own deployment, is replaced by that tenant's
copy, which has its own name and so its own circuit. Health is
not a verdict here: the attempt loop asks the tracker as it walks the order
(a half-open circuit admits a trial only at the moment of the call), and
`explain` shows each candidate's circuit beside its verdict.

>>> choice = choose_route(snapshot, ctx)  # doctest: +SKIP
>>> choice.name, choice.source  # doctest: +SKIP
('batch', "rule 'batch-jobs'")
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from router.attempts import Plan
from router.context import RequestContext
from router.errors import NoRouteAvailable
from router.policy.snapshot import CompiledRoute, Snapshot, SourcedRule
from router.policy.tenant_views import TenantView
from router.records import record
from router.schema import Deployment
from router.strategies import HealthView


@record
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


@record
class Candidate:
    """One deployment a request could reach, with its verdict.

    `route` is the route it came from (the chosen one or a fallback route);
    `reason` says why it was admitted ("eligible", "fallback via route ...")
    or why not.
    """

    deployment: Deployment
    route: str
    admitted: bool
    reason: str


@record
class Candidates:
    """The verdicts on every deployment a request could reach.

    `order` is the admitted ones in the order to try; `rejected` the others
    with their reasons; `sources` the fallback route each admitted deployment
    came through (absent: the chosen route).
    """

    route: str
    #: The strategy's own sequence when nothing was filtered (a large route's is lazy: not copied).
    order: Sequence[Deployment]
    rejected: tuple[Candidate, ...]
    sources: dict[str, str]

    def all(self) -> list[Candidate]:
        """Admitted candidates (in order) then rejected ones, each with its verdict."""
        admitted = [
            Candidate(d, self.sources.get(d.name, self.route), True,
                      f"fallback via route {self.sources[d.name]!r}" if d.name in self.sources else "eligible")
            for d in self.order
        ]
        return admitted + list(self.rejected)


def candidates(
    snap: Snapshot, route: CompiledRoute, ctx: RequestContext, health: HealthView, rng: random.Random
) -> Candidates:
    """Every deployment of `route` and its fallback routes, in strategy order, with its verdict.

    A request every candidate of a route can serve (the common case: no
    special capability, a prompt within the smallest window, no tenant key,
    override or tenant-owned deployment on the route) costs no per-candidate
    work, so deciding among 10,000 deployments stays cheap.
    """
    needed = ctx.needed_context if route.spec.constraints.fit_context else 0
    chain = route.fallback_chain
    first = route.strategy.order(ctx, health, rng)
    plain = route.same_for(ctx.tenant)
    if not chain and plain and ctx.capabilities <= route.common_capabilities and needed <= route.min_context_window:
        return Candidates(route.name, first, (), {})
    view = snap.tenant_views.get(ctx.tenant)
    if not chain and not plain:
        seen_as = _tenant_order(route, first, view, ctx.tenant)
        if ctx.capabilities <= seen_as.common_capabilities and needed <= seen_as.min_context_window:
            return Candidates(route.name, seen_as.order, seen_as.rejected, {})
    order: list[Deployment] = []
    rejected: list[Candidate] = []
    sources: dict[str, str] = {}
    seen: set[str] = set()
    for rname in (route.name, *chain):
        compiled = snap.routes[rname]
        ordered = first if rname == route.name else compiled.strategy.order(ctx, health, rng)
        as_shared = compiled.same_for(ctx.tenant)
        fast = as_shared and ctx.capabilities <= compiled.common_capabilities and needed <= compiled.min_context_window
        for d in ordered:
            reason = None
            if not as_shared:
                d, reason = _through_view(compiled, view, d, ctx.tenant)
            if d.name in seen:
                continue
            seen.add(d.name)
            if reason is None and not fast:
                reason = _static_verdict(d, ctx, needed)
            if reason is not None:
                rejected.append(Candidate(d, rname, False, reason))
                continue
            order.append(d)
            if rname != route.name:
                sources[d.name] = rname
    return Candidates(route.name, tuple(order), tuple(rejected), sources)


@dataclass(frozen=True, slots=True)
class _TenantOrder:
    """A strategy's order as one tenant sees it, with the verdicts that never depend on the request."""

    source: Sequence[Deployment]  # the strategy's order it was built from, compared by identity
    order: tuple[Deployment, ...]
    rejected: tuple[Candidate, ...]
    common_capabilities: frozenset[str]
    min_context_window: int


def _tenant_order(route: CompiledRoute, ordered: Sequence[Deployment], view: TenantView | None,
                  tenant: str) -> _TenantOrder:
    """`ordered` through the tenant's view, memoised on the route while the strategy returns the same
    order object (static strategies always do, large latency-ordered ones for a while)."""
    key = route.view_key(tenant)
    memo: _TenantOrder | None = route.tenant_orders.get(key)
    if memo is not None and memo.source is ordered:
        return memo
    order: list[Deployment] = []
    rejected: list[Candidate] = []
    seen: set[str] = set()
    for d in ordered:
        d, reason = _through_view(route, view, d, tenant)
        if d.name in seen:
            continue
        seen.add(d.name)
        if reason is None:
            order.append(d)
        else:
            rejected.append(Candidate(d, route.name, False, reason))
    common = frozenset.intersection(*(frozenset(d.capabilities) for d in order)) if order else frozenset()
    memo = _TenantOrder(ordered, tuple(order), tuple(rejected), common,
                        min((d.context_window for d in order), default=0))
    route.tenant_orders[key] = memo
    return memo


#: The verdict on another tenant's own deployment (which tenant is not the caller's business).
OTHER_TENANT = "belongs to another tenant"


def _through_view(
    route: CompiledRoute, view: TenantView | None, d: Deployment, tenant: str
) -> tuple[Deployment, str | None]:
    """What `tenant` calls for candidate `d` of `route`, and why it may not (or None)."""
    owner = route.owned.get(d.name)
    if owner is not None and owner != tenant:
        return d, OTHER_TENANT
    if view is not None:
        replacement = view.swap.get(d.name)
        if replacement is not None:
            return replacement, route.swap_dropped.get(replacement.name)
    return d, None


def _static_verdict(d: Deployment, ctx: RequestContext, needed: int) -> str | None:
    missing = ctx.capabilities - d.capabilities
    if missing:
        return f"lacks capability {', '.join(sorted(missing))}"
    if d.context_window < needed:
        return f"context window {d.context_window} < {needed} tokens needed"
    return None


@record
class Decision:
    """Where a request goes: the rule that matched, the route, the order to try."""

    snapshot: Snapshot
    route: CompiledRoute
    rule: SourcedRule | None
    plan: Plan
    ctx: RequestContext


def resolve_route(snap: Snapshot, ctx: RequestContext) -> tuple[RouteChoice, CompiledRoute, RequestContext]:
    """The route for `ctx`, and `ctx` with the route's default output budget applied."""
    choice = choose_route(snap, ctx)
    route = snap.routes.get(choice.name)
    if route is None:
        raise NoRouteAvailable(route=choice.name, reasons={"route": "no such route"})
    if route.spec.max_tokens is not None and ctx.max_tokens is None:
        ctx = replace(ctx, max_tokens=route.spec.max_tokens)
    return choice, route, ctx


def decide(snap: Snapshot, ctx: RequestContext, health: HealthView, rng: random.Random) -> Decision:
    """Choose the route and the order of its admitted candidates for `ctx`.

    Raises `NoRouteAvailable` (naming each candidate's reason, e.g. the
    missing capability) when no candidate is admitted; other tenants' own
    deployments are left out of it, so a caller never learns their names.
    """
    choice, route, ctx = resolve_route(snap, ctx)
    found = candidates(snap, route, ctx, health, rng)
    if not found.order:
        reasons = {c.deployment.name: c.reason for c in found.rejected if c.reason != OTHER_TENANT}
        raise NoRouteAvailable(route=choice.name, reasons=reasons or {"route": "no deployment this tenant may use"})
    spec = route.spec
    plan = Plan(route=choice.name, order=found.order, retry=spec.retry, deadline_s=spec.deadline_s,
                attempt_timeout_s=spec.attempt_timeout_s, fit_context=spec.constraints.fit_context,
                max_ejection_percent=spec.max_ejection_percent)
    return Decision(snap, route, choice.rule, plan, ctx)
