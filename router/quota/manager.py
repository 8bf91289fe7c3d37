"""Tenant quotas: reserve before the call, top up before a pricier attempt, settle after it.

`reserve` checks every limit that applies (the tenant's, the tenant's on this
route, the tenant's on this deployment) and takes the estimate from all of
them in one atomic store step, so concurrent requests never overshoot a
budget by their estimates: of 200 requests racing for a budget that fits 50,
exactly 50 pass. `settle` then replaces what is held with the actual tokens
and cost, and `refund` returns what a failed call held.

What a refund gives back: tokens, dollars and the concurrency slot. The
request itself stays counted (the `requests_per_*` limits and bucket), as in
Envoy and `limits`: a tenant hammering a failing provider is still throttled.

A fallback chain keeps one reservation. Before an attempt on a deployment
pricier than what the reservation holds, the caller calls `top_up` with that
attempt's estimate: it raises what is held, atomically, only if the raise
still fits every limit (else the attempt is skipped). When another deployment
answered, `settle(..., deployment=...)` moves the per-deployment counters from
the reserved deployment to the one used, without checking its limits (the
call has already happened). Per-route counters stay with the route reserved.

How far a budget can still be passed: by what a provider reports above our
estimate of the call that answered (more prompt tokens than we counted, or
more output than `max_tokens` assumed, or a price above the one we know):
each settle counts the actual, so a call can push its tenant past the limit
by that difference, and the next reserve is refused. Nothing else passes it
while the store answers. While it does not, limits that fail open are kept
by a per-process limiter (see below), so N processes admit up to N times the
limit; calls counted there are never counted in the shared store.

`QuotaExceeded` names the limit that makes the caller wait longest. Its
`usage` is, for `*_per_day`/`*_per_month`, the window's count (reservations
included); for `*_per_minute`, the units the GCRA bucket holds now (at most
`burst` requests, or a minute of tokens); for `max_concurrent`, the calls in
flight. `retry_after` is exact for rates and windows (the bucket refill, or
the end of the UTC day or month), None when only a finished call can help
(`max_concurrent`) or when the request alone is larger than the limit.

Store outage (`failure_mode`): limits counted in dollars fail closed by default
(`QuotaStoreUnavailable`); the others fail open to a local limiter: the same
plan runs against a `MemoryStore` in this process (so a 50 rpm limit still
admits about 50 a minute per process), `store_errors` goes up and a warning is
logged at most once per `log_interval_s`. After a failure the shared store is
not asked again for `outage_probe_s`, so requests do not each wait out a
timeout. A reserve that timed out may still reach the store later: it is
voided in the background (refunded if it landed, refused if it lands after).

Settles leave the caller's path: `settle_soon` and `refund_soon` return at
once and a background task delivers them, retrying through an outage until
the reservation's lease is over (`settle` and `refund` try once in line, then
the same way). `flush()` waits for them. If the process dies first, the lease
lapses by itself after `lease_s` (see `router.quota.settler` for what that
over- or under-charges); settling a lapsed reservation is a no-op.

>>> import asyncio
>>> from router.quota import QuotaManager, TenantsFile, store_from_url
>>> tenants = TenantsFile.model_validate({"tenants": {"default": {"usd_per_day": 5}}})
>>> quota = QuotaManager(store_from_url("memory://"))
>>> async def call() -> float:
...     res = await quota.reserve(tenants, tenant="acme", route="default",
...                               deployment="gpt-4o-mini", est_tokens=1200, est_cost_usd=0.01)
...     assert await quota.top_up(res, tokens=1200, cost_usd=0.03)  # falling back to a pricier one
...     quota.settle_soon(res, tokens=900, cost_usd=0.02, deployment="gpt-4o")
...     await quota.flush()
...     return (await quota.usage("acme")).day.usd
>>> asyncio.run(call())
0.02
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from router.errors import QuotaStoreUnavailable, TenantNotAllowed
from router.quota.base import (
    QuotaStore,
    QuotaStoreError,
    Rejected,
    Reservation,
    TenantUsage,
    WindowUsage,
    to_nano_usd,
    window_ids,
)
from router.quota.config import TenantLimits, TenantsFile
from router.quota.memory import MemoryStore
from router.quota.plan import build_plan, settle_plan, tenant_keys, top_up_plan
from router.quota.settler import Settler
from router.quota.verdicts import closed_limit, exceeded, never_fits, top_up_fails_closed

log = logging.getLogger("router.quota")

_T = TypeVar("_T")
_UNLIMITED = TenantLimits()


class QuotaManager:
    """Applies a `TenantsFile` to requests, keeping counts in a `QuotaStore`.

    `clock` (wall seconds) paces outage warnings and probes, runs the local
    fallback limiter and bounds settle retries; `sleep` waits between them.
    The memory store has its own clock and Redis uses its server's.
    """

    def __init__(
        self,
        store: QuotaStore,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lease_s: float = 900.0,
        log_interval_s: float = 60.0,
        outage_probe_s: float = 1.0,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.store = store
        self._clock = clock
        self._lease_s = lease_s
        self._log_interval_s = log_interval_s
        self._outage_probe_s = outage_probe_s
        self._new_id = new_id
        self._next_log = -math.inf
        self._unlogged = 0
        self._down_until = -math.inf
        #: Counts what fails open while the shared store is down, per process.
        self.local = MemoryStore(clock=clock)
        self._settler = Settler(store, clock=clock, sleep=sleep)
        #: Store failures seen (reserve, top-up, settle, refund, usage), for metrics.
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

        One store round trip. Raises TenantNotAllowed, QuotaExceeded (nothing
        taken) or QuotaStoreUnavailable (store down and a limit here fails closed).
        """
        _check_amounts(est_tokens, est_cost_usd)
        limits = self.resolve(tenants, tenant=tenant, route=route)
        plan = build_plan(
            self._new_id(), tenant, route, deployment, limits,
            est_tokens=est_tokens, est_nano_usd=to_nano_usd(est_cost_usd), lease_s=self._lease_s,
        )
        impossible = never_fits(plan)
        if impossible is not None:
            raise exceeded(tenant, plan, impossible)
        now = self._clock()
        res = Reservation(
            id=plan.id, tenant=tenant, route=route, deployment=deployment,
            est_tokens=est_tokens, est_cost_usd=est_cost_usd, plan=plan, limits=limits,
            reserved_at=now, failure_mode=tenants.failure_mode if tenants is not None else None,
        )
        try:
            verdict = await self._shared(self.store.reserve(plan), now)
        except QuotaStoreError as exc:
            self._store_failed("reserve", exc)
            if exc.maybe_applied:  # it may still land: make sure its lease cannot outlive us
                stray = replace(res, window_ids=window_ids(now))
                self._settler.submit(settle_plan(stray, 0, 0, None, void_s=self._lease_s),
                                     deadline=now + self._lease_s, first_delay_s=self._outage_probe_s)
            closed = closed_limit(plan, res.failure_mode)
            if closed is not None:
                raise QuotaStoreUnavailable(
                    tenant=tenant, limit=closed, store=self.store.name
                ) from exc
            res = replace(res, degraded=True)
            try:
                verdict = await self.local.reserve(plan)
            except QuotaStoreError:  # this tenant passed its local key bound: serve it uncounted
                return replace(res, window_ids=window_ids(now))
        if isinstance(verdict, Rejected):
            raise exceeded(tenant, plan, verdict)
        return replace(res, window_ids=verdict.window_ids)

    async def top_up(self, res: Reservation, *, tokens: int, cost_usd: float) -> bool:
        """Raise what `res` holds to at least `tokens` and `cost_usd`, if that still fits.

        Call it before an attempt whose estimate exceeds what the reservation
        holds (a fallback to a pricier deployment). True: the reservation now
        holds at least these amounts (or already did; no round trip then).
        False: the raise would pass a limit (tokens or dollars, any scope), or
        the reservation is no longer open; nothing changed, skip the attempt.
        Every lease of the reservation is renewed to `lease_s` from now.

        Store outage: False if a dollar limit applies and money fails closed,
        else True with nothing counted. Calls for one reservation must not
        overlap (each raise is computed from what the last one left).
        """
        _check_amounts(tokens, cost_usd)
        held = res.held
        want_tokens, want_nano = max(tokens, held.tokens), max(to_nano_usd(cost_usd), held.nano_usd)
        if (want_tokens, want_nano) == (held.tokens, held.nano_usd):
            return True
        plan = top_up_plan(res, want_tokens - held.tokens, want_nano - held.nano_usd)
        now = self._clock()
        try:
            store = self.local if res.degraded else self.store
            verdict = await (store.top_up(plan) if res.degraded else self._shared(store.top_up(plan), now))
        except QuotaStoreError as exc:
            self._store_failed("top_up", exc)
            return not top_up_fails_closed(plan, res.failure_mode)
        if verdict != "ok":
            return False
        held.tokens, held.nano_usd = want_tokens, want_nano
        return True

    async def settle(
        self,
        res: Reservation,
        *,
        tokens: int,
        cost_usd: float,
        deployment: str | None = None,
    ) -> bool:
        """Replace what is held with the actual use and free the slot; False if already closed.

        `deployment` names the deployment that answered when it is not the
        reserved one. Tries once, in line; if the store fails, returns False
        and retries in the background (see `settle_soon`). Never raises for
        a store outage.
        """
        _check_amounts(tokens, cost_usd)
        return await self._close(res, tokens, to_nano_usd(cost_usd), deployment)

    def settle_soon(
        self, res: Reservation, *, tokens: int, cost_usd: float, deployment: str | None = None
    ) -> None:
        """`settle`, off the caller's path: returns at once; a background task delivers it.

        Retried through store outages until the reservation's lease is over.
        `flush()` waits for it. Needs a running event loop.
        """
        _check_amounts(tokens, cost_usd)
        self._settler.submit(settle_plan(res, tokens, to_nano_usd(cost_usd), deployment),
                             deadline=res.reserved_at + res.plan.lease_s)

    async def refund(self, res: Reservation) -> bool:
        """The call failed: give back what it held and its slot (the request stays counted)."""
        return await self._close(res, 0, 0, None)

    def refund_soon(self, res: Reservation) -> None:
        """`refund`, off the caller's path (see `settle_soon`)."""
        self._settler.submit(settle_plan(res, 0, 0, None), deadline=res.reserved_at + res.plan.lease_s)

    async def flush(self, timeout_s: float | None = None) -> int:
        """Wait for pending background settles; returns how many are still pending (0: all done).

        A settle is done once it landed or gave up (its lease is over).
        """
        return await self._settler.flush(timeout_s)

    @property
    def pending_settles(self) -> int:
        """Background settles not yet delivered."""
        return self._settler.pending

    async def usage(self, tenant: str) -> TenantUsage:
        """`tenant`'s counts in the current UTC minute, day and month, and its open reservations.

        Reads the shared store only (not what the local limiter counted during
        an outage), once this process's pending background settles have landed
        (waiting at most 2 s for them). Raises QuotaStoreUnavailable when the store is down.
        """
        await self.flush(2.0)
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

    async def aclose(self, *, flush_timeout_s: float = 5.0) -> None:
        """Deliver pending settles (for up to `flush_timeout_s`), then close the store."""
        await self._settler.aclose(flush_timeout_s)
        await self.store.aclose()

    async def _shared(self, call: Awaitable[_T], now: float) -> _T:
        """Await a shared-store call, unless the store failed within `outage_probe_s`."""
        if now < self._down_until:
            if asyncio.iscoroutine(call):
                call.close()  # never started: nothing was sent
            raise QuotaStoreError(f"{self.store.name}: down, next probe in "
                                  f"{self._down_until - now:.2f}s")
        try:
            return await call
        except QuotaStoreError as exc:
            if exc.outage:
                self._down_until = self._clock() + self._outage_probe_s
            raise

    async def _close(
        self, res: Reservation, tokens: int, nano_usd: int, deployment: str | None
    ) -> bool:
        plan = settle_plan(res, tokens, nano_usd, deployment)
        if res.degraded:
            return await self.local.settle(plan)
        try:
            return await self.store.settle(plan)
        except QuotaStoreError as exc:
            self._store_failed("settle", exc)
            self._settler.submit(plan, deadline=res.reserved_at + res.plan.lease_s,
                                 first_delay_s=self._outage_probe_s)
            return False

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


def _check_amounts(tokens: int, cost_usd: float) -> None:
    if tokens < 0 or not (math.isfinite(cost_usd) and cost_usd >= 0):
        raise ValueError("tokens and cost_usd must be finite and non-negative")
