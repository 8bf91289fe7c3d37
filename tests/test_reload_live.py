"""Hostile policy files arriving during live traffic: the loop keeps ticking, the old policy keeps serving.

Requests go through the router and LiteLLM to the simulator while an alias bomb
and a 50 MB policy land in the policy directory. A ticker task measures the
longest gap between its ticks; before the caps and the worker thread, the same
files stalled every request for seconds.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from router import Router
from tests.conftest import RouterFactory
from tests.test_policy import alias_bomb

pytestmark = pytest.mark.timeout(120)

POLICY = """\
default_route: default
routes:
  default: {targets: [sim-fast]}
"""
MAX_GAP_S = 0.1


class LoopWatch:
    """Ticks every 5 ms until stopped; `max_gap_s` is the longest wait between two ticks."""

    def __init__(self) -> None:
        self.max_gap_s = 0.0
        self.ticks = 0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = loop.time()
            self.max_gap_s = max(self.max_gap_s, now - last)
            self.ticks += 1
            last = now


async def serve(router: Router, stop: asyncio.Event, served: list[str]) -> None:
    """Complete one request after another until stopped; any failure fails the test."""
    while not stop.is_set():
        served.append((await router.complete("hi")).deployment)


async def served_more(served: list[str], n: int) -> None:
    start = len(served)
    while len(served) < start + n:
        await asyncio.sleep(0.01)


async def warm_up(router: Router) -> None:
    """Keep one-off costs out of the measured window: LiteLLM's lazy imports on its first call,
    and a full garbage collection owed by earlier tests."""
    await router.complete("hi")
    gc.collect()


def write_huge_policy(path: Path, size: int) -> None:
    """A valid policy of `size` bytes or more: parsing it would take minutes."""
    rows = "".join(f"  r{i}: {{targets: [sim-fast], strategy: cheapest}}\n" for i in range(1000)).encode()
    with path.open("wb") as f:
        f.write(b"routes:\n")
        for _ in range(size // len(rows) + 1):
            f.write(rows)


async def test_alias_bomb_and_50_mb_policy_never_stall_live_traffic(
    make_router: RouterFactory, tmp_path: Path
) -> None:
    router = await make_router(POLICY)
    policies = tmp_path / "policies"
    huge = tmp_path / "huge.yaml"
    await asyncio.to_thread(write_huge_policy, huge, 50 * 2**20)
    await warm_up(router)
    stop, watch, served = asyncio.Event(), LoopWatch(), list[str]()
    running = asyncio.gather(watch.run(stop), serve(router, stop, served))
    try:
        await served_more(served, 3)
        (policies / "bomb.yaml").write_text(alias_bomb(7))  # 10 million strings once expanded
        bomb = await router.source.areload()
        await served_more(served, 3)
        (policies / "bomb.yaml").unlink()
        huge.rename(policies / "huge.yaml")
        oversized = await router.source.areload()
        await served_more(served, 3)
    finally:
        stop.set()
        await running
    assert bomb.error is not None and not bomb.ok and not bomb.deferred
    assert bomb.error.file.endswith("bomb.yaml") and "more than 100000 nodes" in str(bomb.error)
    assert oversized.error is not None and oversized.error.file.endswith("huge.yaml")
    assert "over the limit of 1048576 bytes" in str(oversized.error)
    assert watch.ticks > 0 and watch.max_gap_s < MAX_GAP_S, f"event loop stalled {watch.max_gap_s * 1000:.0f} ms"
    assert router.source.current.version == 0 and router.last_reload_error is oversized.error
    assert len(served) >= 9 and set(served) == {"sim-fast"}


async def test_the_watcher_rejects_a_bomb_off_loop_then_loads_the_fix(
    make_router: RouterFactory, tmp_path: Path
) -> None:
    router = await make_router(POLICY, reload_interval_s=0.05)
    policies = tmp_path / "policies"
    await warm_up(router)
    stop, watch, served = asyncio.Event(), LoopWatch(), list[str]()
    running = asyncio.gather(watch.run(stop), serve(router, stop, served))
    try:
        await served_more(served, 3)
        (policies / "bomb.yaml").write_text(alias_bomb(7))
        while router.last_reload_error is None:  # bounded by the test's timeout
            await asyncio.sleep(0.02)
        await served_more(served, 3)
        (policies / "bomb.yaml").unlink()
        (policies / "main.yaml").write_text(POLICY.replace("[sim-fast]", "[sim-smart]"))
        while router.source.current.version == 0:
            await asyncio.sleep(0.02)
        await served_more(served, 3)
    finally:
        stop.set()
        await running
    assert watch.max_gap_s < MAX_GAP_S, f"event loop stalled {watch.max_gap_s * 1000:.0f} ms"
    assert router.last_reload_error is None and router.source.current.version == 1
    assert served[0] == "sim-fast" and served[-1] == "sim-smart"
