"""Re-decide logged requests under a policy and compare two policies' outcomes.

Every request goes through `router.routing.decide` exactly as the router
would route it, against a health view built from the log's own figures
(`SyntheticHealth`). Which deployment would then have served it is
predicted as the attempt loop walks the order: the first deployment whose
context window fits and that the log does not show as down (if all are
down, the first that fits: the loop's panic mode). Its cost is priced with
the replayed policy's prices at the request's logged token counts (the trace's
or the log's output tokens, else `max_tokens`); tenant limits are simulated
by `BudgetSim`; an SLO miss is predicted when the route has an `slo` and the
serving deployment's logged latency (of this request when it served it,
else its logged `slo.stat`, else its YAML prior) is over the budget.

A request the log shows answered from the response cache is served by
`CACHE` (at no cost, counting only against request rates) under a policy
whose route for it reads the cache, and priced as a provider call under one
whose route does not.

>>> diff = replay(RecordReader(Path("decisions.jsonl")), new_snapshot, old_snapshot)  # doctest: +SKIP
>>> diff.new.total_cost_usd, diff.lost  # doctest: +SKIP
(12.41, 0)
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from router.decision_log import DecisionRecord
from router.errors import NoRouteAvailable
from router.policy.snapshot import Snapshot
from router.replay.budgets import BudgetSim
from router.replay.health import SyntheticHealth
from router.routing import choose_route, decide

#: Logged errors that mean the request was refused by quota configuration before any call.
_REFUSALS = frozenset({"quota_exceeded", "tenant_not_allowed"})
#: What "served" a request answered from the response cache (no deployment can be named so).
CACHE = "(cache)"


@dataclass(frozen=True, slots=True)
class Replayed:
    """One request under one policy: where it went, what it cost, what went wrong (None: nothing)."""

    source: str
    route: str | None
    deployment: str | None
    cost_usd: float = 0.0
    unroutable: str | None = None
    rejected: str | None = None
    slo_miss: bool = False

    @property
    def served(self) -> bool:
        return self.deployment is not None


def _tokens(record: DecisionRecord) -> tuple[int, int]:
    """(input, output) tokens the request is priced at, under any policy."""
    out = record.outcome
    if out is not None and out.deployment is not None and out.input_tokens + out.output_tokens > 0:
        return out.input_tokens, out.output_tokens
    return record.prompt_tokens, 0 if record.operation == "embeddings" else (record.max_tokens or 0)


def redecide(snapshot: Snapshot, record: DecisionRecord, health: SyntheticHealth, rng: random.Random,
             budgets: BudgetSim) -> Replayed:
    """Route `record` under `snapshot` as the router would (see the module docstring)."""
    ctx = record.context()
    source = choose_route(snapshot, ctx).source
    try:
        decision = decide(snapshot, ctx, health, rng)
    except NoRouteAvailable as exc:
        return Replayed(source, exc.route, None, unroutable="; ".join(exc.reasons.values()) or "no targets")
    plan, needed = decision.plan, decision.ctx.needed_context
    fitting = [d for d in plan.order if not plan.fit_context or d.context_window >= needed]
    if not fitting:
        return Replayed(source, plan.route, None, unroutable=f"no deployment fits {needed} tokens")
    chosen = next((d for d in fitting if not health.down(d.name)), fitting[0])
    if record.outcome is not None and record.outcome.cached and decision.route.spec.cache.reads:
        refused = budgets.admit(ctx.tenant, plan.route, chosen.name, time=record.time, tokens=0, cost_usd=0.0)
        if refused is not None:
            return Replayed(source, plan.route, None, rejected=refused)
        return Replayed(source, plan.route, CACHE)
    input_tokens, output_tokens = _tokens(record)
    cost = snapshot.prices.cost(chosen, input_tokens, output_tokens)
    refused = budgets.admit(ctx.tenant, plan.route, chosen.name, time=record.time,
                            tokens=input_tokens + output_tokens, cost_usd=cost)
    if refused is not None:
        return Replayed(source, plan.route, None, rejected=refused)
    slo = decision.route.spec.slo
    miss = False
    if slo is not None:
        out = record.outcome
        if out is not None and out.deployment == chosen.name and out.latency_ms > 0:
            latency: float | None = out.latency_ms
        else:
            latency = health.latency_ms(chosen.name, slo.stat)
        miss = (chosen.latency_prior_ms if latency is None else latency) > slo.latency_ms
    return Replayed(source, plan.route, chosen.name, cost, slo_miss=miss)


def as_logged(record: DecisionRecord) -> Replayed | None:
    """What the log says happened; None for a record without a logged outcome (a trace row)."""
    out, dec = record.outcome, record.decision
    if out is None:
        return None
    source = dec.source if dec is not None else "refused before routing"
    route = dec.route if dec is not None else None
    if out.error in _REFUSALS:
        return Replayed(source, route, None, rejected=out.limit or out.error)
    if out.error == "no_route":
        return Replayed(source, route, None, unroutable="no_route")
    return Replayed(source, route, CACHE if out.cached else out.deployment, out.cost_usd)


class PolicyTotals(BaseModel):
    """One policy's predicted totals over the replayed requests (costs in USD)."""

    model_config = ConfigDict(frozen=True)

    label: str
    requests: int
    served: int
    unroutable: int
    quota_rejected: int
    rejected_by_limit: dict[str, int]
    #: None for the log baseline: SLO misses are predicted, not logged.
    slo_misses: int | None
    routes: dict[str, int]
    deployments: dict[str, int]
    cost_by_tenant: dict[str, float]
    total_cost_usd: float


class RuleChange(BaseModel):
    """Requests that moved (another route or deployment) and how their route was chosen before and after."""

    model_config = ConfigDict(frozen=True)

    old: str
    new: str
    count: int


class ReplayDiff(BaseModel):
    """The old policy (or the log) against the new one, over the same requests.

    `lost`: served before, not now (unroutable or refused); `gained`: the
    reverse; `moved`: served by both but by another route or deployment.
    `old` is None when there is nothing to compare (a trace replayed alone).
    """

    model_config = ConfigDict(frozen=True)

    requests: int
    old: PolicyTotals | None
    new: PolicyTotals
    moved: int
    lost: int
    gained: int
    rule_changes: list[RuleChange]
    seconds: float = 0.0


def totals(label: str, records: Sequence[DecisionRecord], outcomes: Sequence[Replayed | None], *,
           slo_known: bool) -> PolicyTotals:
    """Sum one policy's outcomes (records without an outcome are left out)."""
    routes: Counter[str] = Counter()
    deployments: Counter[str] = Counter()
    by_limit: Counter[str] = Counter()
    cost: dict[str, float] = defaultdict(float)
    n = served = unroutable = rejected = misses = 0
    for rec, r in zip(records, outcomes, strict=True):
        if r is None:
            continue
        n += 1
        if r.route is not None:
            routes[r.route] += 1
        if r.deployment is not None:
            served += 1
            deployments[r.deployment] += 1
            cost[rec.tenant] += r.cost_usd
        if r.unroutable is not None:
            unroutable += 1
        if r.rejected is not None:
            rejected += 1
            by_limit[r.rejected] += 1
        misses += r.slo_miss
    return PolicyTotals(
        label=label, requests=n, served=served, unroutable=unroutable, quota_rejected=rejected,
        rejected_by_limit=dict(by_limit.most_common()), slo_misses=misses if slo_known else None,
        routes=dict(routes.most_common()), deployments=dict(deployments.most_common()),
        cost_by_tenant={t: round(c, 9) for t, c in sorted(cost.items())},
        total_cost_usd=round(sum(cost.values()), 9))


def compare(records: Sequence[DecisionRecord], old: Sequence[Replayed | None], new: Sequence[Replayed],
            *, old_label: str, new_label: str, old_is_log: bool) -> ReplayDiff:
    """The diff of two policies' outcomes for the same records."""
    moved = lost = gained = 0
    changes: Counter[tuple[str, str]] = Counter()
    for before, after in zip(old, new, strict=True):
        if before is None:
            continue
        if before.served and not after.served:
            lost += 1
        elif after.served and not before.served:
            gained += 1
        elif before.served and (before.route, before.deployment) != (after.route, after.deployment):
            moved += 1
        else:
            continue
        changes[(before.source, after.source)] += 1
    has_old = any(o is not None for o in old)
    return ReplayDiff(
        requests=len(records),
        old=totals(old_label, records, old, slo_known=not old_is_log) if has_old else None,
        new=totals(new_label, records, new, slo_known=True),
        moved=moved, lost=lost, gained=gained,
        rule_changes=[RuleChange(old=o, new=n, count=c) for (o, n), c in changes.most_common()])


def replay(records: Iterable[DecisionRecord], new: Snapshot, old: Snapshot | None = None, *, seed: int = 0,
           health: SyntheticHealth | None = None, new_label: str = "new", old_label: str | None = None) -> ReplayDiff:
    """Re-decide every record under `new` (and `old`, else compare with what the log says happened).

    Both policies see the same synthetic health (from `records`, unless given)
    and their own `random.Random(seed)`, so the diff is the policies' doing.
    """
    started = time.perf_counter()
    records = list(records)
    health = health or SyntheticHealth.from_records(records)
    rng_new = random.Random(seed)
    new_budgets = BudgetSim(new.tenants)
    after = [redecide(new, r, health, rng_new, new_budgets) for r in records]
    before: list[Replayed | None]
    if old is not None:
        rng_old, old_budgets = random.Random(seed), BudgetSim(old.tenants)
        before = [redecide(old, r, health, rng_old, old_budgets) for r in records]
    else:
        before = [as_logged(r) for r in records]
    diff = compare(records, before, after, old_label=old_label or ("old" if old is not None else "as logged"),
                   new_label=new_label, old_is_log=old is None)
    return diff.model_copy(update={"seconds": round(time.perf_counter() - started, 3)})


def loses_requests(diff: ReplayDiff) -> bool:
    """True when the new policy fails requests the old one served (unroutable or refused): exit code 1."""
    return diff.lost > 0
