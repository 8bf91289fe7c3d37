"""Tenant limits simulated in memory on the log's own clock, roughly as the quota store counts them.

Counted: `requests_per_minute` (with `burst`) and `tokens_per_minute` as GCRA
buckets; requests, tokens and USD per UTC day and month; for the tenant, the
tenant on a route, and the tenant on a deployment; `allowed_routes` and
unknown tenants. Not counted: `max_concurrent` (a log has no overlap
figures). A request is counted with its actual tokens and its cost at the
replayed policy's prices, so a price raise shows up as budget rejections.

>>> sim = BudgetSim(tenants)  # doctest: +SKIP
>>> sim.admit("acme", "default", "gpt", time=1.7e9, tokens=900, cost_usd=0.01)  # doctest: +SKIP
>>> # None (admitted), or the name of the limit that refused it
"""

from __future__ import annotations

import datetime
from collections import defaultdict

from router.errors import TenantNotAllowed
from router.quota.config import Limits, TenantsFile
from router.quota.manager import QuotaManager

# (limit field, index into the (requests, tokens, usd) amounts)
_DAY = (("requests_per_day", 0), ("tokens_per_day", 1), ("usd_per_day", 2))
_MONTH = (("requests_per_month", 0), ("tokens_per_month", 1), ("usd_per_month", 2))


class BudgetSim:
    """Admits or refuses replayed requests against `tenants` (None: nothing is limited)."""

    def __init__(self, tenants: TenantsFile | None) -> None:
        self.tenants = tenants
        self._tat: dict[tuple[str, str, str], float] = defaultdict(float)  # GCRA theoretical arrival times
        self._windows: dict[tuple[str, str, str], list[float]] = {}  # (tenant, scope, window id) -> counts
        self._window_ids: dict[int, tuple[str, str]] = {}  # UTC day number -> (day, month) ids

    def admit(self, tenant: str, route: str, deployment: str, *, time: float, tokens: int,
              cost_usd: float) -> str | None:
        """Count the request and return None, or return the refusing limit's name (counting nothing)."""
        try:
            limits = QuotaManager.resolve(self.tenants, tenant=tenant, route=route)
        except TenantNotAllowed as exc:
            return "unknown_tenant" if exc.reason == "unknown tenant" else "route_not_allowed"
        scopes: list[tuple[str, Limits]] = [("t", limits)]
        if route in limits.routes:
            scopes.append((f"r={route}", limits.routes[route]))
        if deployment in limits.deployments:
            scopes.append((f"d={deployment}", limits.deployments[deployment]))
        day, month = self._windows_at(time)
        amounts = (1.0, float(tokens), cost_usd)
        rates: list[tuple[tuple[str, str, str], float]] = []
        windows: list[tuple[str, str, str]] = []
        for scope, lim in scopes:
            for limit, per_minute, amount, capacity_s in (
                ("requests_per_minute", lim.requests_per_minute, 1.0, lim.request_burst),
                ("tokens_per_minute", lim.tokens_per_minute, float(tokens), 60.0),
            ):
                if per_minute is None:
                    continue
                if per_minute <= 0:
                    return limit
                interval = 60.0 / per_minute
                # requests: `burst` of them at once; tokens: the bucket holds a minute's worth
                horizon = capacity_s * interval if limit == "requests_per_minute" else capacity_s
                key = (tenant, scope, limit)
                new_tat = max(self._tat[key], time) + amount * interval
                if new_tat - time > horizon + 1e-9:
                    return limit
                rates.append((key, new_tat))
            for window_id, caps in ((day, _DAY), (month, _MONTH)):
                key = (tenant, scope, window_id)
                counts = self._windows.get(key, [0.0, 0.0, 0.0])
                for limit, i in caps:
                    cap = getattr(lim, limit)
                    if cap is not None and counts[i] + amounts[i] > cap + 1e-12:
                        return limit
                windows.append(key)
        for key, tat in rates:  # all limits passed: count the request everywhere
            self._tat[key] = tat
        for key in windows:
            counts = self._windows.setdefault(key, [0.0, 0.0, 0.0])
            for i in range(3):
                counts[i] += amounts[i]
        return None

    def _windows_at(self, time: float) -> tuple[str, str]:
        """The UTC day and month a Unix time falls in (cached per day: formatting dates is the slow part)."""
        day_number = int(time // 86_400)
        ids = self._window_ids.get(day_number)
        if ids is None:
            moment = datetime.datetime.fromtimestamp(day_number * 86_400, tz=datetime.UTC)
            ids = (moment.strftime("%Y-%m-%d"), moment.strftime("%Y-%m"))
            self._window_ids[day_number] = ids
        return ids
