"""The demo's tally and closing report: per deployment, per tenant, circuit changes.

Kept apart from `router.demo` (which drives the traffic) so the demo reads
top-down and the renderer (`router.cli_render`) knows nothing of the demo.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from router.cli_render import Output, Table, columns, fmt_ms, fmt_usd
from router.models import Attempt


@dataclass(slots=True)
class _PerDeployment:
    calls: int = 0
    ok: int = 0
    skipped: int = 0
    fallbacks: int = 0
    cost: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _PerTenant:
    requests: int = 0
    ok: int = 0
    failed: int = 0
    tokens: int = 0
    spend: float = 0.0
    rejected: Counter[str] = field(default_factory=Counter)


class DemoStats:
    """Counts per deployment, tenant and route, and the circuit changes, as they happen."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.t0 = clock()
        self.planned = 0
        self.deployments: dict[str, _PerDeployment] = {}
        self.tenants: dict[str, _PerTenant] = {}
        self.routes: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.circuits: list[tuple[float, str, str, str, str]] = []
        self.sim_faults: dict[str, int] = {}
        self.final_health: dict[str, str] = {}
        self.ended_s = 0.0

    def start(self, planned: int) -> None:
        self.t0, self.planned = self.clock(), planned

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def _tenant(self, name: str) -> _PerTenant:
        t = self.tenants.setdefault(name, _PerTenant())
        t.requests += 1
        return t

    def _attempts(self, attempts: Sequence[Attempt]) -> None:
        for a in attempts:
            d = self.deployments.setdefault(a.deployment, _PerDeployment())
            if a.outcome == "skipped":
                d.skipped += 1
                continue
            d.calls += 1
            if a.outcome == "ok":
                d.ok += 1
                d.latencies_ms.append(a.latency_ms)
            else:
                d.errors[a.error_type or "error"] += 1

    def served(self, tenant: str, route: str, deployment: str, attempts: Sequence[Attempt],
               tokens: int, cost: float, stream_latency_ms: float | None) -> None:
        t = self._tenant(tenant)
        t.ok, t.tokens, t.spend = t.ok + 1, t.tokens + tokens, t.spend + cost
        self.routes[route] += 1
        self._attempts(attempts)
        d = self.deployments.setdefault(deployment, _PerDeployment())
        d.cost += cost
        if attempts and attempts[0].deployment != deployment:
            d.fallbacks += 1
        if stream_latency_ms is not None and d.latencies_ms:
            d.latencies_ms[-1] = stream_latency_ms  # a stream's whole time, not its first token

    def rejected(self, tenant: str, limit: str) -> None:
        self._tenant(tenant).rejected[limit] += 1

    def failed(self, tenant: str, kind: str, attempts: Sequence[Attempt]) -> None:
        self._tenant(tenant).failed += 1
        self.failures[kind] += 1
        self._attempts(attempts)

    def cancelled(self, tenant: str) -> None:
        self.failed(tenant, "cancelled at the end", ())

    def circuit_changed(self, name: str, old: str, new: str, reason: str) -> None:
        self.circuits.append((self.elapsed(), name, old, new, reason))

    def totals(self) -> tuple[int, int, int, int, int, float]:
        """(done, ok, failed, rejected, served by a fallback, spend)."""
        ts = self.tenants.values()
        ok, failed = sum(t.ok for t in ts), sum(t.failed for t in ts)
        rejected = sum(sum(t.rejected.values()) for t in ts)
        fallbacks = sum(d.fallbacks for d in self.deployments.values())
        return ok + failed + rejected, ok, failed, rejected, fallbacks, sum(t.spend for t in ts)

    def progress_line(self, duration_s: float, opened: Sequence[str]) -> str:
        done, ok, failed, rejected, fallbacks, spend = self.totals()
        return (f"{min(self.elapsed(), duration_s):5.1f}/{duration_s:g}s  done {done}/{self.planned}"
                f"  ok {ok}  errors {failed}  quota {rejected}  fallbacks {fallbacks}"
                f"  open circuits: {', '.join(opened) or 'none'}  spend {fmt_usd(spend)}")


def print_demo_summary(stats: DemoStats, out: Output) -> None:
    """The demo's closing report: totals, then deployments, tenants and circuit changes."""
    done, ok, failed, rejected, fallbacks, spend = stats.totals()
    out.line("")
    out.line(f"{done} requests in {stats.elapsed():.1f}s: {ok} ok, {failed} failed, {rejected} "
             f"rejected by quota; {fallbacks} served by a fallback; spend {fmt_usd(spend)}", style="bold")
    out.line("routes: " + ", ".join(f"{r} {n}" for r, n in stats.routes.most_common()))
    if stats.failures:
        out.line("failures: " + ", ".join(f"{k} {n}" for k, n in stats.failures.most_common()))
    out.line("")
    deps = [(name, stats.deployments[name], sorted(stats.deployments[name].latencies_ms))
            for name in sorted(stats.deployments)]
    out.table(Table(
        "Deployments",
        columns("deployment calls> ok> errors> skipped> fallback> p50_ms> p95_ms> cost> circuit "
                 "sim_faults> error_kinds"),
        [[name, str(d.calls), str(d.ok), str(sum(d.errors.values())), str(d.skipped), str(d.fallbacks),
          fmt_ms(_pct(lat, 0.5)), fmt_ms(_pct(lat, 0.95)), fmt_usd(d.cost),
          stats.final_health.get(name, "-"), str(stats.sim_faults.get(name, 0)), _top(d.errors, 3)]
         for name, d, lat in deps],
        ["red" if stats.final_health.get(name, "closed") != "closed" else None for name, _, _ in deps],
        caption="calls: attempts sent; skipped: passed over while its circuit was open or it was "
                "cooling after a 429; fallback: requests it served after another one failed or was skipped"))
    out.table(Table(
        "Tenants", columns("tenant requests> ok> failed> rejected> tokens> spend> rejected_by"),
        [[name, str(t.requests), str(t.ok), str(t.failed), str(sum(t.rejected.values())),
          f"{t.tokens:,}", fmt_usd(t.spend), _top(t.rejected, 4)]
         for name, t in sorted(stats.tenants.items())]))
    out.table(Table(
        "Circuit state changes", columns("at> deployment change reason"),
        [[f"{at:.1f}s", name, f"{old} {out.arrow} {new}", reason]
         for at, name, old, new, reason in stats.circuits] or [["-", "none", "", ""]]))


def _top(counts: Counter[str], n: int) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.most_common(n))


def _pct(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values; None when empty."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(q * len(values) + 0.5) - 1))]
