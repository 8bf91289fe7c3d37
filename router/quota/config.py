"""The schema of `config/tenants.yaml`: who may call, how much, how fast.

Every limit is optional (omitted = unlimited), finite and non-negative; a limit
of 0 forbids what it counts. Limits apply per tenant, and again per tenant and
route (`routes:`) and per tenant and deployment (`deployments:`); a request
must fit all that apply.

How each limit is counted (see `router.quota.manager` for the details):

- `requests_per_minute` and `tokens_per_minute` are GCRA buckets (a token
  bucket kept as one timestamp), never fixed windows: `burst` requests may go at
  once (default: ten seconds' worth), then the bucket refills at the steady
  rate; the token bucket holds a whole minute of tokens, so that a request as
  large as the limit can still pass.
- `*_per_day` and `*_per_month` are calendar windows in UTC: they reset at
  midnight UTC and on the first of the month.
- `max_concurrent` counts reservations not yet settled or refunded.

Dollar limits need prices: a deployment a tenant with a `usd_per_*` limit can
reach (through an allowed route, its targets or its fallbacks) must have a
known price, from LiteLLM's cost map or its own `price:` in the deployments
file (`price: {input_per_mtok: 0}` says it is free). Otherwise its calls would
count as $0 and the budget would not hold; `unpriced_issues` reports it.

Example::

    unknown_tenants: default
    tenants:
      default: {requests_per_minute: 60, usd_per_day: 5}
      acme:
        requests_per_minute: 600
        burst: 20
        usd_per_day: 100
        allowed_routes: [default, premium]
        routes: {premium: {usd_per_day: 20}}
        deployments: {gpt-4o: {requests_per_minute: 100}}
    failure_mode: {rates: open, money: closed}

An answer served from the response cache counts against request limits but
not token or dollar limits (no provider was paid), unless the tenant says
`budgets_count_cache_hits: true`: then it also counts the tokens of the answer
it replays, priced at the deployment that made it (the response still says
`cost_usd: 0`, what the call cost). An embedding batch counts the tokens of
the texts it found in the cache too (as the tokenizer counts each text: no
usage is stored per text), priced at the deployment that embedded the rest
(or the route's first, when every text was found).

A tenant may also bring its own provider keys and deployments (both only
for requests whose tenant is exactly that name; an unknown tenant given the
`default` tenant's limits does not get its keys):

- `keys: {deployment-or-provider: ENV_VAR}`: this tenant's calls to that
  shared deployment (or to every shared deployment of that LiteLLM provider,
  e.g. `openai`; a deployment name wins over a provider) send the key held in
  the environment variable `ENV_VAR`. The YAML names the variable, never the
  key. Those calls get their own circuit (`NAME@TENANT`), so a key that fails
  (401) never cools the shared deployment for other tenants. An unset variable
  fails the tenant's call (it never falls back to the shared key).
- `own_deployments:` deployments declared as in the deployments file (the same
  fields) that only this tenant sees; routes may name them. One whose name is
  a shared deployment's must say `overrides: <that name>`; `overrides: X`
  replaces shared deployment `X` with this one for this tenant's requests. An
  own deployment without `api_key_env` uses the tenant's provider key; one
  with neither is refused (LiteLLM would send it the process's own provider
  key: a keyless endpoint names a variable holding any placeholder). An
  override takes what it does not set of `INHERITED_FIELDS` (quality, context
  window, max output tokens, capabilities, price, timeouts, latency prior)
  from the deployment it overrides, never its endpoint or key variable; it
  takes that deployment's place in a route's order (the route's strategy
  ranks the shared deployment's figures, health aside: the override has its
  own circuit), where that deployment passed the route's constraints and the
  override passes them too.

Example::

    tenants:
      acme:
        keys: {openai: ACME_OPENAI_KEY, claude-haiku: ACME_ANTHROPIC_KEY}
        own_deployments:
          - name: acme-gpt-4o
            model: azure/gpt-4o
            api_base: https://acme.openai.azure.com
            api_key_env: ACME_AZURE_KEY
            api_version: "2024-10-21"
            overrides: gpt-4o

>>> TenantsFile.model_validate({"tenants": {"default": {"usd_per_day": 5}}}).unknown_tenants
'default'
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Annotated, Literal

from pydantic import Field, model_validator

from router.errors import ConfigIssue
from router.schema import Deployment, NonNegFloat, Spec

NonNegInt = Annotated[int, Field(ge=0)]
#: The name of an environment variable (never its value), as `Deployment.api_key_env` takes it.
EnvVarName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
#: A shared deployment's name or a LiteLLM provider prefix ("openai").
KeyTarget = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.:/-]+$")]
FailureMode = Literal["open", "closed"]

#: Limit fields counted in US dollars: the "money" class of `failure_mode`.
MONEY_LIMITS = frozenset({"usd_per_day", "usd_per_month"})


class Limits(Spec):
    """The limit fields, shared by a tenant, a tenant's route and a tenant's deployment."""

    requests_per_minute: NonNegFloat | None = None
    #: Requests the minute bucket lets through at once; needs `requests_per_minute`.
    burst: int | None = Field(default=None, ge=1)
    tokens_per_minute: NonNegFloat | None = None
    requests_per_day: NonNegInt | None = None
    tokens_per_day: NonNegInt | None = None
    usd_per_day: NonNegFloat | None = None
    requests_per_month: NonNegInt | None = None
    tokens_per_month: NonNegInt | None = None
    usd_per_month: NonNegFloat | None = None
    max_concurrent: NonNegInt | None = None

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> Limits:
        if self.burst is not None and self.requests_per_minute is None:
            raise ValueError("'burst' needs 'requests_per_minute'")
        return self

    @property
    def request_burst(self) -> int:
        """Requests allowed at once: `burst`, else ten seconds' worth (at least 1).

        Ten seconds keeps any 60-second span under 1.17x the limit while letting
        a tenant start a few calls together.
        """
        if self.burst is not None:
            return self.burst
        rpm = self.requests_per_minute or 0.0
        return max(1, math.ceil(rpm / 6))

    def is_empty(self) -> bool:
        """True when no limit is set (so nothing needs counting for this scope)."""
        return all(getattr(self, name) is None for name in _LIMIT_FIELDS)


_LIMIT_FIELDS = tuple(name for name in Limits.model_fields if name != "burst")


class TenantDeployment(Deployment):
    """A deployment only its tenant sees: the fields of a shared `Deployment`, plus `overrides`,
    the shared deployment it replaces for this tenant's requests."""

    overrides: str | None = Field(default=None, min_length=1)

    def as_deployment(self, name: str, overridden: Deployment | None = None) -> Deployment:
        """This deployment as the router calls it, under `name` (its health and quota key).

        With `overridden` (the shared deployment `overrides` names), each of
        `INHERITED_FIELDS` this one does not set is that deployment's: the same
        model elsewhere has the same quality, context window and price unless
        ops say otherwise. Its endpoint, key variable and probe are never
        inherited (a shared key must not go to a tenant's endpoint).
        Built without validation (the fields were validated here; `name` may carry
        an `@tenant` suffix the YAML pattern refuses, so it can never clash).
        """
        values = {f: getattr(self, f) for f in Deployment.model_fields}
        values["name"] = name
        fields_set = self.model_fields_set - {"overrides"}
        if overridden is not None:
            taken = {f for f in INHERITED_FIELDS if f not in fields_set and f in overridden.model_fields_set}
            values.update({f: getattr(overridden, f) for f in taken})
            fields_set = fields_set | taken
        return Deployment.model_construct(_fields_set=fields_set, **values)


#: What an own deployment with `overrides:` takes from the shared deployment when it does not set it:
#: what describes the model, never where it is or whose key it uses (api_base, api_base_env,
#: api_key_env, api_version) or how it is probed.
INHERITED_FIELDS = frozenset({"quality", "context_window", "max_output_tokens", "capabilities", "price",
                              "timeout_s", "stream_ttft_timeout_s", "stream_idle_timeout_s",
                              "latency_prior_ms"})


class TenantLimits(Limits):
    """One tenant: its own limits, the routes it may use, per-route and per-deployment limits,
    and its own provider keys and deployments (see the module docstring)."""

    #: The route the caller should use when a request names none (a hint to the router).
    default_route: str | None = None
    #: Routes this tenant may use; omitted = all.
    allowed_routes: frozenset[str] | None = None
    routes: dict[str, Limits] = Field(default_factory=dict)
    deployments: dict[str, Limits] = Field(default_factory=dict)
    #: Shared deployment name or provider -> the environment variable holding this tenant's key.
    keys: dict[KeyTarget, EnvVarName] = Field(default_factory=dict)
    own_deployments: tuple[TenantDeployment, ...] = ()
    #: False (default): an answer served from the response cache counts 1 request and no tokens or
    #: USD. True: it also counts the tokens of the answer it replays and their list price at the
    #: deployment that made it, toward token and dollar limits (for a tenant resold by the token).
    budgets_count_cache_hits: bool = False

    @model_validator(mode="after")
    def _own_unique(self) -> TenantLimits:
        names: set[str] = set()
        replaced: dict[str, str] = {}
        for d in self.own_deployments:
            if d.name in names:
                raise ValueError(f"own deployment name {d.name!r} is used twice")
            names.add(d.name)
            if d.overrides is not None:
                if d.overrides in replaced:
                    raise ValueError(f"own deployments {replaced[d.overrides]!r} and {d.name!r} "
                                     f"both override {d.overrides!r}")
                replaced[d.overrides] = d.name
        return self

    @model_validator(mode="after")
    def _routes_allowed(self) -> TenantLimits:
        if self.allowed_routes is None:
            return self
        if self.default_route is not None and self.default_route not in self.allowed_routes:
            raise ValueError(f"default_route {self.default_route!r} is not in allowed_routes")
        stray = sorted(set(self.routes) - self.allowed_routes)
        if stray:
            raise ValueError(f"limits given for routes not in allowed_routes: {stray}")
        return self

    def own_key_env(self, d: Deployment) -> str | None:
        """The variable the key of own deployment `d` comes from: its `api_key_env`, else this
        tenant's key for its provider; None when it has neither (`tenant_deployment_issues` refuses it)."""
        return d.api_key_env or self.keys.get(d.provider)

    def allows(self, route: str) -> bool:
        """Whether this tenant may use `route`."""
        return self.allowed_routes is None or route in self.allowed_routes


class FailurePolicy(Spec):
    """What to do when the quota store cannot be reached.

    `rates` covers every limit but the USD ones; `money` covers `usd_per_*`.
    "open" serves the request uncounted (logged and counted in
    `QuotaManager.store_errors`); "closed" raises `QuotaStoreUnavailable`.
    """

    rates: FailureMode = "open"
    money: FailureMode = "closed"


class TenantsFile(Spec):
    """The whole `tenants.yaml`."""

    #: "default": an unknown tenant gets the `default` tenant's limits, counted
    #: under its own name; "reject": an unknown tenant raises TenantNotAllowed.
    unknown_tenants: Literal["default", "reject"] = "default"
    tenants: dict[str, TenantLimits] = Field(default_factory=dict)
    failure_mode: FailurePolicy = FailurePolicy()

    @model_validator(mode="after")
    def _default_exists(self) -> TenantsFile:
        if self.unknown_tenants == "default" and "default" not in self.tenants:
            raise ValueError(
                "unknown_tenants is 'default' but no tenant named 'default' is defined"
            )
        return self


def reference_issues(
    tenants: TenantsFile,
    *,
    file: str,
    routes: Collection[str],
    deployments: Collection[str],
) -> list[ConfigIssue]:
    """Names in `tenants` that point at routes or deployments that do not exist.

    The schema cannot see the other files; the loader calls this once all are read.

    >>> t = TenantsFile.model_validate({"unknown_tenants": "reject",
    ...     "tenants": {"a": {"allowed_routes": ["nope"]}}})
    >>> [i.field for i in reference_issues(t, file="t.yaml", routes={"default"}, deployments=())]
    ['tenants.a.allowed_routes']
    """
    issues: list[ConfigIssue] = []
    for name, t in tenants.tenants.items():
        where = f"tenants.{name}"
        if t.default_route is not None and t.default_route not in routes:
            issues.append(
                ConfigIssue(file, f"{where}.default_route", f"unknown route {t.default_route!r}")
            )
        for route in sorted(t.allowed_routes or ()):
            if route not in routes:
                issues.append(
                    ConfigIssue(file, f"{where}.allowed_routes", f"unknown route {route!r}")
                )
        for route in t.routes:
            if route not in routes:
                issues.append(
                    ConfigIssue(file, f"{where}.routes.{route}", f"unknown route {route!r}")
                )
        own = {d.name for d in t.own_deployments}
        for dep in t.deployments:
            if dep not in deployments and dep not in own:
                issues.append(
                    ConfigIssue(file, f"{where}.deployments.{dep}", f"unknown deployment {dep!r}")
                )
    return issues


def tenant_deployment_issues(
    tenants: TenantsFile, *, file: str, shared: Mapping[str, Deployment]
) -> list[ConfigIssue]:
    """Tenants' `keys` and `own_deployments` checked against the shared deployments.

    An own deployment named like a shared one must say `overrides:` that name;
    `overrides` names a shared deployment; an own deployment not named like a
    shared one has a name no other tenant's own deployment uses (routes name it);
    each `keys` entry names a shared deployment (not one this tenant overrides)
    or a provider some deployment it sees uses; every own deployment has a key
    source (`api_key_env`, or the tenant's key for its provider), so that a
    tenant's endpoint never receives the key LiteLLM would find in the process
    environment. Messages name env variables,
    never their values (which are never read here).

    >>> t = TenantsFile.model_validate({"tenants": {"default": {"keys": {"nope": "K"}}}})
    >>> [i.message for i in tenant_deployment_issues(t, file="t.yaml", shared={})]
    ["unknown deployment or provider 'nope'"]
    """
    issues: list[ConfigIssue] = []
    owner_of: dict[str, str] = {}
    for name, t in tenants.tenants.items():
        where = f"tenants.{name}"
        overridden = {d.overrides: d.name for d in t.own_deployments if d.overrides is not None}
        for i, d in enumerate(t.own_deployments):
            at = f"{where}.own_deployments[{i}]"
            if d.name in shared and d.overrides != d.name:
                issues.append(ConfigIssue(file, f"{at}.name", f"shadows the shared deployment {d.name!r}; "
                                          f"say 'overrides: {d.name}' to replace it for this tenant"))
            if d.overrides is not None and d.overrides not in shared:
                issues.append(ConfigIssue(file, f"{at}.overrides", f"unknown shared deployment {d.overrides!r}"))
            if t.own_key_env(d) is None:
                issues.append(ConfigIssue(file, f"{at}.api_key_env", (
                    f"no key for {d.name!r}: set api_key_env, or keys: {{{d.provider}: VAR}} for the tenant "
                    f"(without one, LiteLLM would send this endpoint the process's own {d.provider} key)")))
            if d.name not in shared:
                other = owner_of.setdefault(d.name, name)
                if other != name:
                    issues.append(ConfigIssue(file, f"{at}.name", f"{d.name!r} is also an own deployment of "
                                              f"tenant {other!r}; routes name it, so it must be unique"))
        own = {d.name: d for d in t.own_deployments}
        providers = {d.provider for d in shared.values()} | {d.provider for d in t.own_deployments}
        for target in t.keys:
            field = f"{where}.keys.{target}"
            if target in overridden:
                issues.append(ConfigIssue(file, field, f"{target!r} is overridden by own deployment "
                                          f"{overridden[target]!r}: set api_key_env there"))
            elif target in own:
                issues.append(ConfigIssue(file, field, f"{target!r} is an own deployment: set api_key_env there"))
            elif target not in shared and target not in providers:
                issues.append(ConfigIssue(file, field, f"unknown deployment or provider {target!r}"))
    return issues


def unpriced_issues(
    tenants: TenantsFile,
    *,
    file: str,
    reachable: Mapping[str, Collection[str]],
    unpriced: Collection[str],
) -> list[ConfigIssue]:
    """Dollar limits that deployments without a known price could pass uncounted.

    `reachable` maps each route to the deployments a request entering it may
    be sent to (its targets and its fallback routes' targets); `unpriced`
    names the deployments with neither a `price:` nor an entry in the cost
    map. One issue per tenant and limit scope, on the `usd_per_*` field, naming
    the deployments and the routes that reach them; the fix is a `price:`.

    >>> t = TenantsFile.model_validate({"tenants": {"default": {"usd_per_day": 5}}})
    >>> [i.field for i in unpriced_issues(t, file="t.yaml", reachable={"local": {"llama"}},
    ...                                   unpriced={"llama"})]
    ['tenants.default.usd_per_day']
    """
    issues: list[ConfigIssue] = []
    unknown = set(unpriced)

    def report(where: str, lim: Limits, routes: Collection[str], only: Collection[str] | None) -> None:
        field = next((f for f in ("usd_per_day", "usd_per_month") if getattr(lim, f) is not None), None)
        if field is None:
            return
        found: dict[str, set[str]] = {}
        for route in routes:
            for dep in reachable.get(route, ()):
                if dep in unknown and (only is None or dep in only):
                    found.setdefault(dep, set()).add(route)
        if found:
            names = ", ".join(f"{d!r} (via {', '.join(sorted(found[d]))})" for d in sorted(found))
            issues.append(ConfigIssue(
                file, f"{where}.{field}",
                f"no known price for {names}: its calls would count as $0 against this limit; "
                "give it a price in the deployments file (price: {input_per_mtok: 0} if it is free)",
            ))

    for name, t in tenants.tenants.items():
        allowed = [r for r in reachable if t.allows(r)]
        where = f"tenants.{name}"
        report(where, t, allowed, None)
        for route, lim in t.routes.items():
            if t.allows(route):
                report(f"{where}.routes.{route}", lim, [route], None)
        for dep, lim in t.deployments.items():
            report(f"{where}.deployments.{dep}", lim, allowed, {dep})
    return issues
