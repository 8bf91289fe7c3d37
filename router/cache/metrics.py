"""What the response cache did, per route: events for a meter, counters for tests and status.

`ResponseCache` reports every lookup and write as a `CacheEvent` to its
`CacheCounters` and to an optional observer (a callable), which is where the
caller wires OpenTelemetry counters. Attributes stay low-cardinality: the
route and the event kind, never a key or a tenant.

>>> counters = CacheCounters()
>>> counters(CacheEvent(route="default", kind="hit", nbytes=2048))
>>> counters.route("default").hits, counters.route("default").bytes_read
(1, 2048)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal

from router.records import record

#: hit: answered from the store at once; coalesced: answered by another caller's
#: computation (in this process, or another process's entry waited for);
#: miss: this caller computed; bypass: computed without reading (read=False);
#: write: an answer was stored; decode_error: a stored entry could not be decoded
#: (counted as a miss as well).
EventKind = Literal["hit", "coalesced", "miss", "bypass", "write", "decode_error"]


@record
class CacheEvent:
    """One thing the cache did on `route`; `nbytes` is the payload size (0 when none)."""

    route: str
    kind: EventKind
    nbytes: int = 0


CacheObserver = Callable[[CacheEvent], None]


@dataclass(frozen=True, slots=True)
class RouteCounters:
    """Totals for one route since the counters were made; bytes are uncompressed payload bytes."""

    hits: int = 0
    coalesced: int = 0
    misses: int = 0
    bypasses: int = 0
    writes: int = 0
    decode_errors: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    @property
    def hit_ratio(self) -> float:
        """(hits + coalesced) / lookups that read the cache, 0.0 before any."""
        served = self.hits + self.coalesced
        total = served + self.misses
        return served / total if total else 0.0


_FIELD: dict[EventKind, str] = {
    "hit": "hits",
    "coalesced": "coalesced",
    "miss": "misses",
    "bypass": "bypasses",
    "write": "writes",
    "decode_error": "decode_errors",
}


_ZERO = tuple(f.name for f in fields(RouteCounters))


class CacheCounters:
    """A `CacheObserver` that keeps `RouteCounters` per route."""

    def __init__(self) -> None:
        # Plain counters, counted on every lookup; `RouteCounters` snapshots are built when read.
        self._routes: dict[str, dict[str, int]] = {}

    def __call__(self, event: CacheEvent) -> None:
        self.count(event.route, event.kind, event.nbytes)

    def count(self, route: str, kind: EventKind, nbytes: int = 0) -> None:
        """Count one event (what `__call__` does, without building a `CacheEvent`)."""
        counts = self._routes.get(route)
        if counts is None:
            counts = self._routes[route] = dict.fromkeys(_ZERO, 0)
        counts[_FIELD[kind]] += 1
        if kind == "hit" or kind == "coalesced":
            counts["bytes_read"] += nbytes
        elif kind == "write":
            counts["bytes_written"] += nbytes

    def route(self, route: str) -> RouteCounters:
        """The totals of `route` (all zero if it has seen no event)."""
        counts = self._routes.get(route)
        return RouteCounters(**counts) if counts is not None else RouteCounters()

    def routes(self) -> dict[str, RouteCounters]:
        """Totals of every route that has seen an event."""
        return {name: RouteCounters(**counts) for name, counts in self._routes.items()}
