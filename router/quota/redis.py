"""Quota state in Redis, shared by every router process and kept across restarts.

Each reserve, top-up, settle and usage read is one round trip: one Lua script run with
EVALSHA, which Redis executes atomically, so a check and its commit can never
be split by another client. Scripts are loaded with SCRIPT LOAD the first time
Redis answers NOSCRIPT (after a restart or a SCRIPT FLUSH too). The scripts use
Redis's own `TIME`, so clients with skewed clocks still agree on windows and
buckets. Every key carries its tenant in a hash tag (`llmr:{acme}:...`), so one
tenant's keys share a Redis Cluster slot; every key expires (PEXPIRE) once its
window, bucket or leases are over.

Timeouts are ambiguous: a command may run on Redis after the client gave up.
Reserve is idempotent (an id already open is not taken twice, so redis-py's
one resend is harmless), settle is idempotent, and a reserve that timed out
is voided by the manager (`QuotaStoreError.maybe_applied`).

>>> store = RedisStore.from_url("redis://127.0.0.1:6379/0?prefix=llmr:")  # doctest: +SKIP
>>> store.name  # doctest: +SKIP
'redis://127.0.0.1:6379/0'
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any, Literal

from router.redis_client import client_from_url, pop_query_option, redis_missing, store_name

try:
    from redis.asyncio import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, RedisError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise redis_missing("the Redis quota store") from exc

from router.quota.base import (
    Admitted,
    Counts,
    QuotaStore,
    QuotaStoreError,
    Rejected,
    ReservePlan,
    SettlePlan,
    TopUpPlan,
)

_KINDS: dict[int, Literal["rate", "window", "slot"]] = {1: "rate", 2: "window", 3: "slot"}


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


class _Script:
    """One Lua script: the shared prelude plus its body, known by its SHA1."""

    def __init__(self, name: str) -> None:
        here = files("router.quota")
        self.source = (
            here.joinpath("prelude.lua").read_text("utf-8")
            + "\n"
            + here.joinpath(f"{name}.lua").read_text("utf-8")
        )
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()


class RedisStore(QuotaStore):
    """Quota store on a Redis client (redis.asyncio); see `from_url`.

    `clock` replaces Redis's TIME and exists for tests only; leave it None.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "llmr:",
        name: str = "redis",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.name = name
        self._clock = clock
        self._reserve = _Script("reserve")
        self._settle = _Script("settle")
        self._usage = _Script("usage")
        self._top_up = _Script("top_up")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Callable[[], float] | None = None,
        timeout_s: float = 1.0,
        max_connections: int = 50,
        pool_timeout_s: float = 10.0,
    ) -> RedisStore:
        """Connect lazily to `redis://[:password@]host:port/db?prefix=llmr:`.

        Socket timeouts default to `timeout_s`, and a failed command is retried
        once, at once: a quota check must not stall a request for seconds while
        Redis is down (redis-py's default backs off ten times). The pool blocks
        (up to `pool_timeout_s`) rather than failing when all `max_connections`
        are busy, so a burst of requests queues instead of erroring. That wait
        is longer than `timeout_s` because it is our own queue, not Redis
        failing to answer: in a burst on a busy process, a connection comes back
        only when the event loop gets round to reading its reply, and a quota
        check that gave up then would fail the request closed although Redis
        is fine. A Redis that does not answer still fails each command within
        `timeout_s`, which frees its connection for the next waiter.
        """
        redis_url, prefix = pop_query_option(url, "prefix", "llmr:")
        client = client_from_url(redis_url, timeout_s=timeout_s, retries=1,
                                 max_connections=max_connections, pool_timeout_s=pool_timeout_s,
                                 needed_by="the Redis quota store")
        return cls(client, prefix=prefix, name=store_name(url), clock=clock)

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    async def _run(self, script: _Script, keys: Sequence[str], args: Sequence[str]) -> Any:
        full = [self._prefix + k for k in keys]
        try:
            try:
                return await self._client.evalsha(script.sha, len(full), *full, *args)
            except NoScriptError:
                await self._client.script_load(script.source)
                return await self._client.evalsha(script.sha, len(full), *full, *args)
        except (RedisError, OSError) as exc:
            # A connection that could not be made never carried the command; anything
            # else (a timeout above all) may have reached Redis and may still run there.
            sent = not isinstance(exc, RedisConnectionError | ConnectionRefusedError)
            raise QuotaStoreError(f"{self.name}: {exc}", maybe_applied=sent) from exc

    async def reserve(self, plan: ReservePlan) -> Admitted | Rejected:
        keys = [
            *(r.key for r in plan.rates),
            *(w.key for w in plan.windows),
            *(s.key for s in plan.slots),
            plan.void_key or f"{plan.slots[0].key}:void",
        ]
        args = [self._now(), plan.id, repr(plan.lease_s),
                str(len(plan.rates)), str(len(plan.windows)), str(len(plan.slots))]
        for r in plan.rates:
            args += [repr(r.interval_s), repr(float(r.capacity)), repr(float(r.amount))]
        for w in plan.windows:
            args += [w.window, *(str(n) for n in w.amounts), *(_opt(n) for n in w.limits)]
        args += [_opt(s.limit) for s in plan.slots]
        out = await self._run(self._reserve, keys, args)
        try:
            if int(out[0]) == 2:
                raise QuotaStoreError(f"{self.name}: reservation {plan.id} was voided")
            if int(out[0]) == 1:
                return Admitted((int(out[1]), int(out[2]), int(out[3])))
            retry = float(out[5]) if out[5] else None
            return Rejected(_KINDS[int(out[1])], int(out[2]), int(out[3]), float(out[4]), retry)
        except (LookupError, TypeError, ValueError) as exc:
            raise QuotaStoreError(f"{self.name}: unexpected reply {out!r}") from exc

    async def settle(self, plan: SettlePlan) -> bool:
        keys = [plan.open_key, *(r.key for r in plan.rates), *(w.key for w in plan.windows),
                *plan.release, *((plan.void_key,) if plan.void_key else ())]
        args = [self._now(), plan.id, str(len(plan.rates)), str(len(plan.windows)),
                str(len(plan.release)), repr(plan.void_s) if plan.void_key else ""]
        for r in plan.rates:
            args += [repr(r.interval_s), repr(float(r.delta))]
        for w in plan.windows:
            wid = "" if w.window_id is None else str(w.window_id)
            args += [w.window, wid, *(str(n) for n in w.deltas)]
        return int(await self._run(self._settle, keys, args)) == 1

    async def top_up(self, plan: TopUpPlan) -> Literal["ok", "closed"] | Rejected:
        keys = [plan.open_key, *(r.key for r in plan.rates), *(w.key for w in plan.windows),
                *plan.renew]
        args = [self._now(), plan.id, repr(plan.lease_s),
                str(len(plan.rates)), str(len(plan.windows)), str(len(plan.renew))]
        for r in plan.rates:
            args += [repr(r.interval_s), repr(float(r.capacity)), repr(float(r.amount))]
        for w in plan.windows:
            args += [w.window, str(w.window_id), *(str(n) for n in w.deltas),
                     *(_opt(n) for n in w.limits)]
        out = await self._run(self._top_up, keys, args)
        try:
            if int(out[0]) == 1:
                return "ok"
            if int(out[0]) == 2:
                return "closed"
            return Rejected(_KINDS[int(out[1])], int(out[2]), int(out[3]), float(out[4]),
                            float(out[5]))
        except (LookupError, TypeError, ValueError) as exc:
            raise QuotaStoreError(f"{self.name}: unexpected reply {out!r}") from exc

    async def usage(
        self, window_keys: tuple[str, str, str], open_key: str
    ) -> tuple[tuple[Counts, Counts, Counts], int]:
        out = [int(v) for v in await self._run(self._usage, [*window_keys, open_key],
                                               [self._now()])]
        m, d, mo = (
            (out[i], out[i + 1], out[i + 2]) for i in (0, 3, 6)
        )
        return (m, d, mo), out[9]

    async def aclose(self) -> None:
        await self._client.aclose()
