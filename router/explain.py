"""A dry run of one routing decision: which rule, which route, every candidate and why.

No provider is called and LiteLLM is not imported, so ops can check a policy
before shipping it (`llm-router explain`).

>>> explain(snapshot, ctx, tracker, random.Random(0)).order  # doctest: +SKIP
['sim-cheap', 'sim-fast']
"""

from __future__ import annotations

import random

from pydantic import BaseModel

from router.context import RequestContext
from router.errors import TenantNotAllowed
from router.health import HealthTracker
from router.policy.snapshot import Snapshot
from router.routing import candidates, resolve_route


class CandidateReport(BaseModel):
    """One deployment as the decision saw it."""

    deployment: str
    route: str
    kept: bool
    reason: str
    score: float | None = None
    circuit: str = "closed"
    price_per_mtok: float
    quality: float
    context_window: int


class Explanation(BaseModel):
    """The whole decision, as `explain` prints it (and `--json` emits it)."""

    tenant: str
    prompt_tokens: int
    needed_context: int
    rule: str | None
    route: str
    route_source: str
    strategy: str
    candidates: list[CandidateReport]
    order: list[str]
    tenant_note: str | None = None
    #: Capabilities the request needs (tools, json, vision, audio).
    capabilities: list[str] = []


def explain(snapshot: Snapshot, ctx: RequestContext, health: HealthTracker, rng: random.Random) -> Explanation:
    """Explain how `ctx` would be routed by `snapshot` right now: the router's own
    `candidates`, each with its verdict, plus health and compile-time drops."""
    choice, route, ctx = resolve_route(snapshot, ctx)
    name = choice.name
    tenant_note = _tenant_note(snapshot, ctx, name)
    reports: list[CandidateReport] = []
    for rname in (name, *route.fallback_chain):
        compiled = snapshot.routes[rname]
        for target, why in compiled.dropped.items():
            reports.append(_report(snapshot, target, rname, False, why, None, health))
    found = candidates(snapshot, route, ctx, health, rng)
    scores: dict[str, dict[str, float]] = {}
    order: list[str] = []
    for c in found.all():
        if c.route not in scores:
            scores[c.route] = snapshot.routes[c.route].strategy.scores(ctx, health)
        d = c.deployment
        kept, reason = c.admitted, c.reason
        if kept and not health.available(d.name):
            wait = max(0.0, health.recovers_at(d.name) - health.clock())
            kept, reason = False, f"health: {health.unavailable_reason(d.name)}; retry in {wait:.1f}s"
        if tenant_note is not None and kept:
            kept, reason = False, tenant_note
        if kept:
            order.append(d.name)
        reports.append(_report(snapshot, d.name, c.route, kept, reason, scores[c.route].get(d.name), health))
    return Explanation(
        tenant=ctx.tenant, prompt_tokens=ctx.prompt_tokens, needed_context=ctx.needed_context,
        rule=choice.rule.label if choice.rule else None, route=name, route_source=choice.source,
        strategy=route.strategy.name, candidates=reports, order=order, tenant_note=tenant_note,
        capabilities=sorted(ctx.capabilities),
    )


def _report(snapshot: Snapshot, name: str, route: str, kept: bool, reason: str,
            score: float | None, health: HealthTracker) -> CandidateReport:
    d = snapshot.deployments[name]
    return CandidateReport(
        deployment=name, route=route, kept=kept, reason=reason, score=score,
        circuit=health.state(name).value, price_per_mtok=sum(snapshot.prices.per_mtok(d)),
        quality=d.quality, context_window=d.context_window,
    )


def _tenant_note(snapshot: Snapshot, ctx: RequestContext, route: str) -> str | None:
    """Why the tenant may not use this route at all (quota configuration), or None."""
    if snapshot.tenants is None:
        return None
    from router.quota import QuotaManager

    try:
        QuotaManager.resolve(snapshot.tenants, tenant=ctx.tenant, route=route)
    except TenantNotAllowed as exc:
        return f"quota: {exc.reason}"
    return None
