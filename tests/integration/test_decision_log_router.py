"""The decision log on the real request path: one line per request, no text, and replayable by the CLI."""

from __future__ import annotations

import json
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from router import Router
from router.cli import main
from router.errors import RouterError
from router.sim import Fault, SimServer
from tests.conftest import RouterFactory

pytestmark = pytest.mark.timeout(90)

POLICY = """\
default_route: default
embedding_route: embed
routes:
  default:
    strategy: fallback
    targets: [sim-flaky, sim-fast]
    retry: {attempts: 1}
  flaky-only:
    targets: [sim-flaky]
    retry: {attempts: 1}
  cached:
    targets: [sim-fast]
    cache: {mode: read_write}
  embed:
    targets: [sim-embed]
"""

TENANTS = """\
unknown_tenants: reject
tenants:
  acme: {usd_per_day: 100}
  broke: {usd_per_day: 0}
"""

SYSTEM = "SYSTEM-MARKER be terse"


class Traffic:
    """Sends requests and keeps every text that went out or came back, to look for in the log."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.texts: list[str] = [SYSTEM]
        self.outcomes: Counter[str] = Counter()

    def prompt(self, label: str) -> list[dict[str, str]]:
        text = f"PROMPT-MARKER {label} {uuid.uuid4().hex}"
        self.texts.append(text)
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]

    async def chat(self, label: str, messages: list[dict[str, str]] | None = None, **kwargs: Any) -> None:
        try:
            response = await self.router.chat(messages or self.prompt(label), **kwargs)
        except RouterError as exc:
            self.outcomes[type(exc).__name__] += 1
            return
        self.texts.append(response.text)
        self.outcomes["cached" if response.cached else "ok"] += 1

    async def stream(self, label: str) -> None:
        deltas = [c.delta async for c in self.router.stream(self.prompt(label), tenant="acme")]
        self.texts.append("".join(deltas))
        self.outcomes["ok"] += 1

    async def embed(self, label: str) -> None:
        text = f"EMBED-MARKER {label} {uuid.uuid4().hex}"
        self.texts.append(text)
        await self.router.embed([text], tenant="acme")
        self.outcomes["ok"] += 1


async def send_fifty(router: Router, sim: SimServer) -> Traffic:
    traffic = Traffic(router)
    sim.script("sim-flaky", [Fault.SERVER_ERROR, Fault.NONE] * 5)  # five fallbacks in the first ten
    for i in range(20):
        await traffic.chat(f"default {i}", tenant="acme", metadata={"task": "summary", "secret": "HIDDEN-VALUE"})
    sim.script("sim-flaky", [Fault.SERVER_ERROR] * 5)
    for i in range(5):
        await traffic.chat(f"failing {i}", tenant="acme", route="flaky-only")
    for i in range(5):
        await traffic.chat(f"broke {i}", tenant="broke")
    for i in range(2):
        await traffic.chat(f"stranger {i}", tenant="mallory")
    for i in range(3):
        await traffic.chat(f"nowhere {i}", tenant="acme", route="no-such-route")
    repeated = traffic.prompt("cached")
    for _ in range(5):
        await traffic.chat("cached", repeated, tenant="acme", route="cached", temperature=0)
    for i in range(5):
        await traffic.stream(f"stream {i}")
    for i in range(5):
        await traffic.embed(f"embed {i}")
    return traffic


async def test_fifty_requests_make_fifty_lines_without_text_and_replay(
    make_router: RouterFactory, fresh_sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "logs" / "decisions.jsonl"
    router = await make_router(POLICY, tenants=TENANTS, decision_log_path=log,
                               decision_log_metadata_keys=frozenset({"task"}))
    traffic = await send_fifty(router, fresh_sim)
    assert traffic.outcomes == Counter({"ok": 31, "cached": 4, "AllAttemptsFailed": 5, "QuotaExceeded": 5,
                                        "TenantNotAllowed": 2, "NoRouteAvailable": 3})
    await router.aclose()  # writes what is queued

    text = log.read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 50
    for needle in [*traffic.texts, "HIDDEN-VALUE", "PROMPT-MARKER", "EMBED-MARKER", "SYSTEM-MARKER"]:
        assert needle and needle not in text, f"{needle[:40]!r} reached the decision log"

    errors = Counter(r["outcome"].get("error") for r in records)
    assert len(errors) == 5, errors  # the five failures of flaky-only share one kind
    assert errors[None] == 35 and errors["quota_exceeded"] == 5 and errors["tenant_not_allowed"] == 2
    assert errors["no_route"] == 3 and sorted(errors.values()) == [2, 3, 5, 5, 35]
    refused = [r for r in records if r["outcome"].get("error") == "quota_exceeded"]
    assert all(r["outcome"]["limit"] == "usd_per_day" and r["tenant"] == "broke" for r in refused)
    assert sum(r["outcome"].get("cached", False) for r in records) == 4
    fell_back = [r for r in records if r["outcome"].get("deployment") and r["outcome"]["attempts"][0]["kind"]
                 not in ("ok", "circuit_open")]
    assert len(fell_back) == 5 and all(r["outcome"]["deployment"] == "sim-fast" for r in fell_back)
    # flaky-only's five failures opened sim-flaky's circuit: the streams after them skipped it.
    skipped = [r for r in records if r["stream"]]
    assert len(skipped) == 5 and all(r["outcome"]["attempts"][0]["kind"] == "circuit_open" for r in skipped)
    assert {r["operation"] for r in records} == {"chat", "embeddings"}
    assert sum(r["stream"] for r in records) == 5
    tasks = [r for r in records if r.get("metadata")]
    assert len(tasks) == 20 and all(r["metadata"] == {"task": "summary"} for r in tasks)

    capsys.readouterr()
    assert main(["replay", "--log", str(log), "--policy", str(tmp_path)]) == 0
    same = capsys.readouterr().out
    assert same.startswith("replayed 50 requests in ") and "as logged -> " in same and "lost 0" in same

    assert main(["replay", "--log", str(log), "--policy", str(tmp_path), "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert as_json["requests"] == 50 and as_json["lost"] == 0
    # the four cache hits stay hits: served at no cost, under the log and under the policy
    assert as_json["old"]["deployments"]["(cache)"] == 4 and as_json["new"]["deployments"]["(cache)"] == 4
    assert as_json["old"]["served"] == 35 and as_json["old"]["quota_rejected"] == 7

    edited = tmp_path / "edited"
    shutil.copytree(tmp_path / "config", edited / "config")
    shutil.copytree(tmp_path / "policies", edited / "policies")
    policy = edited / "policies" / "main.yaml"
    policy.write_text(policy.read_text().replace("targets: [sim-flaky, sim-fast]", "targets: [sim-fast, sim-flaky]"))
    assert main(["replay", "--log", str(log), "--policy", str(edited), "--against", str(tmp_path)]) == 0
    diff = capsys.readouterr().out
    assert "replayed 50 requests" in diff and "moved" in diff and "lost 0" in diff


async def test_a_request_whose_attempts_all_failed_is_logged_as_all_failed(
    make_router: RouterFactory, fresh_sim: SimServer, tmp_path: Path
) -> None:
    log = tmp_path / "decisions.jsonl"
    router = await make_router(POLICY, tenants=TENANTS, decision_log_path=log)
    fresh_sim.script("sim-flaky", [Fault.SERVER_ERROR])
    traffic = Traffic(router)
    await traffic.chat("failing", tenant="acme", route="flaky-only")
    assert traffic.outcomes == Counter({"AllAttemptsFailed": 1})
    await router.aclose()
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["outcome"]["error"] == "all_failed"
