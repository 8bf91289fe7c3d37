"""`llm-router`: validate, explain, chat, status and demo, run in-process through `main()`."""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from router.cli import main
from router.cli_render import Column, Output, Table
from router.demo import load_trace, plan_workload
from router.explain import Explanation

REPO = Path(__file__).resolve().parent.parent

DEPLOYMENTS = """\
deployments:
  - name: small
    model: openai/small
    quality: 0.5
    context_window: 4000
  - name: large
    model: openai/large
    quality: 0.9
    context_window: 100000
    capabilities: [chat, tools]
"""


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default settings point at config/ and policies/ relative to the working directory."""
    monkeypatch.chdir(REPO)
    for var in ("ROUTER_CONFIG_DIR", "ROUTER_POLICY_DIR", "ROUTER_HEALTH_STORE_URL"):
        monkeypatch.delenv(var, raising=False)


def write_set(tmp_path: Path, policy: str) -> tuple[Path, Path]:
    deployments = tmp_path / "deployments.yaml"
    deployments.write_text(DEPLOYMENTS)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(textwrap.dedent(policy))
    return deployments, policy_file


# -- validate ---------------------------------------------------------------------------------


def test_validate_the_shipped_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--plain"]) == 0
    out = capsys.readouterr().out
    assert "OK  config:" in out and "OK  demo:" in out
    assert "config/demo-tenants.yaml" in out


def test_validate_directories(capsys: pytest.CaptureFixture[str]) -> None:
    """demo-deployments.yaml pairs with policies/demo.yaml; deployments.yaml with the rest."""
    assert main(["validate", "--plain", "config", "policies"]) == 0
    out = capsys.readouterr().out
    assert "OK  config:" in out and "OK  demo:" in out


BAD_POLICIES = {
    "bad YAML": ("routes:\n  default:\n    targets: [small, large\n  other: 1\n", 4, None),
    "unknown strategy": ("routes:\n  default:\n    strategy: randomest\n    targets: [small]\n",
                         3, "routes.default.strategy"),
    "dangling target": ("routes:\n  default:\n    targets: [small, nope]\n", 3, "routes.default.targets[1]"),
    "fallback cycle": ("routes:\n  default:\n    targets: [small]\n    fallbacks: [other]\n"
                       "  other:\n    targets: [large]\n    fallbacks: [default]\n",
                       7, "routes.other.fallbacks"),
    "NaN weight": ("routes:\n  default:\n    strategy: weighted\n    targets: [small, large]\n"
                   "    weights: {small: .nan, large: 1}\n", 5, "routes.default.weights"),
}


@pytest.mark.parametrize("case", sorted(BAD_POLICIES))
def test_validate_reports_file_line_and_field(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy, line, field = BAD_POLICIES[case]
    deployments, policy_file = write_set(tmp_path, policy)
    assert main(["validate", "--plain", str(deployments), str(policy_file)]) == 1
    out = capsys.readouterr().out
    where = f"{policy_file}:{line}" + (f" [{field}]:" if field else ":")
    assert where in out, out
    assert "1 problem(s)" in out


def test_validate_unknown_file_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stray = tmp_path / "stray.yaml"
    stray.write_text("hello: world\n")
    assert main(["validate", "--plain", str(stray)]) == 1
    assert f"{stray}:1: not a deployments, policy or tenants file" in capsys.readouterr().out


def test_validate_a_tenants_file_alone_checks_it_with_the_configured_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ops edit to tenants.yaml alone is checked against config/ and policies/ (demo-tenants.yaml
    against the demo set), and its errors name file, line and field."""
    assert main(["validate", "--plain", "config/tenants.yaml", "config/demo-tenants.yaml"]) == 0
    out = capsys.readouterr().out
    assert "OK  config:" in out and "OK  demo:" in out and "config/tenants.yaml" in out
    bad = tmp_path / "tenants-prod.yaml"  # any name: no `prod` set exists, so config/ and policies/
    bad.write_text("tenants:\n  default:\n    requests_per_minute: 10\n    budgets_count_cache_hits: maybe\n")
    assert main(["validate", "--plain", str(bad)]) == 1
    assert f"{bad}:4 [tenants.default.budgets_count_cache_hits]:" in capsys.readouterr().out


def test_validate_a_tenants_file_with_nothing_to_check_it_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lone = tmp_path / "tenants.yaml"
    lone.write_text("tenants:\n  default: {}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--plain", str(lone)]) == 1
    assert f"{lone}: no deployments and policy files to check it against" in capsys.readouterr().out


# -- explain ----------------------------------------------------------------------------------


def test_explain_drops_a_deployment_whose_window_is_too_small(capsys: pytest.CaptureFixture[str]) -> None:
    prompt = "word " * 8000  # ~10,000 tokens by the character estimate: more than sim-cheap's 8,000
    assert main(["explain", "--plain", "--demo", "--route", "default", "--tenant", "acme",
                 "--prompt", prompt]) == 0
    out = capsys.readouterr().out
    assert "route: default (strategy cheapest), picked by explicit" in out
    cheap = next(line for line in out.splitlines() if "sim-cheap" in line)
    assert " no " in cheap and "context window 8000 <" in cheap
    assert "attempt order: sim-flaky" in out


def test_explain_shows_quality_and_capability_drops_and_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "policies").mkdir()
    (tmp_path / "config" / "deployments.yaml").write_text(DEPLOYMENTS)
    (tmp_path / "policies" / "main.yaml").write_text(textwrap.dedent("""\
        routes:
          default: {targets: [small, large], constraints: {min_quality: 0.8}}
          agents: {targets: [small, large], constraints: {capabilities: [tools]}}
        rules:
          - {name: agent-calls, when: {tags: [agent]}, route: agents}
        """))
    monkeypatch.setenv("ROUTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("ROUTER_POLICY_DIR", str(tmp_path / "policies"))
    assert main(["explain", "--plain", "--prompt", "hi"]) == 0
    out = capsys.readouterr().out
    assert "quality 0.5 < min_quality 0.8" in out
    assert main(["explain", "--plain", "--tags", "agent", "--prompt", "hi"]) == 0
    out = capsys.readouterr().out
    assert "rule:  agent-calls" in out and "lacks capabilities ['tools']" in out
    assert main(["explain", "--json", "--tags", "agent", "--prompt", "hi"]) == 0
    e = Explanation.model_validate_json(capsys.readouterr().out)
    assert e.route == "agents" and e.order == ["large"]
    assert [(c.deployment, c.kept) for c in e.candidates] == [("small", False), ("large", True)]


def test_explain_unknown_route_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--demo", "--route", "nope"]) == 2
    assert "no route 'nope'" in capsys.readouterr().err


def test_validate_and_explain_never_import_litellm() -> None:
    code = ("import sys\nfrom router.cli import main\n"
            "assert main(['validate']) == 0\n"
            "assert main(['explain', '--demo', '--tags', 'interactive', '--prompt', 'hi']) == 0\n"
            "assert main(['explain', '--json', '--prompt', 'hi']) == 0\n"
            "assert 'litellm' not in sys.modules, 'litellm was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "LLM_ROUTER_PLAIN": "1"})
    assert done.returncode == 0, done.stderr


# -- chat, status, demo -----------------------------------------------------------------------


def test_chat_demo_prints_the_answer_and_where_it_came_from(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--plain", "--demo", "--route", "premium", "What is 2+2?"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "4"
    assert "-- deployment sim-smart (route premium) | tokens" in out and "latency" in out


def test_chat_demo_streams(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--plain", "--demo", "--stream", "--route", "interactive", "--max-tokens", "6",
                 "Tell me a story"]) == 0
    out = capsys.readouterr().out
    assert "-- deployment sim-fast" in out and "6 out" in out


def test_status_demo_probe_fills_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--plain", "--demo", "--probe", "2", "--json"]) == 0
    health = {h["name"]: h for h in json.loads(capsys.readouterr().out)}
    assert set(health) == {"sim-fast", "sim-cheap", "sim-smart", "sim-flaky", "sim-embed"}
    assert all(h["calls_in_window"] == 2 for h in health.values())
    assert health["sim-embed"]["p50_ms"] is not None


def test_demo_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(["demo", "--plain", "--duration", "3", "--rate", "8"]) == 0
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    assert "24 requests over 3s" in out and "sim-flaky degrades" in out
    for title in ("Deployments", "Tenants", "Circuit state changes"):
        assert f"\n{title}\n" in out
    assert "acme" in out and "sim-cheap" in out
    assert elapsed < 15, elapsed  # 3 s of traffic, up to 3 s of grace, and LiteLLM's import


def test_demo_decision_log_holds_no_prompt_or_answer_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "decisions.jsonl"
    monkeypatch.setenv("ROUTER_DECISION_LOG_PATH", str(log))
    assert main(["demo", "--plain", "--duration", "3", "--rate", "8"]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) >= 20  # one line per request the demo sent (24 planned, a few may still be in flight)
    assert {r["decision"]["route"] for r in records if r.get("decision")} >= {"default"}
    text = log.read_text()
    plan = plan_workload(load_trace(), duration_s=3, rate=8, rng=random.Random(7))
    prompts = [m.content for req in plan for m in req.messages()] + [t for req in plan for t in req.texts()]
    for prompt in prompts:
        head = prompt[:40]
        assert head not in text, f"prompt text {head!r} reached the decision log"
    assert '"content"' not in text and "Request 0 from" not in text


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("llm-router")
    if not script.exists():
        pytest.skip("the package is not installed in this environment")
    done = subprocess.run([str(script), "validate"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "OK  config:" in done.stdout, done.stderr


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--help"]) == 0
    assert "ROUTER_HEALTH_STORE_URL" in capsys.readouterr().out
    assert main([]) == 2


# -- the pieces -------------------------------------------------------------------------------


def test_workload_follows_the_trace_at_the_requested_rate() -> None:
    rows = load_trace()
    assert len(rows) == 1000 and rows[0].offset_s == 0.0
    plan = plan_workload(rows, duration_s=20, rate=8, rng=random.Random(7))
    assert len(plan) == 160
    assert all(0 <= a.at_s <= b.at_s < 20 for a, b in itertools.pairwise(plan))
    assert {r.tenant for r in plan} == {"acme", "globex", "initech"}
    assert {r.kind for r in plan} == {"chat", "stream", "embed"}
    assert all(1 <= r.max_tokens <= 256 for r in plan)
    assert plan == plan_workload(rows, duration_s=20, rate=8, rng=random.Random(7))


def test_tables_render_plain_and_with_rich() -> None:
    table = Table("T", [Column("name"), Column("n", right=True)], [["a", "1"], ["bb", "22"]])
    plain = io.StringIO()
    Output(plain=True, stream=plain).table(table)
    assert plain.getvalue().splitlines() == ["T", "  name   n", "  ────  ──", "  a      1", "  bb    22", ""]
    pytest.importorskip("rich")
    fancy = io.StringIO()
    Output(plain=False, stream=fancy).table(table)
    assert "bb" in fancy.getvalue() and "22" in fancy.getvalue()


def test_without_rich_a_terminal_gets_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install -e .` has no rich: the demo's tables and live line must still work."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setitem(sys.modules, "rich", None)  # import rich -> ImportError
    screen = Terminal()
    out = Output(stream=screen)
    assert out.plain and out.tty
    out.live_start()
    out.live_update("done 1/2")
    out.event("circuit sim-flaky: closed → open")
    out.live_stop()
    text = screen.getvalue()
    assert "\r\033[Kdone 1/2" in text and "circuit sim-flaky: closed → open\n" in text
