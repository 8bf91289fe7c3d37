"""Anthropic Messages API dialect: ``POST /v1/messages``.

LiteLLM 1.110.2 calls ``anthropic/<model>`` at ``ensure_api_route(api_base,
"v1/messages")`` (``litellm/main.py``): with ``api_base=sim.base_url`` (which
ends in ``/v1``) that is ``/v1/v1/messages``, with ``api_base=sim.root_url``
it is ``/v1/messages``; the server answers both. The key travels in
``x-api-key``.

Requests are translated to the OpenAI chat shape the planner reads: ``system``
becomes a system message, ``tool_result`` blocks become ``role: tool``
messages, ``tool_use`` blocks assistant ``tool_calls``, ``image`` blocks
``image_url`` parts, ``tools[].input_schema`` function ``parameters``,
``tool_choice`` ``auto``/``any``/``tool``/``none`` the OpenAI values.

Replies come back as a ``message`` with ``text``/``tool_use`` blocks and
Anthropic usage (``input_tokens`` excludes ``cache_read_input_tokens``), or as
SSE ``message_start``, ``content_block_start``/``delta``/``stop``,
``message_delta``, ``message_stop``. Errors become ``{"type": "error", "error":
{"type", "message"}}``; an overloaded 503 becomes Anthropic's 529.

Example:
    >>> body = {"model": "m", "max_tokens": 50, "system": "be brief",
    ...         "messages": [{"role": "user", "content": "hi"}]}
    >>> [m["role"] for m in ANTHROPIC.chat_body(body)["messages"]]
    ['system', 'user']
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from router.sim import payloads, replies, wire

__all__ = ["ANTHROPIC", "AnthropicDialect"]

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OVERLOADED = 529


def _bad(message: str) -> wire.Reject:
    return wire.reject(400, payloads.bad_request_error(message))


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, Mapping) and b.get("type") == "text")
    return ""


def _part(block: Mapping[str, Any]) -> dict[str, Any] | None:
    """An OpenAI content part for an Anthropic user block (``None``: not content)."""
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    raw_source = block.get("source")
    source: Mapping[str, Any] = raw_source if isinstance(raw_source, Mapping) else {}
    data = f"data:{source.get('media_type')};base64,{source.get('data')}" if "data" in source else source.get("url")
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": data}}
    if kind == "document":
        return {"type": "file", "file": {"file_data": data}}
    return None


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw or not all(isinstance(m, Mapping) for m in raw):
        raise _bad("messages: at least one message is required")
    system = _text(body.get("system"))
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in raw:
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            raise _bad(f"messages: Unexpected role {role!r}. Allowed roles are 'user' or 'assistant'")
        if not isinstance(content, list):
            out.append({"role": role, "content": content if isinstance(content, str) else ""})
            continue
        blocks = [b for b in content if isinstance(b, Mapping)]
        if role == "assistant":
            calls = [
                {"id": b.get("id"), "type": "function",
                 "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input", {}))}}
                for b in blocks if b.get("type") == "tool_use"
            ]
            turn: dict[str, Any] = {"role": "assistant", "content": _text(blocks) or None}
            out.append({**turn, "tool_calls": calls} if calls else turn)
            continue
        for block in blocks:  # tool results answer the previous turn, so they come first
            if block.get("type") == "tool_result":
                out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                            "content": _text(block.get("content"))})
        parts = [p for p in map(_part, blocks) if p is not None]
        if parts:
            out.append({"role": "user", "content": parts})
    return out


def _tool_choice(choice: object) -> tuple[object, bool | None]:
    """OpenAI ``tool_choice`` and ``parallel_tool_calls`` for an Anthropic ``tool_choice``."""
    if not isinstance(choice, Mapping):
        return None, None
    kind = choice.get("type")
    parallel = None if "disable_parallel_tool_use" not in choice else not choice["disable_parallel_tool_use"]
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}.get(str(kind), "auto"), parallel


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: ".encode() + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


class AnthropicDialect:
    """``POST /v1/messages``, as LiteLLM's ``anthropic/`` provider sends it."""

    id_prefix = "msg_sim"
    keepalive_frame = _sse({"type": "ping"})
    limit_in_window = False  # LiteLLM's default max_tokens would not fit a small simulated window
    event_prefix = b"event: content_block_delta\n"

    def chat_body(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """Translate a Messages request; ``max_tokens`` is required, as Anthropic wants."""
        if type(body.get("max_tokens")) is not int:
            raise _bad("max_tokens: Field required")
        chat: dict[str, Any] = {
            "model": body.get("model"),
            "messages": _messages(body),
            "max_tokens": body["max_tokens"],
            "stream": body.get("stream") is True,
        }
        tools = body.get("tools")
        if isinstance(tools, list) and tools:
            chat["tools"] = [
                {"type": "function", "function": {"name": t.get("name"), "description": t.get("description", ""),
                                                  "parameters": t.get("input_schema") or {}}}
                for t in tools if isinstance(t, Mapping)
            ]
            choice, parallel = _tool_choice(body.get("tool_choice"))
            if choice is not None:
                chat["tool_choice"] = choice
            if parallel is not None:
                chat["parallel_tool_calls"] = parallel
        if body.get("stop_sequences"):
            chat["stop"] = body["stop_sequences"]
        return chat

    def _usage(self, reply: replies.Reply, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": reply.prompt_tokens - reply.cached_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": reply.cached_tokens,
        }

    def _message(self, reply: replies.Reply, content: list[Any], stop_reason: str | None) -> payloads.JSONDict:
        message: payloads.JSONDict = {
            "id": reply.id, "type": "message", "role": "assistant", "model": reply.model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
        }
        if not reply.omit_usage:
            message["usage"] = self._usage(reply, reply.completion_tokens if stop_reason else 1)
        return message

    def completion(self, reply: replies.Reply, *, without_choices: bool) -> payloads.JSONDict:
        """A ``message``: a text block (if any text) then one ``tool_use`` block per call."""
        content: list[Any] = [{"type": "text", "text": reply.text}] if reply.tokens or not reply.tool_calls else []
        content += [
            {"type": "tool_use", "id": call.id.replace("call_", "toolu_", 1), "name": call.name,
             "input": json.loads(call.arguments)}
            for call in reply.tool_calls
        ]
        message = self._message(reply, content, _STOP_REASONS[reply.finish_reason])
        if without_choices:
            del message["content"]
        return message

    def frames(self, reply: replies.Reply, *, without_choices: bool) -> tuple[bytes, list[bytes], bytes]:
        """Anthropic's event sequence; every frame is one delta (a block change rides along)."""
        head = _sse({"type": "message_start", "message": self._message(reply, [], None)})
        if without_choices:
            return head, [], _sse({"type": "message_stop"})
        frames: list[bytes] = []
        index = 0
        if reply.tool_calls:
            for index, call in enumerate(reply.tool_calls):
                block = {"type": "tool_use", "id": call.id.replace("call_", "toolu_", 1), "name": call.name,
                         "input": {}}
                opening = b"" if index == 0 else _sse({"type": "content_block_stop", "index": index - 1})
                opening += _sse({"type": "content_block_start", "index": index, "content_block": block})
                pieces = [call.arguments[i : i + 8] for i in range(0, len(call.arguments), 8)] or [""]
                for n, piece in enumerate(pieces):
                    piece_event = {"type": "content_block_delta", "index": index,
                                   "delta": {"type": "input_json_delta", "partial_json": piece}}
                    frames.append((opening if n == 0 else b"") + _sse(piece_event))
        else:
            head += _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            frames = [
                _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}})
                for token in reply.tokens
            ]
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP_REASONS[reply.finish_reason], "stop_sequence": None},
        }
        if not reply.omit_usage:
            delta["usage"] = {"output_tokens": reply.completion_tokens}
        tail = _sse({"type": "content_block_stop", "index": index}) + _sse(delta) + _sse({"type": "message_stop"})
        return head, frames, tail

    def error(self, response: web.Response) -> web.Response:
        """``{"type": "error", "error": {"type", "message"}}``; 503 becomes 529 ``overloaded_error``."""
        try:
            error = json.loads(bytes(response.body))["error"]  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError):
            return response  # not an error body (MALFORMED): sent as is
        status = _OVERLOADED if response.status == 503 else response.status
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"),
                                           "message": error.get("message", "")}}
        return wire.json_response(body, status, headers)


ANTHROPIC = AnthropicDialect()
