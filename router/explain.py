"""A dry run of one routing decision: which rule, which route, every candidate and why.

No provider is called and LiteLLM is not imported, so ops can check a policy
before shipping it (`llm-router explain`). For a tenant with its own keys or
deployments it also shows which deployments that tenant sees and, for each,
which environment variable its key comes from (the name, never the value: no
variable is read here).

Given a quality tracker (`QualityView`), the strategies that learn from
feedback rank as they would in the router, and each candidate shows its YAML
prior (`quality`), what feedback measured (`quality_measured`, from
`quality_samples` scores) and the blend the strategy ranks by (`quality_blended`).

>>> explain(snapshot, ctx, tracker, random.Random(0)).order  # doctest: +SKIP
['sim-cheap', 'sim-fast']
>>> explain(snapshot, ctx, tracker, random.Random(0), quality=quality_tracker)  # doctest: +SKIP
"""

from __future__ import annotations

import random

from pydantic import BaseModel

from router.context import RequestContext
from router.errors import TenantNotAllowed
from router.health import HealthTracker
from router.policy.snapshot import Snapshot
from router.policy.tenant_views import KeySource, TenantView
from router.quality.base import QualityView
from router.routing import candidates, resolve_route
from router.schema import Deployment
from router.strategies import HealthView
from router.strategies_learned import LEARNED_STRATEGIES, HealthWithQuality, task_of


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
    #: The decayed mean of feedback scores in [0, 1] (None: nothing measured, or no tracker given).
    quality_measured: float | None = None
    #: How many feedback scores that measurement rests on (0 without a tracker).
    quality_samples: int = 0
    #: What a learning strategy (best_quality, thompson) ranks by: the YAML `quality` as a prior worth
    #: `PRIOR_WEIGHT` samples, blended with the measurement; None for strategies that do not learn
    #: and for candidates the strategy never ranked.
    quality_blended: float | None = None


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
    #: True when a quality tracker was given: the measured and blended quality columns mean something.
    quality_feedback: bool = False


def explain(snapshot: Snapshot, ctx: RequestContext, health: HealthTracker, rng: random.Random,
            quality: QualityView | None = None) -> Explanation:
    """Explain how `ctx` would be routed by `snapshot` right now: the router's own
    `candidates`, each with its verdict, plus health and compile-time drops.

    `quality` (a `QualityTracker`, say) is what the router's learning strategies
    read: given, they rank by prior and feedback as in the router, and each
    candidate reports the measured quality; without it they rank by the YAML alone.
    """
    choice, route, ctx = resolve_route(snapshot, ctx)
    tview = snapshot.tenant_views.get(ctx.tenant)
    hview: HealthView = health if quality is None else HealthWithQuality(health, quality)
    task = task_of(ctx)
    name = choice.name
    tenant_note = _tenant_note(snapshot, ctx, name)
    reports: list[CandidateReport] = []
    for rname in (name, *route.fallback_chain):
        compiled = snapshot.routes[rname]
        for target, why in compiled.dropped.items():
            report = _report(snapshot, snapshot.deployments[target], rname, False, why, None, health, tview)
            reports.append(_with_quality(report, quality, target, task, None))
    found = candidates(snapshot, route, ctx, hview, rng)
    scores: dict[str, dict[str, float]] = {}
    ranked_by: dict[str, dict[str, Deployment]] = {}  # route -> what its strategy ranks, by name
    order: list[str] = []
    for c in found.all():
        strategy = snapshot.routes[c.route].strategy
        if c.route not in scores:
            scores[c.route] = strategy.scores(ctx, hview)
            ranked_by[c.route] = {x.name: x for x in strategy.candidates}
        d = c.deployment
        kept, reason = c.admitted, c.reason
        if kept and not health.available(d.name):
            wait = max(0.0, health.recovers_at(d.name) - health.clock())
            kept, reason = False, f"health: {health.unavailable_reason(d.name)}; retry in {wait:.1f}s"
        if tenant_note is not None and kept:
            kept, reason = False, tenant_note
        if kept:
            order.append(d.name)
        ranked = tview.replaces.get(d.name, d.name) if tview else d.name  # the name the strategy knows it by
        score = scores[c.route].get(ranked)
        report = _report(snapshot, d, c.route, kept, reason, score, health, tview)
        blended = None
        if isinstance(strategy, _LEARNED) and ranked in ranked_by[c.route]:
            blended = strategy.mean(ranked_by[c.route][ranked], task, hview)
        reports.append(_with_quality(report, quality, ranked, task, blended))
    return Explanation(
        tenant=ctx.tenant, prompt_tokens=ctx.prompt_tokens, needed_context=ctx.needed_context,
        rule=choice.rule.label if choice.rule else None, route=name, route_source=choice.source,
        strategy=route.strategy.name, candidates=reports, order=order, tenant_note=tenant_note,
        capabilities=sorted(ctx.capabilities), tenant_keys=_declared_keys(snapshot, ctx.tenant),
        deployments=seen_deployments(snapshot, ctx.tenant), quality_feedback=quality is not None,
    )


_LEARNED = tuple(LEARNED_STRATEGIES.values())


def _with_quality(report: CandidateReport, quality: QualityView | None, ranked: str, task: str | None,
                  blended: float | None) -> CandidateReport:
    """`report` with what feedback measured for `ranked` on its route (the lookup the learning
    strategies make: the most specific key with evidence) and the `blended` figure they rank by."""
    update: dict[str, float | int | None] = {}
    if quality is not None:
        est = quality.quality(ranked, report.route, task)
        if est is not None:
            update["quality_measured"], update["quality_samples"] = est.mean, est.samples
    if blended is not None:
        update["quality_blended"] = blended
    return report.model_copy(update=update) if update else report


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
