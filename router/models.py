"""Typed values that cross the router's public API: what comes back from a call.

Answers follow the OpenAI chat schema, so code written against the OpenAI
SDK reads `response.message.content`, `response.message.tool_calls[0].function.name`
unchanged. What goes in is `router.request`.

>>> LLMMessage(role="user", content="Tell me a joke").role
'user'
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool", "developer"]
Outcome = Literal["ok", "error", "skipped"]


class LLMMessage(BaseModel):
    """A plain text chat message, in OpenAI's shape (richer ones are plain dicts; see `router.request`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str
    name: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        return out


class FunctionCall(BaseModel):
    """The function a tool call names, with its arguments as a JSON string (as the provider sent it)."""

    model_config = ConfigDict(frozen=True)

    name: str
    arguments: str = ""


class ToolCall(BaseModel):
    """One tool call of an assistant message (OpenAI `ChatCompletionMessageToolCall`)."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    """The answer's message: `content` (None when the model only called tools), `tool_calls`, `refusal`.

    `model_dump(exclude_none=True)` is a message dict to append to the next request.
    """

    model_config = ConfigDict(frozen=True)

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    refusal: str | None = None


class Choice(BaseModel):
    """One of `n` answers."""

    model_config = ConfigDict(frozen=True)

    index: int
    message: AssistantMessage
    finish_reason: str | None = None


class Usage(BaseModel):
    """Tokens a call consumed.

    `input_tokens` includes `cached_input_tokens` (read from the provider's
    prompt cache) and `cache_write_tokens`; `output_tokens` includes
    `reasoning_tokens`. `estimated` is True when the provider reported no
    usage and the router counted the prompt and the answer itself.
    """

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Attempt(BaseModel):
    """What happened to one attempt at one deployment.

    `outcome` is "ok", "error" (the call failed) or "skipped" (the
    deployment was not called, e.g. its circuit was open). `panic` is set when
    the attempt went to a deployment whose circuit was open because every
    target of the route was open.
    """

    model_config = ConfigDict(frozen=True)

    deployment: str
    outcome: Outcome
    error: str | None = None
    error_type: str | None = None
    status_code: int | None = None
    latency_ms: float = 0.0
    panic: bool = False


class LLMResponse(BaseModel):
    """The result of `Router.chat` / `Router.complete`.

    `message` is the first choice's assistant message; `choices` lists all of
    them when the request asked for `n > 1` (else it is empty). `cost_usd`
    is what the provider charges for `usage` at the deployment's prices.
    """

    model_config = ConfigDict(frozen=True)

    id: str = ""
    text: str
    message: AssistantMessage = Field(default_factory=AssistantMessage)
    choices: tuple[Choice, ...] = ()
    deployment: str
    model: str
    provider: str
    route: str
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    finish_reason: str | None = None
    attempts: tuple[Attempt, ...] = ()
    cached: bool = False

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The first choice's tool calls (empty when the model answered in text)."""
        return self.message.tool_calls or ()

    @property
    def fallback_used(self) -> bool:
        """True when the answer came from other than the first deployment tried."""
        return bool(self.attempts) and self.attempts[0].deployment != self.deployment


class EmbeddingResponse(BaseModel):
    """The result of `Router.embed`: one vector per input, in input order."""

    model_config = ConfigDict(frozen=True)

    embeddings: list[list[float]]
    deployment: str
    model: str
    provider: str
    route: str
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: tuple[Attempt, ...] = ()
    cached: bool = False


class ToolCallDelta(BaseModel):
    """A fragment of a streamed tool call: `index` says which call; `id` and the
    function's `name` come in its first fragment, `arguments` in pieces."""

    model_config = ConfigDict(frozen=True)

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class StreamChunk(BaseModel):
    """One piece of a streamed answer.

    Text chunks carry `delta`, tool-call fragments `tool_calls`; the last
    chunk has `done=True` and carries the assembled `message`, the usage,
    cost, route and attempts of the whole stream.
    """

    model_config = ConfigDict(frozen=True)

    delta: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    deployment: str
    done: bool = False
    id: str = ""
    route: str = ""
    finish_reason: str | None = None
    message: AssistantMessage | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    attempts: tuple[Attempt, ...] = ()
    cached: bool = False


def message_dict(message: AssistantMessage) -> dict[str, Any]:
    """The assistant message as a request message dict (None fields left out)."""
    return message.model_dump(exclude_none=True)


def new_response_id() -> str:
    """An id for an answer the provider gave none (and for each cache hit): 128 random bits
    from the OS, as hex (what `uuid4().hex` holds, without building a UUID: ~1.5 µs less)."""
    return "chatcmpl-router-" + os.urandom(16).hex()
