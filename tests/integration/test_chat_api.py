"""The whole OpenAI chat API through the router: LiteLLM, over HTTP, to the simulator.

Tool-calling agent loops (plain and streamed, OpenAI and Anthropic wire
formats), structured output, images, capability-aware routing with its
`explain`, and malformed requests refused before any provider call.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from router import InvalidRequest, NoRouteAvailable, Router
from router.cli import main
from router.explain import Explanation
from router.health import CircuitState
from router.models import StreamChunk
from router.sim import SimServer
from tests.conftest import RouterFactory

pytestmark = pytest.mark.timeout(60)

# `{base_url}` is the sim's OpenAI base (make_router fills it), `{root}` its root for LiteLLM's anthropic/.
DEPLOYMENTS = """\
deployments:
  - name: tools-oa
    model: openai/sim-fast
    api_base: "{base_url}"
    api_key_env: SIM_TEST_KEY
    price: {input_per_mtok: 0.5, output_per_mtok: 1.5}
    context_window: 16000
    capabilities: [chat, streaming, tools, json, vision]
  - name: tools-an
    model: anthropic/sim-smart
    api_base: "{root}"
    api_key_env: SIM_TEST_KEY
    price: {input_per_mtok: 3, output_per_mtok: 12}
    context_window: 128000
    capabilities: [chat, streaming, tools, json, vision]
  - name: plain
    model: openai/sim-cheap
    api_base: "{base_url}"
    api_key_env: SIM_TEST_KEY
    price: {input_per_mtok: 0.1, output_per_mtok: 0.3}
    context_window: 2000
  - name: blind
    model: openai/sim-flaky
    api_base: "{base_url}"
    api_key_env: SIM_TEST_KEY
    price: {input_per_mtok: 0.05, output_per_mtok: 0.15}
    context_window: 32000
    capabilities: [chat, streaming, tools, json]
"""

POLICY = """\
default_route: mixed
routes:
  openai: {targets: [tools-oa]}
  anthropic: {targets: [tools-an]}
  mixed: {strategy: fallback, targets: [plain, tools-oa]}
  vision: {strategy: fallback, targets: [blind, tools-oa]}
  plain-only: {targets: [plain]}
"""

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}},
    },
}
TOOL_RESULT = "21 C and sunny"
ROUTE_MODEL = {"openai": "sim-fast", "anthropic": "sim-smart"}
SIM_MODELS = ("sim-fast", "sim-smart", "sim-cheap", "sim-flaky", "sim-slow", "sim-locked", "sim-embed")


async def build(make_router: RouterFactory, sim: SimServer, policy: str = POLICY, **settings: object) -> Router:
    return await make_router(policy, deployments=DEPLOYMENTS.replace("{root}", sim.root_url), **settings)


def sim_requests(sim: SimServer) -> int:
    return sum(sim.stats(name).requests for name in SIM_MODELS)


async def collect(router: Router, messages: Any, **kwargs: Any) -> list[StreamChunk]:
    return [chunk async for chunk in router.stream(messages, **kwargs)]


def tool_round_trip(body: Mapping[str, Any], call_id: str, route: str) -> None:
    """The second request carried the assistant's tool call and our result, in the provider's own format."""
    if route == "openai":
        assistant, tool = body["messages"][1], body["messages"][2]
        assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == call_id
        assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
        assert tool == {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT}
        assert body["tools"] == [WEATHER_TOOL]
    else:  # LiteLLM translated to Anthropic's content blocks
        assistant, user = body["messages"][1], body["messages"][2]
        uses = [b for b in assistant["content"] if b["type"] == "tool_use"]
        assert uses and uses[0]["id"] == call_id and uses[0]["name"] == "get_weather"
        results = [b for b in user["content"] if b["type"] == "tool_result"]
        assert results and results[0]["tool_use_id"] == call_id
        assert body["tools"][0]["name"] == "get_weather" and "input_schema" in body["tools"][0]


# -- 1. tool-calling agent loop ---------------------------------------------------------------


@pytest.mark.parametrize("route", ["openai", "anthropic"])
async def test_two_round_tool_agent_loop(make_router: RouterFactory, fresh_sim: SimServer, route: str) -> None:
    router = await build(make_router, fresh_sim)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris?"}]

    first = await router.chat(messages, route=route, tools=[WEATHER_TOOL], tool_choice="auto")
    assert first.finish_reason == "tool_calls" and first.message.content is None and first.text == ""
    assert first.message.tool_calls is not None and len(first.message.tool_calls) == 1
    call = first.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_" if route == "openai" else "toolu_")
    assert first.tool_calls == first.message.tool_calls
    assert first.id and first.usage.output_tokens > 0 and first.cost_usd > 0

    messages.append(first.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT})
    final = await router.chat(messages, route=route, tools=[WEATHER_TOOL])
    assert final.finish_reason == "stop" and final.message.tool_calls is None
    assert final.text == final.message.content == f"The tool returned: {TOOL_RESULT}"
    recorded = fresh_sim.last_request(ROUTE_MODEL[route])
    assert recorded is not None
    tool_round_trip(recorded.body, call.id, route)
    assert fresh_sim.stats(ROUTE_MODEL[route]).successes == 2


@pytest.mark.parametrize("route", ["openai", "anthropic"])
async def test_two_round_tool_agent_loop_streamed(
    make_router: RouterFactory, fresh_sim: SimServer, route: str
) -> None:
    router = await build(make_router, fresh_sim)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris?"}]

    chunks = await collect(router, messages, route=route, tools=[WEATHER_TOOL])
    last = chunks[-1]
    assert last.done and all(not c.done for c in chunks[:-1])
    assert last.finish_reason == "tool_calls" and last.message is not None
    # the call arrived as deltas: id and name in the first fragment, the arguments in pieces
    deltas = [d for c in chunks[:-1] for d in c.tool_calls]
    assert len(deltas) >= 2 and all(d.index == 0 for d in deltas)
    assert deltas[0].id and deltas[0].name == "get_weather"
    assert "".join(c.delta for c in chunks) == ""
    assert last.message.content is None and last.message.tool_calls is not None
    call = last.message.tool_calls[0]
    assert call.id == deltas[0].id and call.function.name == "get_weather"
    assert call.function.arguments == "".join(d.arguments for d in deltas)
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert last.usage is not None and not last.usage.estimated and last.usage.output_tokens > 0

    messages.append(last.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT})
    chunks = await collect(router, messages, route=route, tools=[WEATHER_TOOL])
    last = chunks[-1]
    text = "".join(c.delta for c in chunks)
    assert text == f"The tool returned: {TOOL_RESULT}"
    assert last.message is not None and last.message.content == text and last.message.tool_calls is None
    assert last.finish_reason == "stop" and not any(c.tool_calls for c in chunks)
    recorded = fresh_sim.last_request(ROUTE_MODEL[route])
    assert recorded is not None and recorded.body["stream"] is True
    tool_round_trip(recorded.body, call.id, route)


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("route", ["openai", "anthropic"])
async def test_parallel_tool_calls_come_back_in_order(
    make_router: RouterFactory, fresh_sim: SimServer, route: str, stream: bool
) -> None:
    router = await build(make_router, fresh_sim)
    clock_tool = {"type": "function", "function": {**WEATHER_TOOL["function"], "name": "get_time"}}
    tools = [WEATHER_TOOL, clock_tool]
    if stream:
        chunks = await collect(router, "Weather and time in Paris?", route=route, tools=tools,
                               parallel_tool_calls=True)
        message = chunks[-1].message
        assert {d.index for c in chunks for d in c.tool_calls} == {0, 1}
    else:
        message = (await router.chat("Weather and time in Paris?", route=route, tools=tools,
                                     parallel_tool_calls=True)).message
    assert message is not None and message.tool_calls is not None
    assert [c.function.name for c in message.tool_calls] == ["get_weather", "get_time"]
    assert all(json.loads(c.function.arguments) == {"city": "Paris"} for c in message.tool_calls)
    assert len({c.id for c in message.tool_calls}) == 2
    named = await router.chat("What time is it?", route=route, tools=tools,
                              tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [c.function.name for c in named.tool_calls] == ["get_time"]


async def test_chat_and_stream_take_the_same_string_prompt(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await build(make_router, fresh_sim)
    plain = await router.chat("Tell me a joke", route="openai", seed=3)
    chunks = await collect(router, "Tell me a joke", route="openai", seed=3)
    assert plain.text and "".join(c.delta for c in chunks) == plain.text
    assert chunks[-1].message is not None and chunks[-1].message.content == plain.text
    bodies = [r.body for r in fresh_sim.requests("sim-fast")]
    assert [b["messages"] for b in bodies] == [[{"role": "user", "content": "Tell me a joke"}]] * 2
    assert [b.get("seed") for b in bodies] == [3, 3]


# -- 2. structured output, images, capabilities -----------------------------------------------

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "weather_report",
        "strict": True,
        "schema": {
            "type": "object",
            "required": ["city", "celsius", "sunny"],
            "additionalProperties": False,
            "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}, "sunny": {"type": "boolean"}},
        },
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("route", ["mixed", "anthropic"])
async def test_json_schema_reaches_the_provider_and_the_answer_parses(
    make_router: RouterFactory, fresh_sim: SimServer, route: str, stream: bool
) -> None:
    router = await build(make_router, fresh_sim)
    messages = [{"role": "user", "content": "Weather report for Paris, as JSON"}]
    if stream:
        chunks = await collect(router, messages, route=route, response_format=RESPONSE_FORMAT)
        text = "".join(c.delta for c in chunks)
        deployment = chunks[-1].deployment
    else:
        r = await router.chat(messages, route=route, response_format=RESPONSE_FORMAT)
        text, deployment = r.text, r.deployment
    if route == "mixed":
        assert deployment == "tools-oa"  # `json` skipped `plain`
        recorded = fresh_sim.last_request("sim-fast")
        assert recorded is not None and recorded.body["response_format"] == RESPONSE_FORMAT
    else:  # LiteLLM asks Anthropic for a forced tool call with the schema, and hands its input back as text
        recorded = fresh_sim.last_request("sim-smart")
        assert recorded is not None and recorded.body["tool_choice"]["type"] == "tool"
        schema = RESPONSE_FORMAT["json_schema"]["schema"]
        assert [t["input_schema"] for t in recorded.body["tools"]] == [schema]
    answer = json.loads(text)
    assert set(answer) == {"city", "celsius", "sunny"}
    assert isinstance(answer["city"], str) and isinstance(answer["sunny"], bool)
    assert fresh_sim.stats("sim-cheap").requests == 0


async def test_image_part_reaches_a_vision_deployment(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await build(make_router, fresh_sim)
    fresh_sim.update("sim-flaky", vision=False)  # it would refuse the image with a 400 anyway
    try:
        url = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
        content = [{"type": "text", "text": "What is in this picture?"},
                   {"type": "image_url", "image_url": {"url": url, "detail": "low"}}]
        r = await router.chat([{"role": "user", "content": content}], route="vision")
        assert r.deployment == "tools-oa" and [a.deployment for a in r.attempts] == ["tools-oa"]
        assert r.text.lower().startswith("the image shows")  # the simulator saw the image part
        recorded = fresh_sim.last_request("sim-fast")
        assert recorded is not None and recorded.body["messages"] == [{"role": "user", "content": content}]
        assert fresh_sim.stats("sim-flaky").requests == 0
        # the same image through LiteLLM's Anthropic translation
        r = await router.chat([{"role": "user", "content": content}], route="anthropic")
        assert r.text.lower().startswith("the image shows")
        recorded = fresh_sim.last_request("sim-smart")
        assert recorded is not None
        assert [b["type"] for b in recorded.body["messages"][0]["content"]] == ["text", "image"]
    finally:
        fresh_sim.restore("sim-flaky")


async def test_tools_request_skips_a_deployment_without_tools_and_explain_says_why(
    make_router: RouterFactory, fresh_sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    router = await build(make_router, fresh_sim)
    plain = await router.chat("hi", route="mixed")
    assert plain.deployment == "plain"  # first in the fallback order when nothing special is needed
    r = await router.chat("Weather in Paris?", route="mixed", tools=[WEATHER_TOOL])
    assert r.deployment == "tools-oa" and [a.deployment for a in r.attempts] == ["tools-oa"]
    assert r.message.tool_calls is not None
    assert fresh_sim.stats("sim-cheap").requests == 1  # only the plain request

    monkeypatch.setenv("ROUTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("ROUTER_POLICY_DIR", str(tmp_path / "policies"))
    capsys.readouterr()
    status = await asyncio.to_thread(main, ["explain", "--json", "--route", "mixed", "--needs", "tools",
                                            "--prompt", "Weather in Paris?"])
    assert status == 0
    e = Explanation.model_validate_json(capsys.readouterr().out)
    assert e.capabilities == ["tools"] and e.order == ["tools-oa"]
    verdicts = {c.deployment: (c.kept, c.reason) for c in e.candidates}
    assert verdicts["plain"] == (False, "lacks capability tools")
    assert verdicts["tools-oa"][0] is True

    status = await asyncio.to_thread(main, ["explain", "--json", "--route", "mixed", "--prompt", "hi"])
    assert status == 0
    e = Explanation.model_validate_json(capsys.readouterr().out)
    assert e.capabilities == [] and e.order == ["plain", "tools-oa"]

    status = await asyncio.to_thread(main, ["explain", "--json", "--route", "plain-only", "--needs", "tools",
                                            "--needs", "vision", "--prompt", "hi"])
    assert status == 0
    e = Explanation.model_validate_json(capsys.readouterr().out)
    assert e.order == [] and e.capabilities == ["tools", "vision"]
    assert [(c.deployment, c.kept, c.reason) for c in e.candidates] == [
        ("plain", False, "lacks capability tools, vision")]


async def test_no_route_names_the_missing_capability(make_router: RouterFactory, fresh_sim: SimServer) -> None:
    router = await build(make_router, fresh_sim)
    with pytest.raises(NoRouteAvailable) as caught:
        await router.chat("Weather in Paris?", route="plain-only", tools=[WEATHER_TOOL])
    assert caught.value.route == "plain-only"
    assert caught.value.reasons == {"plain": "lacks capability tools"}
    assert "lacks capability tools" in str(caught.value)
    image = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(NoRouteAvailable) as caught:
        await collect(router, [{"role": "user", "content": image}], route="plain-only",
                      response_format=RESPONSE_FORMAT)
    assert caught.value.reasons == {"plain": "lacks capability json, vision"}
    assert sim_requests(fresh_sim) == 0


# -- 3. malformed requests: refused before any provider call ----------------------------------

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}

MALFORMED: dict[str, tuple[Any, dict[str, Any], str]] = {
    "wrong type": (42, {}, "messages"),
    "a dict, not a list": ({"role": "user", "content": "hi"}, {}, "messages"),
    "empty messages": ([], {}, "messages"),
    "tool message without tool_call_id": (
        [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [TOOL_CALL]},
         {"role": "tool", "content": "21 C"}], {}, "messages[2].tool_call_id"),
    "negative max_tokens": ("hi", {"max_tokens": -1}, "max_tokens"),
    "NaN temperature": ("hi", {"temperature": math.nan}, "temperature"),
    "lone surrogate": ([{"role": "user", "content": "hi \ud83d"}], {}, "messages[0].content"),
    "user content None": ([{"role": "user", "content": None}], {}, "messages[0].content"),
    "api_base": ("hi", {"api_base": "http://evil.example"}, "api_base"),
    "api_key": ("hi", {"api_key": "sk-stolen"}, "api_key"),
    "extra_headers": ("hi", {"extra_headers": {"X-A": "b"}}, "extra_headers"),
    "base_url": ("hi", {"base_url": "http://evil.example"}, "base_url"),
    "custom_llm_provider": ("hi", {"custom_llm_provider": "openai"}, "custom_llm_provider"),
    "api_key in extra_body": ("hi", {"extra_body": {"api_key": "sk-stolen"}}, "extra_body.api_key"),
    "unknown kwarg": ("hi", {"temprature": 0.5}, "temprature"),
    "tool_choice without tools": ("hi", {"tool_choice": "required"}, "tool_choice"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_request_is_refused_before_any_call(
    make_router: RouterFactory, fresh_sim: SimServer, case: str, stream: bool
) -> None:
    router = await build(make_router, fresh_sim)
    messages, params, field = MALFORMED[case]
    with pytest.raises(InvalidRequest) as caught:
        if stream:
            await collect(router, messages, route="openai", **params)
        else:
            await router.chat(messages, route="openai", **params)
    assert caught.value.field == field
    assert caught.value.deployment == "" and caught.value.status_code is None
    assert "sk-stolen" not in str(caught.value)
    assert sim_requests(fresh_sim) == 0
    for h in router.health():
        assert router.tracker.state(h.name) is CircuitState.CLOSED and h.state is CircuitState.CLOSED
        assert h.calls_in_window == 0 and h.errors_by_kind == {} and h.error_rate == 0.0


async def test_malformed_complete_and_embed_are_refused_before_any_call(
    make_router: RouterFactory, fresh_sim: SimServer
) -> None:
    router = await build(make_router, fresh_sim)
    with pytest.raises(InvalidRequest) as caught:
        await router.complete(["not", "a", "string"], route="openai")  # type: ignore[arg-type]
    assert caught.value.field == "prompt"
    with pytest.raises(InvalidRequest) as caught:
        await router.complete("hi", route="openai", api_base="http://evil.example")
    assert caught.value.field == "api_base"
    with pytest.raises(InvalidRequest) as caught:
        await router.embed(["fine", "bad \ud83d"])
    assert caught.value.field == "texts[1]"
    assert sim_requests(fresh_sim) == 0
    assert all(h.calls_in_window == 0 for h in router.health())
