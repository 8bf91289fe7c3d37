"""A dry run of one routing decision: which rule, which route, every candidate and why.

No provider is called and LiteLLM is not imported, so ops can check a policy
before shipping it (`llm-router explain`). For a tenant with its own keys or
deployments it also shows which deployments that tenant sees and, for each,
which environment variable its key comes from (the name, never the value: no
variable is read here).

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
from router.policy.tenant_views import KeySource, TenantView
from router.routing import candidates, resolve_route
from router.schema import Deployment


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
    #: The environment variable the call's key comes from (its name only), and why that one.
    key_env: str | None = None
    key_source: KeySource = "shared"


class SeenDeployment(BaseModel):
    """One deployment as a tenant sees it: the name the router calls it by (and keeps its health
    under), what it replaces, and the environment variable its key comes from."""

    deployment: str
    source: KeySource
    replaces: str | None = None
    key_env: str | None = None


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
    #: The tenant's own keys as tenants.yaml declares them: deployment or provider -> variable name.
    tenant_keys: dict[str, str] = {}
    #: Every deployment the tenant sees (shared ones, its copies with its keys, its own ones).
    deployments: list[SeenDeployment] = []


def explain(snapshot: Snapshot, ctx: RequestContext, health: HealthTracker, rng: random.Random) -> Explanation:
    """Explain how `ctx` would be routed by `snapshot` right now: the router's own
    `candidates`, each with its verdict, plus health and compile-time drops."""
    choice, route, ctx = resolve_route(snapshot, ctx)
    view = snapshot.tenant_views.get(ctx.tenant)
    name = choice.name
    tenant_note = _tenant_note(snapshot, ctx, name)
    reports: list[CandidateReport] = []
    for rname in (name, *route.fallback_chain):
        compiled = snapshot.routes[rname]
        for target, why in compiled.dropped.items():
            reports.append(_report(snapshot, snapshot.deployments[target], rname, False, why, None, health, view))
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
        score = scores[c.route].get(view.replaces.get(d.name, d.name) if view else d.name)
        reports.append(_report(snapshot, d, c.route, kept, reason, score, health, view))
    return Explanation(
        tenant=ctx.tenant, prompt_tokens=ctx.prompt_tokens, needed_context=ctx.needed_context,
        rule=choice.rule.label if choice.rule else None, route=name, route_source=choice.source,
        strategy=route.strategy.name, candidates=reports, order=order, tenant_note=tenant_note,
        capabilities=sorted(ctx.capabilities), tenant_keys=_declared_keys(snapshot, ctx.tenant),
        deployments=seen_deployments(snapshot, ctx.tenant),
    )


def seen_deployments(snapshot: Snapshot, tenant: str) -> list[SeenDeployment]:
    """Every deployment `tenant` sees, in the deployments file's order with its replacements in
    place, then its own ones that replace nothing; other tenants' deployments are left out."""
    view = snapshot.tenant_views.get(tenant)
    seen: list[SeenDeployment] = []
    for name, d in snapshot.deployments.items():
        if name in snapshot.owners:
            continue  # a tenant's copy or own deployment: listed through its view below
        if view is not None and name in view.swap:
            d = view.swap[name]
            seen.append(SeenDeployment(deployment=d.name, source=view.source(d.name), replaces=name,
                                       key_env=d.api_key_env))
        else:
            seen.append(SeenDeployment(deployment=name, source="shared", key_env=d.api_key_env))
    if view is not None:
        seen.extend(SeenDeployment(deployment=n, source="own", key_env=d.api_key_env)
                    for n, d in view.owned.items() if n not in view.replaces)
    return seen


def _declared_keys(snapshot: Snapshot, tenant: str) -> dict[str, str]:
    if snapshot.tenants is None or tenant not in snapshot.tenant_views:
        return {}
    return dict(snapshot.tenants.tenants[tenant].keys)


def _report(snapshot: Snapshot, d: Deployment, route: str, kept: bool, reason: str,
            score: float | None, health: HealthTracker, view: TenantView | None) -> CandidateReport:
    source, key_env = _key(snapshot, d, view)
    return CandidateReport(
        deployment=d.name, route=route, kept=kept, reason=reason, score=score,
        circuit=health.state(d.name).value, price_per_mtok=sum(snapshot.prices.per_mtok(d)),
        quality=d.quality, context_window=d.context_window, key_source=source, key_env=key_env,
    )


def _key(snapshot: Snapshot, d: Deployment, view: TenantView | None) -> tuple[KeySource, str | None]:
    """Where `d`'s key comes from for this tenant; nothing about another tenant's deployment."""
    mine = view is not None and (d.name in view.owned or d.name in view.replaces)
    if d.name in snapshot.owners and not mine:
        return "another tenant", None
    return (view.source(d.name) if view is not None else "shared"), d.api_key_env


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
