"""Tenants' own keys and deployments on the real request path, through LiteLLM to the simulator."""

from __future__ import annotations

import pytest

from router import NoRouteAvailable
from router.health import CircuitState
from router.sim import Fault, SimServer
from tests.conftest import RouterFactory

pytestmark = pytest.mark.timeout(60)

PROMPT = [{"role": "user", "content": "hi"}]
SHARED_KEY = "sk-test-0123456789abcdef"  # what conftest's make_router puts in SIM_TEST_KEY
ACME_KEY = "sk-acme-own-key-0001"


async def test_a_tenants_key_goes_to_its_requests_only(
    make_router: RouterFactory, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_SIM_KEY", ACME_KEY)
    router = await make_router("routes:\n  default: {targets: [sim-fast]}\n", tenants="""\
        unknown_tenants: default
        tenants:
          default: {}
          acme: {keys: {sim-fast: ACME_SIM_KEY}}
        """)
    mine = await router.chat(PROMPT, tenant="acme", max_tokens=4)
    assert mine.deployment == "sim-fast@acme"
    recorded = fresh_sim.last_request("sim-fast")
    assert recorded is not None and recorded.api_key == ACME_KEY
    assert ACME_KEY not in repr(mine) and ACME_KEY not in repr(router.source.current.deployments["sim-fast@acme"])

    theirs = await router.chat(PROMPT, tenant="globex", max_tokens=4)
    assert theirs.deployment == "sim-fast"
    assert [r.api_key for r in fresh_sim.requests("sim-fast")] == [ACME_KEY, SHARED_KEY]


async def test_a_provider_key_covers_every_deployment_of_that_provider(
    make_router: RouterFactory, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_OPENAI_KEY", ACME_KEY)
    router = await make_router("routes:\n  default: {strategy: fallback, targets: [sim-cheap, sim-fast]}\n",
                               tenants="""\
        unknown_tenants: default
        tenants:
          default: {}
          acme: {keys: {openai: ACME_OPENAI_KEY}}
        """)
    fresh_sim.script("sim-cheap", [Fault.SERVER_ERROR])  # acme's first choice fails: the fallback uses acme's key too
    answer = await router.chat(PROMPT, tenant="acme", max_tokens=4)
    assert answer.deployment == "sim-fast@acme"
    assert [r.api_key for r in fresh_sim.requests("sim-cheap")] == [ACME_KEY]
    assert [r.api_key for r in fresh_sim.requests("sim-fast")] == [ACME_KEY]


async def test_a_401_on_a_tenants_key_cools_its_copy_not_the_shared_deployment(
    make_router: RouterFactory, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = await make_router("""\
        routes:
          default: {strategy: fallback, targets: [sim-locked, sim-fast], retry: {attempts: 1}}
        """, tenants="""\
        unknown_tenants: default
        tenants:
          default: {}
          acme: {keys: {sim-locked: ACME_LOCKED_KEY}}
        """)
    monkeypatch.setenv("SIM_LOCKED_KEY", "sk-right-key")  # the shared key is good
    monkeypatch.setenv("ACME_LOCKED_KEY", "sk-acme-revoked")  # acme's is not

    first = await router.chat(PROMPT, tenant="acme", max_tokens=4)
    assert first.deployment == "sim-fast"
    assert [(a.deployment, a.outcome) for a in first.attempts][:1] == [("sim-locked@acme", "error")]
    tracker = router.tracker
    assert not tracker.available("sim-locked@acme")
    assert tracker.unavailable_reason("sim-locked@acme") is not None
    assert tracker.available("sim-locked") and tracker.state("sim-locked") is CircuitState.CLOSED

    other = await router.chat(PROMPT, tenant="globex", max_tokens=4)
    assert other.deployment == "sim-locked"  # the shared deployment still serves everyone else

    again = await router.chat(PROMPT, tenant="acme", max_tokens=4)
    assert again.deployment == "sim-fast"  # acme's cooled copy is skipped, not retried
    keys = [r.api_key for r in fresh_sim.requests("sim-locked")]
    assert keys == ["sk-acme-revoked", "sk-right-key"]
    assert all("sk-acme-revoked" not in (a.error or "") for a in first.attempts)


async def test_an_own_deployment_serves_its_owner_and_is_invisible_to_others(
    make_router: RouterFactory, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_PRIVATE_KEY", ACME_KEY)
    router = await make_router("""\
        routes:
          default: {strategy: fallback, targets: [acme-private, sim-cheap]}
          private: {targets: [acme-private]}
        """, tenants=f"""\
        unknown_tenants: default
        tenants:
          default: {{}}
          acme:
            own_deployments:
              - name: acme-private
                model: openai/sim-smart
                api_base: {fresh_sim.base_url}
                api_key_env: ACME_PRIVATE_KEY
                price: {{input_per_mtok: 1}}
        """)
    mine = await router.chat(PROMPT, tenant="acme", max_tokens=4)
    assert mine.deployment == "acme-private"
    assert [r.api_key for r in fresh_sim.requests("sim-smart")] == [ACME_KEY]

    theirs = await router.chat(PROMPT, tenant="globex", max_tokens=4)
    assert theirs.deployment == "sim-cheap"
    assert [a.deployment for a in theirs.attempts] == ["sim-cheap"]
    with pytest.raises(NoRouteAvailable) as info:
        await router.chat(PROMPT, tenant="globex", route="private", max_tokens=4)
    assert "acme-private" not in str(info.value)
    assert len(fresh_sim.requests("sim-smart")) == 1  # globex never reached acme's deployment


async def test_an_override_replaces_the_shared_deployment_for_its_owner(
    make_router: RouterFactory, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_AZURE_KEY", ACME_KEY)
    router = await make_router("routes:\n  default: {targets: [sim-fast]}\n", tenants=f"""\
        unknown_tenants: default
        tenants:
          default: {{}}
          acme:
            own_deployments:
              - name: sim-fast
                overrides: sim-fast
                model: openai/sim-smart
                api_base: {fresh_sim.base_url}
                api_key_env: ACME_AZURE_KEY
        """)
    mine = await router.chat(PROMPT, tenant="acme", max_tokens=4)
    assert mine.deployment == "sim-fast@acme"
    assert [r.api_key for r in fresh_sim.requests("sim-smart")] == [ACME_KEY]
    assert fresh_sim.requests("sim-fast") == ()
    theirs = await router.chat(PROMPT, tenant="globex", max_tokens=4)
    assert theirs.deployment == "sim-fast"
    assert [r.api_key for r in fresh_sim.requests("sim-fast")] == [SHARED_KEY]
