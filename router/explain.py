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
from router.routing import choose_route


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


def explain(snapshot: Snapshot, ctx: RequestContext, health: HealthTracker, rng: random.Random) -> Explanation:
    """Explain how `ctx` would be routed by `snapshot` right now."""
    choice = choose_route(snapshot, ctx)
    name, rule, source = choice.name, choice.rule, choice.source
    route = snapshot.routes[name]
    tenant_note = _tenant_note(snapshot, ctx, name)
    reports: list[CandidateReport] = []
    order: list[str] = []
    seen: set[str] = set()
    for rname in (name, *route.fallback_chain):
        compiled = snapshot.routes[rname]
        scores = compiled.strategy.scores(ctx, health)
        for target in compiled.spec.targets:
            if target in compiled.dropped:
                d = snapshot.deployments[target]
                reports.append(_report(snapshot, d.name, rname, False, compiled.dropped[target], None, health))
        for d in compiled.strategy.order(ctx, health, rng):
            if d.name in seen:
                continue
            seen.add(d.name)
            kept, reason = True, "eligible"
            if compiled.spec.constraints.fit_context and d.context_window < ctx.needed_context:
                kept, reason = False, f"context window {d.context_window} < {ctx.needed_context} tokens needed"
            elif not health.available(d.name):
                wait = max(0.0, health.recovers_at(d.name) - health.clock())
                kept, reason = False, f"health: {health.unavailable_reason(d.name)}; retry in {wait:.1f}s"
            if tenant_note is not None and kept:
                kept, reason = False, tenant_note
            if kept:
                order.append(d.name)
                if rname != name:
                    reason = f"fallback via route {rname!r}"
            reports.append(_report(snapshot, d.name, rname, kept, reason, scores.get(d.name), health))
    return Explanation(
        tenant=ctx.tenant, prompt_tokens=ctx.prompt_tokens, needed_context=ctx.needed_context,
        rule=rule.label if rule else None, route=name, route_source=source,
        strategy=route.strategy.name, candidates=reports, order=order, tenant_note=tenant_note,
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
