"""Prompt templates and conversations on the real request path: what each deployment actually received.

The simulator records every request body, so these tests check the messages
LiteLLM sent: a template's rendering before and after a live edit, and a
long conversation trimmed for a small window but sent whole to a large one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from router import RouterSettings, create_default_router
from router.sim import Fault, SimServer
from tests.conftest import RouterFactory
from tests.test_cache_support import delete_prefix, needs_redis, new_prefix, redis_url

pytestmark = pytest.mark.timeout(60)

# Windows as the simulator enforces them (conftest's sim-cheap answers 400 above 2000 tokens).
DEPLOYMENTS = """\
deployments:
  - name: sim-cheap
    model: openai/sim-cheap
    api_base: "{base_url}"
    api_key_env: SIM_TEST_KEY
    context_window: 2000
    price: {input_per_mtok: 0.1, output_per_mtok: 0.3}
  - name: sim-smart
    model: openai/sim-smart
    api_base: "{base_url}"
    api_key_env: SIM_TEST_KEY
    context_window: 128000
    price: {input_per_mtok: 3, output_per_mtok: 12}
"""

POLICY = """\
default_route: default
routes:
  default:
    strategy: fallback
    targets: [sim-smart, sim-cheap]
    retry: {attempts: 1}
    max_tokens: 50
  small:
    targets: [sim-cheap]
    max_tokens: 50
"""

GREET_V1 = """\
prompts:
  - name: greet
    version: "1"
    variables: [who]
    defaults: {max_tokens: 20, temperature: 0}
    messages:
      - role: system
        content: You greet people warmly.
      - role: user
        content: "Say hello to {{ who }}."
"""

GREET_V2 = GREET_V1.replace('version: "1"', 'version: "2"').replace("Say hello to", "Say goodbye to")
# Line 10 of the file (the user message): an unclosed expression.
GREET_BROKEN = GREET_V2.replace('version: "2"', 'version: "3"').replace("{{ who }}.", "{{ who .")


def sent_messages(sim: SimServer, name: str) -> list[list[dict[str, Any]]]:
    """The `messages` of every chat request `name` received, oldest first."""
    return [list(r.body["messages"]) for r in sim.requests(name) if "messages" in r.body]


def contents(messages: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [m.get("content") for m in messages]


# --- templates --------------------------------------------------------------------------------


async def test_a_template_renders_from_yaml_and_a_live_edit_changes_the_next_call(
    make_router: RouterFactory, fresh_sim: SimServer, tmp_path: Path
) -> None:
    prompts = tmp_path / "policies" / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "greet.yaml").write_text(GREET_V1)
    router = await make_router(POLICY, deployments=DEPLOYMENTS)

    first = await router.chat(template="greet", variables={"who": "Ada"}, route="small")
    assert first.route == "small" and first.deployment == "sim-cheap"
    body = fresh_sim.last_request("sim-cheap")
    assert body is not None
    assert contents(body.body["messages"]) == ["You greet people warmly.", "Say hello to Ada."]
    assert body.body["max_tokens"] == 20 and body.body["temperature"] == 0

    (prompts / "greet.yaml").write_text(GREET_V2)
    await router.reload()
    await router.chat(template="greet", variables={"who": "Ada"}, route="small")
    assert contents(sent_messages(fresh_sim, "sim-cheap")[-1])[-1] == "Say goodbye to Ada."
    assert router.prompts.versions("greet") == ["2"]

    (prompts / "greet.yaml").write_text(GREET_BROKEN)
    await router.reload()
    assert router.templates is not None
    error = router.templates.last_error
    assert error is not None
    assert error.file == str(prompts / "greet.yaml") and error.line == 10
    await router.chat(template="greet", variables={"who": "Bo"}, route="small")  # the last good version still serves
    assert contents(sent_messages(fresh_sim, "sim-cheap")[-1])[-1] == "Say goodbye to Bo."

    (prompts / "greet.yaml").write_text(GREET_V1)
    await router.reload()
    assert router.templates.last_error is None


async def test_spans_name_the_prompt_and_its_version(
    make_router: RouterFactory, fresh_sim: SimServer, tmp_path: Path
) -> None:
    prompts = tmp_path / "policies" / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "greet.yaml").write_text(GREET_V2)
    await make_router(POLICY, deployments=DEPLOYMENTS)  # writes config/ and policies/
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = RouterSettings(config_dir=tmp_path / "config", policy_dir=tmp_path / "policies",
                              reload_interval_s=0, seed=1)
    async with await create_default_router(settings, tracer_provider=provider) as router:
        await router.chat(template="greet", variables={"who": "Ada"}, route="small")
        await router.chat("no template here", route="small")
    requests = [s for s in exporter.get_finished_spans() if s.name == "router chat"]
    assert len(requests) == 2
    templated, plain = (dict(s.attributes or {}) for s in requests)
    assert templated["router.prompt.name"] == "greet" and templated["router.prompt.version"] == "2"
    assert "router.prompt.name" not in plain
    provider.shutdown()


async def test_a_template_default_route_and_model_steer_routing(
    make_router: RouterFactory, fresh_sim: SimServer, tmp_path: Path
) -> None:
    prompts = tmp_path / "policies" / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "greet.yaml").write_text(GREET_V1.replace("defaults: {", "defaults: {route: small, "))
    router = await make_router(POLICY, deployments=DEPLOYMENTS)
    response = await router.chat(template="greet", variables={"who": "Ada"})
    assert response.route == "small" and response.deployment == "sim-cheap"


# --- conversations ----------------------------------------------------------------------------


def long_turn(i: int) -> str:
    # " a" is one token to the router's tokenizer and half a token to the simulator's estimate, so
    # a history fitted by the router's count always fits the simulator's window too.
    return f"Turn {i}." + " a" * 300


async def test_ten_turns_are_trimmed_for_a_small_window_and_sent_whole_to_a_large_one(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY, deployments=DEPLOYMENTS)
    conv = router.conversation(tenant="acme", system="Be brief.")
    served = []
    for i in range(1, 11):
        if i == 7:  # the large deployment fails mid-conversation: turns 7-9 fall back to the small one
            fresh_sim.update("sim-smart", error_rates={Fault.SERVER_ERROR: 1.0})
        if i == 10:
            fresh_sim.restore("sim-smart")
        served.append((await conv.chat(long_turn(i))).deployment)
    assert served == ["sim-smart"] * 6 + ["sim-cheap"] * 3 + ["sim-smart"]

    history = await conv.messages()
    assert len(history) == 1 + 2 * 10  # the system message, then ten whole exchanges
    smart = sent_messages(fresh_sim, "sim-smart")
    # Every turn the large window received (the failed ones too) carried the whole history so far ...
    assert [len(m) for m in smart] == [2 * turn for turn in range(1, 11)]
    assert all(contents(m)[:2] == ["Be brief.", long_turn(1)] for m in smart)
    assert contents(smart[-1]) == contents(history[:-1])  # ... turn 10 with the fallback's answers too

    cheap = sent_messages(fresh_sim, "sim-cheap")
    assert len(cheap) == 3
    for turn, messages in zip((7, 8, 9), cheap, strict=True):
        assert messages[0] == {"role": "system", "content": "Be brief."}
        assert contents(messages)[-1] == long_turn(turn)
        assert len(messages) < 2 * turn  # older turns were dropped ...
        assert contents(messages)[1].startswith("Turn ") and contents(messages)[1] != long_turn(1)
        assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * ((len(messages) - 2) // 2) + ["user"]
    assert fresh_sim.stats("sim-cheap").context_errors == 0  # ... enough that the small window took each one


@pytest.fixture
def history_prefix() -> Iterator[str]:
    name = new_prefix()
    yield name
    delete_prefix(name)


@needs_redis
async def test_the_history_survives_a_router_restart_on_redis(
    make_router: RouterFactory, fresh_sim: SimServer, history_prefix: str
) -> None:
    url = redis_url(history_prefix)
    conversation_id = uuid.uuid4().hex
    first = await make_router(POLICY, deployments=DEPLOYMENTS, history_store_url=url)
    conv = first.conversation(tenant="acme", id=conversation_id)
    await conv.chat("My name is Ada.")
    answer = await conv.chat("What is my name?")
    await first.aclose()

    second = await make_router(POLICY, deployments=DEPLOYMENTS, history_store_url=url)
    resumed = second.conversation(tenant="acme", id=conversation_id)
    stored = await resumed.messages()
    assert contents(stored) == ["My name is Ada.", contents(stored)[1], "What is my name?", answer.text]
    await resumed.chat("And again?")
    assert contents(sent_messages(fresh_sim, "sim-smart")[-1]) == [*contents(stored), "And again?"]


async def test_two_tenants_on_the_same_conversation_id_see_only_their_own_history(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await make_router(POLICY, deployments=DEPLOYMENTS)
    acme = router.conversation(tenant="acme", id="support-1")
    globex = router.conversation(tenant="globex", id="support-1")
    await acme.chat("acme secret: the launch is Tuesday")
    await globex.chat("globex question: what is the launch date?")
    globex_sent = sent_messages(fresh_sim, "sim-smart")[-1]
    assert contents(globex_sent) == ["globex question: what is the launch date?"]
    await acme.chat("anything else?")
    acme_sent = sent_messages(fresh_sim, "sim-smart")[-1]
    assert contents(acme_sent)[0] == "acme secret: the launch is Tuesday" and len(acme_sent) == 3
    assert not any("globex" in str(c) for c in contents(await acme.messages()))
    assert not any("acme" in str(c) for c in contents(await globex.messages()))
