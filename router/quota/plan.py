"""Turn a tenant's limits into the plans a `QuotaStore` runs, and name their keys.

Keys are `{tenant}:scope:kind`: the tenant is a Redis Cluster hash tag, so all
keys of one reservation share a slot; the scope is `t` (the tenant), `r=NAME`
(a route) or `d=NAME` (a deployment); the kind is `rpm`, `tpm`, `minute`,
`day`, `month`, `open` (the tenant's open reservations), `void` (ids of
reservations given up on) or `slots`.

>>> tenant_keys("acme")[1]
'{acme}:t:open'
"""

from __future__ import annotations

from dataclasses import dataclass

from router.quota.base import (
    WINDOWS,
    RateAdjust,
    RateItem,
    Reservation,
    ReservePlan,
    SettlePlan,
    SlotItem,
    TopUpPlan,
    TopUpWindow,
    Window,
    WindowAdjust,
    WindowItem,
    to_nano_usd,
)
from router.quota.config import Limits, TenantLimits


def _esc(name: str) -> str:
    """Names as key parts: ':' separates parts, braces delimit Redis Cluster hash tags."""
    return name.replace("%", "%25").replace(":", "%3A").replace("{", "%7B").replace("}", "%7D")


@dataclass(frozen=True, slots=True)
class _Scope:
    """Where a set of limits applies: `label` goes into errors, `code` into keys."""

    label: str
    code: str

    @classmethod
    def route(cls, name: str) -> _Scope:
        return cls(f"route:{name}", f"r={_esc(name)}")

    @classmethod
    def deployment(cls, name: str) -> _Scope:
        return cls(f"deployment:{name}", f"d={_esc(name)}")


_TENANT = _Scope("tenant", "t")


def _key(tenant: str, scope: _Scope, kind: str) -> str:
    # the tenant is the hash tag, so all keys of one reservation share a cluster slot
    return f"{{{_esc(tenant)}}}:{scope.code}:{kind}"


def tenant_keys(tenant: str) -> tuple[tuple[str, str, str], str]:
    """The tenant's (minute, day, month) counter keys and its set of open reservations."""
    windows = tuple(_key(tenant, _TENANT, w) for w in WINDOWS)
    return (windows[0], windows[1], windows[2]), _key(tenant, _TENANT, "open")


def _interval(per_minute: float) -> float:
    # a zero limit has capacity 0; any finite interval will do
    return 60.0 / per_minute if per_minute > 0 else 60.0


def _scope_items(
    tenant: str, scope: _Scope, lim: Limits, tokens: int, nano_usd: int
) -> tuple[list[RateItem], list[WindowItem], list[SlotItem]]:
    """The plan items of one scope for a request of 1 call, `tokens` and `nano_usd`."""
    is_tenant = scope is _TENANT
    rates: list[RateItem] = []
    if lim.requests_per_minute is not None:
        rpm = lim.requests_per_minute
        rates.append(RateItem(_key(tenant, scope, "rpm"), _interval(rpm),
                              float(lim.request_burst) if rpm > 0 else 0.0, 1.0,
                              "requests_per_minute", rpm, scope.label))
    if lim.tokens_per_minute is not None:
        tpm = lim.tokens_per_minute
        rates.append(RateItem(_key(tenant, scope, "tpm"), _interval(tpm), tpm, float(tokens),
                              "tokens_per_minute", tpm, scope.label))
    windows: list[WindowItem] = []
    per_window: tuple[tuple[Window, tuple[int | None, int | None, float | None]], ...] = (
        ("minute", (None, None, None)),
        ("day", (lim.requests_per_day, lim.tokens_per_day, lim.usd_per_day)),
        ("month", (lim.requests_per_month, lim.tokens_per_month, lim.usd_per_month)),
    )
    for window, caps in per_window:
        if is_tenant or any(c is not None for c in caps):
            nano_cap = None if caps[2] is None else to_nano_usd(caps[2])
            windows.append(WindowItem(_key(tenant, scope, window), window,
                                      (1, tokens, nano_usd), (caps[0], caps[1], nano_cap),
                                      scope.label))
    slots: list[SlotItem] = []
    if is_tenant:
        slots.append(SlotItem(tenant_keys(tenant)[1], lim.max_concurrent, scope.label))
    elif lim.max_concurrent is not None:
        slots.append(SlotItem(_key(tenant, scope, "slots"), lim.max_concurrent, scope.label))
    return rates, windows, slots


def build_plan(
    rid: str, tenant: str, route: str, deployment: str | None, limits: TenantLimits,
    *, est_tokens: int, est_nano_usd: int, lease_s: float,
) -> ReservePlan:
    """Items for the tenant, then its route, then its deployment; slots[0] is the open set."""
    scopes: list[tuple[_Scope, Limits]] = [(_TENANT, limits)]
    if route in limits.routes:
        scopes.append((_Scope.route(route), limits.routes[route]))
    if deployment is not None and deployment in limits.deployments:
        scopes.append((_Scope.deployment(deployment), limits.deployments[deployment]))
    rates: list[RateItem] = []
    windows: list[WindowItem] = []
    slots: list[SlotItem] = []
    for scope, lim in scopes:
        r, w, s = _scope_items(tenant, scope, lim, est_tokens, est_nano_usd)
        rates += r
        windows += w
        slots += s
    return ReservePlan(rid, tuple(rates), tuple(windows), tuple(slots), lease_s, void_key(tenant))


def void_key(tenant: str) -> str:
    """The set of reservation ids whose reserve must be refused if it arrives late."""
    return _key(tenant, _TENANT, "void")


def settle_plan(
    res: Reservation, tokens: int, nano_usd: int, deployment: str | None, *, void_s: float = 0.0
) -> SettlePlan:
    """Undo what is held, count the actual; move deployment counters if another one answered.

    `void_s` > 0 makes it a void: a reservation not open is remembered that long.
    """
    moved = deployment is not None and deployment != res.deployment
    old = _Scope.deployment(res.deployment).label if res.deployment is not None else None
    held_tok, held_usd = res.held.tokens, res.held.nano_usd
    d_tok = tokens - held_tok
    d_usd = nano_usd - held_usd
    rates: list[RateAdjust] = []
    for r in res.plan.rates:
        if moved and r.scope == old:
            amount = float(held_tok) if r.limit == "tokens_per_minute" else r.amount
            rates.append(RateAdjust(r.key, r.interval_s, -amount))
        elif r.limit == "tokens_per_minute" and d_tok:
            rates.append(RateAdjust(r.key, r.interval_s, float(d_tok)))
    windows: list[WindowAdjust] = []
    for w in res.plan.windows:
        wid = res.window_ids[WINDOWS.index(w.window)]
        if moved and w.scope == old:
            undo = (-w.amounts[0], -held_tok, -held_usd)
            windows.append(WindowAdjust(w.key, w.window, wid, undo))
        elif d_tok or d_usd:
            windows.append(WindowAdjust(w.key, w.window, wid, (0, d_tok, d_usd)))
    if moved and deployment is not None and deployment in res.limits.deployments:
        new_rates, new_windows, _ = _scope_items(
            res.tenant, _Scope.deployment(deployment), res.limits.deployments[deployment],
            tokens, nano_usd,
        )
        # counted in whatever window is current when the store applies it
        rates += [RateAdjust(r.key, r.interval_s, r.amount) for r in new_rates if r.amount]
        windows += [WindowAdjust(w.key, w.window, None, w.amounts) for w in new_windows]
    release = tuple(s.key for s in res.plan.slots[1:])
    return SettlePlan(res.id, res.plan.slots[0].key, tuple(rates), tuple(windows), release,
                      void_key(res.tenant) if void_s > 0 else "", void_s)


def top_up_plan(res: Reservation, extra_tokens: int, extra_nano_usd: int) -> TopUpPlan:
    """Raise every token bucket and window the reservation counted in by the extra amounts."""
    rates = tuple(
        RateItem(r.key, r.interval_s, r.capacity, float(extra_tokens), r.limit, r.limit_value,
                 r.scope)
        for r in res.plan.rates if r.limit == "tokens_per_minute" and extra_tokens
    )
    windows = tuple(
        TopUpWindow(w.key, w.window, res.window_ids[WINDOWS.index(w.window)],
                    (extra_tokens, extra_nano_usd), (w.limits[1], w.limits[2]))
        for w in res.plan.windows
    )
    renew = tuple(s.key for s in res.plan.slots[1:])
    return TopUpPlan(res.id, res.plan.slots[0].key, rates, windows, renew, res.plan.lease_s)
