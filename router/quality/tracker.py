"""`QualityTracker`: feedback scores in, per-deployment quality estimates out.

Writes go to the store (memory or Redis); reads are synchronous and local,
so a strategy asking about 1000 deployments never waits on the network.
With Redis, `start()` refreshes the local view every `refresh_interval_s`
so scores given at another replica are seen here too.

Each score counts on up to four keys, from specific to general: (route,
task), (route, any task), (any route, task), (any route, any task). A reader
gets the most specific key that has evidence, so a task with no feedback yet
falls back to what the route knows, and a strategy that does not know its
route's name (route "") reads the deployment-wide figure.

>>> import asyncio
>>> tracker = QualityTracker(clock=lambda: 0.0)
>>> _ = asyncio.run(tracker.record("gpt", "default", 0.9, task="code"))
>>> tracker.estimate("gpt", "default", "code").samples, tracker.estimate("gpt", "default").samples
(1, 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from router.periodic import Periodic
from router.quality.base import (
    Decay,
    Evidence,
    FeedbackNotFound,
    FeedbackTarget,
    QualityEstimate,
    QualityKey,
    QualityStore,
    QualityStoreUnavailable,
    validate_response_id,
    validate_score,
    validate_task,
)
from router.quality.memory import MemoryQualityStore

log = logging.getLogger("router.quality")

#: Registrations in flight remembered at most (a write whose task never ran is forgotten, oldest first).
_MAX_REGISTERING = 10_000


class QualityTracker:
    """Records scores, answers `quality()` (the `QualityView` strategies read) and maps response ids.

    `clock` times decay and the local view (monotonic seconds);
    `feedback_ttl_s` is how long a response id waits for its score;
    `register_wait_s` how long a score waits for its id's registration in flight.
    """

    def __init__(self, store: QualityStore | None = None, *, clock: Callable[[], float] = time.monotonic,
                 decay: Decay | None = None, feedback_ttl_s: float = 24 * 3600.0,
                 refresh_interval_s: float = 5.0, register_wait_s: float = 2.0) -> None:
        self.store = store if store is not None else MemoryQualityStore(clock=clock, feedback_ttl_s=feedback_ttl_s)
        self.clock = clock
        self.decay = decay if decay is not None else Decay()
        self.feedback_ttl_s = feedback_ttl_s
        self.refresh_interval_s = refresh_interval_s
        self._local: dict[QualityKey, tuple[Evidence, float]] = {}  # key -> (evidence, local time its age is of)
        #: Scores not counted because the store holds `max_keys` other keys.
        self.refused_keys = 0
        #: Store failures swallowed where a failure must not fail a request (register, refresh).
        self.store_errors = 0
        self._refresher: Periodic | None = None
        #: How long `feedback` waits for the registration of an id this tracker is still writing.
        self.register_wait_s = register_wait_s
        self._registering: OrderedDict[str, asyncio.Event] = OrderedDict()

    async def record(self, deployment: str, route: str, score: float, task: str | None = None) -> QualityEstimate:
        """Count `score` for `deployment` on `route` (and `task`); the updated estimate of that key.

        Raises InvalidRequest (naming `score` or `task`), QualityStoreUnavailable.
        """
        value = validate_score(score)
        task = validate_task(task)
        keys = _keys(deployment, route, task)
        try:
            updated = await self.store.add(keys, value, self.decay)
        except Exception as exc:
            raise QualityStoreUnavailable(store=self.store.name, operation="record") from exc
        now = self.clock()
        for key, ev in zip(keys, updated, strict=True):
            if ev is None:
                self.refused_keys += 1
                log.warning("quality store full: score for %s not counted", key)
            else:
                self._local[key] = (ev, now)
        return self.estimate(deployment, route, task)

    def estimate(self, deployment: str, route: str, task: str | None = None) -> QualityEstimate:
        """The decayed evidence for the key, as of now; `mean` is None and counts 0 with no evidence."""
        held = self._local.get((route, deployment, task or ""))
        if held is None:
            return QualityEstimate(None, 0, 0.0, 0.0)
        ev, seen_at = held
        return ev.estimate(self.decay, self.clock() - seen_at)

    def quality(self, deployment: str, route: str, task: str | None) -> QualityEstimate | None:
        """`QualityView`: the most specific key with evidence (see the module docstring), else None."""
        now = self.clock()
        for key in _keys(deployment, route, task):
            held = self._local.get(key)
            if held is not None:
                ev, seen_at = held
                return ev.estimate(self.decay, now - seen_at)
        return None

    def route_estimates(self) -> list[tuple[str, str, QualityEstimate]]:
        """(route, deployment, estimate) of every route-level key in the local view, as of now.

        Task-level and deployment-wide keys are left out: this feeds metrics,
        whose labels must stay few. Safe to call from a metric reader's thread.
        """
        now = self.clock()
        # list() copies the dict in one step under the GIL (its keys are tuples of str), so a `record`
        # or `refresh` on the loop's thread cannot change it mid-iteration.
        held = list(self._local.items())
        return [(route, deployment, ev.estimate(self.decay, now - seen_at))
                for (route, deployment, task), (ev, seen_at) in held if route and not task]

    def register(self, response_id: str, *, deployment: str, route: str, task: str | None,
                 tenant: str) -> Coroutine[Any, Any, bool]:
        """The write that remembers `response_id` for `feedback_ttl_s`; it returns False (logged) if the store failed.

        Called when a response is returned; a store outage must not fail the
        response, so it is swallowed (counted in `store_errors`). The router
        may run the write off the caller's path: this tracker knows the id from
        the moment of this call, so a `feedback` for it that arrives here first
        waits for the write (up to `register_wait_s`) instead of missing it.
        """
        landed = asyncio.Event()
        self._registering[response_id] = landed
        while len(self._registering) > _MAX_REGISTERING:  # writes never run (their task was cancelled)
            self._registering.popitem(last=False)
        target = FeedbackTarget(deployment=deployment, route=route, task=task, tenant=tenant)
        return self._register(response_id, target, landed)

    def register_now(self, response_id: str, *, deployment: str, route: str, task: str | None,
                     tenant: str) -> None:
        """`register` for a store in this process: done at once, no coroutine, no event (~2 µs less a call)."""
        if not isinstance(self.store, MemoryQualityStore):
            raise TypeError("register_now needs the memory store; use register")
        target = FeedbackTarget(deployment=deployment, route=route, task=task, tenant=tenant)
        self.store.put_target_now(validate_response_id(response_id), target)

    async def _register(self, response_id: str, target: FeedbackTarget, landed: asyncio.Event) -> bool:
        try:
            await self.store.put_target(validate_response_id(response_id), target, self.feedback_ttl_s)
        except Exception:
            self.store_errors += 1
            log.warning("quality store %s: response id not registered for feedback", self.store.name,
                        exc_info=True)
            return False
        finally:
            landed.set()
            if self._registering.get(response_id) is landed:
                del self._registering[response_id]
        return True

    async def feedback(self, response_id: str, score: float, task: str | None = None, *,
                       tenant: str | None = None) -> FeedbackTarget:
        """Score a response the router returned; what it was counted against.

        `task` overrides the task registered with the response. `tenant`, when
        given, must be the response's tenant (else it is reported as not found,
        and stays unscored, so one tenant can neither probe nor use up another's
        ids). Each response takes one score.
        Raises InvalidRequest (naming `score`, `task` or `response_id`),
        FeedbackNotFound, QualityStoreUnavailable.
        """
        value = validate_score(score)
        task = validate_task(task)
        response_id = validate_response_id(response_id)
        landed = self._registering.get(response_id)
        if landed is not None:  # answered a moment ago: its registration is still on its way to the store
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(landed.wait(), self.register_wait_s)
        try:
            target = await self.store.take_target(response_id, tenant)
        except FeedbackNotFound:
            raise
        except Exception as exc:
            raise QualityStoreUnavailable(store=self.store.name, operation="feedback") from exc
        task = task if task is not None else target.task
        await self.record(target.deployment, target.route, value, task)
        return FeedbackTarget(deployment=target.deployment, route=target.route, task=task, tenant=target.tenant)

    async def refresh(self) -> None:
        """Replace the local view with the store's (other replicas' scores); failures are logged."""
        try:
            fetched = await self.store.fetch_all()
        except Exception:
            self.store_errors += 1
            log.warning("quality store %s: refresh failed; serving the last view", self.store.name, exc_info=True)
            return
        now = self.clock()
        self._local = {k: (ev, now) for k, ev in fetched.items()}

    @property
    def local(self) -> bool:
        """True when the store lives in this process (calls to it never wait on the network)."""
        return isinstance(self.store, MemoryQualityStore)

    def start(self) -> None:
        """Refresh every `refresh_interval_s` in the running loop (only useful with a shared store)."""
        if self._refresher is None and not isinstance(self.store, MemoryQualityStore):
            self._refresher = Periodic(self.refresh_interval_s, self.refresh, name="router-quality-refresh")
            self._refresher.start()

    async def aclose(self) -> None:
        """Stop refreshing and close the store."""
        if self._refresher is not None:
            await self._refresher.aclose()
            self._refresher = None
        await self.store.aclose()


def _keys(deployment: str, route: str, task: str | None) -> list[QualityKey]:
    """The keys a score on (deployment, route, task) counts on, most specific first (no duplicates)."""
    keys: list[QualityKey] = []
    for r in (route, ""):
        for t in (task or "", ""):
            if (r, deployment, t) not in keys:
                keys.append((r, deployment, t))
    return keys
