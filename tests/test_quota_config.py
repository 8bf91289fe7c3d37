"""The tenants schema: what ops may write in `config/tenants.yaml`, and what is refused."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from router.errors import ConfigError
from router.policy.loader import load_model
from router.quota import Limits, TenantLimits, TenantsFile, reference_issues, unpriced_issues

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "tenants.yaml"


def validate(data: dict[str, Any]) -> TenantsFile:
    return TenantsFile.model_validate(data)


def test_example_file_loads() -> None:
    tenants, _ = load_model(EXAMPLE, TenantsFile)
    assert {"default", "acme", "globex"} <= set(tenants.tenants)
    acme = tenants.tenants["acme"]
    assert (acme.burst, acme.max_concurrent, acme.usd_per_month) == (20, 50, 2000)
    assert acme.routes["quality"].usd_per_day == 20
    assert acme.deployments["gpt-4o"].requests_per_minute == 100
    assert acme.allows("quality") and not acme.allows("batch")
    assert tenants.tenants["default"].allows("anything")
    assert (tenants.failure_mode.rates, tenants.failure_mode.money) == ("open", "closed")


def test_example_file_names_real_routes_and_deployments() -> None:
    tenants, _ = load_model(EXAMPLE, TenantsFile)
    routes = {"default", "interactive", "quality", "batch", "local", "embeddings"}
    deployments = {"gpt-4o-mini", "gpt-4o", "claude-haiku", "llama-local",
                   "text-embedding-3-small"}
    assert reference_issues(tenants, file=str(EXAMPLE), routes=routes,
                            deployments=deployments) == []


def test_everything_optional() -> None:
    t = validate({"tenants": {"default": {}}})
    assert t.unknown_tenants == "default"
    assert t.tenants["default"].is_empty()
    assert TenantsFile.model_validate({"unknown_tenants": "reject"}).tenants == {}


@pytest.mark.parametrize("bad", [-1, math.inf, math.nan, "lots"])
@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute", "usd_per_day",
                                   "usd_per_month", "tokens_per_day", "max_concurrent"])
def test_limits_must_be_finite_and_non_negative(field: str, bad: object) -> None:
    with pytest.raises(ValidationError) as exc:
        Limits.model_validate({field: bad})
    assert exc.value.errors()[0]["loc"] == (field,)


def test_zero_is_a_limit() -> None:
    assert Limits(usd_per_day=0).usd_per_day == 0
    assert not Limits(usd_per_day=0).is_empty()


def test_burst_defaults_to_ten_seconds_and_needs_a_rate() -> None:
    assert Limits(requests_per_minute=60).request_burst == 10
    assert Limits(requests_per_minute=600, burst=20).request_burst == 20
    assert Limits(requests_per_minute=1).request_burst == 1
    with pytest.raises(ValidationError, match="'burst' needs 'requests_per_minute'"):
        Limits(burst=5)
    with pytest.raises(ValidationError):
        Limits(requests_per_minute=60, burst=0)


def test_typo_is_an_error_naming_its_path(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        "  default: {}\n"
        "  acme:\n"
        "    routes:\n"
        "      quality:\n"
        "        usd_per_dya: 5\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_model(path, TenantsFile)
    issue = exc.value.issues[0]
    assert issue.field == "tenants.acme.routes.quality.usd_per_dya"
    assert issue.line == 6 and issue.file == str(path)


def test_default_tenant_required_unless_unknown_rejected() -> None:
    with pytest.raises(ValidationError, match="no tenant named 'default'"):
        validate({"tenants": {"acme": {}}})
    assert validate({"unknown_tenants": "reject", "tenants": {"acme": {}}}).tenants["acme"]


def test_routes_must_be_allowed() -> None:
    with pytest.raises(ValidationError, match="default_route 'x' is not in allowed_routes"):
        TenantLimits.model_validate({"allowed_routes": ["a"], "default_route": "x"})
    with pytest.raises(ValidationError, match=r"routes not in allowed_routes: \['b'\]"):
        TenantLimits.model_validate({"allowed_routes": ["a"], "routes": {"b": {}}})
    ok = TenantLimits.model_validate({"allowed_routes": ["a"], "routes": {"a": {"burst": None}}})
    assert ok.allows("a") and not ok.allows("b")


def test_route_limits_take_no_tenant_fields() -> None:
    with pytest.raises(ValidationError):
        TenantLimits.model_validate({"routes": {"a": {"allowed_routes": ["a"]}}})


def test_failure_mode_values() -> None:
    t = validate({"tenants": {"default": {}}, "failure_mode": {"rates": "closed"}})
    assert (t.failure_mode.rates, t.failure_mode.money) == ("closed", "closed")
    with pytest.raises(ValidationError):
        validate({"tenants": {"default": {}}, "failure_mode": {"money": "maybe"}})


def test_models_are_frozen() -> None:
    limits = Limits(usd_per_day=5)
    with pytest.raises(ValidationError):
        limits.usd_per_day = 50  # type: ignore[misc]


def test_reference_issues_name_each_dangling_name() -> None:
    t = validate({"tenants": {"default": {}, "acme": {
        "default_route": "gone", "allowed_routes": ["gone", "default"],
        "routes": {"gone": {}}, "deployments": {"nowhere": {}},
    }}})
    issues = reference_issues(t, file="t.yaml", routes={"default"}, deployments={"gpt-4o"})
    assert [i.field for i in issues] == [
        "tenants.acme.default_route",
        "tenants.acme.allowed_routes",
        "tenants.acme.routes.gone",
        "tenants.acme.deployments.nowhere",
    ]
    assert all(i.file == "t.yaml" for i in issues)


REACHABLE = {"default": {"gpt-4o-mini", "llama-local"}, "local": {"llama-local"},
             "premium": {"gpt-4o"}}


def unpriced(data: dict[str, Any], missing: set[str] | None = None) -> list[tuple[str, str]]:
    issues = unpriced_issues(validate(data), file="tenants.yaml", reachable=REACHABLE,
                             unpriced={"llama-local"} if missing is None else missing)
    assert all(i.file == "tenants.yaml" for i in issues)
    return [(i.field, i.message) for i in issues]


def test_a_budget_reaching_an_unpriced_deployment_is_an_error() -> None:
    [(field, message)] = unpriced({"tenants": {"default": {"usd_per_day": 5}}})
    assert field == "tenants.default.usd_per_day"
    assert "'llama-local' (via default, local)" in message and "price" in message


def test_unpriced_deployments_under_no_budget_are_fine() -> None:
    assert unpriced({"tenants": {"default": {"requests_per_minute": 60, "tokens_per_day": 9}}}) == []
    assert unpriced({"tenants": {"default": {"usd_per_day": 5}}}, missing=set()) == []


def test_only_routes_the_tenant_may_use_count() -> None:
    data = {"tenants": {"default": {}, "acme": {"usd_per_month": 100,
                                                "allowed_routes": ["premium"]}}}
    assert unpriced(data) == []
    data["tenants"]["acme"]["allowed_routes"] = ["premium", "local"]
    assert [f for f, _ in unpriced(data)] == ["tenants.acme.usd_per_month"]


def test_route_and_deployment_budgets_are_checked_in_their_scope() -> None:
    data = {"tenants": {"default": {
        "routes": {"premium": {"usd_per_day": 1}, "local": {"usd_per_day": 1}},
        "deployments": {"gpt-4o-mini": {"usd_per_day": 1}, "llama-local": {"usd_per_month": 2}},
    }}}
    assert [f for f, _ in unpriced(data)] == [
        "tenants.default.routes.local.usd_per_day",
        "tenants.default.deployments.llama-local.usd_per_month",
    ]
