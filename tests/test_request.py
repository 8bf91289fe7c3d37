"""`build_chat_request`: every bad input is an `InvalidRequest` naming its field; good ones pass unchanged."""

from __future__ import annotations

import math
from typing import Any

import pytest

from router.errors import InvalidRequest
from router.models import LLMMessage
from router.request import REFUSED_PARAMS, ChatRequest, build_chat_request

pytestmark = pytest.mark.timeout(10)

USER = {"role": "user", "content": "What is the weather in Paris?"}
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}
JSON_SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "report", "strict": True,
                    "schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}}
FILE = {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "a.pdf"}}


def refused(messages: Any, params: dict[str, Any] | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        build_chat_request(messages, params or {})
    return caught.value


# -- refused and unknown parameters ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFUSED_PARAMS))
def test_every_endpoint_or_credential_parameter_is_refused(name: str) -> None:
    err = refused("hi", {name: "sk-secret-value"})
    assert err.field == name and "deployment config" in str(err)
    assert "sk-secret-value" not in str(err)
    assert refused("hi", {name: None}).field == name  # whatever its value


@pytest.mark.parametrize("name", ["api_key", "api_base", "base_url", "extra_headers", "custom_llm_provider"])
def test_refused_parameters_are_refused_inside_extra_body_too(name: str) -> None:
    err = refused("hi", {"extra_body": {"top_k": 3, name: "x"}})
    assert err.field == f"extra_body.{name}"


def test_unknown_parameter_names_itself_and_points_at_extra_body() -> None:
    err = refused("hi", {"temprature": 0.2})
    assert err.field == "temprature" and "extra_body" in str(err)
    assert refused("hi", {"zzz": 1, "aaa": 2}).field == "aaa"  # the first by name: a stable answer


def test_a_refused_name_wins_over_an_unknown_one() -> None:
    assert refused("hi", {"api_key": "x", "bogus": 1}).field == "api_key"


# -- malformed messages ------------------------------------------------------------------------

BAD_MESSAGES: dict[str, tuple[Any, str]] = {
    "an int": (42, "messages"),
    "None": (None, "messages"),
    "a dict": ({"role": "user", "content": "hi"}, "messages"),
    "a set": ({"hi"}, "messages"),
    "empty list": ([], "messages"),
    "empty tuple": ((), "messages"),
    "a string in the list": ([USER, "hi"], "messages[1]"),
    "unknown role": ([{"role": "wizard", "content": "hi"}], "messages[0]"),
    "no role": ([{"content": "hi"}], "messages[0]"),
    "user content None": ([{"role": "user", "content": None}], "messages[0].content"),
    "user content missing": ([{"role": "user"}], "messages[0].content"),
    "user content an int": ([{"role": "user", "content": 7}], "messages[0].content"),
    "system content None": ([{"role": "system", "content": None}, USER], "messages[0].content"),
    "extra key": ([{"role": "user", "content": "hi", "tool_call_id": "x"}], "messages[0].tool_call_id"),
    "tool message without tool_call_id": (
        [USER, {"role": "assistant", "tool_calls": [TOOL_CALL]}, {"role": "tool", "content": "21 C"}],
        "messages[2].tool_call_id"),
    "tool message with empty tool_call_id": (
        [USER, {"role": "tool", "tool_call_id": "", "content": "21 C"}], "messages[1].tool_call_id"),
    "empty assistant message": ([USER, {"role": "assistant"}], "messages[1]"),
    "tool call without id": (
        [USER, {"role": "assistant", "tool_calls": [{"type": "function", "function": TOOL_CALL["function"]}]}],
        "messages[1].tool_calls[0].id"),
    "tool call without arguments": (
        [USER, {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}],
        "messages[1].tool_calls[0].function.arguments"),
    "unknown part type": ([{"role": "user", "content": [{"type": "video", "video": {}}]}], "messages[0].content[0]"),
    "text part without text": ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
    "image part without url": (
        [{"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {}}]}],
        "messages[0].content[1].image_url.url"),
    "image with a bad detail": (
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "max"}}]}],
        "messages[0].content[0].image_url.detail"),
    "audio in an unknown format": (
        [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "ogg"}}]}],
        "messages[0].content[0].input_audio.format"),
    "lone surrogate": ([{"role": "user", "content": "hi \ud83d"}], "messages[0].content"),
    "lone surrogate in a part": (
        [{"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": "\udc00"}]}],
        "messages[0].content[1].text"),
    "lone surrogate in a name": ([{"role": "user", "content": "hi", "name": "a\ud83d"}], "messages[0].name"),
}


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
def test_malformed_messages_name_the_field(case: str) -> None:
    messages, field = BAD_MESSAGES[case]
    err = refused(messages)
    assert isinstance(err, InvalidRequest) and err.field == field
    assert str(err).startswith(f"{field}: ")
    assert err.deployment == "" and err.status_code is None


# -- malformed parameters ----------------------------------------------------------------------

BAD_PARAMS: dict[str, tuple[dict[str, Any], str]] = {
    "negative max_tokens": ({"max_tokens": -1}, "max_tokens"),
    "zero max_tokens": ({"max_tokens": 0}, "max_tokens"),
    "max_tokens a bool": ({"max_tokens": True}, "max_tokens"),
    "max_tokens a float": ({"max_tokens": 1.5}, "max_tokens"),
    "max_tokens a string": ({"max_tokens": "100"}, "max_tokens"),
    "max_completion_tokens zero": ({"max_completion_tokens": 0}, "max_completion_tokens"),
    "NaN temperature": ({"temperature": math.nan}, "temperature"),
    "infinite temperature": ({"temperature": math.inf}, "temperature"),
    "temperature too high": ({"temperature": 2.5}, "temperature"),
    "temperature a string": ({"temperature": "0.5"}, "temperature"),
    "NaN top_p": ({"top_p": math.nan}, "top_p"),
    "top_p above 1": ({"top_p": 1.1}, "top_p"),
    "penalty out of range": ({"presence_penalty": -3}, "presence_penalty"),
    "seed a string": ({"seed": "7"}, "seed"),
    "n zero": ({"n": 0}, "n"),
    "logprobs a string": ({"logprobs": "yes"}, "logprobs"),
    "top_logprobs too many": ({"top_logprobs": 21}, "top_logprobs"),
    "logit_bias out of range": ({"logit_bias": {"50256": 101}}, "logit_bias.50256"),
    "stop an int": ({"stop": 5}, "stop"),
    "five stop sequences": ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    "tool_choice without tools": ({"tool_choice": "required"}, "tool_choice"),
    "unknown tool_choice": ({"tools": [WEATHER_TOOL], "tool_choice": "maybe"}, "tool_choice"),
    "named tool_choice without a name": (
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name"),
    "tool of an unknown type": ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    "tool with a bad name": (
        {"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools[0].function.name"),
    "NaN in a tool schema": (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"maximum": math.nan}}}]},
        "tools[0].function.parameters.maximum"),
    "unknown response_format": ({"response_format": {"type": "xml"}}, "response_format.type"),
    "json_schema without a schema object": ({"response_format": {"type": "json_schema"}}, "response_format"),
    "json_schema with a bad name": (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
        "response_format.json_schema.name"),
    "unknown reasoning_effort": ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    "user too long": ({"user": "u" * 513}, "user"),
    "extra_body not a dict": ({"extra_body": ["top_k"]}, "extra_body"),
    "extra_body not JSON": ({"extra_body": {"when": object()}}, "extra_body.when"),
    "extra_body with a surrogate": ({"extra_body": {"note": ["ok", "\ud83d"]}}, "extra_body.note[1]"),
}


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_malformed_parameters_name_the_field(case: str) -> None:
    params, field = BAD_PARAMS[case]
    err = refused([USER], params)
    assert err.field == field
    assert str(err).startswith(f"{field}: ")


# -- valid requests ----------------------------------------------------------------------------


def test_a_string_is_one_user_message() -> None:
    req = build_chat_request("What is 2+2?", {})
    assert req.messages == ({"role": "user", "content": "What is 2+2?"},)
    assert req.params == {} and req.stream is False and req.needs == frozenset()


def test_llm_messages_and_dicts_mix() -> None:
    req = build_chat_request((LLMMessage(role="system", content="Be brief.", name="sys"), USER), {})
    assert req.messages == ({"role": "system", "content": "Be brief.", "name": "sys"}, USER)


def test_a_full_agent_conversation_passes_unchanged() -> None:
    messages = [
        {"role": "developer", "content": "You answer with tools."},
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        USER,
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL, {**TOOL_CALL, "id": "call_2"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "sunny"}]},
        {"role": "assistant", "content": "21 C and sunny.", "name": "bot"},
        {"role": "assistant", "refusal": "I cannot help with that."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, IMAGE, AUDIO, FILE]},
    ]
    req = build_chat_request(messages, {"tools": [WEATHER_TOOL], "tool_choice": "auto"})
    assert list(req.messages) == messages
    assert req.messages[3]["tool_calls"][1]["id"] == "call_2"
    assert req.needs == frozenset({"tools", "vision", "audio"})


def test_messages_are_copied_not_shared() -> None:
    message = dict(USER)
    req = build_chat_request([message], {})
    message["content"] = "changed"
    assert req.messages[0]["content"] == USER["content"]


ALL_PARAMS: dict[str, Any] = {
    "tools": [WEATHER_TOOL],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "response_format": JSON_SCHEMA,
    "stop": ["\n\n", "END"],
    "seed": 7,
    "top_p": 0.9,
    "n": 2,
    "presence_penalty": -0.5,
    "frequency_penalty": 0.5,
    "logit_bias": {"50256": -100.0},
    "logprobs": True,
    "top_logprobs": 3,
    "user": "user-42",
    "reasoning_effort": "low",
    "max_tokens": 100,
    "max_completion_tokens": 120,
    "temperature": 0.2,
    "extra_body": {"top_k": 40, "safe_prompt": True},
}


def test_every_parameter_is_preserved() -> None:
    req = build_chat_request([USER], ALL_PARAMS)
    assert req.params == ALL_PARAMS
    assert req.params["response_format"]["json_schema"]["schema"] == JSON_SCHEMA["json_schema"]["schema"]
    assert req.n == 2 and req.max_output_tokens == 120 and req.deterministic
    assert req.needs == frozenset({"tools", "json"})


def test_none_parameters_are_not_sent_and_defaults_are_not_added() -> None:
    req = build_chat_request("hi", {"temperature": None, "tools": None, "max_tokens": 5})
    assert req.params == {"max_tokens": 5}
    assert req.max_output_tokens == 5 and req.n == 1 and not req.deterministic


def test_integers_pass_as_floats_where_floats_are_expected() -> None:
    req = build_chat_request("hi", {"temperature": 1, "top_p": 1})
    assert req.params == {"temperature": 1.0, "top_p": 1.0}
    assert build_chat_request("hi", {"temperature": 0}).deterministic


def test_stop_may_be_one_string_and_tool_choice_none_needs_no_tools() -> None:
    req = build_chat_request("hi", {"stop": "END", "tool_choice": "none"})
    assert req.params == {"stop": "END", "tool_choice": "none"}


@pytest.mark.parametrize(("messages", "params", "needs"), [
    ("hi", {}, set()),
    ("hi", {"tools": [WEATHER_TOOL]}, {"tools"}),
    ("hi", {"response_format": JSON_SCHEMA}, {"json"}),
    ("hi", {"response_format": {"type": "json_object"}}, set()),
    ("hi", {"response_format": {"type": "text"}}, set()),
    ([{"role": "user", "content": [IMAGE]}], {}, {"vision"}),
    ([{"role": "user", "content": [AUDIO]}], {}, {"audio"}),
    ([{"role": "user", "content": [FILE]}], {}, set()),
    ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], {}, set()),
    ([{"role": "user", "content": [IMAGE, AUDIO]}], {"tools": [WEATHER_TOOL], "response_format": JSON_SCHEMA},
     {"vision", "audio", "tools", "json"}),
])
def test_needs_lists_the_capabilities_a_deployment_must_declare(
    messages: Any, params: dict[str, Any], needs: set[str]
) -> None:
    assert build_chat_request(messages, params).needs == frozenset(needs)


def test_stream_flag_and_frozen_request() -> None:
    req = build_chat_request("hi", {}, stream=True)
    assert isinstance(req, ChatRequest) and req.stream
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        req.stream = False  # type: ignore[misc]
