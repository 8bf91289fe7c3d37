"""Circuit opens shared between the replicas of a service.

When one replica opens a deployment's circuit it publishes how long the
circuit stays open; the others adopt it on their next refresh, so ten
replicas stop sending traffic to a dead deployment together and then each
sends its own half-open trials.

Layout in Redis: one hash `{prefix}open`, field = deployment name, value =
`"{open_until_ms}:{cooldown_ms}"` with `open_until_ms` on Redis's own clock
(`TIME`), so replicas never compare their clocks. A Lua script keeps the later
of two opens; the hash expires with its longest open. One `TIME` + `HGETALL`
round trip reads every deployment, including those a replica has not called
yet.

>>> shared = MemorySharedHealth(clock=lambda: 100.0)
>>> import asyncio
>>> asyncio.run(shared.publish_open("gpt", 5.0, 5.0))
>>> asyncio.run(shared.fetch_open())
{'gpt': SharedOpen(remaining_s=5.0, cooldown_s=5.0)}
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from router.redis_client import client_from_url, pop_query_option, read_hash_at_server_time

if TYPE_CHECKING:
    from redis.asyncio import Redis

_PUBLISH_OPEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cooldown = tonumber(ARGV[3])
local until_ms = now + tonumber(ARGV[2])
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local current_until = tonumber(string.match(current, '^(%d+)'))
  if current_until and current_until >= until_ms then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d', until_ms, cooldown))
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class SharedOpen:
    """An open circuit as another replica published it."""

    remaining_s: float
    cooldown_s: float


class SharedHealth(Protocol):
    """Where replicas publish and read circuit opens. Calls may raise; the tracker catches."""

    #: How often `HealthTracker`'s background task pulls (seconds).
    refresh_interval_s: float

    async def publish_open(self, deployment: str, remaining_s: float, cooldown_s: float) -> None:
        """Say the deployment is open for `remaining_s` more seconds (keep the later open)."""
        ...

    async def fetch_open(self) -> dict[str, SharedOpen]:
        """Every deployment some replica holds open right now."""
        ...

    async def aclose(self) -> None:
        """Release what this object created (not what it was given)."""
        ...


class MemorySharedHealth:
    """Shares opens between trackers of one process (tests, several routers in one service).

    >>> shared = MemorySharedHealth()
    >>> shared.refresh_interval_s
    0.5
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, refresh_interval_s: float = 0.5) -> None:
        self.refresh_interval_s = refresh_interval_s
        self._clock = clock
        self._opens: dict[str, tuple[float, float]] = {}  # deployment -> (until, cooldown)

    async def publish_open(self, deployment: str, remaining_s: float, cooldown_s: float) -> None:
        until = self._clock() + remaining_s
        current = self._opens.get(deployment)
        if current is None or current[0] < until:
            self._opens[deployment] = (until, cooldown_s)

    async def fetch_open(self) -> dict[str, SharedOpen]:
        now = self._clock()
        for name in [n for n, (until, _) in self._opens.items() if until <= now]:
            del self._opens[name]
        return {n: SharedOpen(until - now, cd) for n, (until, cd) in self._opens.items()}

    async def aclose(self) -> None:
        """Nothing to release; other trackers may still share this store."""


class RedisSharedHealth:
    """Opens shared through Redis, for replicas on several hosts.

    Give it a URL (it creates the client, with short timeouts and no
    retries so an outage costs one failed refresh, and closes it in `aclose`)
    or a `redis.asyncio.Redis` client (left open: it is yours).

    >>> shared = RedisSharedHealth("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> tracker = HealthTracker(shared=shared); await tracker.start()  # doctest: +SKIP
    """

    def __init__(
        self,
        url_or_client: str | Redis,
        prefix: str = "llmr:health:",
        *,
        refresh_interval_s: float = 0.5,
        timeout_s: float = 1.0,
    ) -> None:
        self.refresh_interval_s = refresh_interval_s
        self._owns_client = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            # A URL's own `?prefix=` wins over the argument; redis-py would refuse it.
            url_or_client, prefix = pop_query_option(url_or_client, "prefix", prefix)
            self._client: Redis = client_from_url(url_or_client, timeout_s=timeout_s, retries=0,
                                                  needed_by="shared health")
        else:
            self._client = url_or_client
        self._key = f"{prefix}open"
        self._publish = self._client.register_script(_PUBLISH_OPEN)

    async def publish_open(self, deployment: str, remaining_s: float, cooldown_s: float) -> None:
        remaining_ms = max(int(remaining_s * 1000), 1)
        await self._publish(keys=[self._key], args=[deployment, remaining_ms, int(cooldown_s * 1000)])

    async def fetch_open(self) -> dict[str, SharedOpen]:
        now_ms, fields = await read_hash_at_server_time(self._client, self._key)
        opens: dict[str, SharedOpen] = {}
        for raw_name, raw_value in fields.items():
            parsed = _parse_value(raw_value)
            if parsed is not None and parsed[0] > now_ms:
                opens[_text(raw_name)] = SharedOpen((parsed[0] - now_ms) / 1000, parsed[1] / 1000)
        return opens

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


class SharedSync:
    """Moves opens between one tracker and a `SharedHealth`, off the request path.

    Pushes run as fire-and-forget tasks; pulls run every
    `store.refresh_interval_s` in one background task. A failing store is
    logged once (and once more when it is back), never raised: the tracker
    then works on its local state alone.
    """

    def __init__(
        self,
        store: SharedHealth,
        *,
        still_open: Callable[[str], tuple[float, float] | None],
        adopt: Callable[[dict[str, SharedOpen]], None],
        log: logging.Logger,
    ) -> None:
        self._store = store
        self._still_open = still_open  # name -> (remaining_s, cooldown_s) if open here
        self._adopt = adopt
        self._log = log
        self._to_publish: dict[str, None] = {}  # an ordered set
        self._refresher: asyncio.Task[None] | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._down = False
        self._closed = False

    @property
    def running(self) -> bool:
        return self._refresher is not None or self._closed

    async def start(self) -> None:
        if not self.running:
            await self.sync()
            self.run_in_background()

    def run_in_background(self) -> None:
        """Start the refresh task if a loop is running; otherwise leave it to `start()`."""
        if self.running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._refresher = loop.create_task(self._refresh_forever(), name="router-health-refresh")

    async def sync(self) -> bool:
        try:
            await self._push_pending()
            opens = await self._store.fetch_open()
        except Exception as exc:  # the store is an optimisation, never a request failure
            self._failed(exc)
            return False
        self._recovered()
        self._adopt(opens)
        return True

    def publish_later(self, name: str) -> None:
        if self._closed:
            return
        self._to_publish[name] = None
        if self._pusher is not None and not self._pusher.done():
            return  # the running push loop picks it up
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # the next sync() pushes it
        self._pusher = loop.create_task(self._push_quietly(), name="router-health-publish")

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in (self._refresher, self._pusher) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self._store.aclose()
        except Exception as exc:
            self._log.debug("closing the shared health store failed: %r", exc)

    async def _refresh_forever(self) -> None:
        while True:
            await self.sync()
            await asyncio.sleep(self._store.refresh_interval_s)

    async def _push_quietly(self) -> None:
        try:
            await self._push_pending()
        except Exception as exc:
            self._failed(exc)  # still queued: the next sync() tries again
        else:
            self._recovered()

    async def _push_pending(self) -> None:
        while self._to_publish:
            name = next(iter(self._to_publish))
            still_open = self._still_open(name)
            if still_open is not None:
                await self._store.publish_open(name, *still_open)
            self._to_publish.pop(name, None)

    def _failed(self, exc: Exception) -> None:
        if not self._down:
            self._down = True
            self._log.warning(
                "shared health store unreachable, using local circuit state only: %s: %s",
                type(exc).__name__,
                exc,
            )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            self._log.info("shared health store reachable again")


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _parse_value(raw: Any) -> tuple[int, int] | None:
    """`"until_ms:cooldown_ms"`; None for anything else (another version's format, say)."""
    until, _, cooldown = _text(raw).partition(":")
    try:
        return int(until), int(cooldown or 0)
    except ValueError:
        return None
