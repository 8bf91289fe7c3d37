"""Fit a conversation into a token budget by dropping its oldest turns.

What is kept, always: every `system` and `developer` message (where it
stands), the last `user` message, and the last exchange after it (so a model
asked to continue after tool results sees them). What goes first: whole older
turns, oldest first (a turn runs from one user message to the next), then the
exchanges between the last user message and the last exchange, oldest first.
An assistant message with `tool_calls` and the tool results that follow it are
one exchange, dropped together; a tool message with no call before it cannot be
sent, and is always dropped.

If even what is always kept is over the budget, that is returned anyway:
`fit_messages` never raises, so the provider's context-window error surfaces
and the attempt loop falls back to a deployment with a larger window.

>>> words = lambda ms: sum(len(str(m.get("content") or "").split()) for m in ms)
>>> history = [{"role": "system", "content": "be brief"},
...            {"role": "user", "content": "one two three"}, {"role": "assistant", "content": "four five"},
...            {"role": "user", "content": "six"}]
>>> [m["content"] for m in fit_messages(history, budget_tokens=4, count=words)]
['be brief', 'six']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

PINNED_ROLES = frozenset({"system", "developer"})


def _exchanges(messages: Sequence[Mapping[str, object]]) -> tuple[list[list[int]], list[int]]:
    """Indices of the non-pinned messages grouped into exchanges, and of orphan tool messages."""
    exchanges: list[list[int]] = []
    orphans: list[int] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in PINNED_ROLES:
            continue
        if role == "tool":
            head = messages[exchanges[-1][0]] if exchanges else None
            if head is not None and head.get("role") == "assistant" and head.get("tool_calls"):
                exchanges[-1].append(i)
            else:
                orphans.append(i)
            continue
        exchanges.append([i])
    return exchanges, orphans


def _drop_order(messages: Sequence[Mapping[str, object]], exchanges: list[list[int]]) -> list[list[int]]:
    """The groups of indices that may be dropped, first to go first."""
    users = [n for n, ex in enumerate(exchanges) if messages[ex[0]].get("role") == "user"]
    last = len(exchanges) - 1
    if not users:
        return exchanges[:last]
    steps: list[list[int]] = []
    turn: list[int] = []
    for n in range(users[-1]):  # older turns, whole
        if n in users and turn:
            steps.append(turn)
            turn = []
        turn += exchanges[n]
    if turn:
        steps.append(turn)
    return steps + exchanges[users[-1] + 1:last]


def fit_messages(
    messages: Sequence[Mapping[str, object]],
    *,
    budget_tokens: int,
    count: Callable[[Sequence[Mapping[str, object]]], int],
) -> list[dict[str, object]]:
    """The newest part of `messages` that `count` says fits in `budget_tokens` (see the module doc).

    `messages` are OpenAI chat message dicts, oldest first; the result keeps
    their order and holds shallow copies. `count` must not grow when messages
    are removed (as `router.tokens.count_tokens`); it is called O(log n)
    times, on candidate results, found by bisection over how many groups to drop.
    """
    copies = [dict(m) for m in messages]
    exchanges, orphans = _exchanges(copies)
    steps = _drop_order(copies, exchanges)

    def kept(dropping: int) -> list[dict[str, object]]:
        gone = set(orphans).union(*steps[:dropping])
        return [m for i, m in enumerate(copies) if i not in gone]

    if count(candidate := kept(0)) <= budget_tokens:
        return candidate
    low, high = 1, len(steps)  # the answer is in [low, high]; high may still be over budget
    while low < high:
        middle = (low + high) // 2
        if count(kept(middle)) <= budget_tokens:
            high = middle
        else:
            low = middle + 1
    return kept(high)
