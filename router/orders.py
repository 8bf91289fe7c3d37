"""Candidate orders that cost little on large routes: the lazy `HeadThenRest` and the kept latency ranking.

**Orders are sequences, sometimes lazy.** The attempt loop walks the order
until one attempt succeeds, so only its head has to be right. On routes of
more than `EXACT_ROUTE` targets, every strategy but the static three returns
a `HeadThenRest` (`weighted` at any size): the few targets it chose (the randomised strategies' draws,
the first `RANKED_HEAD` of a latency ranking), then every other target in a
rotated declared order (any order would do; rotating spreads fallbacks).
Nothing past the head is computed until someone reads it, and materialising
it costs C-speed slicing only. Up to `EXACT_ROUTE` targets the whole order
is exact.

**Latency rankings learn incrementally.** `fastest` and `slo` keep every
target's latency as last read, sorted; each request re-reads the targets at
the head of the ranking (those taking the traffic, whose numbers move) and
`REFRESH_SWEEP` more in turn. A route of at most `REFRESH_HEAD +
REFRESH_SWEEP` targets is therefore exact on every request; a larger one sees
a change elsewhere within `n / REFRESH_SWEEP` requests. A new snapshot
starts from the YAML priors.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import overload

from router.schema import Deployment

#: Routes up to this size are ordered exactly (a full sort) by `least_busy` and `lowest_latency_p2c`.
EXACT_ROUTE = 16
#: Latency rankings re-read the first `REFRESH_HEAD` targets and `REFRESH_SWEEP` more, in turn, per request.
REFRESH_HEAD = 2
REFRESH_SWEEP = 8
#: On a route above `EXACT_ROUTE` targets, the first this many of a latency ranking lead the order.
RANKED_HEAD = 8


class HeadThenRest(Sequence[Deployment]):
    """`head`, then the rest of `pool` from position `start` on, wrapping around.

    `head_at` are the head's positions in `pool` (they are not repeated).
    Reading `[0]` or `[1]` costs nothing; iterating or reading further builds
    the whole tuple once, by slicing.
    """

    __slots__ = ("_all", "_head", "_head_at", "_pool", "_start")

    def __init__(self, head: tuple[Deployment, ...], head_at: Sequence[int], pool: tuple[Deployment, ...],
                 start: int = 0) -> None:
        self._head, self._head_at, self._pool, self._start = head, head_at, pool, start
        self._all: tuple[Deployment, ...] | None = None

    def __len__(self) -> int:
        return len(self._pool)

    @overload
    def __getitem__(self, index: int) -> Deployment: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Deployment, ...]: ...
    def __getitem__(self, index: int | slice) -> Deployment | tuple[Deployment, ...]:
        if isinstance(index, int) and 0 <= index < len(self._head):
            return self._head[index]
        return self.materialise()[index]

    def __iter__(self) -> Iterator[Deployment]:
        return iter(self.materialise())

    def __repr__(self) -> str:
        return f"HeadThenRest(head={[d.name for d in self._head]}, of={len(self._pool)})"

    def materialise(self) -> tuple[Deployment, ...]:
        """The whole order as a tuple (built on first use, then kept)."""
        if self._all is None:
            pool, start, n = self._pool, self._start, len(self._pool)
            parts: list[tuple[Deployment, ...]] = [self._head]
            previous = start  # walk pool[start:] then pool[:start], stepping over the head's positions
            for at in sorted(self._head_at, key=lambda at: (at - start) % n):
                parts += _wrapped(pool, previous, at)
                previous = at + 1
            parts += _wrapped(pool, previous, start) if self._head_at else (pool[start:], pool[:start])
            self._all = tuple(itertools.chain.from_iterable(parts))
        return self._all


def _wrapped(pool: tuple[Deployment, ...], a: int, b: int) -> tuple[tuple[Deployment, ...], ...]:
    """pool from position a up to b, wrapping past the end (a == b, or a == n and b == 0, is empty)."""
    n = len(pool)
    a %= n
    return (pool[a:b],) if a <= b else (pool[a:], pool[:b])


class Ranked:
    """Deployments kept sorted by `(number, position)` keys: bisect to find, C-speed list moves."""

    __slots__ = ("deps", "keys")

    def __init__(self) -> None:
        self.keys: list[tuple[float, int]] = []
        self.deps: list[Deployment] = []

    def add(self, key: tuple[float, int], d: Deployment) -> None:
        at = bisect.bisect_left(self.keys, key)
        self.keys.insert(at, key)
        self.deps.insert(at, d)

    def remove(self, key: tuple[float, int]) -> None:
        at = bisect.bisect_left(self.keys, key)
        del self.keys[at]
        del self.deps[at]


class LatencyRanking:
    """Targets whose latency fits `budget` by price rank, then the others by latency, kept incrementally.

    With no budget nothing fits: a plain fastest-first ranking. `latency[i]`
    is target i's latency as last read; `refresh` re-reads the head and the
    next `REFRESH_SWEEP` targets in turn and moves those that changed.
    """

    def __init__(self, candidates: tuple[Deployment, ...], budget: float | None, price_rank: Sequence[int]) -> None:
        self.candidates, self.budget, self.price_rank = candidates, budget, price_rank
        self.latency = [d.latency_prior_ms for d in candidates]
        self.fits, self.misses = Ranked(), Ranked()
        for i, d in enumerate(candidates):
            ranked, key = self._key(i)
            ranked.add(key, d)
        self._cursor = 0
        self._order: Sequence[Deployment] | None = None

    def _key(self, i: int) -> tuple[Ranked, tuple[float, int]]:
        latency = self.latency[i]
        if self.budget is not None and latency <= self.budget:
            return self.fits, (float(self.price_rank[i]), i)
        return self.misses, (latency, i)

    def refresh(self, read: Callable[[Deployment], float]) -> None:
        """Re-read the due targets' latency (ms) with `read`; move those whose number changed."""
        n = len(self.candidates)
        if n <= REFRESH_HEAD + REFRESH_SWEEP:
            due: Sequence[int] = range(n)
        else:
            head = (self.fits.keys[:REFRESH_HEAD] + self.misses.keys[:REFRESH_HEAD])[:REFRESH_HEAD]
            cursor = self._cursor
            self._cursor = (cursor + REFRESH_SWEEP) % n
            due = [*(i for _, i in head), *((cursor + k) % n for k in range(REFRESH_SWEEP))]
        for i in due:
            d = self.candidates[i]
            latency = read(d)
            if latency != self.latency[i]:
                ranked, key = self._key(i)
                ranked.remove(key)
                self.latency[i] = latency
                ranked, key = self._key(i)
                ranked.add(key, d)
                self._order = None

    def order(self) -> Sequence[Deployment]:
        """The ranking as an order: exact up to `EXACT_ROUTE` targets, else a `HeadThenRest` (kept until a move)."""
        if self._order is None:
            if len(self.candidates) <= EXACT_ROUTE:
                self._order = (*self.fits.deps, *self.misses.deps)
            else:  # copying a 10,000-long ranking per change would cost more than the decision
                head = (self.fits.keys[:RANKED_HEAD] + self.misses.keys[:RANKED_HEAD])[:RANKED_HEAD]
                at = [i for _, i in head]
                self._order = HeadThenRest(tuple(self.candidates[i] for i in at), at, self.candidates)
        return self._order
