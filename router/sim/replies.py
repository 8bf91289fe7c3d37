"""A chat reply decided up front, and its encodings as JSON and as SSE frames.

``plan_reply`` validates a ``/chat/completions`` body against a model and fixes
everything the answer will contain; the server then only decides *when* and
*whether* to send it.

Example:
    >>> from router.sim.models import SimModel
    >>> body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    >>> model = SimModel(name="m", output_tokens=5)
    >>> reply = plan_reply(body, model, seed=0, reply_id="c1", created=0)
    >>> reply.finish_reason, len(reply.tokens), reply.prompt_tokens
    ('length', 2, 5)
    >>> head, frames, tail = stream_frames(reply, cut=False)
    >>> len(frames), tail.endswith(b"data: [DONE]\\n\\n")
    (2, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.sim import generation, payloads, wire
from router.sim.models import SimModel

__all__ = ["ContextWindowExceeded", "Reply", "completion_body", "plan_reply", "stream_frames"]


class ContextWindowExceeded(wire.Reject):
    """The prompt plus ``max_tokens`` does not fit the model's window (a 400)."""


@dataclass(frozen=True)
class Reply:
    """What a successful chat completion will contain."""

    id: str
    created: int
    model: str
    tokens: list[str]
    finish_reason: str
    prompt_tokens: int
    include_usage: bool
    stream: bool


def plan_reply(
    body: Mapping[str, Any], model: SimModel, *, seed: int, reply_id: str, created: int
) -> Reply:
    """Validate a chat request and decide its reply.

    Raises ``wire.Reject`` (400) for a malformed request and its subclass
    ``ContextWindowExceeded`` when the prompt does not fit.
    """
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        message = "'messages' must be a non-empty array of objects."
        raise wire.reject(400, payloads.bad_request_error(message, "messages"))
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (type(limit) is not int or limit < 1):
        message = "'max_tokens' must be a positive integer."
        raise wire.reject(400, payloads.bad_request_error(message, "max_tokens"))
    prompt_tokens = generation.estimate_prompt_tokens(messages)
    requested = prompt_tokens + (limit or 0)
    if requested > model.context_window:
        error = payloads.context_length_error(model.context_window, requested)
        raise ContextWindowExceeded(wire.json_response(error, 400))
    length = generation.sample_length(model.output_tokens, seed, model.name, messages)
    tokens = generation.reply_tokens(seed, model.name, messages, length)
    finish_reason = "stop"
    if limit is not None and len(tokens) > limit:
        tokens, finish_reason = tokens[:limit], "length"
    options = body.get("stream_options")
    return Reply(
        id=reply_id,
        created=created,
        model=model.name,
        tokens=tokens,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        include_usage=isinstance(options, Mapping) and options.get("include_usage") is True,
        stream=body.get("stream") is True,
    )


def completion_body(reply: Reply) -> payloads.JSONDict:
    """The non-streaming ``chat.completion`` for ``reply``."""
    return payloads.chat_completion(
        reply.id,
        reply.created,
        reply.model,
        "".join(reply.tokens),
        reply.finish_reason,
        payloads.usage(reply.prompt_tokens, len(reply.tokens)),
    )


def stream_frames(reply: Reply, *, cut: bool) -> tuple[bytes, list[bytes], bytes]:
    """SSE frames for ``reply``: the role chunk, one per token, and the end.

    The end is the finish chunk, the usage chunk when asked for, and
    ``[DONE]``. With ``cut`` only half the tokens (at least one) are kept and
    the end is empty: the caller drops the connection instead.
    """

    def chunk(delta: Mapping[str, Any] | None, finish: str | None = None) -> bytes:
        usage = payloads.usage(reply.prompt_tokens, len(reply.tokens)) if delta is None else None
        encoded = payloads.chat_chunk(
            reply.id,
            reply.created,
            reply.model,
            delta,
            finish,
            with_usage_field=reply.include_usage,
            usage_=usage,
        )
        return payloads.sse(encoded)

    tokens = reply.tokens[: max(1, len(reply.tokens) // 2)] if cut else reply.tokens
    head = chunk({"role": "assistant", "content": ""})
    frames = [chunk({"content": token}) for token in tokens]
    if cut:
        return head, frames, b""
    tail = [chunk({}, reply.finish_reason)]
    if reply.include_usage:
        tail.append(chunk(None))
    tail.append(payloads.SSE_DONE)
    return head, frames, b"".join(tail)
