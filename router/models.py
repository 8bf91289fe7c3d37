"""Typed values that cross the router's public API.

>>> LLMMessage(role="user", content="Tell me a joke").role
'user'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool", "developer"]
Outcome = Literal["ok", "error", "skipped"]


class LLMMessage(BaseModel):
    """One chat message, in OpenAI's shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str
    name: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        return out


class Usage(BaseModel):
    """Tokens a call consumed."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0

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
    """The result of `Router.chat` / `Router.complete`."""

    model_config = ConfigDict(frozen=True)

    text: str
    deployment: str
    model: str
    provider: str
    route: str
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    finish_reason: str | None = None
    attempts: tuple[Attempt, ...] = ()

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


class StreamChunk(BaseModel):
    """One piece of a streamed answer.

    Text chunks carry `delta`; the last chunk has `done=True` and carries the
    usage, cost and attempts of the whole stream.
    """

    model_config = ConfigDict(frozen=True)

    delta: str = ""
    deployment: str
    done: bool = False
    finish_reason: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    attempts: tuple[Attempt, ...] = ()
