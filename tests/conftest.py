"""Shared fixtures: one simulator per session, routers built from YAML written per test.

Every test shares one event loop (pyproject sets the loop scope to session):
LiteLLM's logging worker is bound to the loop it first ran on.
"""

from __future__ import annotations

import asyncio
import io
import os
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest

from router import Router, RouterSettings, create_default_router
from router.sim import Fault, SimModel, SimServer

SIM_MODELS = [
    SimModel(name="sim-fast", ttft_ms=(2, 0), output_tokens=8, context_window=16000),
    SimModel(name="sim-cheap", ttft_ms=(2, 0), output_tokens=8, context_window=2000),
    SimModel(name="sim-smart", ttft_ms=(2, 0), output_tokens=8, context_window=128000),
    SimModel(name="sim-flaky", ttft_ms=(2, 0), output_tokens=8, context_window=32000),
    SimModel(name="sim-slow", output_tokens=8, hang_s=5, error_rates={Fault.HANG: 1.0}),
    SimModel(name="sim-locked", ttft_ms=(0, 0), output_tokens=4, required_api_key="sk-right-key"),
    SimModel(name="sim-embed", embedding_dim=16),
]


@pytest.fixture(scope="session")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(SIM_MODELS, seed=11) as server:
        yield server


@pytest.fixture
async def fresh_sim(sim: SimServer) -> SimServer:
    """The session's simulator with counters zeroed and no scripted faults left over."""
    sim.restore()
    sim.reset_stats()
    return sim


def deployments_yaml(base_url: str) -> str:
    """The simulated deployments, as ops would write them, pointing at `base_url`."""
    priced = [  # name, context window, input $/Mtok, output $/Mtok, quality
        ("sim-fast", 16000, 0.5, 1.5, 0.75),
        ("sim-cheap", 4000, 0.1, 0.3, 0.6),
        ("sim-smart", 128000, 3.0, 12.0, 0.92),
        ("sim-flaky", 32000, 0.05, 0.15, 0.65),
    ]
    lines = ["deployments:"]
    for name, window, inp, outp, quality in priced:
        lines += [
            f"  - name: {name}",
            f"    model: openai/{name}",
            f"    api_base: {base_url}",
            "    api_key_env: SIM_TEST_KEY",
            f"    price: {{input_per_mtok: {inp}, output_per_mtok: {outp}}}",
            f"    quality: {quality}",
            f"    context_window: {window}",
            "    timeout_s: 2",
        ]
    lines += [
        "  - name: sim-slow",
        "    model: openai/sim-slow",
        f"    api_base: {base_url}",
        "    api_key_env: SIM_TEST_KEY",
        "    timeout_s: 0.3",
        "  - name: sim-locked",
        "    model: openai/sim-locked",
        f"    api_base: {base_url}",
        "    api_key_env: SIM_LOCKED_KEY",
        "  - name: sim-embed",
        "    model: openai/sim-embed",
        f"    api_base: {base_url}",
        "    api_key_env: SIM_TEST_KEY",
        "    capabilities: [embeddings]",
        "    price: {input_per_mtok: 0.02}",
    ]
    return "\n".join(lines) + "\n"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI (ROUTER_REQUIRE_REDIS=1) a Redis test that would skip for want of Redis fails instead."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("ROUTER_REQUIRE_REDIS") == "1" and report.skipped and "redis" in str(report.longrepr).lower():
        report.outcome = "failed"


RouterFactory = Callable[..., Awaitable[Router]]

#: Seconds a fixture gives its routers to close (well inside pytest-timeout's 60 s per test).
CLOSE_WITHIN_S = 20.0


async def close_routers(routers: Sequence[Router], within_s: float = CLOSE_WITHIN_S) -> None:
    """Close every router; if that takes over `within_s`, fail naming what the loop still waits
    for (this close's await chain and every other pending task's stack) rather than hang until
    the test's timeout says only "Timeout"."""
    me = asyncio.current_task()
    seen: list[str] = []

    def look() -> None:  # just before the deadline, while the close is still suspended where it hangs
        coro: Any = me.get_coro() if me is not None else None
        while coro is not None and getattr(coro, "cr_frame", None) is not None:
            frame = coro.cr_frame
            seen.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
            coro = coro.cr_await
        out = io.StringIO()
        for task in asyncio.all_tasks():
            if task is not me:
                task.print_stack(limit=12, file=out)
        seen.append(out.getvalue())

    watch = asyncio.get_running_loop().call_later(within_s * 0.99, look)
    try:
        async with asyncio.timeout(within_s):
            for r in routers:
                await r.aclose()
    except TimeoutError:
        raise AssertionError(f"routers did not close within {within_s:g} s; the close waits at:\n"
                             + "\n".join(seen)) from None
    finally:
        watch.cancel()


class FakeClock:
    """A monotonic clock that moves only when a test says so: no test sleeps or depends on speed.

    Call it for the time in seconds; `advance` moves it; `sleep` is an async stand-in for
    `asyncio.sleep` that records the wait in `sleeps` and moves the clock by it at once.
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fresh `FakeClock` at t=1000 s."""
    return FakeClock()


@pytest.fixture
async def make_router(tmp_path: Path, fresh_sim: SimServer) -> AsyncIterator[RouterFactory]:
    """Write a policy (and optionally tenants) next to the sim's deployments and build a router."""
    routers: list[Router] = []
    os.environ["SIM_TEST_KEY"] = "sk-test-0123456789abcdef"
    os.environ["SIM_LOCKED_KEY"] = "sk-wrong-key-0123456789"

    async def build(policy: str, *, tenants: str | None = None, deployments: str | None = None,
                    clock: Callable[[], float] | None = None, **settings: object) -> Router:
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "policies").mkdir(exist_ok=True)
        written = deployments.replace("{base_url}", fresh_sim.base_url) if deployments else None
        (tmp_path / "config" / "deployments.yaml").write_text(written or deployments_yaml(fresh_sim.base_url))
        (tmp_path / "policies" / "main.yaml").write_text(textwrap.dedent(policy))
        if tenants is not None:
            (tmp_path / "config" / "tenants.yaml").write_text(textwrap.dedent(tenants))
        options: dict[str, object] = {
            "config_dir": tmp_path / "config", "policy_dir": tmp_path / "policies",
            "reload_interval_s": 0, "seed": 1,
        }
        options.update(settings)
        extra = {"clock": clock} if clock is not None else {}
        router = await create_default_router(RouterSettings(**options), **extra)  # type: ignore[arg-type]
        routers.append(router)
        return router

    yield build
    await close_routers(routers)
