"""Tool calling: which tools a simulated model calls, and its answer to their results.

Rules, chosen so a two-round agent loop always terminates:

- the last message is a tool result (``role: tool``): no call; the answer is a
  text quoting every trailing tool result (``tool_result_answer``);
- ``tool_choice: "none"`` or no ``tools``: no call;
- ``tool_choice: {"type": "function", "function": {"name": X}}``: one call to X;
- ``"auto"``, ``"required"`` or absent: one call to the first tool, or one call
  per tool when ``parallel_tool_calls`` is ``true`` (explicitly).

Arguments are the tool's ``parameters`` schema filled with its required
properties (``schema_values.value_for``), as a JSON string.

Example:
    >>> tools = [{"type": "function", "function": {"name": "get_weather",
    ...           "parameters": {"type": "object", "required": ["city"],
    ...                          "properties": {"city": {"type": "string"}}}}}]
    >>> body = {"messages": [{"role": "user", "content": "weather?"}], "tools": tools}
    >>> [(call.name, call.arguments) for call in plan_tool_calls(body, seed=0, model="m")]
    [('get_weather', '{"city": "Paris"}')]
    >>> tool_result_answer([{"role": "tool", "tool_call_id": "c", "content": "21 C"}])
    'The tool returned: 21 C'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router.sim import generation, payloads, schema_values, wire

__all__ = ["ToolCall", "plan_tool_calls", "tool_result_answer"]

_QUOTED_RESULT_CHARS = 400  # a long tool result is quoted up to here


@dataclass(frozen=True)
class ToolCall:
    """One call the model makes: ``arguments`` is a JSON object as text."""

    id: str
    name: str
    arguments: str

    def openai(self, index: int | None = None) -> dict[str, Any]:
        """The OpenAI ``tool_calls`` entry (with ``index`` for a stream delta)."""
        entry: dict[str, Any] = {"id": self.id, "type": "function",
                                 "function": {"name": self.name, "arguments": self.arguments}}
        return entry if index is None else {"index": index, **entry}

    @property
    def tokens(self) -> int:
        """What the call costs in completion tokens."""
        return generation.estimate_text_tokens(self.name + self.arguments)


def _bad(message: str, param: str) -> wire.Reject:
    return wire.reject(400, payloads.bad_request_error(message, param))


def _functions(tools: object) -> list[Mapping[str, Any]]:
    if not isinstance(tools, list) or not tools:
        raise _bad("'tools' must be a non-empty array of function tools.", "tools")
    functions = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise _bad("Each tool must be {'type': 'function', 'function': {'name': ...}}.", "tools")
        functions.append(function)
    return functions


def plan_tool_calls(body: Mapping[str, Any], *, seed: int, model: str) -> tuple[ToolCall, ...]:
    """The calls the model answers ``body`` with; empty for a text answer.

    Raises ``wire.Reject`` (400) for malformed ``tools`` or a ``tool_choice``
    naming no tool, as OpenAI does.
    """
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is None:
        if choice is not None and choice != "none":
            raise _bad("'tool_choice' is only allowed when 'tools' are specified.", "tool_choice")
        return ()
    functions = _functions(tools)
    messages = body.get("messages") or []
    if choice == "none" or (messages and messages[-1].get("role") in ("tool", "function")):
        return ()
    if isinstance(choice, Mapping):
        wanted = choice.get("function", {}).get("name") if isinstance(choice.get("function"), Mapping) else None
        chosen = [f for f in functions if f["name"] == wanted]
        if not chosen:
            raise _bad(f"Invalid value for 'tool_choice': no tool named {wanted!r} in 'tools'.", "tool_choice")
    elif choice in (None, "auto", "required"):
        chosen = functions if body.get("parallel_tool_calls") is True else functions[:1]
    else:
        raise _bad("'tool_choice' must be 'none', 'auto', 'required' or a named function.", "tool_choice")
    key = json.dumps([seed, model, messages], sort_keys=True, default=str)
    return tuple(
        ToolCall(
            id="call_" + hashlib.blake2b(f"{key}\x00{index}".encode(), digest_size=12).hexdigest(),
            name=function["name"],
            arguments=json.dumps(schema_values.value_for(function.get("parameters"), name=function["name"])),
        )
        for index, function in enumerate(chosen)
    )


def tool_result_answer(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The final text after tool results: quotes the trailing ``role: tool`` messages.

    ``None`` when the last message is not a tool result.
    """
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") not in ("tool", "function"):
            break
        results.append(generation.message_text(message.get("content"))[:_QUOTED_RESULT_CHARS])
    if not results:
        return None
    return "The tool returned: " + "; ".join(reversed(results))
