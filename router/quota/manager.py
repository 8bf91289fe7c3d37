"""Tenant quotas: reserve before the call, settle (or refund) after it.

`reserve` checks every limit that applies (the tenant's, the tenant's on this
route, the tenant's on this deployment) and takes the estimate from all of
them in one atomic store step, so concurrent requests can never overshoot a
budget: of 200 requests racing for a budget that fits 50, exactly 50 pass.
`settle` then replaces the estimate with the actual tokens and cost, and
`refund` returns the estimate of a call that failed.

What a refund gives back: tokens, dollars and the concurrency slot. The
request itself stays counted (the `requests_per_*` limits and bucket), as in
Envoy and `limits`: a tenant hammering a failing provider is still throttled.

A fallback chain keeps one reservation. When another deployment answered,
`settle(..., deployment=...)` moves the per-deployment counters from the
reserved deployment to the one used, without checking its limits (the call
has already happened). Per-route counters stay with the route reserved.

`QuotaExceeded` names the limit that makes the caller wait longest. Its
`usage` is, for `*_per_day`/`*_per_month`, the window's count (reservations
included); for `*_per_minute`, the units the GCRA bucket holds now (at most
`burst` requests, or a minute of tokens); for `max_concurrent`, the calls in
flight. `retry_after` is exact for rates and windows (the bucket refill, or
the end of the UTC day or month), None when only a finished call can help
(`max_concurrent`) or when the request alone is larger than the limit.

Store outage (`failure_mode`): limits counted in dollars fail closed by default
(`QuotaStoreUnavailable`); the others fail open: the request is served
uncounted, `store_errors` goes up and a warning is logged at most once per
`log_interval_s`. Settle and refund never raise for an outage (the answer is
already there); their counts are lost and logged.

Leases: a reservation not settled within `lease_s` (a crashed process) frees
its concurrency slot by itself; settling it afterwards is a no-op, so its
estimate stays counted.

>>> import asyncio
>>> from router.quota import QuotaManager, TenantsFile, store_from_url
>>> tenants = TenantsFile.model_validate({"tenants": {"default": {"usd_per_day": 5}}})
>>> quota = QuotaManager(store_from_url("memory://"))
>>> async def call() -> float:
...     res = await quota.reserve(tenants, tenant="acme", route="default",
...                               deployment="gpt-4o-mini", est_tokens=1200, est_cost_usd=0.01)
...     await quota.settle(res, tokens=900, cost_usd=0.004)
...     return (await quota.usage("acme")).day.usd
>>> asyncio.run(call())
0.004
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from router.errors import QuotaExceeded, QuotaStoreUnavailable, TenantNotAllowed
from router.quota.base import (
    USD_SCALE,
    QuotaStore,
    QuotaStoreError,
    Rejected,
    Reservation,
    ReservePlan,
    TenantUsage,
    WindowUsage,
    to_nano_usd,
)
from router.quota.config import TenantLimits, TenantsFile
from router.quota.plan import build_plan, settle_plan, tenant_keys

log = logging.getLogger("router.quota")

_FIELDS = ("requests", "tokens", "usd")
_UNLIMITED = TenantLimits()


class QuotaManager:
    """Applies a `TenantsFile` to requests, keeping counts in a `QuotaStore`.

    `clock` (wall seconds) paces the outage warnings; the memory store has
    its own clock and Redis uses its server's.
    """

    def __init__(
        self,
        store: QuotaStore,
        *,
        clock: Callable[[], float] = time.time,
        lease_s: float = 900.0,
        log_interval_s: float = 60.0,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.store = store
        self._clock = clock
        self._lease_s = lease_s
        self._log_interval_s = log_interval_s
        self._new_id = new_id
        self._next_log = -math.inf
        self._unlogged = 0
        #: Store failures seen (reserve, settle, refund, usage), for metrics.
        self.store_errors = 0

    @staticmethod
    def resolve(tenants: TenantsFile | None, *, tenant: str, route: str) -> TenantLimits:
        """The limits that apply to `tenant`, checking it may use `route`.

        Raises TenantNotAllowed for an unknown tenant when `unknown_tenants` is
        "reject", or a route outside the tenant's `allowed_routes`. With no
        tenants file at all, nothing is limited. Needs no store, so it can be
        called on the class (`QuotaManager.resolve(...)`) to explain a decision.

        >>> t = TenantsFile.model_validate({"tenants": {"default": {"burst": 2,
        ...     "requests_per_minute": 6}}})
        >>> QuotaManager.resolve(t, tenant="newcomer", route="default").burst
        2
        """
        if tenants is None:
            return _UNLIMITED
        limits = tenants.tenants.get(tenant)
        if limits is None:
            if tenants.unknown_tenants == "reject":
                raise TenantNotAllowed(tenant=tenant, reason="unknown tenant", route=route)
            limits = tenants.tenants["default"]
        if not limits.allows(route):
            raise TenantNotAllowed(
                tenant=tenant, route=route, reason=f"route {route!r} is not allowed"
            )
        return limits

    async def reserve(
        self,
        tenants: TenantsFile | None,
        *,
        tenant: str,
        route: str,
        deployment: str | None = None,
        est_tokens: int = 0,
        est_cost_usd: float = 0.0,
    ) -> Reservation:
        """Take 1 request, `est_tokens` and `est_cost_usd` from every applicable limit, or raise.

        Raises TenantNotAllowed, QuotaExceeded (nothing taken) or
        QuotaStoreUnavailable (store down and a limit here fails closed).
        """
        if est_tokens < 0 or not (math.isfinite(est_cost_usd) and est_cost_usd >= 0):
            raise ValueError("est_tokens and est_cost_usd must be finite and non-negative")
        limits = self.resolve(tenants, tenant=tenant, route=route)
        plan = build_plan(
            self._new_id(), tenant, route, deployment, limits,
            est_tokens=est_tokens, est_nano_usd=to_nano_usd(est_cost_usd), lease_s=self._lease_s,
        )
        impossible = _never_fits(plan)
        if impossible is not None:
            raise self._exceeded(tenant, plan, impossible)
        res = Reservation(
            id=plan.id, tenant=tenant, route=route, deployment=deployment,
            est_tokens=est_tokens, est_cost_usd=est_cost_usd, plan=plan, limits=limits,
        )
        try:
            verdict = await self.store.reserve(plan)
        except QuotaStoreError as exc:
            self._store_failed("reserve", exc)
            closed = _closed_limit(plan, tenants)
            if closed is not None:
                raise QuotaStoreUnavailable(
                    tenant=tenant, limit=closed, store=self.store.name
                ) from exc
            return replace(res, degraded=True)
        if isinstance(verdict, Rejected):
            raise self._exceeded(tenant, plan, verdict)
        return replace(res, window_ids=verdict.window_ids)

    async def settle(
        self,
        res: Reservation,
        *,
        tokens: int,
        cost_usd: float,
        deployment: str | None = None,
    ) -> bool:
        """Replace the estimate with the actual use and free the slot; False if already closed.

        `deployment` names the deployment that answered when it is not the
        reserved one. Never raises for a store outage.
        """
        if tokens < 0 or not (math.isfinite(cost_usd) and cost_usd >= 0):
            raise ValueError("tokens and cost_usd must be finite and non-negative")
        return await self._close(res, tokens, to_nano_usd(cost_usd), deployment)

    async def refund(self, res: Reservation) -> bool:
        """The call failed: give back its tokens, dollars and slot (the request stays counted)."""
        return await self._close(res, 0, 0, None)

    async def usage(self, tenant: str) -> TenantUsage:
        """`tenant`'s counts in the current UTC minute, day and month, and its open reservations.

        Raises QuotaStoreUnavailable when the store is down.
        """
        window_keys, open_key = tenant_keys(tenant)
        try:
            (m, d, mo), held = await self.store.usage(window_keys, open_key)
        except QuotaStoreError as exc:
            self._store_failed("usage", exc)
            raise QuotaStoreUnavailable(
                tenant=tenant, limit="usage", store=self.store.name
            ) from exc
        return TenantUsage(
            tenant=tenant,
            minute=WindowUsage.from_counts(m),
            day=WindowUsage.from_counts(d),
            month=WindowUsage.from_counts(mo),
            in_flight=held,
        )

    async def aclose(self) -> None:
        """Close the store's connections."""
        await self.store.aclose()

    async def _close(
        self, res: Reservation, tokens: int, nano_usd: int, deployment: str | None
    ) -> bool:
        if res.degraded:
            return False
        plan = settle_plan(res, tokens, nano_usd, deployment)
        try:
            return await self.store.settle(plan)
        except QuotaStoreError as exc:
            self._store_failed("settle", exc)
            return False

    def _exceeded(self, tenant: str, plan: ReservePlan, r: Rejected) -> QuotaExceeded:
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

    def _store_failed(self, action: str, exc: QuotaStoreError) -> None:
        self.store_errors += 1
        now = self._clock()
        if now < self._next_log:
            self._unlogged += 1
            return
        muted = f" ({self._unlogged} more failures not logged)" if self._unlogged else ""
        log.warning("quota store %s failed on %s: %s%s", self.store.name, action, exc, muted)
        self._unlogged = 0
        self._next_log = now + self._log_interval_s


def _never_fits(plan: ReservePlan) -> Rejected | None:
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


def _closed_limit(plan: ReservePlan, tenants: TenantsFile | None) -> str | None:
    """The first limit in `plan` whose class fails closed, if any."""
    mode = tenants.failure_mode if tenants is not None else None
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
