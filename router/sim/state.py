"""Per-model bookkeeping of the simulator: current behaviour, script, counters.

``ModelState`` holds the mutable side of one simulated model: the ``SimModel``
currently in force (``SimServer.update`` swaps it), the scripted outcomes still
pending, and the counters ``SimServer.stats`` snapshots.

Example:
    >>> import random
    >>> state = ModelState(SimModel(name="m"))
    >>> state.script = [Fault.SERVER_ERROR]
    >>> state.next_outcome(random.Random(0)), state.next_outcome(random.Random(0))
    (<Fault.SERVER_ERROR: 'server_error'>, <Fault.NONE: 'none'>)
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence

from router.sim.models import Fault, ModelStats, SimModel
from router.sim.recording import RecordedRequest

__all__ = ["ModelState", "PromptCache"]

RECORDED_REQUESTS = 64  # per model; older ones are dropped

_INJECTABLE: tuple[Fault, ...] = tuple(fault for fault in Fault if fault is not Fault.NONE)


class PromptCache:
    """The last prompts a model saw, to tell how much of a new one is a cached prefix.

    Example:
        >>> cache = PromptCache()
        >>> model = SimModel(name="m", cache_min_tokens=4, cache_block_tokens=2)
        >>> cache.cached_tokens(list("abcdefg"), model), cache.cached_tokens(list("abcdexy"), model)
        (0, 4)
    """

    def __init__(self) -> None:
        self._recent: deque[tuple[str, ...]] = deque()

    def cached_tokens(self, units: Sequence[str], model: SimModel) -> int:
        """Cached tokens of a prompt given as pseudo-tokens; remembers the prompt.

        The longest prefix shared with a remembered prompt, rounded down to
        ``cache_block_tokens``, if it reaches ``cache_min_tokens``; else 0.
        """
        if model.cache_min_tokens is None:
            return 0
        prompt = tuple(units)
        shared = max((_common_prefix(prompt, seen) for seen in self._recent), default=0)
        self._recent.append(prompt)
        while len(self._recent) > model.cache_history:
            self._recent.popleft()
        cached = shared - shared % model.cache_block_tokens
        return cached if cached >= model.cache_min_tokens else 0

    def clear(self) -> None:
        """Forget every prompt."""
        self._recent.clear()


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    limit = min(len(a), len(b))
    for index in range(limit):
        if a[index] != b[index]:
            return index
    return limit


class ModelState:
    """The mutable state of one simulated model; owned by one ``SimServer``.

    ``model`` is the behaviour in force, ``original`` the one it started with.
    """

    def __init__(self, model: SimModel) -> None:
        self.model = model
        self.original = model
        self._script: deque[Fault] = deque()
        self.prompt_cache = PromptCache()
        self.recorded: deque[RecordedRequest] = deque(maxlen=RECORDED_REQUESTS)
        self.reset()

    @property
    def script(self) -> tuple[Fault, ...]:
        """Outcomes forced on the next requests, in order."""
        return tuple(self._script)

    @script.setter
    def script(self, outcomes: Iterable[Fault]) -> None:
        self._script = deque(Fault(outcome) for outcome in outcomes)

    def reset(self) -> None:
        """Zero every counter, forget recorded requests and cached prompts (the script and the model are kept)."""
        self.recorded.clear()
        self.prompt_cache.clear()
        self.requests = 0
        self.successes = 0
        self.faults: dict[Fault, int] = dict.fromkeys(_INJECTABLE, 0)
        self.context_errors = 0
        self.auth_errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def next_outcome(self, rng: random.Random) -> Fault:
        """Pop the next scripted outcome, else draw one from ``error_rates``.

        Faults are tried in ``Fault`` declaration order against one uniform
        draw, so a given seed gives the same sequence whatever the dict order.
        The injected fault, if any, is counted.
        """
        outcome = self._script.popleft() if self._script else self._draw(rng)
        if outcome is not Fault.NONE:
            self.faults[outcome] += 1
        return outcome

    def _draw(self, rng: random.Random) -> Fault:
        rates = self.model.error_rates
        if not rates:
            return Fault.NONE
        draw = rng.random()
        cumulative = 0.0
        for fault in _INJECTABLE:
            cumulative += rates.get(fault, 0.0)
            if draw < cumulative:
                return fault
        return Fault.NONE

    def record_success(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one normal answer and its usage."""
        self.successes += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def snapshot(self) -> ModelStats:
        """Return an immutable copy of the counters."""
        return ModelStats(
            requests=self.requests,
            successes=self.successes,
            faults=dict(self.faults),
            context_errors=self.context_errors,
            auth_errors=self.auth_errors,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )
