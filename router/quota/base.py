"""The contract between `QuotaManager` and a quota store, and the values they trade.

A store knows nothing of tenants or limit names. The manager turns a request
into a `ReservePlan` of three kinds of items, and the store checks every item
and commits them all, or none, in one atomic step:

- `RateItem`: a GCRA bucket, kept as one number, the theoretical arrival time
  (TAT). A request of `amount` units fits when
  `max(tat, now) + amount * interval_s - now <= capacity * interval_s`.
- `WindowItem`: the requests, tokens and nano-dollars counted in one UTC
  calendar window (minute, day or month) of one scope, each with an optional
  limit. A counter belongs to one window id and reads as zero once that window
  is over.
- `SlotItem`: a set of leases (reservation id -> expiry), for `max_concurrent`
  and for knowing whether a reservation is still open (so settle is idempotent).

A reservation's held amounts can be raised later (`TopUpPlan`, checked and
committed atomically like a reserve), and a reservation whose reserve may have
reached the store after the caller gave up can be voided (`SettlePlan.void_key`):
the store refunds it if it is there, else remembers its id so that a late
arrival is refused.

Money is counted in integer nano-dollars (`USD_SCALE`) so that 50 requests of
$0.02 fill a $1 budget exactly, with no float drift.

>>> window_id("day", 86_400 * 3 + 5)
3
>>> window_end("month", window_id("month", 0))  # 1970-02-01T00:00Z
2678400.0
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from router.quota.config import FailurePolicy, TenantLimits

Window = Literal["minute", "day", "month"]
WINDOWS: tuple[Window, ...] = ("minute", "day", "month")
#: (requests, tokens, nano-dollars)
Counts = tuple[int, int, int]
#: Nano-dollars per dollar.
USD_SCALE = 1_000_000_000
#: Fraction of one unit forgiven when comparing a GCRA bucket with its capacity,
#: so that float rounding never turns away the last request of a burst.
RATE_SLACK = 1e-4


def to_nano_usd(usd: float) -> int:
    """Dollars as integer nano-dollars (rounded to nearest)."""
    return round(usd * USD_SCALE)


def window_id(window: Window, now: float) -> int:
    """The UTC calendar window holding `now`: minutes, days or months since the epoch."""
    if window == "minute":
        return math.floor(now / 60)
    if window == "day":
        return math.floor(now / 86_400)
    moment = datetime.fromtimestamp(now, UTC)
    return (moment.year - 1970) * 12 + moment.month - 1


def window_end(window: Window, wid: int) -> float:
    """Epoch seconds at which window `wid` is over."""
    if window == "minute":
        return (wid + 1) * 60.0
    if window == "day":
        return (wid + 1) * 86_400.0
    year, month0 = divmod(wid + 1, 12)
    return datetime(1970 + year, month0 + 1, 1, tzinfo=UTC).timestamp()


def window_ids(now: float) -> tuple[int, int, int]:
    """The (minute, day, month) window ids at `now`."""
    return (window_id("minute", now), window_id("day", now), window_id("month", now))


@dataclass(frozen=True, slots=True)
class RateItem:
    """A GCRA bucket: `capacity` units drain one per `interval_s` seconds."""

    key: str
    interval_s: float
    capacity: float
    amount: float
    #: Labels for the error the manager raises; the store ignores them.
    limit: str = ""
    limit_value: float = 0.0
    scope: str = ""


@dataclass(frozen=True, slots=True)
class WindowItem:
    """The counters of one scope in one calendar window, and their limits."""

    key: str
    window: Window
    amounts: Counts
    limits: tuple[int | None, int | None, int | None] = (None, None, None)
    scope: str = ""


@dataclass(frozen=True, slots=True)
class SlotItem:
    """A lease set: the reservation takes one lease; `limit` caps how many are held."""

    key: str
    limit: int | None = None
    scope: str = ""


@dataclass(frozen=True, slots=True)
class ReservePlan:
    """Everything one reservation checks and commits. `slots[0]` is the tenant's lease set."""

    id: str
    rates: tuple[RateItem, ...]
    windows: tuple[WindowItem, ...]
    slots: tuple[SlotItem, ...]
    lease_s: float
    #: Ids of reservations given up on (see `SettlePlan.void_key`): one found here is refused.
    void_key: str = ""


@dataclass(frozen=True, slots=True)
class Admitted:
    """The plan was committed; `window_ids` are the (minute, day, month) ids it counted in."""

    window_ids: tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Rejected:
    """The plan did not fit; nothing was committed.

    `kind` and `index` name the failing item of the plan (for a window item,
    `field` is 0 requests, 1 tokens, 2 nano-dollars); `usage` is in the item's
    units. When several items fail, the one with the longest wait is reported.
    """

    kind: Literal["rate", "window", "slot"]
    index: int
    field: int
    usage: float
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class RateAdjust:
    """Move a GCRA bucket by `delta` units (negative gives capacity back)."""

    key: str
    interval_s: float
    delta: float


@dataclass(frozen=True, slots=True)
class WindowAdjust:
    """Add `deltas` to one window's counters, if it is still window `window_id`.

    `window_id=None` means the window current when the store applies it (used
    for a deployment that was not part of the reservation).
    """

    key: str
    window: Window
    window_id: int | None
    deltas: Counts


@dataclass(frozen=True, slots=True)
class SettlePlan:
    """Closes reservation `id`: leaves `open_key` (no-op if already left), adjusts, releases.

    With `void_key`, a reservation that is not open is remembered there for
    `void_s` seconds, and a reserve of that id arriving later is refused: the
    caller gave up on it (a timeout), so nobody would ever settle it.
    """

    id: str
    open_key: str
    rates: tuple[RateAdjust, ...]
    windows: tuple[WindowAdjust, ...]
    release: tuple[str, ...]
    void_key: str = ""
    void_s: float = 0.0


@dataclass(frozen=True, slots=True)
class TopUpWindow:
    """Raise one window's tokens and nano-dollars by `deltas`, within `limits`.

    Applies only while the window is still `window_id` (the one the
    reservation counted in); an ended window is neither checked nor changed.
    """

    key: str
    window: Window
    window_id: int
    deltas: tuple[int, int]
    limits: tuple[int | None, int | None]


@dataclass(frozen=True, slots=True)
class TopUpPlan:
    """Raise open reservation `id` by more tokens and dollars: all items fit, or nothing changes.

    `rates` are the token buckets (their `amount` is the extra tokens); every
    lease in `open_key` and `renew` is extended to `lease_s` from now.
    """

    id: str
    open_key: str
    rates: tuple[RateItem, ...]
    windows: tuple[TopUpWindow, ...]
    renew: tuple[str, ...]
    lease_s: float


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """What one tenant used in the current calendar window (reservations included)."""

    requests: int = 0
    tokens: int = 0
    usd: float = 0.0

    @classmethod
    def from_counts(cls, counts: Counts) -> WindowUsage:
        return cls(counts[0], counts[1], counts[2] / USD_SCALE)


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """A tenant's usage in the current UTC minute, day and month, and its open reservations.

    Counts include what open reservations estimated; settle replaces the
    estimate with the actual figure.
    """

    tenant: str
    minute: WindowUsage
    day: WindowUsage
    month: WindowUsage
    in_flight: int


@dataclass(slots=True)
class Held:
    """What a reservation holds in the store now: its estimate, raised by each top-up."""

    tokens: int
    nano_usd: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """What `QuotaManager.reserve` took, so that settle and refund undo exactly that.

    `degraded` marks a reservation served while the shared store was down:
    it was counted only in this process's local fallback limiter, where
    settle and refund then apply. `held` starts at the estimate and grows
    with `QuotaManager.top_up`.
    """

    id: str
    tenant: str
    route: str
    deployment: str | None
    est_tokens: int
    est_cost_usd: float
    plan: ReservePlan = field(repr=False)
    window_ids: tuple[int, int, int] = (0, 0, 0)
    #: The tenant's limits when reserved: a settle on another deployment needs them.
    limits: TenantLimits = field(default_factory=TenantLimits, repr=False, compare=False)
    degraded: bool = False
    #: The manager's clock when reserved: background settles stop retrying once the lease is over.
    reserved_at: float = 0.0
    #: The tenants file's `failure_mode` when reserved, for a top-up during an outage.
    failure_mode: FailurePolicy | None = field(default=None, repr=False, compare=False)
    held: Held = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "held", Held(self.est_tokens, to_nano_usd(self.est_cost_usd)))

    @property
    def keys(self) -> tuple[str, ...]:
        """Every store key this reservation counted in (without the store's prefix)."""
        p = self.plan
        return (*(r.key for r in p.rates), *(w.key for w in p.windows), *(s.key for s in p.slots))


class QuotaStoreError(Exception):
    """The store could not be reached or answered nonsense; the manager applies `failure_mode`.

    `maybe_applied` is True when the command may still run on the store after
    the caller gave up (it was sent, then timed out): a reserve that failed so
    is voided later, so that its lease cannot outlive it. `outage` is False
    for a refusal that concerns one request only (a tenant past its own key
    bound): the store is not treated as down for everyone else.
    """

    def __init__(self, message: str, *, maybe_applied: bool = False, outage: bool = True) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied
        self.outage = outage


class QuotaStore(ABC):
    """Keeps quota state; every method is one atomic step (one round trip for Redis).

    Implementations: `MemoryStore` (one process) and `RedisStore` (shared).
    Raise `QuotaStoreError` when the backing service fails.
    """

    #: Printable name without credentials, for errors and logs.
    name: str = "store"

    @abstractmethod
    async def reserve(self, plan: ReservePlan) -> Admitted | Rejected:
        """Check every item of `plan` and commit all of them, or none."""

    @abstractmethod
    async def settle(self, plan: SettlePlan) -> bool:
        """Apply `plan` if its reservation is still open; False when it was already closed."""

    @abstractmethod
    async def top_up(self, plan: TopUpPlan) -> Literal["ok", "closed"] | Rejected:
        """Raise an open reservation by `plan`, all items or none.

        Returns "ok" (committed), "closed" (the reservation is settled or its
        lease lapsed) or the failing item (nothing changed).
        """

    @abstractmethod
    async def usage(
        self, window_keys: tuple[str, str, str], open_key: str
    ) -> tuple[tuple[Counts, Counts, Counts], int]:
        """Counters of the current (minute, day, month) windows, and leases held in `open_key`."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections; the memory store has none."""


def gcra_check(
    tat: float | None, now: float, item: RateItem
) -> tuple[bool, float, float | None]:
    """(fits, units in the bucket, seconds until it would fit) for one GCRA bucket."""
    start = now if tat is None or tat < now else tat
    new_tat = start + item.amount * item.interval_s
    limit = (item.capacity + RATE_SLACK) * item.interval_s
    usage = (start - now) / item.interval_s
    if new_tat - now <= limit:
        return True, usage, 0.0
    return False, usage, new_tat - now - item.capacity * item.interval_s


def pick_worst(a: Rejected | None, b: Rejected) -> Rejected:
    """Of two failures, the one whose retry comes later (None, unknown, counts least)."""
    if a is None:
        return b
    wa = -1.0 if a.retry_after is None else a.retry_after
    wb = -1.0 if b.retry_after is None else b.retry_after
    return b if wb > wa else a
