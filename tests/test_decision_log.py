"""The decision log: records what was decided and what happened, never what was said."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from router.context import RequestContext
from router.decision_log import DecisionLog, DecisionRecord, RecordReader, record_for
from router.health import BreakerConfig, HealthTracker
from router.models import Attempt
from router.policy.reload import ConfigFiles, load_snapshot
from router.policy.snapshot import Snapshot
from router.routing import decide

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Summarise the merger memo for ACME-7731 and the CFO's private notes"


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return load_snapshot(ConfigFiles(ROOT / "config/demo-deployments.yaml", (ROOT / "policies/demo.yaml",),
                                     ROOT / "config/demo-tenants.yaml"))


def served_record(snapshot: Snapshot, t: float = 1_700_000_000.0) -> DecisionRecord:
    ctx = RequestContext(operation="chat", tenant="acme", tags=frozenset({"batch"}), prompt_tokens=120,
                         max_tokens=64, metadata={"team": "search", "note": PROMPT})
    decision = decide(snapshot, ctx, HealthTracker(BreakerConfig(), clock=lambda: 0.0), random.Random(0))
    attempts = [Attempt(deployment="sim-flaky", outcome="error", error=f"upstream choked on: {PROMPT}",
                        error_type="unavailable", latency_ms=12.5),
                Attempt(deployment="sim-cheap", outcome="ok", latency_ms=230.0)]
    return record_for(ctx, time=t, decision=decision, attempts=attempts, deployment="sim-cheap",
                      input_tokens=120, output_tokens=40, cost_usd=0.000024, latency_ms=245.0,
                      allowed_metadata=frozenset({"team"}), capabilities=frozenset({"chat"}))


def test_a_record_holds_the_decision_and_outcome(snapshot: Snapshot) -> None:
    rec = served_record(snapshot)
    assert rec.metadata == {"team": "search"}  # "note" is not allow-listed
    assert rec.capabilities == ("chat",) and rec.tags == ("batch",)
    assert rec.decision is not None and rec.outcome is not None
    assert (rec.decision.rule, rec.decision.route, rec.decision.strategy) == (None, "default", "cheapest")
    assert rec.decision.source == "default route"
    verdicts = {c.deployment: (c.route, c.verdict, c.reason) for c in rec.decision.candidates}
    assert verdicts == {
        "sim-flaky": ("default", "failed", "unavailable"),
        "sim-cheap": ("default", "served", None),
        "sim-fast": ("default", "untried", None),
        "sim-smart": ("premium", "untried", None),  # via the fallback route
    }
    assert [(a.deployment, a.kind, a.latency_ms) for a in rec.outcome.attempts] == [
        ("sim-flaky", "unavailable", 12.5), ("sim-cheap", "ok", 230.0)]
    assert rec.context().prompt_tokens == 120 and rec.context().tags == frozenset({"batch"})


def test_the_schema_has_no_place_for_text() -> None:
    fields = set(DecisionRecord.model_fields)
    assert not fields & {"prompt", "messages", "completion", "text", "content", "input", "output"}
    with pytest.raises(ValueError, match="prompt"):
        DecisionRecord.model_validate({"time": 1.0, "tenant": "a", "prompt": PROMPT})


async def test_a_written_log_contains_no_prompt_text(snapshot: Snapshot, tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "decisions.jsonl")
    for i in range(50):
        assert log.write(served_record(snapshot, t=1_700_000_000.0 + i))
    # a mapping that tries to smuggle content in is refused, not written
    assert not log.write({"time": 1.0, "tenant": "acme", "prompt": PROMPT})
    assert not log.write({"time": 1.0, "tenant": "acme", "metadata": {"note": PROMPT * 10}})
    await log.aclose()
    text = (tmp_path / "decisions.jsonl").read_text(encoding="utf-8")
    assert (log.written, log.rejected, log.dropped) == (50, 2, 0)
    assert len(text.splitlines()) == 50
    for needle in (PROMPT, "ACME-7731", "merger", "choked"):
        assert needle not in text
    first = json.loads(text.splitlines()[0])
    assert first["tenant"] == "acme" and first["outcome"]["deployment"] == "sim-cheap"
    back = list(RecordReader(tmp_path / "decisions.jsonl"))
    assert back == [served_record(snapshot, t=1_700_000_000.0 + i) for i in range(50)]


async def test_files_rotate_by_size_and_read_back_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, max_bytes=1_000, backups=2)
    for i in range(100):
        log.write(DecisionRecord(time=float(i), tenant=f"tenant-{i:03d}", prompt_tokens=i))
    await log.aclose()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["d.jsonl", "d.jsonl.1", "d.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 1_000 for f in files)
    reader = RecordReader(path)
    times = [r.time for r in reader]
    assert times == sorted(times) and times[-1] == 99.0 and len(times) < 100  # the oldest rotated away
    assert times == [float(t) for t in range(int(times[0]), 100)]  # nothing lost in between
    assert reader.invalid == 0


async def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    stalled = threading.Event()
    drain = DecisionLog._drain

    def slow_drain(self: DecisionLog) -> None:
        stalled.wait(10)  # the disk is slow: nothing leaves the queue until released
        drain(self)

    monkeypatch.setattr(DecisionLog, "_drain", slow_drain)
    log = DecisionLog(tmp_path / "d.jsonl", max_queue=3)
    accepted = [log.write(DecisionRecord(time=float(i), tenant="t")) for i in range(10)]
    assert accepted == [True] * 3 + [False] * 7
    assert log.dropped == 7
    stalled.set()
    await log.aclose()
    assert log.written == 3
    assert [r.time for r in RecordReader(tmp_path / "d.jsonl")] == [0.0, 1.0, 2.0]
    assert not log.write(DecisionRecord(time=99.0, tenant="t"))  # closed: dropped, not raised


def test_unreadable_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    good = DecisionRecord(time=1.0, tenant="t").model_dump_json()
    path.write_text(f"{good}\nnot json\n{{\"v\": 99, \"time\": 2, \"tenant\": \"t\"}}\n\n{good}\n", encoding="utf-8")
    reader = RecordReader(path)
    assert len(list(reader)) == 2 and reader.invalid == 2
