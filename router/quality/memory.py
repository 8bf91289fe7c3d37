"""Quality evidence and the feedback-id registry in this process (one replica, tests).

>>> import asyncio
>>> store = MemoryQualityStore(clock=lambda: 0.0)
>>> asyncio.run(store.add([("default", "gpt", "")], 1.0, Decay()))[0].alpha
1.0
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from router.quality.base import Decay, Evidence, FeedbackNotFound, FeedbackTarget, QualityKey, QualityStore

_SCORED = "scored"


class MemoryQualityStore(QualityStore):
    """Dicts on an injected clock.

    At most `max_keys` (route, deployment, task) keys are kept: a new key
    beyond that is refused (`add` returns None) rather than evicting a
    measured one, so a flood of task labels cannot erase what was learned.
    At most `max_pending` response ids wait for feedback; beyond that the
    oldest are forgotten first, and an id older than `feedback_ttl_s` is
    unknown. An insertion-ordered dict, not cachetools' TTLCache: every
    response registers an id and TTLCache's bookkeeping cost ~5 µs a call on
    the request path; here the expiry is checked when feedback arrives.
    """

    name = "memory://"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000,
                 max_pending: int = 100_000, feedback_ttl_s: float = 24 * 3600.0) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._evidence: dict[QualityKey, tuple[Evidence, float]] = {}  # key -> (counts at age 0, updated at)
        self._max_pending = max_pending
        self._feedback_ttl_s = feedback_ttl_s
        # id -> (target or tombstone, at), oldest first. An OrderedDict: dropping a plain dict's
        # oldest key (`del d[next(iter(d))]`) scans every slot deleted before it, O(n) a request
        # once the registry is full.
        self._pending: OrderedDict[str, tuple[FeedbackTarget | str, float]] = OrderedDict()

    async def add(self, keys: Sequence[QualityKey], score: float, decay: Decay) -> list[Evidence | None]:
        now = self._clock()
        out: list[Evidence | None] = []
        for key in keys:
            current = self._evidence.get(key)
            if current is None:
                if len(self._evidence) >= self._max_keys:
                    out.append(None)
                    continue
                before = Evidence()
            else:
                ev, at = current
                before = Evidence(ev.alpha, ev.beta, ev.samples, max(0.0, now - at))
            after = before.added(score, decay)
            self._evidence[key] = (after, now)
            out.append(after)
        return out

    async def fetch_all(self) -> dict[QualityKey, Evidence]:
        now = self._clock()
        return {k: Evidence(ev.alpha, ev.beta, ev.samples, max(0.0, now - at))
                for k, (ev, at) in self._evidence.items()}

    async def put_target(self, response_id: str, target: FeedbackTarget, ttl_s: float) -> None:
        # one TTL for all entries (the constructor's); the tracker passes that same value
        self.put_target_now(response_id, target)

    def put_target_now(self, response_id: str, target: FeedbackTarget) -> None:
        """`put_target` without the coroutine (the store is in this process)."""
        pending = self._pending
        pending.pop(response_id, None)  # re-registered: it moves to the newest end
        pending[response_id] = (target, self._clock())
        if len(pending) > self._max_pending:
            pending.popitem(last=False)  # the oldest

    async def take_target(self, response_id: str, tenant: str | None = None) -> FeedbackTarget:
        held = self._pending.get(response_id)
        if held is not None and self._clock() - held[1] >= self._feedback_ttl_s:
            del self._pending[response_id]
            held = None
        target = held[0] if held is not None else None
        if target is None or (tenant is not None and not isinstance(target, str) and target.tenant != tenant):
            raise FeedbackNotFound(response_id=response_id, reason="unknown or expired")
        if isinstance(target, str):
            raise FeedbackNotFound(response_id=response_id, reason="feedback already recorded")
        # a tombstone, so a second score on one response is refused rather than counted twice
        self._pending[response_id] = (_SCORED, held[1] if held is not None else self._clock())
        return target
