"""Split a batch (e.g. the texts of one embeddings request) into cached and missing items.

A batch with one new text calls the provider for that one text: the caller
computes `plan.missing` only, then `plan.assemble` puts every answer back in
input order. A key repeated within the batch is computed once.

>>> plan = split_batch(["a", "b", "a", "c"], {"b": "B"})
>>> plan.missing
(0, 3)
>>> plan.assemble(["A", "C"])
[('A', False), ('B', True), ('A', False), ('C', False)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchPlan(Generic[T]):
    """The keys of a batch, what the cache held, and what is left to compute.

    `missing` holds the input index of the first occurrence of each key not
    cached, in input order: compute the items at those indices, in that order.
    """

    keys: tuple[str, ...]
    cached: Mapping[str, T]
    missing: tuple[int, ...]

    def assemble(self, computed: Sequence[T]) -> list[tuple[T, bool]]:
        """(value, came from the cache) for every input item, in input order.

        `computed` answers `missing`, one value per index, in the same order.
        Raises ValueError when it has the wrong length.
        """
        if len(computed) != len(self.missing):
            raise ValueError(f"{len(self.missing)} items were missing but {len(computed)} were computed")
        fresh = {self.keys[i]: value for i, value in zip(self.missing, computed, strict=True)}
        out: list[tuple[T, bool]] = []
        for key in self.keys:
            if key in self.cached:
                out.append((self.cached[key], True))
            else:
                out.append((fresh[key], False))
        return out


def split_batch(keys: Sequence[str], cached: Mapping[str, T]) -> BatchPlan[T]:
    """The plan for a batch whose items have `keys`, given the cached values found by key."""
    seen: set[str] = set()
    missing: list[int] = []
    for i, key in enumerate(keys):
        if key not in cached and key not in seen:
            seen.add(key)
            missing.append(i)
    return BatchPlan(keys=tuple(keys), cached=dict(cached), missing=tuple(missing))
