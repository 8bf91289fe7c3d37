"""The integration path against real providers, when their keys are in the environment.

Run with `pytest -m live`. Without keys every test is skipped and says why.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from router import Router, RouterSettings, create_default_router

pytestmark = pytest.mark.live

PROVIDERS = {
    "openai": ("OPENAI_API_KEY", "openai/gpt-4o-mini", "openai/text-embedding-3-small"),
    "anthropic": ("ANTHROPIC_API_KEY", "anthropic/claude-haiku-4-5", None),
}


def live_router_files(tmp_path: Path, provider: str) -> RouterSettings:
    key_env, model, embed_model = PROVIDERS[provider]
    if not os.environ.get(key_env):
        pytest.skip(f"{key_env} is not set: live tests against {provider} need a real key")
    lines = ["deployments:",
             "  - name: broken", f"    model: {model}", "    api_key_env: LIVE_BROKEN_KEY",
             "  - name: live", f"    model: {model}", f"    api_key_env: {key_env}", "    timeout_s: 30"]
    if embed_model:
        lines += ["  - name: live-embed", f"    model: {embed_model}", f"    api_key_env: {key_env}",
                  "    capabilities: [embeddings]"]
    (tmp_path / "config").mkdir()
    (tmp_path / "policies").mkdir()
    (tmp_path / "config" / "deployments.yaml").write_text("\n".join(lines) + "\n")
    routes = ["routes:", "  default:", "    targets: [broken, live]", "    max_tokens: 20"]
    if embed_model:
        routes += ["  embeddings:", "    targets: [live-embed]"]
    (tmp_path / "policies" / "live.yaml").write_text("\n".join(routes) + "\n")
    os.environ["LIVE_BROKEN_KEY"] = "sk-this-key-is-deliberately-wrong"
    return RouterSettings(config_dir=tmp_path / "config", policy_dir=tmp_path / "policies", reload_interval_s=0)


@pytest.fixture(params=sorted(PROVIDERS))
async def live(request: pytest.FixtureRequest, tmp_path: Path) -> Router:
    router = await create_default_router(live_router_files(tmp_path, request.param))
    return router


async def test_live_chat_falls_back_from_a_bad_key(live: Router) -> None:
    async with live:
        r = await live.complete("Say OK.")
        assert r.text and r.deployment == "live"
        assert r.attempts[0].error_type == "auth"
        assert r.cost_usd > 0 and r.usage.output_tokens > 0


async def test_live_stream(live: Router) -> None:
    async with live:
        chunks = [c async for c in live.stream("Count to three.", route="default")]
        assert chunks[-1].done and "".join(c.delta for c in chunks)


async def test_live_embed(live: Router) -> None:
    async with live:
        if live.source.current.embedding_route is None:
            pytest.skip("this provider has no embedding deployment configured")
        e = await live.embed("hello")
        assert len(e.embeddings[0]) > 100
