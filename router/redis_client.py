"""How every Redis-backed store reaches Redis: a client from a URL, and one hash read on Redis's clock.

The cache, quota, history, quality and shared-health stores all build their
`redis.asyncio.Redis` the same way: socket and connect timeouts of
`timeout_s`, a fixed number of immediate retries (redis-py's default backs off
for seconds, which a request cannot afford), and optionally a blocking pool.
Each store keeps its own defaults for those numbers; this module only builds.

redis is an optional dependency: it is imported when a client is built, and
its absence raises `ImportError` with the install hint.

>>> store_name("redis://:secret@cache.internal:6380/2?prefix=llmr:")
'redis://cache.internal:6380/2'
>>> client = client_from_url("redis://127.0.0.1:6379/0", timeout_s=0.5, retries=0,
...                          needed_by="the Redis cache store")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis


def store_kind(url: str) -> Literal["memory", "redis"] | None:
    """Which store a `*_store_url` names: "memory" (`memory://...`), "redis" (`redis://`,
    `rediss://`, `unix://`: what redis-py connects to), or None (the caller raises, naming its store).

    >>> store_kind("REDIS://cache:6379/0"), store_kind("memory://?max_entries=10"), store_kind("ftp://x")
    ('redis', 'memory', None)
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return "memory" if scheme == "memory" else "redis" if scheme in ("redis", "rediss", "unix") else None


def redis_missing(needed_by: str) -> ImportError:
    """The error to raise when redis is not installed: names who needs it and how to install it."""
    return ImportError(f"{needed_by} needs the redis package: pip install llm-policy-router[redis]")


def client_from_url(url: str, *, timeout_s: float, retries: int, max_connections: int | None = None,
                    pool_timeout_s: float | None = None, needed_by: str) -> Redis:
    """A lazily connecting `redis.asyncio.Redis` for `url` (`redis://[:password@]host:port/db?...`).

    Every command's socket and connect timeouts are `timeout_s` seconds; a
    failed command is retried `retries` times at once (no backoff). With
    `max_connections`, the client draws on a blocking pool of that size that
    waits up to `pool_timeout_s` (default `timeout_s`) for a free connection
    instead of failing; without, redis-py's default pool. Query options of our own (`prefix`) must be
    removed from `url` first (`pop_query_option`). Raises ValueError naming
    any other option a redis connection does not take (redis-py would accept
    the URL and fail every command with a TypeError), and `ImportError` (see
    `redis_missing`) when redis is not installed.
    """
    try:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise redis_missing(needed_by) from exc
    retry = Retry(NoBackoff(), retries)
    if max_connections is None:
        client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=retry)
        _check_options(client.connection_pool, url)
        return client
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s if pool_timeout_s is None else pool_timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=retry,
    )
    _check_options(pool, url)
    return Redis.from_pool(pool)


def _check_options(pool: Any, url: str) -> None:
    """Raise ValueError for an option of `url` that the pool's connections do not take.

    redis-py hands every query option it does not parse itself to the connection's
    constructor, which refuses the unknown ones only when the first command connects.
    """
    taken: set[str] = set()
    for cls in pool.connection_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            taken.update(name for name, p in inspect.signature(init).parameters.items()
                         if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    unknown = sorted(set(pool.connection_kwargs) - taken)
    if unknown:
        raise ValueError(f"Redis URL {store_name(url)}: unknown option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}")


def pop_query_option(url: str, name: str, default: str) -> tuple[str, str]:
    """`url` without its `name=...` query options (redis-py would refuse them), and the first one's value.

    >>> pop_query_option("redis://h:6379/0?prefix=app:&health_check_interval=5", "prefix", "llmr:")
    ('redis://h:6379/0?health_check_interval=5', 'app:')
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    value = next((v for k, v in query if k == name), default)
    rest = urlencode([(k, v) for k, v in query if k != name])
    return urlunsplit(parts._replace(query=rest)), value


def store_name(url: str) -> str:
    """`scheme://host[:port]/path` of `url`: how a store names itself, without password or query.

    A URL without a host names `localhost`, where redis-py connects.
    """
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def read_hash_at_server_time(client: Redis, key: str) -> tuple[int, dict[Any, Any]]:
    """Redis's own clock (ms since the epoch) and every field of hash `key`, in one round trip.

    Stores that stamp values with Redis's `TIME` read them back this way, so
    replicas never compare their own clocks.
    """
    async with client.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.hgetall(key)
        (seconds, micros), fields = await pipe.execute()
    return int(seconds) * 1000 + int(micros) // 1000, fields
