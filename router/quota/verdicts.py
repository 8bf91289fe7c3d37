"""What the manager concludes from a plan: the error naming a failed limit, and outage verdicts.

>>> from router.quota.config import TenantLimits
>>> from router.quota.plan import build_plan
>>> plan = build_plan("id", "acme", "default", None, TenantLimits(usd_per_day=1),
...                   est_tokens=0, est_nano_usd=2 * USD_SCALE, lease_s=60)
>>> exceeded("acme", plan, never_fits(plan)).limit
'usd_per_day'
"""

from __future__ import annotations

from router.errors import QuotaExceeded
from router.quota.base import USD_SCALE, Rejected, ReservePlan, TopUpPlan
from router.quota.config import FailurePolicy

_FIELDS = ("requests", "tokens", "usd")


def exceeded(tenant: str, plan: ReservePlan, r: Rejected) -> QuotaExceeded:
    """The error for item `r` of `plan`, in the limit's own units (dollars, not nano-dollars)."""
    if r.kind == "rate":
        item = plan.rates[r.index]
        return QuotaExceeded(tenant=tenant, limit=item.limit, limit_value=item.limit_value,
                             usage=r.usage, retry_after=r.retry_after, scope=item.scope)
    if r.kind == "slot":
        slot = plan.slots[r.index]
        return QuotaExceeded(tenant=tenant, limit="max_concurrent",
                             limit_value=float(slot.limit or 0), usage=r.usage,
                             retry_after=r.retry_after, scope=slot.scope)
    w = plan.windows[r.index]
    scale = USD_SCALE if r.field == 2 else 1
    return QuotaExceeded(
        tenant=tenant, limit=f"{_FIELDS[r.field]}_per_{w.window}",
        limit_value=(w.limits[r.field] or 0) / scale, usage=r.usage / scale,
        retry_after=r.retry_after, scope=w.scope,
    )


def never_fits(plan: ReservePlan) -> Rejected | None:
    """A request larger than a limit itself: no wait will help (retry_after None)."""
    for i, r in enumerate(plan.rates):
        if r.amount > r.capacity:
            return Rejected("rate", i, 0, 0.0, None)
    for i, w in enumerate(plan.windows):
        for f, limit in enumerate(w.limits):
            if limit is not None and w.amounts[f] > limit:
                return Rejected("window", i, f, 0.0, None)
    for i, s in enumerate(plan.slots):
        if s.limit == 0:
            return Rejected("slot", i, 0, 0.0, None)
    return None


def closed_limit(plan: ReservePlan, mode: FailurePolicy | None) -> str | None:
    """The first limit in `plan` whose class fails closed under `mode`, if any."""
    if mode is None:
        return None
    for w in plan.windows:
        if w.limits[2] is not None and mode.money == "closed":
            return f"usd_per_{w.window}"
    if mode.rates == "closed":
        for r in plan.rates:
            return r.limit
        for w in plan.windows:
            for f in (0, 1):
                if w.limits[f] is not None:
                    return f"{_FIELDS[f]}_per_{w.window}"
        for s in plan.slots:
            if s.limit is not None:
                return "max_concurrent"
    return None


def top_up_fails_closed(plan: TopUpPlan, mode: FailurePolicy | None) -> bool:
    """Whether a top-up the store could not run must be refused under `mode`.

    It must when it raises dollars under a dollar limit and money fails
    closed, or tokens under a token limit and rates fail closed.
    """
    if mode is None:
        return False
    money = any(w.limits[1] is not None and w.deltas[1] for w in plan.windows)
    tokens = bool(plan.rates) or any(w.limits[0] is not None and w.deltas[0] for w in plan.windows)
    return (money and mode.money == "closed") or (tokens and mode.rates == "closed")
