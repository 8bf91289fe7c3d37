"""A chat reply decided up front, and its OpenAI encodings as JSON and as SSE frames.

``plan_reply`` validates a ``/chat/completions`` body (OpenAI shape; the
Anthropic endpoint translates into it first) against a model and fixes
everything the answer will contain: text or tool calls, finish reason, usage.
The server then only decides *when* and *whether* to send it.

What the answer is, first rule that applies:

1. tool calls (``tools.plan_tool_calls``), finish ``tool_calls``;
2. ``response_format`` ``json_schema``: a JSON value of the schema, every
   property filled; ``json_object``: ``{"answer": "<words>"}``;
3. after tool results: "The tool returned: <results>";
4. words from the vocabulary (``generation.reply_tokens``).

Text is then cut at the first ``stop`` string (finish ``stop``) and at
``max_tokens`` (finish ``length``).

Example:
    >>> from router.sim.models import SimModel
    >>> body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    >>> model = SimModel(name="m", output_tokens=5)
    >>> reply = plan_reply(body, model, seed=0, reply_id="c1", created=0)
    >>> reply.finish_reason, len(reply.tokens), reply.prompt_tokens
    ('length', 2, 5)
    >>> head, frames, tail = stream_frames(reply)
    >>> len(frames), tail.endswith(b"data: [DONE]\\n\\n")
    (2, True)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from router.sim import generation, payloads, schema_values, tools, wire
from router.sim.models import SimModel

__all__ = [
    "ContextWindowExceeded",
    "Reply",
    "completion_body",
    "plan_reply",
    "stream_frames",
]

_PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal", "audio")
_ARGUMENT_FRAGMENT_CHARS = 8  # tool-call arguments stream in pieces this long


class ContextWindowExceeded(wire.Reject):
    """The prompt plus ``max_tokens`` does not fit the model's window (a 400)."""


@dataclass(frozen=True)
class Reply:
    """What a successful chat completion will contain.

    ``tokens`` is the visible text cut in stream pieces (empty when the model
    calls tools); ``prompt_units`` the prompt's pseudo-tokens (for the cache).
    """

    id: str
    created: int
    model: str
    tokens: list[str]
    finish_reason: str
    prompt_tokens: int
    include_usage: bool
    stream: bool
    tool_calls: tuple[tools.ToolCall, ...] = ()
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    omit_usage: bool = False
    prompt_units: tuple[str, ...] = field(default=(), repr=False)

    @property
    def text(self) -> str:
        """The visible answer."""
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        """Text pieces, tool calls and reasoning, as OpenAI counts them."""
        return len(self.tokens) + sum(call.tokens for call in self.tool_calls) + self.reasoning_tokens

    def usage(self) -> payloads.JSONDict | None:
        """The OpenAI ``usage`` object, or ``None`` when the model omits it."""
        if self.omit_usage:
            return None
        return payloads.usage(
            self.prompt_tokens,
            self.completion_tokens,
            cached_tokens=self.cached_tokens,
            reasoning_tokens=self.reasoning_tokens,
        )


def _bad(message: str, param: str) -> wire.Reject:
    return wire.reject(400, payloads.bad_request_error(message, param))


def _check_parts(messages: Sequence[Mapping[str, Any]], model: SimModel) -> None:
    """Refuse unknown part types, and images for a model without vision (as OpenAI words it)."""
    for m_index, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for p_index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            param = f"messages.[{m_index}].content.[{p_index}].type"
            if kind not in _PART_TYPES:
                raise _bad(f"Invalid value: {kind!r}. Supported values are: {', '.join(_PART_TYPES)}.", param)
            if kind == "image_url" and not model.vision:
                error = payloads.error_body(
                    "Invalid content type. image_url is only supported by certain models.",
                    "invalid_request_error",
                    param,
                    None,
                )
                raise wire.reject(400, error)


def _structured_text(body: Mapping[str, Any], words: list[str]) -> str | None:
    """The JSON text ``response_format`` asks for, or ``None`` for free text."""
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return json.dumps({"answer": "".join(words)})
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise _bad("'response_format.json_schema.schema' must be a JSON schema object.", "response_format")
        return json.dumps(schema_values.value_for(schema, optional=True))
    raise _bad("'response_format.type' must be 'text', 'json_object' or 'json_schema'.", "response_format")


def _cut_at_stop(tokens: list[str], stop: object) -> tuple[list[str], bool]:
    """Drop everything from the first stop string on; tells whether one was found."""
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    text = "".join(tokens)
    hits = [text.find(s) for s in stops if isinstance(s, str) and s and s in text]
    if not hits:
        return tokens, False
    end, kept, used = min(hits), [], 0
    for token in tokens:
        if used + len(token) > end:
            if end > used:
                kept.append(token[: end - used])
            break
        kept.append(token)
        used += len(token)
    return kept, True


def plan_reply(
    body: Mapping[str, Any],
    model: SimModel,
    *,
    seed: int,
    reply_id: str,
    created: int,
    limit_in_window: bool = True,
) -> Reply:
    """Validate a chat request and decide its reply (``cached_tokens`` left at 0).

    ``limit_in_window``: ``max_tokens`` counts against the context window, as
    OpenAI does (the Anthropic dialect turns it off: LiteLLM sends its default
    ``max_tokens``, often larger than a small simulated window).

    Raises ``wire.Reject`` (400) for a malformed request, an image sent to a
    model without vision, bad ``tools``/``tool_choice``/``response_format``,
    and its subclass ``ContextWindowExceeded`` when the prompt does not fit.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _bad("'messages' must be a non-empty array of objects.", "messages")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (type(limit) is not int or limit < 1):
        raise _bad("'max_tokens' must be a positive integer.", "max_tokens")
    _check_parts(messages, model)
    units = generation.prompt_units(messages, body.get("tools"))
    requested = len(units) + (limit or 0 if limit_in_window else 0)
    if requested > model.context_window:
        error = payloads.context_length_error(model.context_window, requested)
        raise ContextWindowExceeded(wire.json_response(error, 400))
    calls = tools.plan_tool_calls(body, seed=seed, model=model.name)
    tokens: list[str] = []
    finish_reason = "tool_calls" if calls else "stop"
    if not calls:
        length = generation.sample_length(model.output_tokens, seed, model.name, messages)
        words = generation.reply_tokens(seed, model.name, messages, length)
        structured = _structured_text(body, words)
        after_tools = tools.tool_result_answer(messages)
        if structured is not None:
            tokens = generation.chunk_text(structured)
        elif after_tools is not None:
            tokens = generation.split_words(after_tools)
        else:
            tokens = words
        tokens, _ = _cut_at_stop(tokens, body.get("stop"))
        if limit is not None and len(tokens) > limit:
            tokens, finish_reason = tokens[:limit], "length"
    options = body.get("stream_options")
    return Reply(
        id=reply_id,
        created=created,
        model=model.name,
        tokens=tokens,
        finish_reason=finish_reason,
        prompt_tokens=len(units),
        include_usage=isinstance(options, Mapping) and options.get("include_usage") is True,
        stream=body.get("stream") is True,
        tool_calls=calls,
        reasoning_tokens=model.reasoning_tokens,
        omit_usage=model.omit_usage,
        prompt_units=tuple(units),
    )


def completion_body(reply: Reply, *, without_choices: bool = False) -> payloads.JSONDict:
    """The non-streaming ``chat.completion`` for ``reply`` (``without_choices``: the NO_CHOICES fault)."""
    message: payloads.JSONDict = {"content": reply.text if not reply.tool_calls else None}
    if reply.tool_calls:
        message["tool_calls"] = [call.openai() for call in reply.tool_calls]
    body = payloads.chat_completion(
        reply.id, reply.created, reply.model, message, reply.finish_reason, reply.usage()
    )
    if without_choices:
        del body["choices"]
    return body


def _tool_call_deltas(calls: Sequence[tools.ToolCall]) -> list[payloads.JSONDict]:
    """OpenAI's tool-call deltas: id and name first (empty arguments), then argument fragments."""
    deltas: list[payloads.JSONDict] = []
    for index, call in enumerate(calls):
        opening = call.openai(index)
        opening["function"] = {"name": call.name, "arguments": ""}
        deltas.append({"tool_calls": [opening]})
        for start in range(0, len(call.arguments), _ARGUMENT_FRAGMENT_CHARS):
            fragment = call.arguments[start : start + _ARGUMENT_FRAGMENT_CHARS]
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    return deltas


def stream_frames(reply: Reply, *, without_choices: bool = False) -> tuple[bytes, list[bytes], bytes]:
    """SSE frames for ``reply``: the role chunk, one per token or tool-call piece, and the end.

    The end is the finish chunk, the usage chunk when asked for (and not
    omitted), and ``[DONE]``. ``without_choices`` sends one chunk that has no
    ``choices`` key, then ``[DONE]``.
    """
    usage_field = reply.include_usage and not reply.omit_usage

    def chunk(delta: Mapping[str, Any] | None, finish: str | None = None) -> bytes:
        encoded = payloads.chat_chunk(
            reply.id,
            reply.created,
            reply.model,
            delta,
            finish,
            with_usage_field=usage_field,
            usage_=reply.usage() if delta is None else None,
        )
        return payloads.sse(encoded)

    if without_choices:
        broken = payloads.chat_chunk(reply.id, reply.created, reply.model, {"content": reply.text})
        del broken["choices"]
        return payloads.sse(broken), [], payloads.SSE_DONE
    if reply.tool_calls:
        head = chunk({"role": "assistant", "content": None})
        deltas = _tool_call_deltas(reply.tool_calls)
    else:
        head = chunk({"role": "assistant", "content": ""})
        deltas = [{"content": token} for token in reply.tokens]
    frames = [chunk(delta) for delta in deltas]
    tail = [chunk({}, reply.finish_reason)]
    if usage_field:
        tail.append(chunk(None))
    tail.append(payloads.SSE_DONE)
    return head, frames, b"".join(tail)
