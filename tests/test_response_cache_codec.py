"""What a chat answer is stored as, and what a hit reads back."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from router.models import AssistantMessage, Attempt, Choice, FunctionCall, LLMResponse, ToolCall, Usage
from router.response_cache import PER_CALL_FIELDS, chat_size, decode_chat, encode_chat

pytestmark = pytest.mark.timeout(10)


TEXT = "Paris, «la ville lumière» \u2028"


def answer(**changes: object) -> LLMResponse:
    base = LLMResponse(
        id="chatcmpl-1", text=TEXT, message=AssistantMessage(content=TEXT),
        deployment="gpt", model="gpt-4o-mini", provider="openai", route="default", finish_reason="stop",
        usage=Usage(input_tokens=12, output_tokens=7, cached_input_tokens=4, reasoning_tokens=2, estimated=True),
        cost_usd=0.002, latency_ms=321.0, attempts=(Attempt(deployment="gpt", outcome="ok", latency_ms=321.0),))
    return base.model_copy(update=changes)


# What a hit replaces (a new id, no attempts, no cost, its own latency).
RESET = set(PER_CALL_FIELDS)


def test_a_text_answer_reads_back_as_it_was() -> None:
    original = answer()
    payload = encode_chat(original)
    assert payload is not None
    assert decode_chat(payload).model_dump(exclude=RESET) == original.model_dump(exclude=RESET)


def test_an_answer_with_tool_calls_reads_back_whole() -> None:
    calls = (ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Paris"}')),)
    original = answer(text="", message=AssistantMessage(content=None, tool_calls=calls), finish_reason="tool_calls")
    payload = encode_chat(original)
    assert payload is not None
    assert decode_chat(payload).model_dump(exclude=RESET) == original.model_dump(exclude=RESET)
    assert decode_chat(payload).message.tool_calls == calls


def test_what_belongs_to_one_call_is_not_stored() -> None:
    payload = encode_chat(answer())
    assert payload is not None
    read = decode_chat(payload)
    assert b"chatcmpl-1" not in payload and b'"attempts"' not in payload and b"321.0" not in payload
    assert (read.id, read.attempts, read.cost_usd, read.latency_ms, read.cached) == ("", (), 0.0, 0.0, False)


def test_a_filtered_answer_is_not_stored() -> None:
    assert encode_chat(answer(finish_reason="content_filter")) is None


@pytest.mark.parametrize("payload", [b'["too","short"]', b'{"text": ' + b"x" * 10, b"{}",
                                     b'{"text": 1, "deployment": "a", "model": "b", "provider": "c", "route": "r"}'])
def test_a_damaged_entry_raises_so_the_cache_computes_instead(payload: bytes) -> None:
    with pytest.raises((ValueError, ValidationError)):
        decode_chat(payload)


@pytest.mark.parametrize("original", [
    answer(),
    answer(text="", finish_reason="tool_calls", message=AssistantMessage(content=None, tool_calls=(
        ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Paris"}' * 20)),))),
    answer(choices=tuple(Choice(index=i, message=AssistantMessage(content=TEXT * 3), finish_reason="stop")
                         for i in range(3))),
], ids=["text", "tool call", "three choices"])
def test_the_kept_size_is_close_to_the_stored_bytes(original: LLMResponse) -> None:
    """memory:// keeps answers as objects, counted at `chat_size` toward its byte bound."""
    payload, size = encode_chat(original), chat_size(original)
    assert payload is not None and size is not None
    assert 0.75 * len(payload) <= size <= 1.5 * len(payload), (size, len(payload))


def test_a_filtered_answer_has_no_kept_size() -> None:
    assert chat_size(answer(finish_reason="content_filter")) is None
