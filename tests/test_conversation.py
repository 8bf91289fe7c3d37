"""Conversations over a history store, and fitting a history into a token budget."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from router.conversation import Conversation, pending_tool_calls
from router.errors import InvalidRequest, ProviderUnavailable
from router.history import MemoryHistoryStore, fit_messages
from router.tokens import count_tokens

pytestmark = pytest.mark.timeout(30)

Message = dict[str, Any]


class FakeMessage(BaseModel):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class FakeResponse:
    message: FakeMessage


@dataclass
class FakeChat:
    """Stands in for `Router.chat`: records each call and answers from a script."""

    replies: list[FakeMessage | Exception] = field(default_factory=list)
    calls: list[tuple[list[Message], dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, messages: list[Message], **kwargs: Any) -> FakeResponse:
        self.calls.append(([dict(m) for m in messages], kwargs))
        reply = self.replies.pop(0) if self.replies else FakeMessage(content=f"answer {len(self.calls)}")
        if isinstance(reply, Exception):
            raise reply
        return FakeResponse(reply)


def tool_call(call_id: str, name: str = "get_weather") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": '{"city": "Paris"}'}}


# --- Conversation ----------------------------------------------------------------------------


async def test_each_turn_sends_the_whole_history_and_stores_both_sides() -> None:
    chat = FakeChat()
    store = MemoryHistoryStore()
    conv = Conversation(chat, store, tenant="acme", system="Be brief.", params={"route": "default", "max_tokens": 50})
    first = await conv.chat("Hi")
    assert first.message.content == "answer 1"
    await conv.chat("And then?", max_tokens=99)
    sent, kwargs = chat.calls[1]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "answer 1"},
        {"role": "user", "content": "And then?"},
    ]
    assert kwargs == {"tenant": "acme", "fit_history": True, "route": "default", "max_tokens": 99}
    assert chat.calls[0][1]["max_tokens"] == 50
    stored = await store.load("acme", conv.id)
    assert stored == [*sent[1:], {"role": "assistant", "content": "answer 2"}]  # the system prompt is not stored
    assert await conv.messages() == [sent[0], *stored]


async def test_a_failed_call_stores_nothing() -> None:
    chat = FakeChat(replies=[ProviderUnavailable("down", deployment="d")])
    conv = Conversation(chat, MemoryHistoryStore(), tenant="acme")
    with pytest.raises(ProviderUnavailable):
        await conv.chat("Hi")
    assert await conv.messages() == []
    await conv.chat("Hi again")
    assert [m["content"] for m in await conv.messages()] == ["Hi again", "answer 2"]


async def test_tool_calls_results_and_continuation() -> None:
    chat = FakeChat(replies=[FakeMessage(tool_calls=[tool_call("c1"), tool_call("c2")])])
    conv = Conversation(chat, MemoryHistoryStore(), tenant="acme")
    response = await conv.chat("Weather in Paris and Rome?")
    assert response.message.tool_calls is not None
    assert [c["id"] for c in await conv.pending_tool_calls()] == ["c1", "c2"]
    assert (await conv.messages())[-1] == {"role": "assistant", "tool_calls": [tool_call("c1"), tool_call("c2")]}
    with pytest.raises(InvalidRequest, match=r"'c9' is not waiting.*c1, c2"):
        await conv.add_tool_result("c9", "sunny")
    await conv.add_tool_result("c1", "sunny")
    with pytest.raises(InvalidRequest, match="waiting: c2"):
        await conv.add_tool_result("c1", "again")
    await conv.add_tool_result("c2", "rainy")
    assert await conv.pending_tool_calls() == []
    await conv.chat()  # no new user turn: the model reads the tool results
    sent = chat.calls[1][0]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert [m["role"] for m in await conv.messages()] == ["user", "assistant", "tool", "tool", "assistant"]


async def test_a_conversation_resumes_from_its_id_and_tenants_never_meet() -> None:
    store = MemoryHistoryStore()
    conv = Conversation(FakeChat(), store, tenant="acme", id="shared-id")
    await conv.chat("secret of acme")
    resumed = Conversation(FakeChat(), store, tenant="acme", id="shared-id")
    assert [m["content"] for m in await resumed.messages()] == ["secret of acme", "answer 1"]
    other_chat = FakeChat()
    other = Conversation(other_chat, store, tenant="globex", id="shared-id")
    assert await other.messages() == []
    await other.chat("hello")
    assert other_chat.calls[0][0] == [{"role": "user", "content": "hello"}]


async def test_content_parts_and_bad_arguments() -> None:
    chat = FakeChat()
    conv = Conversation(chat, MemoryHistoryStore(), tenant="acme")
    with pytest.raises(InvalidRequest, match="nothing to send"):
        await conv.chat()
    parts: list[dict[str, object]] = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:..."}},
    ]
    await conv.chat(parts)
    assert chat.calls[0][0][0] == {"role": "user", "content": parts}
    with pytest.raises(InvalidRequest, match="content parts"):
        await conv.chat([{"text": "no type"}, "not a part"])  # type: ignore[list-item]
    with pytest.raises(InvalidRequest, match="tenant"):
        await conv.chat("x", tenant="globex")
    with pytest.raises(InvalidRequest, match="fit_history"):
        Conversation(chat, MemoryHistoryStore(), tenant="acme", params={"fit_history": False})
    with pytest.raises(InvalidRequest, match="tenant"):
        Conversation(chat, MemoryHistoryStore(), tenant="")
    await conv.clear()
    assert await conv.messages() == []


async def test_system_may_be_a_rendered_prompt() -> None:
    chat = FakeChat()
    system = [{"role": "system", "content": "A"}, {"role": "developer", "content": "B"}]
    conv = Conversation(chat, MemoryHistoryStore(), tenant="acme", system=system)
    await conv.chat("go")
    assert chat.calls[0][0][:2] == system


def test_pending_tool_calls_stops_at_a_later_turn() -> None:
    history: list[Message] = [
        {"role": "assistant", "tool_calls": [tool_call("old")]},
        {"role": "user", "content": "never mind"},
    ]
    assert pending_tool_calls(history) == []


# --- fit_messages ----------------------------------------------------------------------------


def tokens(messages: Sequence[Mapping[str, object]]) -> int:
    """The router's own count (text content only, as count_tokens expects)."""
    return count_tokens([{"content": str(m.get("content") or "")} for m in messages])


def ten_turns() -> list[Message]:
    history: list[Message] = [{"role": "system", "content": "You are a careful assistant."}]
    for n in range(10):
        history.append({"role": "user", "content": f"question {n}: " + "words " * 40})
        history.append({"role": "assistant", "content": f"answer {n}: " + "words " * 40})
    history.append({"role": "user", "content": "last question"})
    return history


def test_a_small_window_keeps_system_and_newest_turns_a_large_one_everything() -> None:
    history = ten_turns()
    total = tokens(history)
    assert fit_messages(history, budget_tokens=total, count=tokens) == history
    assert fit_messages(history, budget_tokens=100_000, count=tokens) == history
    fitted = fit_messages(history, budget_tokens=total // 3, count=tokens)
    assert tokens(fitted) <= total // 3
    assert fitted[0] == history[0] and fitted[-1] == history[-1]
    assert fitted[1]["role"] == "user"  # whole turns went: the kept part starts at a question
    assert fitted[1:] == history[len(history) - len(fitted) + 1:]  # the newest ones
    assert len(fitted) < len(history) - 4
    assert tokens(with_previous_turn(history, fitted)) > total // 3  # no more was dropped than needed
    smaller = fit_messages(history, budget_tokens=total // 6, count=tokens)
    assert len(smaller) < len(fitted)  # a fallback to a smaller window trims more


def test_what_is_always_kept_is_returned_even_over_budget() -> None:
    history = ten_turns()
    fitted = fit_messages(history, budget_tokens=5, count=tokens)
    assert fitted == [history[0], history[-1]]


def test_tool_calls_and_results_are_dropped_together() -> None:
    history: list[Message] = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "weather? " + "pad " * 50},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("a")]},
        {"role": "tool", "tool_call_id": "a", "content": "sunny " * 50},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "and tomorrow?"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("b"), tool_call("c")]},
        {"role": "tool", "tool_call_id": "b", "content": "rain " * 50},
        {"role": "tool", "tool_call_id": "c", "content": "wind " * 50},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("d")]},
        {"role": "tool", "tool_call_id": "d", "content": "snow"},
    ]
    fitted = fit_messages(history, budget_tokens=tokens(history) - 10, count=tokens)
    assert fitted == [history[0], *history[5:]]  # the older turn went whole
    fitted = fit_messages(history, budget_tokens=tokens([history[0], *history[5:]]) - 10, count=tokens)
    # then the exchanges between the last question and the last exchange: b and c go with their call
    assert fitted == [history[0], history[5], history[9], history[10]]


def test_a_leading_tool_message_without_its_call_is_dropped() -> None:
    history: list[Message] = [
        {"role": "system", "content": "sys"},
        {"role": "tool", "tool_call_id": "lost", "content": "result"},
        {"role": "user", "content": "hi"},
    ]
    assert fit_messages(history, budget_tokens=1000, count=tokens) == [history[0], history[2]]


def check_invariants(history: list[Message], fitted: list[Message], budget: int) -> None:
    assert [m for m in history if m["role"] in ("system", "developer")] == \
        [m for m in fitted if m["role"] in ("system", "developer")]
    last_user = max(i for i, m in enumerate(history) if m["role"] == "user")
    assert history[last_user] in fitted and history[_last_exchange(history)] in fitted
    positions = [history.index(m) for m in fitted]
    assert positions == sorted(positions)
    for i, m in enumerate(fitted):
        if m["role"] == "tool":  # its call is in the result, before it, with only tool messages between
            j = i - 1
            while fitted[j]["role"] == "tool":
                j -= 1
            assert m["tool_call_id"] in {c["id"] for c in fitted[j].get("tool_calls") or []}
        if m.get("tool_calls"):  # every call keeps all its results
            ids = {c["id"] for c in m["tool_calls"]}
            assert ids <= {r.get("tool_call_id") for r in fitted[i + 1:i + 1 + len(ids)]}
    pinned = {i for i, m in enumerate(history) if m["role"] in ("system", "developer")}
    always = pinned | {last_user} | set(range(_last_exchange(history), len(history)))
    minimal = [m for i, m in enumerate(history) if i in always]
    assert tokens(fitted) <= budget or fitted == minimal


def _last_exchange(history: list[Message]) -> int:
    """Index of the head of the last non-pinned exchange (an assistant call for trailing tool results)."""
    i = len(history) - 1
    while history[i]["role"] in ("system", "developer", "tool"):
        i -= 1
    return i


def random_history(rng: random.Random) -> list[Message]:
    """A history whose messages are all distinct (the checks find them by equality)."""
    n = iter(range(10_000))
    history: list[Message] = [{"role": "system", "content": "sys " * rng.randint(1, 20)}]
    for _ in range(rng.randint(1, 8)):
        history.append({"role": "user", "content": f"u{next(n)} " + "u " * rng.randint(1, 60)})
        for _ in range(rng.randint(0, 3)):
            calls = [tool_call(f"t{next(n)}") for _ in range(rng.randint(1, 3))]
            history.append({"role": "assistant", "content": None, "tool_calls": calls})
            history += [{"role": "tool", "tool_call_id": c["id"], "content": "r " * rng.randint(1, 60)}
                        for c in calls]
        if rng.random() < 0.8:
            history.append({"role": "assistant", "content": f"a{next(n)} " + "a " * rng.randint(1, 60)})
        if rng.random() < 0.2:
            history.append({"role": "developer", "content": f"note {next(n)}"})
    return history


def test_invariants_hold_for_random_histories_and_budgets() -> None:
    rng = random.Random(7)
    for _ in range(300):
        history = random_history(rng)
        budget = rng.randint(1, tokens(history) + 10)
        check_invariants(history, fit_messages(history, budget_tokens=budget, count=tokens), budget)


def test_count_is_called_a_logarithmic_number_of_times() -> None:
    history = [{"role": "system", "content": "sys"}]
    for n in range(500):
        history += [{"role": "user", "content": f"q{n} " * 20}, {"role": "assistant", "content": f"a{n} " * 20}]
    calls = 0

    def counting(messages: Sequence[Mapping[str, object]]) -> int:
        nonlocal calls
        calls += 1
        return tokens(messages)

    fitted = fit_messages(history, budget_tokens=8000, count=counting)
    assert calls <= 1 + 9  # the whole history once, then a bisection over 500 turns
    assert tokens(fitted) <= 8000 < tokens(with_previous_turn(history, fitted))


def with_previous_turn(history: list[Message], fitted: list[Message]) -> list[Message]:
    """`fitted` plus the turn before its oldest kept one: what fitting had to drop to stay in budget."""
    first_kept = history.index(fitted[1])
    previous = max(i for i in range(first_kept) if history[i]["role"] == "user")
    return [fitted[0], *history[previous:first_kept], *fitted[1:]]


async def test_the_router_fits_what_is_sent_and_the_store_keeps_everything() -> None:
    """How the lead wires it: the chat function fits per attempt; the stored history stays whole."""
    sent: list[list[Message]] = []

    async def chat(messages: list[Message], *, tenant: str, fit_history: bool, **params: Any) -> FakeResponse:
        window, max_tokens = 300, int(params["max_tokens"])
        fitted = fit_messages(messages, budget_tokens=window - max_tokens, count=tokens) if fit_history else messages
        sent.append(fitted)
        return FakeResponse(FakeMessage(content="ok " * 30))

    conv = Conversation(chat, MemoryHistoryStore(), tenant="acme", system="sys", params={"max_tokens": 100})
    for n in range(8):
        await conv.chat(f"question {n} " + "pad " * 30)
    assert len(await conv.messages()) == 1 + 16
    assert tokens(sent[-1]) <= 200 and sent[-1][0]["content"] == "sys"
    assert sent[-1][-1]["content"].startswith("question 7") and len(sent[-1]) < 16
