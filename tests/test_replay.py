"""Replay: logged or traced requests re-decided under an edited policy, and the diff it prints."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from router.context import RequestContext
from router.decision_log import DecisionRecord, record_for
from router.errors import ConfigError
from router.health import BreakerConfig, HealthTracker
from router.models import Attempt
from router.policy.reload import load_snapshot
from router.policy.snapshot import Snapshot
from router.quota.config import TenantsFile
from router.replay import (
    BudgetSim,
    SyntheticHealth,
    config_files_in,
    loses_requests,
    records_from_trace,
    render_json,
    render_text,
    replay,
    run_replay,
)
from router.routing import decide

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "router/data/trace-sample.csv"


def policy_dir(tmp: Path, name: str, *, rule_tokens: int = 6000, flaky_price: float = 0.05,
               extra_policy: str = "", tenants: str | None = None) -> Path:
    """A copy of the demo policy set, optionally edited: the long-prompt rule's threshold, sim-flaky's price."""
    d = tmp / name
    d.mkdir()
    deps = (ROOT / "config/demo-deployments.yaml").read_text(encoding="utf-8")
    assert "price: {input_per_mtok: 0.05, output_per_mtok: 0.15}" in deps
    deps = deps.replace("price: {input_per_mtok: 0.05, output_per_mtok: 0.15}",
                        f"price: {{input_per_mtok: {flaky_price}, output_per_mtok: {flaky_price * 3}}}")
    (d / "deployments.yaml").write_text(deps, encoding="utf-8")
    policy = (ROOT / "policies/demo.yaml").read_text(encoding="utf-8")
    assert "min_prompt_tokens: 6000" in policy
    (d / "policy.yaml").write_text(policy.replace("min_prompt_tokens: 6000", f"min_prompt_tokens: {rule_tokens}")
                                   + extra_policy, encoding="utf-8")
    (d / "tenants.yaml").write_text(tenants or (ROOT / "config/demo-tenants.yaml").read_text(encoding="utf-8"),
                                    encoding="utf-8")
    return d


def trace_of(tmp: Path, rows: int) -> Path:
    """`rows` rows of the sample trace (repeated an hour later as needed)."""
    lines = [ln for ln in TRACE.read_text(encoding="utf-8").splitlines()[2:] if ln]
    out = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(rows):
        stamp, ctx, gen = lines[i % len(lines)].split(",")
        hour = int(stamp[11:13]) + i // len(lines)
        out.append(f"{stamp[:11]}{hour:02d}{stamp[13:]},{ctx},{gen}")
    path = tmp / "trace.csv"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    old = policy_dir(tmp_path, "old")
    new = policy_dir(tmp_path, "new", rule_tokens=3000, flaky_price=5.0)
    return old, new


def test_a_trace_of_2000_rows_replays_fast_and_matches_a_direct_re_decision(
        dirs: tuple[Path, Path], tmp_path: Path) -> None:
    old_dir, new_dir = dirs
    records = records_from_trace(trace_of(tmp_path, 2000), tenant="acme")
    assert len(records) == 2000
    old, new = load_snapshot(config_files_in(old_dir)), load_snapshot(config_files_in(new_dir))
    started = time.perf_counter()
    diff = replay(records, new, old, seed=3)
    assert time.perf_counter() - started < 5.0

    # the same requests, decided one by one with the router's own decide()
    health = SyntheticHealth.from_records(records)  # no outcomes: priors only
    expected: dict[str, Counter[str]] = {}
    for label, snap in (("old", old), ("new", new)):
        rng = random.Random(3)
        routes: Counter[str] = Counter()
        deployments: Counter[str] = Counter()
        cost = 0.0
        for r in records:
            decision = decide(snap, r.context(), health, rng)
            routes[decision.plan.route] += 1
            served = next(d for d in decision.plan.order if d.context_window >= r.prompt_tokens + (r.max_tokens or 0))
            deployments[served.name] += 1
            cost += snap.prices.cost(served, r.prompt_tokens, r.max_tokens or 0)
        expected[label + "-routes"], expected[label + "-deployments"] = routes, deployments
        totals = diff.old if label == "old" else diff.new
        assert totals is not None
        assert totals.routes == dict(routes) and totals.deployments == dict(deployments)
        assert totals.total_cost_usd == pytest.approx(cost)
        assert totals.quota_rejected == 0 and totals.unroutable == 0 and totals.served == 2000

    # the edit moved long-ish prompts to premium and default traffic off the now dear sim-flaky
    assert expected["new-routes"]["premium"] > expected["old-routes"]["premium"]
    assert expected["old-deployments"]["sim-flaky"] > 0 and expected["new-deployments"]["sim-flaky"] == 0
    assert diff.lost == 0 and not loses_requests(diff)
    changes = {(c.old, c.new): c.count for c in diff.rule_changes}
    assert changes[("default route", "rule 'long-prompts'")] == \
        expected["new-routes"]["premium"] - expected["old-routes"]["premium"]
    assert sum(changes.values()) == diff.moved


def log_records(snapshot: Snapshot, n: int, slow: str | None = None) -> list[DecisionRecord]:
    """`n` requests as the router would have logged them under `snapshot` (quota refusals included).

    Each deployment answers in its YAML latency prior, except `slow`, which took 900 ms.
    """
    health, rng = HealthTracker(BreakerConfig(), clock=lambda: 0.0), random.Random(1)
    budgets = BudgetSim(snapshot.tenants)
    out = []
    for i in range(n):
        tenant = ("acme", "globex", "initech")[i % 3]
        tags = frozenset({"interactive"}) if i % 4 == 0 else frozenset()
        ctx = RequestContext(operation="chat", tenant=tenant, tags=tags, prompt_tokens=200 + (i * 37) % 9000,
                             max_tokens=100)
        t = 1_700_000_000.0 + i
        decision = decide(snapshot, ctx, health, rng)
        served = next(d for d in decision.plan.order if d.context_window >= ctx.needed_context)
        cost = snapshot.prices.cost(served, ctx.prompt_tokens, 50)
        refused = budgets.admit(tenant, decision.plan.route, served.name, time=t, tokens=ctx.prompt_tokens + 50,
                                cost_usd=cost)
        if refused is not None:
            out.append(record_for(ctx, time=t, decision=decision, error="quota_exceeded", limit=refused))
            continue
        latency = 900.0 if served.name == slow else served.latency_prior_ms
        out.append(record_for(ctx, time=t, decision=decision,
                              attempts=[Attempt(deployment=served.name, outcome="ok", latency_ms=latency)],
                              deployment=served.name, input_tokens=ctx.prompt_tokens, output_tokens=50,
                              cost_usd=cost, latency_ms=latency))
    return out


def test_replaying_a_log_against_itself_changes_nothing(dirs: tuple[Path, Path]) -> None:
    old = load_snapshot(config_files_in(dirs[0]))
    records = log_records(old, 300)
    assert any(r.outcome and r.outcome.error == "quota_exceeded" for r in records)
    for against in (old, None):  # re-decided, and as logged
        diff = replay(records, old, against)
        assert (diff.moved, diff.lost, diff.gained, diff.rule_changes) == (0, 0, 0, [])
        assert diff.old is not None
        assert diff.old.routes == diff.new.routes and diff.old.deployments == diff.new.deployments
        assert diff.old.total_cost_usd == pytest.approx(diff.new.total_cost_usd)
    assert diff.old is not None and diff.old.slo_misses is None  # the log does not predict SLOs


def test_a_policy_that_strands_requests_loses_them_and_exits_1(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    old = load_snapshot(config_files_in(dirs[0]))
    log = tmp_path / "decisions.jsonl"
    log.write_text("".join(r.model_dump_json() + "\n" for r in log_records(old, 400)), encoding="utf-8")
    # the premium route shrinks to sim-cheap (8k window): the longest prompts have nowhere to go
    stranded = policy_dir(tmp_path, "stranded")
    text = (stranded / "policy.yaml").read_text(encoding="utf-8")
    edited = text.replace("targets: [sim-smart, sim-fast]\n    constraints: {min_quality: 0.7}",
                          "targets: [sim-cheap]")
    assert edited != text
    (stranded / "policy.yaml").write_text(edited, encoding="utf-8")
    out = io.StringIO()
    code = run_replay(log=log, policy=stranded, against=dirs[0], out=out)
    assert code == 1
    assert "the new policy loses" in out.getvalue()
    out = io.StringIO()
    assert run_replay(log=log, policy=stranded, against=dirs[0], as_json=True, out=out) == 1
    diff = json.loads(out.getvalue())
    # some of the stranded were refused by quota under the old policy too: only the others are lost
    assert 0 < diff["lost"] <= diff["new"]["unroutable"]
    assert run_replay(log=log, policy=dirs[0], against=dirs[0], out=io.StringIO()) == 0


def test_a_price_raise_shows_as_budget_rejections(tmp_path: Path) -> None:
    tenants = "unknown_tenants: default\ntenants:\n  default: {}\n  acme: {usd_per_day: 0.01}\n"
    cheap = load_snapshot(config_files_in(policy_dir(tmp_path, "cheap", tenants=tenants)))
    dear = load_snapshot(config_files_in(policy_dir(tmp_path, "dear", flaky_price=20.0, tenants=tenants)))
    records = [DecisionRecord(time=1_700_000_000.0 + i, tenant="acme", prompt_tokens=1000, max_tokens=100)
               for i in range(100)]
    diff = replay(records, dear, cheap)
    assert diff.old is not None and diff.old.quota_rejected == 0
    assert diff.new.rejected_by_limit == {"usd_per_day": diff.new.quota_rejected} and diff.new.quota_rejected > 0
    assert diff.lost == diff.new.quota_rejected and loses_requests(diff)
    assert diff.new.cost_by_tenant["acme"] <= 0.01 + 1e-9


def test_slo_misses_are_predicted_from_logged_latency(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    old = load_snapshot(config_files_in(dirs[0]))
    records = log_records(old, 200, slow="sim-fast")
    interactive_on_fast = sum(1 for r in records if r.decision and r.decision.route == "interactive"
                              and r.outcome and r.outcome.deployment == "sim-fast")
    interactive = sum(1 for r in records if r.decision and r.decision.route == "interactive"
                      and r.outcome and r.outcome.deployment)
    assert 0 < interactive_on_fast == interactive

    def with_slo(name: str, latency_ms: int) -> Snapshot:
        d = policy_dir(tmp_path, name)
        text = (d / "policy.yaml").read_text(encoding="utf-8")
        (d / "policy.yaml").write_text(text.replace(
            "    latency_stat: p95\n", f"    latency_stat: p95\n    slo: {{latency_ms: {latency_ms}}}\n"),
            encoding="utf-8")
        return load_snapshot(config_files_in(d))

    # sim-fast was slow in the log: an SLO of 500 ms moves its traffic to the cheapest deployment that meets it
    diff = replay(records, with_slo("slo500", 500))
    assert diff.old is not None and diff.old.slo_misses is None
    assert diff.new.slo_misses == 0 and diff.moved == interactive_on_fast
    assert diff.new.deployments.get("sim-fast", 0) == 0
    # nothing meets 100 ms: every interactive request is a predicted miss
    diff = replay(records, with_slo("slo100", 100), old)
    assert diff.old is not None and diff.old.slo_misses == 0 and diff.new.slo_misses == interactive
    text_out = render_text(diff)
    assert "predicted SLO misses" in text_out and "sim-flaky" in text_out


def test_budget_sim_counts_bursts_days_and_allowed_routes() -> None:
    tenants = TenantsFile.model_validate({"unknown_tenants": "reject", "tenants": {
        "a": {"requests_per_minute": 60, "burst": 2, "usd_per_day": 1.0, "allowed_routes": ["default"]}}})
    sim = BudgetSim(tenants)
    t = 1_700_000_000.0
    assert [sim.admit("a", "default", "x", time=t, tokens=1, cost_usd=0.0) for _ in range(3)] == \
        [None, None, "requests_per_minute"]
    assert sim.admit("a", "default", "x", time=t + 1.0, tokens=1, cost_usd=0.0) is None  # one refilled
    assert sim.admit("a", "premium", "x", time=t + 10, tokens=1, cost_usd=0.0) == "route_not_allowed"
    assert sim.admit("b", "default", "x", time=t + 10, tokens=1, cost_usd=0.0) == "unknown_tenant"
    assert sim.admit("a", "default", "x", time=t + 20, tokens=1, cost_usd=0.9) is None
    assert sim.admit("a", "default", "x", time=t + 30, tokens=1, cost_usd=0.2) == "usd_per_day"
    assert sim.admit("a", "default", "x", time=t + 86_400, tokens=1, cost_usd=0.2) is None  # a new UTC day


def test_trace_rows_become_requests_and_bad_rows_are_named(tmp_path: Path) -> None:
    rows = records_from_trace(TRACE, tenant="acme")
    assert len(rows) == 1000
    assert (rows[0].prompt_tokens, rows[0].max_tokens, rows[0].tenant) == (4808, 10, "acme")
    assert rows[0].time == pytest.approx(1700158623.97996)
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.1,12,3\n"
                   "2023-11-16 18:17:04.1,lots,3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        records_from_trace(bad)
    assert (info.value.field, info.value.line) == ("ContextTokens", 3)
    (tmp_path / "cols.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="lacks columns"):
        records_from_trace(tmp_path / "cols.csv")


def test_the_repository_root_is_a_policy_set_without_the_demo(tmp_path: Path) -> None:
    files = config_files_in(ROOT)
    assert files.deployments.name == "deployments.yaml"
    assert [p.name for p in files.policies] == ["default.yaml"]
    err = io.StringIO()
    assert run_replay(log=tmp_path / "missing.jsonl", policy=ROOT, err=err) == 2
    assert "no such decision log" in err.getvalue()


def test_json_rendering_round_trips(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    records = records_from_trace(trace_of(tmp_path, 50), tenant="globex")
    diff = replay(records, load_snapshot(config_files_in(dirs[1])))
    data = json.loads(render_json(diff))
    assert data["old"] is None and data["new"]["requests"] == 50
    assert "under" in render_text(diff)


def test_replay_never_imports_litellm(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from router.replay import run_replay; "
        f"code = run_replay(log=None, policy=Path({str(dirs[1])!r}), against=Path({str(dirs[0])!r}), "
        f"trace=Path({str(TRACE)!r}), trace_tenant='acme'); "
        "print('litellm' in sys.modules, code)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=50,
                          check=True)
    assert done.stdout.strip().splitlines()[-1] == "False 0"
