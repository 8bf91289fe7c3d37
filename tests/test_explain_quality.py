"""`explain` with a quality tracker: each candidate's YAML prior, measured quality, scores and blend."""

from __future__ import annotations

import asyncio
import random
import textwrap
import uuid
from pathlib import Path

import pytest

from router.cli import main
from router.cli_render import Output, print_explanation
from router.context import RequestContext
from router.explain import Explanation, explain
from router.health import BreakerConfig, HealthTracker
from router.policy.snapshot import Snapshot, compile_snapshot
from router.quality import QualityTracker, tracker_from_url
from router.schema import Deployment, PolicyFile, Price, Route
from router.strategies_learned import PRIOR_WEIGHT
from tests.conftest import FakeClock
from tests.test_quality import REDIS_URL, needs_redis

pytestmark = pytest.mark.timeout(30)


def dep(name: str, quality: float, price: float = 1.0) -> Deployment:
    return Deployment(name=name, model=f"openai/{name}", quality=quality,
                      price=Price(input_per_mtok=price, output_per_mtok=price))


def snapshot(strategy: str = "best_quality") -> Snapshot:
    deployments = [dep("strong", 0.9, 5.0), dep("weak", 0.6, 1.0)]
    policy = PolicyFile(routes={"default": Route(strategy=strategy, targets=("strong", "weak"))})
    return compile_snapshot(deployments, "d.yaml", [("p.yaml", policy)])


def ctx(task: str | None = None) -> RequestContext:
    return RequestContext(operation="chat", tenant="t", route="default", metadata={"task": task} if task else {})


@pytest.fixture
def health(clock: FakeClock) -> HealthTracker:
    return HealthTracker(BreakerConfig(), clock=clock)


@pytest.fixture
def quality(clock: FakeClock) -> QualityTracker:
    return QualityTracker(clock=clock)


def by_name(e: Explanation) -> dict[str, dict[str, object]]:
    return {c.deployment: c.model_dump() for c in e.candidates}


def test_without_a_tracker_only_the_prior_is_shown(health: HealthTracker) -> None:
    e = explain(snapshot(), ctx(), health, random.Random(0))
    assert e.order == ["strong", "weak"] and not e.quality_feedback
    strong = by_name(e)["strong"]
    assert strong["quality"] == 0.9 and strong["quality_measured"] is None and strong["quality_samples"] == 0
    # best_quality learns: its blend is shown even without feedback, and is then exactly the prior
    assert strong["quality_blended"] == pytest.approx(0.9) and strong["score"] == pytest.approx(-0.9)


async def test_feedback_shows_measured_quality_and_reorders_best_quality(
        health: HealthTracker, quality: QualityTracker) -> None:
    snap = snapshot()
    empty = explain(snap, ctx(), health, random.Random(0), quality=quality)
    assert empty.quality_feedback and empty.order == ["strong", "weak"]
    assert all(c.quality_measured is None and c.quality_samples == 0 for c in empty.candidates)

    for _ in range(40):
        await quality.record("strong", "default", 0.2)
        await quality.record("weak", "default", 1.0)
    e = explain(snap, ctx(), health, random.Random(0), quality=quality)
    rows = by_name(e)
    assert rows["strong"]["quality_measured"] == pytest.approx(0.2)
    assert rows["weak"]["quality_measured"] == pytest.approx(1.0)
    assert rows["strong"]["quality_samples"] == rows["weak"]["quality_samples"] == 40
    # The blend: the YAML prior worth PRIOR_WEIGHT scores plus 40 measured ones, as the strategy ranks
    k = PRIOR_WEIGHT
    assert rows["strong"]["quality_blended"] == pytest.approx((k * 0.9 + 40 * 0.2) / (k + 40))
    assert rows["weak"]["quality_blended"] == pytest.approx((k * 0.6 + 40 * 1.0) / (k + 40))
    assert rows["weak"]["score"] == pytest.approx(-(k * 0.6 + 40) / (k + 40))
    assert e.order == ["weak", "strong"]  # the measurement overturned the YAML ranking
    # the same tracker unread (no quality argument): the YAML order again
    assert explain(snap, ctx(), health, random.Random(0)).order == ["strong", "weak"]


async def test_a_task_with_its_own_feedback_is_explained_by_it(
        health: HealthTracker, quality: QualityTracker) -> None:
    for _ in range(5):
        await quality.record("weak", "default", 0.0, task="code")
    await quality.record("weak", "default", 1.0, task="chat")
    code = by_name(explain(snapshot(), ctx("code"), health, random.Random(0), quality=quality))["weak"]
    assert code["quality_measured"] == pytest.approx(0.0) and code["quality_samples"] == 5
    other = by_name(explain(snapshot(), ctx("summarise"), health, random.Random(0), quality=quality))["weak"]
    # no feedback on that task: the route-level figure, as the strategy would read it
    assert other["quality_measured"] == pytest.approx(1 / 6) and other["quality_samples"] == 6


async def test_a_strategy_that_does_not_learn_shows_the_measurement_but_no_blend(
        health: HealthTracker, quality: QualityTracker) -> None:
    await quality.record("strong", "default", 0.5)
    e = explain(snapshot("cheapest"), ctx(), health, random.Random(0), quality=quality)
    rows = by_name(e)
    assert rows["strong"]["quality_measured"] == pytest.approx(0.5) and rows["strong"]["quality_samples"] == 1
    assert rows["strong"]["quality_blended"] is None
    assert e.order == ["weak", "strong"]  # cheapest does not care


async def test_text_output_has_the_quality_columns_only_with_a_tracker(
        health: HealthTracker, quality: QualityTracker, capsys: pytest.CaptureFixture[str]) -> None:
    print_explanation(explain(snapshot(), ctx(), health, random.Random(0)), Output(plain=True))
    assert "blended" not in capsys.readouterr().out
    for _ in range(3):
        await quality.record("strong", "default", 0.5)
    print_explanation(explain(snapshot(), ctx(), health, random.Random(0), quality=quality), Output(plain=True))
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "deployment" in line and "measured" in line)
    assert header.split()[-3:] == ["measured", "n", "blended"]
    strong = next(line for line in out.splitlines() if " strong " in line)
    blend = (PRIOR_WEIGHT * 0.9 + 3 * 0.5) / (PRIOR_WEIGHT + 3)
    assert strong.split()[-3:] == ["0.50", "3", f"{blend:.3f}"]
    weak = next(line for line in out.splitlines() if " weak " in line)
    assert weak.split()[-3:] == ["-", "0", "0.600"]


DEPLOYMENTS = """\
deployments:
  - {name: strong, model: openai/strong, quality: 0.9, price: {input_per_mtok: 5, output_per_mtok: 5}}
  - {name: weak, model: openai/weak, quality: 0.6, price: {input_per_mtok: 1, output_per_mtok: 1}}
"""


@needs_redis
@pytest.mark.timeout(60)
async def test_cli_explain_reads_feedback_from_the_shared_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Scores a router recorded in Redis reach `llm-router explain`, a separate tracker."""
    import redis.asyncio

    (tmp_path / "config").mkdir()
    (tmp_path / "policies").mkdir()
    (tmp_path / "config" / "deployments.yaml").write_text(DEPLOYMENTS)
    (tmp_path / "policies" / "main.yaml").write_text(textwrap.dedent("""\
        routes:
          default: {strategy: best_quality, targets: [strong, weak]}
        """))
    prefix = f"test-explain-{uuid.uuid4().hex}:"
    url = f"{REDIS_URL}?prefix={prefix}"
    writer = tracker_from_url(url)
    try:
        for _ in range(40):
            await writer.record("strong", "default", 0.0)
        monkeypatch.setenv("ROUTER_CONFIG_DIR", str(tmp_path / "config"))
        monkeypatch.setenv("ROUTER_POLICY_DIR", str(tmp_path / "policies"))
        monkeypatch.setenv("ROUTER_QUALITY_STORE_URL", url)
        # main() runs its own event loop (asyncio.run): off this test's loop, in a thread
        code = await asyncio.to_thread(main, ["explain", "--json", "--route", "default", "--prompt", "hi"])
        assert code == 0
        e = Explanation.model_validate_json(capsys.readouterr().out)
        strong = next(c for c in e.candidates if c.deployment == "strong")
        assert strong.quality_measured == pytest.approx(0.0) and strong.quality_samples == 40
        assert e.order == ["weak", "strong"] and e.quality_feedback
    finally:
        await writer.aclose()
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_cli_explain_says_when_the_quality_store_is_unreachable(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROUTER_QUALITY_STORE_URL", "redis://127.0.0.1:1/0?prefix=nowhere:")  # nothing listens
    code = await asyncio.to_thread(main, ["explain", "--json", "--demo", "--prompt", "hi"])
    assert code == 0
    captured = capsys.readouterr()
    assert "quality store redis://127.0.0.1:1/0 unreachable" in captured.err
    e = Explanation.model_validate_json(captured.out)
    assert not e.quality_feedback and e.order  # explained all the same, without claiming "nothing measured"
