"""Compile validated files into one immutable snapshot the router serves from.

Cross-file checks live here: every target, fallback, rule and default names
something that exists, fallbacks form no cycle, and every route keeps at least
one deployment after its static constraints. A snapshot is never mutated;
reload builds a new one and swaps the reference.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from router.context import RequestContext
from router.errors import ConfigError, ConfigIssue
from router.policy.tenant_views import TenantView, TenantViews, build_tenant_views, with_replacement_limits
from router.pricing import PriceBook
from router.quota.config import TenantsFile, reference_issues, tenant_deployment_issues, unpriced_issues
from router.schema import Deployment, PolicyFile, Route, Rule
from router.strategies import Strategy, build_strategy
from router.strategies_learned import LEARNED_STRATEGIES


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with its targets resolved and its strategy built."""

    name: str
    spec: Route
    strategy: Strategy
    #: Targets that passed the static constraints, in declared order.
    candidates: tuple[Deployment, ...]
    #: Targets dropped by static constraints, with the reason (for explain).
    dropped: Mapping[str, str]
    #: Fallback routes to walk after this one, flattened, in order.
    fallback_chain: tuple[str, ...]
    #: Capabilities every candidate has, and the smallest candidate context window:
    #: a request within both needs no per-candidate check (the common case, O(1)).
    common_capabilities: frozenset[str] = frozenset()
    min_context_window: int = 0
    #: Every deployment this route and its fallback routes may answer from, sorted (a cache key part).
    serves_from: tuple[str, ...] = ()
    #: Candidates owned by a tenant (`own_deployments`), by name, with their owner.
    owned: Mapping[str, str] = field(default_factory=dict)
    #: The tenants in `owned`'s values.
    owner_tenants: frozenset[str] = frozenset()
    #: Tenants that call something else for some candidate (their own key or override).
    personal: frozenset[str] = frozenset()
    #: Tenants' replacements that fail this route's static constraints, with the reason.
    swap_dropped: Mapping[str, str] = field(default_factory=dict)
    #: `router.routing`'s memo of the strategy's order as each tenant sees it (None: every tenant
    #: without a view of its own here), so a large route costs O(1) per request for them too.
    #: Fresh on every compile (and on `replace`, being init=False).
    tenant_orders: MutableMapping[str | None, Any] = field(default_factory=dict, init=False, repr=False,
                                                            compare=False)

    def view_key(self, tenant: str) -> str | None:
        """The `tenant_orders` key of `tenant`: its name when this route looks different to it."""
        return tenant if tenant in self.personal or tenant in self.owner_tenants else None

    def same_for(self, tenant: str) -> bool:
        """Whether `tenant` sees exactly `candidates`: no key, override or other tenant's
        deployment of its own here (then the per-candidate tenant check can be skipped). O(1)."""
        if tenant in self.personal:
            return False
        owners = self.owner_tenants
        return not owners or (len(owners) == 1 and tenant in owners)


@dataclass(frozen=True, slots=True)
class SourcedRule:
    rule: Rule
    file: str
    index: int

    @property
    def label(self) -> str:
        return self.rule.name or f"{self.file}#rules[{self.index}]"


@dataclass(frozen=True)
class Snapshot:
    """Everything the router needs to route, as of one successful load."""

    deployments: Mapping[str, Deployment]
    routes: Mapping[str, CompiledRoute]
    rules: tuple[SourcedRule, ...]
    default_route: str
    model_aliases: Mapping[str, str]
    embedding_route: str | None
    tenants: TenantsFile | None
    prices: PriceBook
    version: int = 0
    sources: tuple[str, ...] = field(default=())
    #: Tenants with their own keys or deployments, by tenant name (`router.policy.tenant_views`).
    tenant_views: Mapping[str, TenantView] = field(default_factory=dict)
    #: Each tenant-specific deployment in `deployments` (own ones, key copies) -> its tenant.
    owners: Mapping[str, str] = field(default_factory=dict)

    def match_rule(self, ctx: RequestContext) -> SourcedRule | None:
        """The first rule whose conditions all hold for `ctx`."""
        for sourced in self.rules:
            if rule_matches(sourced.rule, ctx):
                return sourced
        return None


def rule_matches(rule: Rule, ctx: RequestContext) -> bool:
    w = rule.when
    if w.operation is not None and ctx.operation != w.operation:
        return False
    if w.tenant is not None and ctx.tenant not in w.tenant:
        return False
    if w.tags is not None and not ctx.tags.issuperset(w.tags):
        return False
    if w.metadata is not None and any(ctx.metadata.get(k) != v for k, v in w.metadata.items()):
        return False
    if w.model is not None and ctx.model_alias not in w.model:
        return False
    if w.min_prompt_tokens is not None and ctx.prompt_tokens < w.min_prompt_tokens:
        return False
    return w.max_prompt_tokens is None or ctx.prompt_tokens <= w.max_prompt_tokens


def static_drop_reason(route: Route, d: Deployment, prices: PriceBook) -> str | None:
    """Why a deployment can never serve this route, or None."""
    c = route.constraints
    if c.min_quality is not None and d.quality < c.min_quality:
        return f"quality {d.quality:g} < min_quality {c.min_quality:g}"
    if c.max_price_per_mtok is not None:
        price = sum(prices.per_mtok(d))
        if price > c.max_price_per_mtok:
            return f"price {price:g}/Mtok > max_price_per_mtok {c.max_price_per_mtok:g}"
    missing = c.capabilities - d.capabilities
    if missing:
        return f"lacks capabilities {sorted(missing)}"
    return None


def compile_snapshot(
    deployments: Sequence[Deployment],
    deployments_file: str,
    policies: Sequence[tuple[str, PolicyFile]],
    *,
    tenants: TenantsFile | None = None,
    tenants_file: str = "tenants.yaml",
    default_route: str | None = None,
    prices: PriceBook | None = None,
    version: int = 0,
) -> Snapshot:
    """Resolve references across files; raise one ConfigError listing every problem.

    Tenants' own deployments may be named by routes; tenants' keys and
    overrides are compiled into per-tenant views (`Snapshot.tenant_views`).
    """
    prices = prices or PriceBook()
    by_name = {d.name: d for d in deployments}
    issues: list[ConfigIssue] = []
    views = TenantViews()
    if tenants is not None:
        issues.extend(tenant_deployment_issues(tenants, file=tenants_file, shared=by_name))
        views = build_tenant_views(tenants, by_name)
    targets = {**by_name, **views.routable}
    specs: dict[str, tuple[str, Route]] = {}
    rules: list[SourcedRule] = []
    aliases: dict[str, str] = {}
    embedding_route: str | None = None
    embedding_file = ""
    for path, policy in policies:
        for name, route in policy.routes.items():
            if name in specs:
                issues.append(ConfigIssue(path, f"routes.{name}", f"route also defined in {specs[name][0]}"))
            specs[name] = (path, route)
        rules.extend(SourcedRule(r, path, i) for i, r in enumerate(policy.rules))
        aliases.update(policy.model_aliases)
        if policy.default_route is not None:
            default_route = default_route or policy.default_route
        if policy.embedding_route is not None and embedding_route is None:
            embedding_route, embedding_file = policy.embedding_route, path
    for name, (path, route) in specs.items():
        for i, target in enumerate(route.targets):
            if target not in targets:
                issues.append(ConfigIssue(path, f"routes.{name}.targets[{i}]",
                                          f"unknown deployment {target!r} (not in {deployments_file})"))
        for i, fb in enumerate(route.fallbacks):
            if fb not in specs:
                issues.append(ConfigIssue(path, f"routes.{name}.fallbacks[{i}]", f"unknown route {fb!r}"))
    for r in rules:
        if r.rule.route not in specs:
            issues.append(ConfigIssue(r.file, f"rules[{r.index}].route", f"unknown route {r.rule.route!r}"))
    for alias, route_name in aliases.items():
        if route_name not in specs:
            issues.append(ConfigIssue(policies[0][0] if policies else "", f"model_aliases.{alias}",
                                      f"unknown route {route_name!r}"))
    if not specs:
        issues.append(ConfigIssue(policies[0][0] if policies else "policies/", "routes", "no routes defined"))
    elif default_route is None:
        default_route = "default" if "default" in specs else next(iter(specs))
    elif default_route not in specs:
        issues.append(ConfigIssue(policies[0][0] if policies else "", "default_route",
                                  f"unknown route {default_route!r}"))
    if embedding_route is not None and embedding_route not in specs:
        issues.append(ConfigIssue(embedding_file, "embedding_route", f"unknown route {embedding_route!r}"))
    elif embedding_route is None and "embeddings" in specs:
        embedding_route = "embeddings"
    issues.extend(_cycle_issues(specs))
    if tenants is not None:
        issues.extend(reference_issues(tenants, file=tenants_file, routes=specs, deployments=by_name))
    if issues:
        raise ConfigError(issues)

    routes: dict[str, CompiledRoute] = {}
    for name, (path, route) in specs.items():
        kept, dropped = [], {}
        for target in route.targets:
            reason = static_drop_reason(route, targets[target], prices)
            if reason is None:
                kept.append(targets[target])
            else:
                dropped[target] = reason
        if not kept:
            issues.append(ConfigIssue(path, f"routes.{name}.constraints",
                                      f"no target satisfies the constraints ({'; '.join(dropped.values())})"))
            continue
        routes[name] = CompiledRoute(
            name=name,
            spec=route,
            strategy=_strategy(name, route, kept, prices),
            candidates=tuple(kept),
            dropped=dropped,
            fallback_chain=_flatten_fallbacks(name, specs),
            common_capabilities=frozenset.intersection(*(frozenset(d.capabilities) for d in kept)),
            min_context_window=min(d.context_window for d in kept),
        )
        if views.views:
            routes[name] = _with_tenant_fields(routes[name], views, prices)
    if issues:
        raise ConfigError(issues)
    reachable: dict[str, set[str]] = {}
    for name, compiled in list(routes.items()):
        reachable[name] = {d.name for r in (name, *compiled.fallback_chain) for d in routes[r].candidates}
        routes[name] = replace(compiled, serves_from=tuple(sorted(reachable[name])))
    if tenants is not None:
        # A dollar budget cannot stop a deployment nobody prices: say so at validate time.
        unpriced = {d.name for d in deployments if not prices.known(d)}
        issues.extend(unpriced_issues(tenants, file=tenants_file, reachable=reachable, unpriced=unpriced))
        issues.extend(_unpriced_own_issues(tenants, tenants_file, views, prices))
        if issues:
            raise ConfigError(issues)
        tenants = with_replacement_limits(tenants, views)
    assert default_route is not None
    return Snapshot(
        deployments={**by_name, **views.extra},
        routes=routes,
        rules=tuple(rules),
        default_route=default_route,
        model_aliases=aliases,
        embedding_route=embedding_route,
        tenants=tenants,
        prices=prices,
        version=version,
        sources=(deployments_file, *(p for p, _ in policies)),
        tenant_views=views.views,
        owners=views.owner,
    )


def _with_tenant_fields(compiled: CompiledRoute, views: TenantViews, prices: PriceBook) -> CompiledRoute:
    """`compiled` with which candidates tenants own, which tenants call something else for a
    candidate, and which of those replacements the route's constraints drop."""
    kept = compiled.candidates
    owned = {d.name: views.owner[d.name] for d in kept if d.name in views.owner}
    personal: set[str] = set()
    swap_dropped: dict[str, str] = {}
    for d in kept:
        for tenant in views.swapped_by.get(d.name, ()):
            personal.add(tenant)
            replacement = views.views[tenant].swap[d.name]
            reason = static_drop_reason(compiled.spec, replacement, prices)
            if reason is not None:
                swap_dropped[replacement.name] = reason
    return replace(compiled, owned=owned, owner_tenants=frozenset(owned.values()), personal=frozenset(personal),
                   swap_dropped=swap_dropped)


def _unpriced_own_issues(tenants: TenantsFile, file: str, views: TenantViews, prices: PriceBook) -> list[ConfigIssue]:
    """A tenant with a dollar limit must not call an own deployment nobody prices (it would count $0)."""
    issues: list[ConfigIssue] = []
    for tenant in views.views:
        t = tenants.tenants[tenant]
        scopes = [t, *t.routes.values(), *t.deployments.values()]
        if not any(s.usd_per_day is not None or s.usd_per_month is not None for s in scopes):
            continue
        built = {name.split("@")[0]: d for name, d in views.views[tenant].owned.items()}  # with what overrides inherit
        for i, od in enumerate(t.own_deployments):
            if not prices.known(built.get(od.name, od)):
                issues.append(ConfigIssue(
                    file, f"tenants.{tenant}.own_deployments[{i}].price",
                    f"no known price for {od.name!r}: its calls would count as $0 against this tenant's "
                    "dollar limits; give it a price (price: {input_per_mtok: 0} if it is free)"))
    return issues


def _strategy(name: str, route: Route, kept: Sequence[Deployment], prices: PriceBook) -> Strategy:
    """The route's strategy; those that learn from feedback (best_quality, thompson) come from
    `router.strategies_learned` (an `slo` still wins, as for every strategy)."""
    learned = LEARNED_STRATEGIES.get(route.strategy)
    if learned is not None and route.slo is None:
        return learned(route, kept, prices.per_mtok, route_name=name)
    return build_strategy(route, kept, prices.per_mtok)


def _cycle_issues(specs: Mapping[str, tuple[str, Route]]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    reported: set[frozenset[str]] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name):], name]
            key = frozenset(cycle)
            if key not in reported:
                reported.add(key)
                file = specs[path[-1]][0]
                issues.append(ConfigIssue(file, f"routes.{path[-1]}.fallbacks",
                                          f"fallback cycle: {' -> '.join(cycle)}"))
            return
        for fb in specs[name][1].fallbacks:
            if fb in specs:
                visit(fb, [*path, name])

    for name in specs:
        visit(name, [])
    return issues


def _flatten_fallbacks(name: str, specs: Mapping[str, tuple[str, Route]]) -> tuple[str, ...]:
    """Depth-first, de-duplicated list of fallback routes (cycles were rejected)."""
    out: list[str] = []

    def walk(route: str) -> None:
        for fb in specs[route][1].fallbacks:
            if fb != name and fb not in out:
                out.append(fb)
                walk(fb)

    walk(name)
    return tuple(out)
