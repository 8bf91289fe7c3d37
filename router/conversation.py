"""A conversation whose history lives in a `HistoryStore` and is sent whole to the router on each turn.

The router fits the history into each attempt's deployment (`fit_history=True`:
`router.history.fit_messages`, budget = context window - max output tokens),
so the stored history stays complete and a fallback to a smaller window only
trims more of what is sent.

>>> store = history_store_from_url("redis://127.0.0.1:6379/0?prefix=app:hist:")  # doctest: +SKIP
>>> conv = Conversation(router.chat, store, tenant="acme", system="Be brief.")  # doctest: +SKIP
>>> r = await conv.chat("What is 2+2?")  # doctest: +SKIP
>>> r = await conv.chat("And times 3?")  # doctest: +SKIP
>>> conv.id  # keep it to resume the conversation later, from any process sharing the store  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from router.errors import InvalidRequest
from router.history.base import HistoryStore, check_key


class AssistantMessage(Protocol):
    """What a response's `message` must offer: an OpenAI-shaped assistant message dict."""

    def model_dump(self, *, exclude_none: bool = ...) -> dict[str, Any]: ...


class ChatResult(Protocol):
    """What `ChatFn` returns (`router.models.LLMResponse` is one)."""

    @property
    def message(self) -> AssistantMessage: ...


R = TypeVar("R", bound=ChatResult)

#: `async (messages: list[dict], *, tenant: str, fit_history: bool, **params) -> R`, e.g. `Router.chat`.
ChatFn = Callable[..., Awaitable[R]]

#: A user turn: text, or a list of OpenAI content parts (`{"type": "text", ...}`, `{"type": "image_url", ...}`).
Content = str | Sequence[Mapping[str, object]]

_RESERVED = frozenset({"messages", "tenant", "fit_history"})


def _user_content(content: Content) -> str | list[dict[str, object]]:
    if isinstance(content, str):
        return content
    parts = [dict(p) for p in content if isinstance(p, Mapping) and "type" in p]
    if len(parts) != len(content):
        raise InvalidRequest("content must be a string or a list of content parts, each a mapping with a 'type'")
    return parts


def _system_messages(system: str | Sequence[Mapping[str, object]] | None) -> list[dict[str, object]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    return [dict(m) for m in system]


def pending_tool_calls(history: Sequence[Mapping[str, object]]) -> list[dict[str, Any]]:
    """The tool calls of the last assistant message that have no tool result after them yet."""
    for i in range(len(history) - 1, -1, -1):
        message = history[i]
        calls = message.get("tool_calls")
        if message.get("role") == "assistant" and isinstance(calls, list) and calls:
            answered = {m.get("tool_call_id") for m in history[i + 1:] if m.get("role") == "tool"}
            return [dict(c) for c in calls if isinstance(c, Mapping) and c.get("id") not in answered]
        if message.get("role") in ("user", "assistant"):
            return []
    return []


class Conversation(Generic[R]):
    """One conversation of one tenant: turns are stored, the whole history is sent, the router fits it.

    `chat` is bound by the caller (`Router.chat`). `system` (a string, or
    message dicts such as a rendered prompt's) is prepended on every call and
    never stored, so editing it changes every conversation's next turn.
    `params` are default request parameters (route, model, max_tokens, tools,
    ...); a call's own keyword arguments win. `id` defaults to a new random id.

    Turns of one `Conversation` object run one at a time. Two objects (or two
    processes) on the same id are not serialised: each appends its own turns.
    Raises `InvalidRequest` for an empty tenant or id.
    """

    def __init__(
        self,
        chat: ChatFn[R],
        store: HistoryStore,
        *,
        tenant: str,
        id: str | None = None,
        system: str | Sequence[Mapping[str, object]] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.id = id if id is not None else uuid.uuid4().hex
        check_key(tenant, self.id)
        self.tenant = tenant
        self.store = store
        self._chat = chat
        self._system = _system_messages(system)
        self._params = dict(params or {})
        if reserved := _RESERVED & set(self._params):
            raise InvalidRequest(f"params may not set {', '.join(sorted(reserved))}: the conversation does")
        self._lock = asyncio.Lock()

    async def chat(self, content: Content | None = None, **params: Any) -> R:
        """Send the history plus a user turn (none when `content` is None: e.g. after tool results).

        Calls `chat(messages=system + history + [user], tenant=..., fit_history=True, **params)`,
        then stores the user turn and the assistant's reply together
        (`response.message.model_dump(exclude_none=True)`, which may hold
        `tool_calls` and no content). If the call raises, nothing is stored.
        Raises what `chat` raises, `HistoryStoreError`, and `InvalidRequest`.
        """
        if reserved := _RESERVED & set(params):
            raise InvalidRequest(f"chat() may not set {', '.join(sorted(reserved))}: the conversation does")
        turn = [] if content is None else [{"role": "user", "content": _user_content(content)}]
        async with self._lock:
            history = await self.store.load(self.tenant, self.id)
            if not history and not turn:
                raise InvalidRequest("nothing to send: give content for the first turn")
            messages = [*self._system, *history, *turn]
            response = await self._chat(messages, tenant=self.tenant, fit_history=True, **{**self._params, **params})
            reply = response.message.model_dump(exclude_none=True)
            reply["role"] = "assistant"
            await self.store.append(self.tenant, self.id, [*turn, reply])
        return response

    async def add_tool_result(self, tool_call_id: str, content: str) -> None:
        """Store the result of one tool call the last assistant message made.

        InvalidRequest if no call with that id is waiting for its result: a
        tool message without its call would be refused by the provider.
        """
        async with self._lock:
            waiting = pending_tool_calls(await self.store.load(self.tenant, self.id))
            if tool_call_id not in {c.get("id") for c in waiting}:
                ids = ", ".join(str(c.get("id")) for c in waiting) or "none"
                raise InvalidRequest(f"tool_call_id {tool_call_id!r} is not waiting for a result (waiting: {ids})")
            await self.store.append(self.tenant, self.id,
                                    [{"role": "tool", "tool_call_id": tool_call_id, "content": content}])

    async def add(self, messages: Sequence[Mapping[str, object]]) -> None:
        """Store messages as they are (e.g. earlier turns imported from elsewhere)."""
        async with self._lock:
            await self.store.append(self.tenant, self.id, messages)

    async def pending_tool_calls(self) -> list[dict[str, Any]]:
        """Tool calls of the last assistant message still waiting for `add_tool_result`."""
        return pending_tool_calls(await self.store.load(self.tenant, self.id))

    async def messages(self) -> list[dict[str, object]]:
        """What the next call would send before fitting: system messages, then the stored history."""
        return [*self._system, *await self.store.load(self.tenant, self.id)]

    async def clear(self) -> None:
        """Forget the stored history (the system messages stay: they are not stored)."""
        async with self._lock:
            await self.store.clear(self.tenant, self.id)
