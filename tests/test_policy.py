"""Loading, validating and compiling deployments and policies."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from router.context import RequestContext
from router.errors import ConfigError
from router.policy.loader import YamlLimits, load_yaml
from router.policy.reload import ConfigFiles, load_snapshot

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent

DEPLOYMENTS = """\
deployments:
  - name: a
    model: openai/a
    price: {input_per_mtok: 1, output_per_mtok: 2}
    quality: 0.9
    context_window: 1000
  - name: b
    model: openai/b
    price: {input_per_mtok: 0.1, output_per_mtok: 0.2}
    quality: 0.5
    context_window: 8000
    capabilities: [chat, tools]
"""

POLICY = """\
routes:
  default:
    strategy: cheapest
    targets: [a, b]
  premium:
    strategy: best_quality
    targets: [a, b]
    fallbacks: [default]
rules:
  - name: vip
    when: {tenant: vip}
    route: premium
  - when: {tags: [batch, nightly]}
    route: premium
default_route: default
"""


def write(tmp_path: Path, policy: str, deployments: str = DEPLOYMENTS) -> ConfigFiles:
    (tmp_path / "deployments.yaml").write_text(deployments)
    (tmp_path / "policy.yaml").write_text(textwrap.dedent(policy))
    return ConfigFiles(deployments=tmp_path / "deployments.yaml", policies=(tmp_path / "policy.yaml",))


def load_error(tmp_path: Path, policy: str, deployments: str = DEPLOYMENTS) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_snapshot(write(tmp_path, policy, deployments))
    return info.value


def test_valid_policy_compiles_with_static_orders(tmp_path: Path) -> None:
    snap = load_snapshot(write(tmp_path, POLICY))
    assert snap.default_route == "default"
    assert [d.name for d in snap.routes["default"].candidates] == ["a", "b"]
    assert snap.routes["premium"].fallback_chain == ("default",)
    assert snap.routes["default"].strategy.name == "cheapest"


def test_rules_match_first_and_all_conditions(tmp_path: Path) -> None:
    snap = load_snapshot(write(tmp_path, POLICY))
    vip = RequestContext(operation="chat", tenant="vip")
    assert snap.match_rule(vip) is not None
    assert snap.match_rule(vip).label == "vip"  # type: ignore[union-attr]
    only_batch = RequestContext(operation="chat", tenant="x", tags=frozenset({"batch"}))
    assert snap.match_rule(only_batch) is None
    both = RequestContext(operation="chat", tenant="x", tags=frozenset({"batch", "nightly", "extra"}))
    rule = snap.match_rule(both)
    assert rule is not None and rule.label.endswith("#rules[1]")


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, "routes:\n  default: [unclosed\n")
    assert err.file.endswith("policy.yaml")
    assert err.line is not None and err.line >= 2
    assert "invalid YAML" in str(err)


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    err = load_error(tmp_path, "routes:\n  default:\n    targets: [a]\n  default:\n    targets: [b]\n")
    assert "duplicate key 'default'" in str(err)
    assert err.line == 4


def test_unknown_strategy_names_field_path_and_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, "routes:\n  default:\n    strategy: random_walk\n    targets: [a]\n")
    assert err.field == "routes.default.strategy"
    assert err.line == 3
    assert "policy.yaml:3" in str(err)


def test_dangling_target(tmp_path: Path) -> None:
    err = load_error(tmp_path, "routes:\n  default:\n    targets: [a, ghost]\n")
    assert err.field == "routes.default.targets[1]"
    assert "unknown deployment 'ghost'" in str(err)


def test_fallback_cycle(tmp_path: Path) -> None:
    policy = """\
    routes:
      one: {targets: [a], fallbacks: [two]}
      two: {targets: [b], fallbacks: [three]}
      three: {targets: [a], fallbacks: [one]}
    """
    err = load_error(tmp_path, policy)
    assert "fallback cycle" in str(err)
    assert len(err.issues) == 1
    assert "one -> two -> three -> one" in str(err) or "two -> three -> one -> two" in str(err)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("{a: .nan, b: 1}", "finite"),
        ("{a: .inf, b: 1}", "finite"),
        ("{a: -1, b: 1}", "negative"),
        ("{a: 0, b: 0}", "all be zero"),
    ],
)
def test_bad_weights(tmp_path: Path, weights: str, message: str) -> None:
    policy = f"routes:\n  default:\n    strategy: weighted\n    targets: [a, b]\n    weights: {weights}\n"
    err = load_error(tmp_path, policy)
    assert message in str(err)
    assert err.field.startswith("routes.default")


def test_unknown_field_is_an_error_not_ignored(tmp_path: Path) -> None:
    err = load_error(tmp_path, "routes:\n  default:\n    targets: [a]\n    retires: {attempts: 2}\n")
    assert err.field == "routes.default.retires"
    assert "Extra inputs are not permitted" in str(err)


def test_constraints_that_drop_every_target(tmp_path: Path) -> None:
    err = load_error(tmp_path, "routes:\n  default:\n    targets: [a, b]\n    constraints: {min_quality: 0.95}\n")
    assert "no target satisfies" in str(err)


def test_constraints_drop_with_reasons(tmp_path: Path) -> None:
    policy = "routes:\n  default:\n    targets: [a, b]\n    constraints: {capabilities: [tools]}\n"
    snap = load_snapshot(write(tmp_path, policy))
    assert [d.name for d in snap.routes["default"].candidates] == ["b"]
    assert "lacks capabilities" in snap.routes["default"].dropped["a"]


def test_deployment_errors_name_the_deployments_file(tmp_path: Path) -> None:
    bad = DEPLOYMENTS.replace("context_window: 1000", "context_window: -5")
    err = load_error(tmp_path, POLICY, bad)
    assert err.file.endswith("deployments.yaml")
    assert err.field == "deployments[0].context_window"


def test_yaml_tags_that_build_objects_are_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, "routes: !!python/object/apply:os.system ['echo pwned']\n")
    assert "invalid YAML" in str(err)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    policy = "routes:\n  default:\n    targets: [ghost1, ghost2]\n    fallbacks: [nowhere]\n"
    err = load_error(tmp_path, policy)
    assert len(err.issues) == 3


@pytest.mark.parametrize(
    ("deployments", "policy"),
    [("config/deployments.yaml", "policies/default.yaml"), ("config/demo-deployments.yaml", "policies/demo.yaml")],
)
def test_shipped_files_are_valid(deployments: str, policy: str) -> None:
    snap = load_snapshot(ConfigFiles(deployments=ROOT / deployments, policies=(ROOT / policy,)))
    assert snap.default_route in snap.routes
    assert snap.embedding_route == "embeddings"


def test_yaml_11_booleans_stay_strings(tmp_path: Path) -> None:
    policy = "routes:\n  default:\n    targets: [a]\n    retry: {attempts: 2, on: [timeout]}\n"
    snap = load_snapshot(write(tmp_path, policy))
    assert snap.routes["default"].spec.retry.on == frozenset({"timeout"})


# -- hostile files: size and alias caps ------------------------------------------------------


def alias_bomb(levels: int) -> str:
    """A policy of ~60 bytes per level whose last anchor expands to 10**levels strings."""
    lines = ["x0: &x0 [a, a, a, a, a, a, a, a, a, a]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, levels)]
    lines.append(f"routes: {{default: {{targets: *x{levels - 1}}}}}")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_naming_file_line_and_limit(tmp_path: Path) -> None:
    # Without the cap this 368-byte file walks a million nodes (seconds); with it, nothing is expanded.
    bomb = alias_bomb(6)
    assert len(bomb) < 400
    err = load_error(tmp_path, bomb)
    assert err.file.endswith("policy.yaml") and len(err.issues) == 1
    assert err.line == 5  # x4, the first anchor over 100000 nodes (111111)
    assert "more than 100000 nodes" in str(err)
    assert "policy_max_yaml_nodes" in str(err) and "ROUTER_POLICY_MAX_YAML_NODES" in str(err)


def test_node_cap_is_configurable_and_counts_every_alias_use(tmp_path: Path) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text("base: &b [a, b, c]\nuses: [*b, *b, *b]\n")
    # root 1 + "base" 1 + [a, b, c] 4 + "uses" 1 + [*b, *b, *b] (1 + 3 * 4) = 20 nodes once expanded
    data, _ = load_yaml(path, YamlLimits(max_nodes=20))
    assert data["uses"] == [["a", "b", "c"]] * 3
    with pytest.raises(ConfigError, match="more than 19 nodes") as info:
        load_yaml(path, YamlLimits(max_nodes=19))
    assert info.value.file == str(path) and info.value.line == 1  # only the whole document is over 19
    with pytest.raises(ConfigError, match="more than 12 nodes") as info:
        load_yaml(path, YamlLimits(max_nodes=12))
    assert info.value.line == 2  # the sequence of three aliases weighs 13


def test_merge_keys_and_modest_aliases_still_load(tmp_path: Path) -> None:
    policy = "routes:\n  default: &b {strategy: cheapest, targets: [a, b]}\n  other: {<<: *b, fallbacks: [default]}\n"
    snap = load_snapshot(write(tmp_path, policy))
    assert snap.routes["other"].strategy.name == "cheapest"
    assert snap.routes["other"].fallback_chain == ("default",)
    assert [d.name for d in snap.routes["other"].candidates] == ["a", "b"]


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("routes:\n  default: &r {targets: [a], fallbacks: *r}\n")
    with pytest.raises(ConfigError, match="refers to the node that contains it") as info:
        load_yaml(path)
    assert info.value.line == 2


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    for depth in (900, 5000):
        path = tmp_path / f"deep{depth}.yaml"
        path.write_text("routes: " + "[" * depth + "]" * depth + "\n")
        with pytest.raises(ConfigError) as info:
            load_yaml(path)
        assert info.value.file == str(path)
        assert "nest" in str(info.value)


def test_a_50_mb_policy_is_refused_by_its_size_naming_file_and_limit(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    row = "".join(f"  r{i}: {{targets: [a, b], strategy: cheapest}}\n" for i in range(1000)).encode()
    with huge.open("wb") as f:
        f.write(b"routes:\n")
        for _ in range(50 * 2**20 // len(row) + 1):
            f.write(row)
    assert huge.stat().st_size > 50 * 2**20
    files = ConfigFiles(deployments=write(tmp_path, POLICY).deployments, policies=(huge,))
    with pytest.raises(ConfigError) as info:
        load_snapshot(files)
    assert info.value.file == str(huge) and len(info.value.issues) == 1
    message = str(info.value)
    assert f"file is {huge.stat().st_size} bytes, over the limit of 1048576 bytes" in message
    assert "policy_max_file_bytes" in message and "ROUTER_POLICY_MAX_FILE_BYTES" in message


def test_size_cap_is_configurable(tmp_path: Path) -> None:
    files = write(tmp_path, POLICY)
    sizes = {p: p.stat().st_size for p in files.all()}
    assert load_snapshot(ConfigFiles(files.deployments, files.policies,
                                     limits=YamlLimits(max_file_bytes=max(sizes.values()))))
    cap = sizes[files.policies[0]] - 1
    with pytest.raises(ConfigError) as info:
        load_snapshot(ConfigFiles(files.deployments, files.policies, limits=YamlLimits(max_file_bytes=cap)))
    issue = next(i for i in info.value.issues if i.file == str(files.policies[0]))
    assert f"over the limit of {cap} bytes" in issue.message


def test_a_fifo_among_the_policies_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_yaml(fifo)


def test_text_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("routes:\n  caf\u00e9: {targets: [a]}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_yaml(path)
    assert info.value.line == 2
