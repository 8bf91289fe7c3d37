"""Each tenant's view of the deployments: its own keys, its own deployments, its overrides.

Built once when a snapshot is compiled, so that routing a request costs a dict
lookup per candidate at most (and nothing on routes no tenant changes):

- a shared deployment a tenant has a key for (`keys:` by deployment name or
  provider) becomes a copy named `NAME@TENANT` whose `api_key_env` is the
  tenant's variable: the backend sends that key, and the health tracker, keyed
  by name, keeps its own circuit, so a 401 on the tenant's key never cools the
  shared deployment for everyone else;
- a tenant's own deployment keeps its name, or becomes `NAME@TENANT` when it is
  named like the shared deployment it overrides (`@` is not allowed in YAML
  names, so these names never clash); only its owner may use it;
- `overrides: X` makes the owner's requests call its own deployment wherever
  `X` appears in a route.

Keys are read from the environment by the backend at call time; nothing here
reads a variable, so no key can reach a snapshot, a repr or a log.

>>> views = build_tenant_views(tenants, shared)  # doctest: +SKIP
>>> views.views["acme"].swap["gpt-4o"].name  # doctest: +SKIP
'gpt-4o@acme'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from router.quota.config import TenantLimits, TenantsFile
from router.schema import Deployment

#: How a deployment a tenant sees came to be: as shared, a shared one with the tenant's key,
#: its own deployment replacing a shared one, or its own deployment (and, in `explain`,
#: another tenant's, which it may not use).
KeySource = Literal["shared", "tenant key", "override", "own", "another tenant"]


@dataclass(frozen=True, slots=True)
class TenantView:
    """What one tenant calls instead of the shared deployments, and what it owns.

    `swap` maps a shared deployment's name to the deployment this tenant's
    requests call in its place; `replaces` maps each such replacement's name
    back to the shared name; `owned` holds its own deployments by the name
    the router keeps them under.
    """

    tenant: str
    swap: Mapping[str, Deployment] = field(default_factory=dict)
    replaces: Mapping[str, str] = field(default_factory=dict)
    owned: Mapping[str, Deployment] = field(default_factory=dict)

    def source(self, name: str) -> KeySource:
        """How the deployment called `name` came into this tenant's view."""
        if name in self.owned:
            return "override" if name in self.replaces else "own"
        return "tenant key" if name in self.replaces else "shared"


@dataclass(frozen=True, slots=True)
class TenantViews:
    """Every tenant's view, plus what routes need to resolve names.

    `routable` holds the own deployments a route may name (their YAML names);
    `extra` every tenant-specific deployment by router name (own ones and
    key copies); `owner` maps each of those names to its tenant; `swapped_by`
    maps a shared name to the tenants that call something else for it.
    """

    views: Mapping[str, TenantView] = field(default_factory=dict)
    routable: Mapping[str, Deployment] = field(default_factory=dict)
    extra: Mapping[str, Deployment] = field(default_factory=dict)
    owner: Mapping[str, str] = field(default_factory=dict)
    swapped_by: Mapping[str, frozenset[str]] = field(default_factory=dict)


def build_tenant_views(tenants: TenantsFile | None, shared: Mapping[str, Deployment]) -> TenantViews:
    """The views of every tenant that has keys or own deployments (validated beforehand by
    `router.quota.config.tenant_deployment_issues`). Costs one copy per (tenant, keyed
    shared deployment), made here once rather than per request."""
    if tenants is None:
        return TenantViews()
    views: dict[str, TenantView] = {}
    routable: dict[str, Deployment] = {}
    extra: dict[str, Deployment] = {}
    owner: dict[str, str] = {}
    swapped_by: dict[str, set[str]] = {}
    for tenant, t in tenants.tenants.items():
        if not t.keys and not t.own_deployments:
            continue
        swap: dict[str, Deployment] = {}
        replaces: dict[str, str] = {}
        owned: dict[str, Deployment] = {}
        for od in t.own_deployments:
            name = f"{od.name}@{tenant}" if od.name in shared else od.name
            d = od.as_deployment(name, shared.get(od.overrides) if od.overrides is not None else None)
            key_env = t.own_key_env(d)
            if key_env != d.api_key_env:
                d = d.model_copy(update={"api_key_env": key_env})
            owned[name] = d
            if name == od.name:
                routable[name] = d
            if od.overrides is not None:
                swap[od.overrides] = d
                replaces[name] = od.overrides
        if t.keys:
            for d in shared.values():
                if d.name in swap:
                    continue
                var = t.keys.get(d.name) or t.keys.get(d.provider)
                if var is None or var == d.api_key_env:
                    continue  # the same variable is the same key: the shared circuit is right
                copy = d.model_copy(update={"name": f"{d.name}@{tenant}", "api_key_env": var})
                swap[d.name] = copy
                replaces[copy.name] = d.name
                extra[copy.name] = copy
                owner[copy.name] = tenant
        for name, d in owned.items():
            extra[name] = d
            owner[name] = tenant
        for shared_name in swap:
            swapped_by.setdefault(shared_name, set()).add(tenant)
        views[tenant] = TenantView(tenant, swap, replaces, owned)
    return TenantViews(views, routable, extra, owner, {k: frozenset(v) for k, v in swapped_by.items()})


def with_replacement_limits(tenants: TenantsFile, views: TenantViews) -> TenantsFile:
    """`tenants` with each per-deployment limit also set on what replaces that deployment for
    the tenant (`deployments: {gpt-4o: ...}` still counts acme's calls to `gpt-4o@acme`)."""
    changed: dict[str, TenantLimits] = {}
    for tenant, view in views.views.items():
        t = tenants.tenants[tenant]
        added = {d.name: t.deployments[name] for name, d in view.swap.items()
                 if name in t.deployments and d.name not in t.deployments}
        if added:
            changed[tenant] = t.model_copy(update={"deployments": {**t.deployments, **added}})
    if not changed:
        return tenants
    return tenants.model_copy(update={"tenants": {**tenants.tenants, **changed}})
