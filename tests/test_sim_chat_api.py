"""The simulator's chat API through LiteLLM's real path: tools, structured output, parts, caching, usage.

Each feature is exercised as ``openai/<name>`` with ``api_base=sim.base_url``
and, where Anthropic has it, as ``anthropic/<name>`` (LiteLLM posts to
``{api_base}/v1/messages``).
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema  # comes with litellm
import litellm
import pytest
from litellm.exceptions import APIConnectionError, BadRequestError

from router.sim import SimModel, SimServer
from router.sim.schema_values import value_for

litellm.suppress_debug_info = True
pytestmark = pytest.mark.timeout(30)

PROVIDERS = ["openai", "anthropic"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "verbose": {"type": "boolean"},
            },
            "required": ["city", "days", "unit"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
    "AAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    models = [
        SimModel(name="chat", output_tokens=8),
        SimModel(name="blind", output_tokens=8, vision=False),
        SimModel(name="cache", output_tokens=4, cache_min_tokens=64, cache_block_tokens=16),
        SimModel(name="thinker", output_tokens=5, reasoning_tokens=30),
        SimModel(name="quiet", output_tokens=5, omit_usage=True),
    ]
    async with SimServer(models, seed=3) as server:
        yield server


async def complete(sim: SimServer, model: str, provider: str = "openai", **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "model": f"{provider}/{model}",
        "api_base": sim.base_url,
        "api_key": "sk-sim-test",
        "messages": ASK,
        "num_retries": 0,
        "max_retries": 0,
        "timeout": 5,
        **overrides,
    }
    return await litellm.acompletion(**arguments)


async def complete_streamed(sim: SimServer, model: str, provider: str = "openai", **overrides: Any) -> Any:
    """Stream, then rebuild the whole response the way LiteLLM users do."""
    stream = await complete(sim, model, provider, stream=True, **overrides)
    chunks = [chunk async for chunk in stream]
    return litellm.stream_chunk_builder(chunks, messages=overrides.get("messages", ASK))


def assistant_turn(message: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": message.content,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in message.tool_calls
        ],
    }


# -- tools ------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_two_round_agent_loop_terminates(sim: SimServer, provider: str, streamed: bool) -> None:
    call = complete_streamed if streamed else complete
    first = await call(sim, "chat", provider, tools=[WEATHER])
    assert first.choices[0].finish_reason == "tool_calls"
    calls = first.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather"]
    arguments = json.loads(calls[0].function.arguments)
    assert arguments == {"city": "Paris", "days": 3, "unit": "celsius"}
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]
    assert calls[0].id
    messages = [*ASK, assistant_turn(first.choices[0].message),
                {"role": "tool", "tool_call_id": calls[0].id, "content": "21 C and sunny"}]
    second = await call(sim, "chat", provider, tools=[WEATHER], messages=messages)
    assert second.choices[0].finish_reason == "stop"
    assert "21 C and sunny" in second.choices[0].message.content
    assert not second.choices[0].message.tool_calls


async def test_openai_stream_sends_tool_call_deltas_like_openai(sim: SimServer) -> None:
    stream = await complete(sim, "chat", tools=[WEATHER], stream=True)
    deltas = [c.choices[0].delta.tool_calls for c in [chunk async for chunk in stream]
              if c.choices and c.choices[0].delta.tool_calls]
    opening, *fragments = [d[0] for d in deltas]
    assert (opening.index, opening.function.name, opening.function.arguments) == (0, "get_weather", "")
    assert opening.id.startswith("call_")
    assert len(fragments) > 1 and all(f.id is None and f.function.name is None for f in fragments)
    assert json.loads("".join(f.function.arguments for f in fragments))["city"] == "Paris"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_choice_is_honoured(sim: SimServer, provider: str) -> None:
    named = await complete(sim, "chat", provider, tools=[WEATHER, CLOCK],
                           tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"]
    assert json.loads(named.choices[0].message.tool_calls[0].function.arguments) == {}
    required = await complete(sim, "chat", provider, tools=[WEATHER, CLOCK], tool_choice="required")
    assert [c.function.name for c in required.choices[0].message.tool_calls] == ["get_weather"]
    none = await complete(sim, "chat", provider, tools=[WEATHER], tool_choice="none")
    assert none.choices[0].finish_reason == "stop" and none.choices[0].message.content
    assert not none.choices[0].message.tool_calls


async def test_parallel_tool_calls_call_every_tool(sim: SimServer) -> None:
    response = await complete(sim, "chat", tools=[WEATHER, CLOCK], parallel_tool_calls=True)
    calls = response.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2
    streamed = await complete_streamed(sim, "chat", tools=[WEATHER, CLOCK], parallel_tool_calls=True)
    assert [c.function.name for c in streamed.choices[0].message.tool_calls] == ["get_weather", "get_time"]


async def test_tool_choice_naming_no_tool_is_a_bad_request(sim: SimServer) -> None:
    with pytest.raises(BadRequestError, match="tool_choice"):
        await complete(sim, "chat", tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})


# -- response_format ----------------------------------------------------------------

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "total": {"type": "number", "minimum": 10},
        "items": {"type": "array", "minItems": 2,
                  "items": {"$ref": "#/$defs/Item"}},
        "status": {"type": "string", "enum": ["open", "shipped"]},
        "paid": {"type": "boolean"},
        "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        "shipping": {"type": "object", "properties": {"city": {"type": "string"}, "eta": {"type": "string",
                                                                                       "format": "date"}},
                     "required": ["city", "eta"], "additionalProperties": False},
    },
    "required": ["id", "total", "items", "status", "paid", "note", "shipping"],
    "additionalProperties": False,
    "$defs": {"Item": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                       "required": ["sku", "qty"], "additionalProperties": False}},
}


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_json_schema_reply_matches_the_schema(sim: SimServer, streamed: bool) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER_SCHEMA, "strict": True}}
    call = complete_streamed if streamed else complete
    response = await call(sim, "chat", response_format=response_format)
    value = json.loads(response.choices[0].message.content)
    jsonschema.validate(value, ORDER_SCHEMA)
    assert value["status"] == "open" and len(value["items"]) == 2 and value["total"] >= 10
    assert sim.last_request("chat").body["response_format"] == response_format  # type: ignore[union-attr]


async def test_json_object_reply_is_an_object(sim: SimServer) -> None:
    response = await complete(sim, "chat", response_format={"type": "json_object"})
    assert isinstance(json.loads(response.choices[0].message.content), dict)


def test_schema_values_cover_the_common_shapes() -> None:
    schema = {"type": "object", "properties": {
        "n": {"type": ["integer", "null"], "exclusiveMinimum": 5},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 12}, "maxItems": 1},
        "when": {"type": "string", "format": "date-time"},
        "kind": {"const": "fixed"},
        "both": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
    }}
    value = value_for(schema, optional=True)
    jsonschema.validate(value, schema)
    assert value["n"] == 6 and value["kind"] == "fixed" and value["both"] == {"a": 3}
    assert value_for(schema) == {}  # tool arguments: required properties only


# -- content parts -------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_image_parts_count_and_show_in_the_answer(sim: SimServer, provider: str) -> None:
    text_only = await complete(sim, "chat", provider, messages=[{"role": "user", "content": "Describe this."}])
    with_image = [{"role": "user", "content": [
        {"type": "text", "text": "Describe this."},
        {"type": "image_url", "image_url": {"url": PIXEL}},
    ]}]
    response = await complete(sim, "chat", provider, messages=with_image)
    assert "image" in response.choices[0].message.content.lower()
    assert response.usage.prompt_tokens - text_only.usage.prompt_tokens == 85


async def test_audio_and_file_parts_are_accepted(sim: SimServer) -> None:
    messages = [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRg" * 200, "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
    ]}]
    response = await complete(sim, "chat", messages=messages)
    assert "audio" in response.choices[0].message.content.lower()
    assert response.usage.prompt_tokens == 4 + 1200 // 64 + 85


async def test_model_without_vision_refuses_images(sim: SimServer) -> None:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PIXEL}}]}]
    with pytest.raises(BadRequestError, match="image_url is only supported by certain models"):
        await complete(sim, "blind", messages=messages)
    assert (await complete(sim, "blind")).choices[0].message.content


# -- usage: caching, reasoning, omitted ------------------------------------------------

LONG_SYSTEM = {"role": "system", "content": "You are a careful assistant. " * 12}  # 4 + ceil(348 / 4) = 91 tokens


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_repeated_prefix_reports_cached_tokens(sim: SimServer, provider: str) -> None:
    sim.reset_stats("cache")
    first = await complete(sim, "cache", provider, messages=[LONG_SYSTEM, {"role": "user", "content": "one"}])
    again = await complete(sim, "cache", provider, messages=[LONG_SYSTEM, {"role": "user", "content": "two"}])
    assert (first.usage.prompt_tokens_details.cached_tokens or 0) == 0
    assert again.usage.prompt_tokens == first.usage.prompt_tokens == 91 + 5
    assert again.usage.prompt_tokens_details.cached_tokens == 80  # 91 + 4 shared, in blocks of 16
    short = await complete(sim, "cache", provider, messages=[{"role": "user", "content": "two"}])
    assert (short.usage.prompt_tokens_details.cached_tokens or 0) == 0  # under cache_min_tokens


async def test_cached_tokens_in_the_stream_usage(sim: SimServer) -> None:
    sim.reset_stats("cache")
    messages = [LONG_SYSTEM, {"role": "user", "content": "stream me"}]
    await complete(sim, "cache", messages=messages)
    streamed = await complete_streamed(sim, "cache", messages=messages, stream_options={"include_usage": True})
    assert streamed.usage.prompt_tokens == 98
    assert streamed.usage.prompt_tokens_details.cached_tokens == 96  # the same 98 tokens, in blocks of 16


async def test_reasoning_tokens_are_part_of_completion_tokens(sim: SimServer) -> None:
    response = await complete(sim, "thinker")
    assert response.usage.completion_tokens == 5 + 30
    assert response.usage.completion_tokens_details.reasoning_tokens == 30


async def test_omit_usage_sends_no_usage_anywhere(sim: SimServer) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for path, body in [
            ("chat/completions", {"model": "quiet", "messages": ASK}),
            ("embeddings", {"model": "quiet", "input": "hello"}),
        ]:
            async with http.post(f"{sim.base_url}/{path}", json=body) as response:
                assert "usage" not in await response.json()
        stream_body = {"model": "quiet", "messages": ASK, "stream": True, "stream_options": {"include_usage": True}}
        async with http.post(f"{sim.base_url}/chat/completions", json=stream_body) as response:
            raw = await response.read()
    assert b"usage" not in raw and raw.endswith(b"data: [DONE]\n\n")
    # What LiteLLM makes of it (1.110.2): zeros for a plain answer, its own estimate for a stream,
    # and a crash (KeyError 'usage' -> APIConnectionError) for an Anthropic message.
    plain = await complete(sim, "quiet")
    assert (plain.usage.prompt_tokens, plain.usage.completion_tokens) == (0, 0)
    streamed = await complete_streamed(sim, "quiet", stream_options={"include_usage": True})
    assert streamed.usage.completion_tokens > 0
    with pytest.raises(APIConnectionError):
        await complete(sim, "quiet", "anthropic")


# -- recording --------------------------------------------------------------------------


async def test_last_request_shows_what_reached_the_provider(sim: SimServer) -> None:
    await complete(sim, "chat", seed=42, stop=["zzz"], temperature=0.2, tools=[WEATHER], api_key="sk-tenant-a",
                   extra_headers={"X-Tenant": "acme"})
    recorded = sim.last_request("chat")
    assert recorded is not None
    assert recorded.path == "/v1/chat/completions"
    assert (recorded.body["seed"], recorded.body["stop"], recorded.body["temperature"]) == (42, ["zzz"], 0.2)
    assert recorded.body["tools"] == [WEATHER]
    assert recorded.api_key == "sk-tenant-a"
    assert recorded.headers["x-tenant"] == "acme"
    assert "authorization" not in recorded.headers and "sk-tenant-a" not in repr(recorded)
    await complete(sim, "chat", "anthropic", api_key="sk-tenant-b")
    anthropic = sim.last_request("chat")
    assert anthropic is not None and anthropic.api_key == "sk-tenant-b"
    assert anthropic.path == "/v1/v1/messages" and anthropic.headers["anthropic-version"]
    assert [r.api_key for r in sim.requests("chat")[-2:]] == ["sk-tenant-a", "sk-tenant-b"]


async def test_stop_sequence_cuts_the_text(sim: SimServer) -> None:
    whole = (await complete(sim, "chat")).choices[0].message.content
    word = whole.split()[2]
    cut = await complete(sim, "chat", stop=[word])
    assert cut.choices[0].message.content == whole[: whole.index(word)]
    assert cut.choices[0].finish_reason == "stop"
