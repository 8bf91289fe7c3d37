"""The replay diff as text for a terminal, or as JSON for scripts."""

from __future__ import annotations

from router.replay.diff import PolicyTotals, ReplayDiff


def render_json(diff: ReplayDiff) -> str:
    """The whole diff as indented JSON (`ReplayDiff`'s fields)."""
    return diff.model_dump_json(indent=2)


def _mix(title: str, old: dict[str, int] | None, new: dict[str, int], total_old: int, total_new: int) -> list[str]:
    names = sorted(set(new) | set(old or {}), key=lambda n: (-new.get(n, 0), n))
    lines = [f"{title}:"]
    for name in names:
        after = new.get(name, 0)
        cell_new = f"{after:>7} ({after / total_new:6.1%})" if total_new else f"{after:>7}"
        if old is None:
            lines.append(f"  {name:<28} {cell_new}")
            continue
        before = old.get(name, 0)
        cell_old = f"{before:>7} ({before / total_old:6.1%})" if total_old else f"{before:>7}"
        lines.append(f"  {name:<28} {cell_old}  ->  {cell_new}   {after - before:+d}")
    return lines


def _row(label: str, old: object, new: object, delta: str = "") -> str:
    return f"  {label:<28} {old!s:>16}  ->  {new!s:>16}   {delta}".rstrip()


def _money(v: float) -> str:
    return f"${v:,.4f}"


def render_text(diff: ReplayDiff) -> str:
    """A readable summary: totals, route and deployment mix, cost per tenant, rule changes, losses."""
    new, old = diff.new, diff.old
    head = f"replayed {diff.requests} requests in {diff.seconds:.2f}s"
    lines = [head + (f": {old.label} -> {new.label}" if old else f" under {new.label}"), ""]
    if old is None:
        lines += _alone(new)
    else:
        lines += _against(old, new)
    lines.append("")
    lines += _mix("routes", old.routes if old else None, new.routes, old.requests if old else 0, new.requests)
    lines.append("")
    lines += _mix("deployments", old.deployments if old else None, new.deployments,
                  old.served if old else 0, new.served)
    tenants = sorted(set(new.cost_by_tenant) | set(old.cost_by_tenant if old else {}))
    lines += ["", "estimated cost per tenant:"]
    for t in tenants:
        after = new.cost_by_tenant.get(t, 0.0)
        if old is None:
            lines.append(f"  {t:<28} {_money(after):>16}")
        else:
            before = old.cost_by_tenant.get(t, 0.0)
            lines.append(_row(t, _money(before), _money(after), f"{after - before:+,.4f}"))
    if old is not None:
        lines += ["", f"moved {diff.moved}, lost {diff.lost}, gained {diff.gained}"]
        if diff.rule_changes:
            lines.append("how the route was chosen, for requests that changed (old -> new):")
            lines += [f"  {c.count:>7}  {c.old}  ->  {c.new}" for c in diff.rule_changes]
        if diff.lost:
            lines.append(f"the new policy loses {diff.lost} request(s) the old one served")
    return "\n".join(lines) + "\n"


def _alone(new: PolicyTotals) -> list[str]:
    return [
        f"  served {new.served}, unroutable {new.unroutable}, refused by quota {new.quota_rejected}"
        + (f" ({_limits(new.rejected_by_limit)})" if new.rejected_by_limit else ""),
        f"  predicted SLO misses {new.slo_misses}, estimated cost {_money(new.total_cost_usd)}",
    ]


def _against(old: PolicyTotals, new: PolicyTotals) -> list[str]:
    def d(a: int, b: int) -> str:
        return f"{b - a:+d}"

    misses_old = "n/a" if old.slo_misses is None else old.slo_misses
    misses_new = new.slo_misses if new.slo_misses is not None else "n/a"
    return [
        _row("", old.label, new.label),
        _row("served", old.served, new.served, d(old.served, new.served)),
        _row("unroutable", old.unroutable, new.unroutable, d(old.unroutable, new.unroutable)),
        _row("refused by quota", old.quota_rejected, new.quota_rejected, d(old.quota_rejected, new.quota_rejected)),
        *([_row("  by limit", _limits(old.rejected_by_limit) or "-", _limits(new.rejected_by_limit) or "-")]
          if old.rejected_by_limit or new.rejected_by_limit else []),
        _row("predicted SLO misses", misses_old, misses_new),
        _row("estimated cost", _money(old.total_cost_usd), _money(new.total_cost_usd),
             f"{new.total_cost_usd - old.total_cost_usd:+,.4f}"),
    ]


def _limits(by_limit: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in by_limit.items())
