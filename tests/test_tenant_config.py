"""Tenants' own keys and deployments: the schema, each tenant's view of a route, and `explain`."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from router.cli_render import Output, print_explanation
from router.context import RequestContext
from router.errors import ConfigError, NoRouteAvailable
from router.explain import explain
from router.health import AttemptResult, HealthTracker
from router.policy.reload import ConfigFiles, load_snapshot
from router.policy.snapshot import Snapshot
from router.quota.config import TenantsFile
from router.routing import candidates, decide

pytestmark = pytest.mark.timeout(60)

DEPLOYMENTS = """\
deployments:
  - name: gpt
    model: openai/gpt
    api_key_env: SHARED_OPENAI_KEY
    price: {input_per_mtok: 1, output_per_mtok: 2}
    quality: 0.9
    context_window: 16000
  - name: mini
    model: openai/mini
    api_key_env: SHARED_OPENAI_KEY
    price: {input_per_mtok: 0.1, output_per_mtok: 0.2}
    quality: 0.6
    context_window: 16000
  - name: haiku
    model: anthropic/haiku
    api_key_env: SHARED_ANTHROPIC_KEY
    price: {input_per_mtok: 0.5, output_per_mtok: 1}
    quality: 0.7
    context_window: 16000
"""

POLICY = """\
routes:
  default: {strategy: fallback, targets: [gpt, mini, haiku]}
  claude: {strategy: fallback, targets: [haiku]}
  private: {strategy: fallback, targets: [acme-azure, mini]}
default_route: default
"""

TENANTS = """\
unknown_tenants: default
tenants:
  default: {}
  acme:
    keys: {openai: ACME_OPENAI_KEY, haiku: ACME_HAIKU_KEY}
    deployments: {gpt: {requests_per_minute: 10}}
  globex:
    own_deployments:
      - name: gpt
        overrides: gpt
        model: azure/gpt-4o
        api_base: https://globex.example.com
        api_key_env: GLOBEX_AZURE_KEY
        price: {input_per_mtok: 2, output_per_mtok: 4}
        quality: 0.95
        context_window: 16000
  initech:
    own_deployments:
      - name: acme-azure
        model: azure/gpt-4o-mini
        api_key_env: INITECH_AZURE_KEY
        price: {input_per_mtok: 0.2}
        context_window: 16000
"""


def files(tmp_path: Path, tenants: str = TENANTS, policy: str = POLICY) -> ConfigFiles:
    (tmp_path / "deployments.yaml").write_text(DEPLOYMENTS)
    (tmp_path / "policy.yaml").write_text(textwrap.dedent(policy))
    (tmp_path / "tenants.yaml").write_text(textwrap.dedent(tenants))
    return ConfigFiles(deployments=tmp_path / "deployments.yaml", policies=(tmp_path / "policy.yaml",),
                       tenants=tmp_path / "tenants.yaml")


#: Routes naming no tenant's own deployment, for checks of tenants.yaml alone.
SHARED_POLICY = "routes:\n  default: {targets: [gpt, mini, haiku]}\n"


def issues(tmp_path: Path, tenants: str, policy: str = SHARED_POLICY) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_snapshot(files(tmp_path, tenants, policy))
    return {i.field: i.message for i in info.value.issues}


@pytest.fixture
def snap(tmp_path: Path) -> Snapshot:
    return load_snapshot(files(tmp_path))


def ctx(tenant: str, route: str = "default", **kw: object) -> RequestContext:
    return RequestContext(operation="chat", tenant=tenant, route=route, prompt_tokens=10, **kw)  # type: ignore[arg-type]


def order(snap: Snapshot, tenant: str, route: str = "default") -> list[tuple[str, str | None]]:
    found = candidates(snap, snap.routes[route], ctx(tenant, route), HealthTracker(), random.Random(0))
    return [(d.name, d.api_key_env) for d in found.order]


# -- schema ---------------------------------------------------------------------------------


def test_an_own_deployment_named_like_a_shared_one_needs_overrides(tmp_path: Path) -> None:
    found = issues(tmp_path, """\
        unknown_tenants: reject
        tenants:
          acme:
            own_deployments:
              - {name: gpt, model: azure/gpt, api_key_env: ACME_KEY}
        """)
    assert "shadows the shared deployment 'gpt'" in found["tenants.acme.own_deployments[0].name"]
    assert "overrides: gpt" in found["tenants.acme.own_deployments[0].name"]


def test_overrides_must_name_a_shared_deployment(tmp_path: Path) -> None:
    found = issues(tmp_path, """\
        unknown_tenants: reject
        tenants:
          acme:
            own_deployments:
              - {name: mine, model: azure/gpt, overrides: nope, api_key_env: ACME_KEY}
        """)
    assert found == {"tenants.acme.own_deployments[0].overrides": "unknown shared deployment 'nope'"}


@pytest.mark.parametrize("bad", ["sk-live-abc123", "1KEY", "MY KEY", ""])
def test_key_env_names_must_look_like_variable_names(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        TenantsFile.model_validate({"unknown_tenants": "reject", "tenants": {"acme": {"keys": {"gpt": bad}}}})
    assert "pattern" in str(info.value)
    with pytest.raises(ValueError):
        TenantsFile.model_validate({"unknown_tenants": "reject", "tenants": {"acme": {
            "own_deployments": [{"name": "x", "model": "azure/x", "api_key_env": bad}]}}})


def test_a_pasted_key_is_not_echoed_by_the_loader(tmp_path: Path) -> None:
    secret = "sk-proj-DoNotLeakThis0123456789"
    found = issues(tmp_path, f"""\
        unknown_tenants: reject
        tenants:
          acme: {{keys: {{gpt: {secret}}}}}
        """)
    assert "tenants.acme.keys.gpt" in found
    assert all(secret not in f and secret not in m for f, m in found.items())


def test_keys_must_name_a_known_deployment_or_provider(tmp_path: Path) -> None:
    found = issues(tmp_path, """\
        unknown_tenants: reject
        tenants:
          acme: {keys: {nope: ACME_KEY, openai: ACME_OPENAI, gpt: ACME_GPT}}
        """)
    assert found == {"tenants.acme.keys.nope": "unknown deployment or provider 'nope'"}


def test_keys_may_not_name_an_own_or_overridden_deployment(tmp_path: Path) -> None:
    found = issues(tmp_path, """\
        unknown_tenants: reject
        tenants:
          acme:
            keys: {mine: K1, gpt: K2}
            own_deployments:
              - {name: mine, model: azure/x, overrides: gpt, price: {input_per_mtok: 1}}
        """)
    assert "set api_key_env there" in found["tenants.acme.keys.mine"]
    assert "overridden by own deployment 'mine'" in found["tenants.acme.keys.gpt"]


def test_an_own_deployment_needs_a_key_source_of_its_own(tmp_path: Path) -> None:
    """Never the key LiteLLM would find in the process environment (OPENAI_API_KEY, ...)."""
    found = issues(tmp_path, """\
        unknown_tenants: reject
        tenants:
          acme:
            own_deployments:
              - {name: mine, model: openai/gpt-4o-mini, api_base: "https://acme.example.com/v1"}
              - {name: gpt, overrides: gpt, model: openai/gpt-4o, api_base: "https://acme.example.com/v1"}
          globex:
            keys: {openai: GLOBEX_OPENAI_KEY}
            own_deployments:
              - {name: theirs, model: openai/gpt-4o-mini, api_base: "https://globex.example.com/v1"}
        """)
    assert set(found) == {"tenants.acme.own_deployments[0].api_key_env", "tenants.acme.own_deployments[1].api_key_env"}
    assert "set api_key_env, or keys: {openai: VAR}" in found["tenants.acme.own_deployments[1].api_key_env"]


def test_own_deployment_names_are_unique_within_and_across_tenants(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="used twice"):
        TenantsFile.model_validate({"unknown_tenants": "reject", "tenants": {"a": {"own_deployments": [
            {"name": "x", "model": "azure/x"}, {"name": "x", "model": "azure/y"}]}}})
    with pytest.raises(ValueError, match="both override"):
        TenantsFile.model_validate({"unknown_tenants": "reject", "tenants": {"a": {"own_deployments": [
            {"name": "x", "model": "azure/x", "overrides": "gpt"},
            {"name": "y", "model": "azure/y", "overrides": "gpt"}]}}})
    found = issues(tmp_path, """\
        unknown_tenants: reject
        tenants:
          a: {own_deployments: [{name: x, model: azure/x}]}
          b: {own_deployments: [{name: x, model: azure/y}]}
        """)
    assert "also an own deployment of tenant 'a'" in found["tenants.b.own_deployments[0].name"]


def test_an_own_deployment_with_no_price_under_a_dollar_limit_is_an_error(tmp_path: Path) -> None:
    found = issues(tmp_path, """\
        unknown_tenants: reject
        tenants:
          acme:
            usd_per_day: 5
            own_deployments: [{name: mine, model: azure/unpriced-model-xyz, api_key_env: ACME_KEY}]
        """)
    assert "would count as $0" in found["tenants.acme.own_deployments[0].price"]


def test_routes_may_name_own_deployments_and_unknown_names_still_fail(tmp_path: Path) -> None:
    found = issues(tmp_path, "unknown_tenants: reject\ntenants: {acme: {}}\n", POLICY)
    assert "unknown deployment 'acme-azure'" in found["routes.private.targets[0]"]


# -- each tenant's view ------------------------------------------------------------------------


def test_a_tenant_key_replaces_the_shared_key_for_that_tenant_only(snap: Snapshot) -> None:
    assert order(snap, "acme") == [("gpt@acme", "ACME_OPENAI_KEY"), ("mini@acme", "ACME_OPENAI_KEY"),
                                   ("haiku@acme", "ACME_HAIKU_KEY")]
    assert order(snap, "someone-else") == [("gpt", "SHARED_OPENAI_KEY"), ("mini", "SHARED_OPENAI_KEY"),
                                           ("haiku", "SHARED_ANTHROPIC_KEY")]
    # The copies are made once, at compile time: two decisions return the same objects.
    first = candidates(snap, snap.routes["default"], ctx("acme"), HealthTracker(), random.Random(0)).order
    again = candidates(snap, snap.routes["default"], ctx("acme"), HealthTracker(), random.Random(0)).order
    assert all(a is b for a, b in zip(first, again, strict=True))


def test_an_override_replaces_the_shared_deployment_for_its_owner(snap: Snapshot) -> None:
    assert order(snap, "globex") == [("gpt@globex", "GLOBEX_AZURE_KEY"), ("mini", "SHARED_OPENAI_KEY"),
                                     ("haiku", "SHARED_ANTHROPIC_KEY")]
    replaced = snap.tenant_views["globex"].swap["gpt"]
    assert replaced.model == "azure/gpt-4o" and replaced.api_base == "https://globex.example.com"


def test_an_own_deployment_is_invisible_to_other_tenants(snap: Snapshot) -> None:
    assert order(snap, "initech", "private") == [("acme-azure", "INITECH_AZURE_KEY"), ("mini", "SHARED_OPENAI_KEY")]
    found = candidates(snap, snap.routes["private"], ctx("acme", "private"), HealthTracker(), random.Random(0))
    assert [d.name for d in found.order] == ["mini@acme"]
    assert [(c.deployment.name, c.reason) for c in found.rejected] == [("acme-azure", "belongs to another tenant")]


def test_no_route_error_never_names_another_tenants_deployment(tmp_path: Path) -> None:
    snap = load_snapshot(files(tmp_path, policy="routes:\n  only_initech: {targets: [acme-azure]}\n"))
    with pytest.raises(NoRouteAvailable) as info:
        decide(snap, ctx("globex", "only_initech"), HealthTracker(), random.Random(0))
    assert "acme-azure" not in str(info.value) and "acme-azure" not in info.value.reasons
    assert decide(snap, ctx("initech", "only_initech"), HealthTracker(), random.Random(0)).plan.order[0].name \
        == "acme-azure"


def test_routes_no_tenant_changes_keep_the_fast_path(tmp_path: Path) -> None:
    snap = load_snapshot(files(tmp_path, tenants="""\
        unknown_tenants: default
        tenants:
          default: {}
          acme: {keys: {haiku: ACME_HAIKU_KEY}}
        """, policy="routes:\n  plain: {targets: [gpt, mini]}\n  claude: {targets: [haiku]}\n"))
    plain, claude = snap.routes["plain"], snap.routes["claude"]
    assert plain.same_for("acme") and plain.same_for("anyone")
    assert not claude.same_for("acme") and claude.same_for("anyone")


def test_unknown_tenants_never_get_the_default_tenants_keys(tmp_path: Path) -> None:
    snap = load_snapshot(files(tmp_path, tenants="""\
        unknown_tenants: default
        tenants:
          default: {keys: {openai: DEFAULT_TENANT_KEY}}
        """, policy=SHARED_POLICY))
    assert order(snap, "default")[0] == ("gpt@default", "DEFAULT_TENANT_KEY")
    assert order(snap, "stranger")[0] == ("gpt", "SHARED_OPENAI_KEY")


def test_per_deployment_limits_follow_the_tenants_copy(snap: Snapshot) -> None:
    assert snap.tenants is not None
    limits = snap.tenants.tenants["acme"].deployments
    assert limits["gpt@acme"] == limits["gpt"]


def test_an_override_failing_the_route_constraints_is_rejected_with_the_reason(tmp_path: Path) -> None:
    snap = load_snapshot(files(tmp_path, policy="""\
        routes:
          default: {targets: [gpt, mini], constraints: {max_price_per_mtok: 4}}
        """))
    found = candidates(snap, snap.routes["default"], ctx("globex"), HealthTracker(), random.Random(0))
    assert [d.name for d in found.order] == ["mini"]
    assert found.rejected[0].deployment.name == "gpt@globex"
    assert "max_price_per_mtok" in found.rejected[0].reason


def test_a_tenants_circuit_is_its_own(snap: Snapshot) -> None:
    clock = [0.0]
    health = HealthTracker(clock=lambda: clock[0])
    health.record(AttemptResult(deployment="gpt@acme", ok=False, latency_s=0.1, error_kind="auth"))
    assert not health.available("gpt@acme") and health.available("gpt")


# -- explain ---------------------------------------------------------------------------------


def test_explain_shows_key_sources_and_the_deployments_a_tenant_sees(snap: Snapshot) -> None:
    e = explain(snap, ctx("acme"), HealthTracker(), random.Random(0))
    assert e.tenant_keys == {"openai": "ACME_OPENAI_KEY", "haiku": "ACME_HAIKU_KEY"}
    assert [(c.deployment, c.key_env, c.key_source) for c in e.candidates] == [
        ("gpt@acme", "ACME_OPENAI_KEY", "tenant key"), ("mini@acme", "ACME_OPENAI_KEY", "tenant key"),
        ("haiku@acme", "ACME_HAIKU_KEY", "tenant key")]
    assert e.candidates[0].score == 0.0  # the strategy's score of the shared deployment it replaces
    assert [(s.deployment, s.source, s.replaces) for s in e.deployments] == [
        ("gpt@acme", "tenant key", "gpt"), ("mini@acme", "tenant key", "mini"), ("haiku@acme", "tenant key", "haiku")]

    g = explain(snap, ctx("globex", "private"), HealthTracker(), random.Random(0))
    assert ("gpt@globex", "override", "gpt", "GLOBEX_AZURE_KEY") in [
        (s.deployment, s.source, s.replaces, s.key_env) for s in g.deployments]
    assert "acme-azure" not in [s.deployment for s in g.deployments]
    other = next(c for c in g.candidates if c.deployment == "acme-azure")
    assert (other.kept, other.key_source, other.key_env) == (False, "another tenant", None)

    i = explain(snap, ctx("initech"), HealthTracker(), random.Random(0))
    assert [s.deployment for s in i.deployments if s.source == "own"] == ["acme-azure"]
    assert explain(snap, ctx("nobody"), HealthTracker(), random.Random(0)).tenant_keys == {}


def test_explain_text_names_variables_never_values(snap: Snapshot, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ACME_OPENAI_KEY", "sk-acme-secret-value")
    monkeypatch.delenv("ACME_HAIKU_KEY", raising=False)
    text = Output(plain=True)
    print_explanation(explain(snap, ctx("acme"), HealthTracker(), random.Random(0)), text)
    out = capsys.readouterr().out
    # an unset variable is flagged (its call would fail), a set one shown by name only
    assert (f"tenant keys: haiku {text.arrow} $ACME_HAIKU_KEY (not set here), "
            f"openai {text.arrow} $ACME_OPENAI_KEY" in out)
    assert "Deployments tenant acme sees" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("gpt@acme"))
    assert "tenant key" in row and "gpt" in row and "$ACME_OPENAI_KEY" in row
    assert "sk-acme-secret-value" not in out
    print_explanation(explain(snap, ctx("nobody"), HealthTracker(), random.Random(0)), Output(plain=True))
    assert "deployments: the 3 shared ones, with the shared keys" in capsys.readouterr().out


def test_a_request_an_override_cannot_serve_skips_it_for_its_owner_only(tmp_path: Path) -> None:
    snap = load_snapshot(files(tmp_path, tenants="""\
        unknown_tenants: default
        tenants:
          default: {}
          globex:
            own_deployments:
              - {name: small-gpt, overrides: gpt, model: azure/gpt, price: {input_per_mtok: 1}, context_window: 1000,
                 api_key_env: GLOBEX_KEY}
        """, policy=SHARED_POLICY))
    route = snap.routes["default"]

    def first(tenant: str, prompt_tokens: int) -> tuple[str, list[tuple[str, str]]]:
        c = RequestContext(operation="chat", tenant=tenant, route="default", prompt_tokens=prompt_tokens)
        found = candidates(snap, route, c, HealthTracker(), random.Random(0))
        return found.order[0].name, [(r.deployment.name, r.reason) for r in found.rejected]

    assert first("globex", 10) == ("small-gpt", [])
    assert first("globex", 5000) == ("mini", [("small-gpt", "context window 1000 < 5000 tokens needed")])
    assert first("globex", 10) == ("small-gpt", [])  # the memo of globex's view still holds
    assert first("other", 5000) == ("gpt", [])


def test_an_override_takes_what_it_does_not_set_from_the_deployment_it_overrides(tmp_path: Path) -> None:
    # The README's example shape: a tenant's own endpoint for a shared model, with no quality,
    # context window or price of its own. It must pass the route's constraints as `gpt` does.
    snap = load_snapshot(files(tmp_path, tenants="""\
        unknown_tenants: default
        tenants:
          default: {}
          acme:
            usd_per_day: 5
            keys: {azure: ACME_AZURE_KEY}
            own_deployments:
              - {name: acme-gpt, overrides: gpt, model: azure/gpt-4o, api_base: "https://acme.example.com"}
              - {name: acme-own, overrides: mini, model: azure/gpt-4o-mini, quality: 0.2, context_window: 2000}
        """, policy="""\
        routes:
          default: {strategy: fallback, targets: [gpt, mini], constraints: {min_quality: 0.5}}
        """))
    own = snap.tenant_views["acme"].owned
    gpt, shared = own["acme-gpt"], snap.deployments["gpt"]
    assert (gpt.quality, gpt.context_window, gpt.price) == (shared.quality, shared.context_window, shared.price)
    # never the shared endpoint or key: the tenant's provider key, its own api_base
    assert gpt.api_key_env == "ACME_AZURE_KEY" and gpt.api_base == "https://acme.example.com"
    # what an override sets is its own; what it does not set still comes from `mini`
    assert (own["acme-own"].quality, own["acme-own"].context_window) == (0.2, 2000)
    assert own["acme-own"].price == snap.deployments["mini"].price
    found = candidates(snap, snap.routes["default"], ctx("acme"), HealthTracker(), random.Random(0))
    assert [d.name for d in found.order] == ["acme-gpt"]
    assert [(r.deployment.name, r.reason) for r in found.rejected] == [("acme-own", "quality 0.2 < min_quality 0.5")]


def test_an_own_deployment_without_overrides_inherits_nothing(snap: Snapshot) -> None:
    mine = snap.tenant_views["initech"].owned["acme-azure"]
    assert mine.quality == 0.5 and mine.api_key_env == "INITECH_AZURE_KEY"


def test_explain_says_an_override_is_ranked_as_the_deployment_it_overrides(
    snap: Snapshot, capsys: pytest.CaptureFixture[str]
) -> None:
    print_explanation(explain(snap, ctx("globex"), HealthTracker(), random.Random(0)), Output(plain=True))
    assert "an override is ranked in the place of the deployment it overrides" in capsys.readouterr().out
    print_explanation(explain(snap, ctx("acme"), HealthTracker(), random.Random(0)), Output(plain=True))
    assert "an override is ranked" not in capsys.readouterr().out


def test_explain_names_the_error_a_refused_tenant_would_get(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = load_snapshot(files(tmp_path, tenants="unknown_tenants: reject\ntenants: {acme: {}}\n",
                               policy=SHARED_POLICY))
    print_explanation(explain(snap, ctx("nobody"), HealthTracker(), random.Random(0)), Output(plain=True))
    out = capsys.readouterr().out
    assert "tenant: quota: unknown tenant" in out
    assert "the call would fail with TenantNotAllowed" in out
