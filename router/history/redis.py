"""Conversations in Redis: shared by every router process and kept across restarts.

One Redis list per conversation, at `{prefix}{tenant}:{id}` with both parts
percent-encoded (so `a:b` + `c` and `a` + `b:c` are different keys). An
append is RPUSH + PEXPIRE in one MULTI/EXEC, so the messages of one turn land
together and the TTL slides with activity.

>>> store = RedisHistoryStore.from_url("redis://127.0.0.1:6379/0?prefix=llmr:hist:&ttl_s=3600")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from router.redis_client import client_from_url, redis_missing, store_name

try:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise redis_missing("the Redis history store") from exc

from router.history.base import (
    DEFAULT_TTL_S,
    HistoryStore,
    HistoryStoreError,
    check_key,
    decode_messages,
    encode_messages,
)


class RedisHistoryStore(HistoryStore):
    """History on a `redis.asyncio.Redis` client; `from_url` builds one (and `aclose` closes it)."""

    def __init__(self, client: Redis, *, prefix: str = "llmr:hist:", ttl_s: float = DEFAULT_TTL_S,
                 name: str = "redis", owns_client: bool = False) -> None:
        self._client = client
        self._prefix = prefix
        self.ttl_s = ttl_s
        self.name = name
        self._owns_client = owns_client

    @classmethod
    def from_url(cls, url: str, *, ttl_s: float | None = None, timeout_s: float = 1.0) -> RedisHistoryStore:
        """`redis://[:password@]host:port/db?prefix=llmr:hist:&ttl_s=86400` (query values optional).

        A `ttl_s` argument wins over the URL's. Socket timeouts are `timeout_s`
        and a failed command is retried once at once, so an outage costs a
        request about a second, not redis-py's default backoff.
        """
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in query if k in ("prefix", "ttl_s")}
        rest = urlencode([(k, v) for k, v in query if k not in ours])
        client = client_from_url(urlunsplit(parts._replace(query=rest)), timeout_s=timeout_s, retries=1,
                                 needed_by="the Redis history store")
        return cls(client, prefix=ours.get("prefix", "llmr:hist:"),
                   ttl_s=ttl_s if ttl_s is not None else float(ours.get("ttl_s", DEFAULT_TTL_S)),
                   name=store_name(url), owns_client=True)

    def key(self, tenant: str, conversation_id: str) -> str:
        """The Redis key of one conversation."""
        check_key(tenant, conversation_id)
        return f"{self._prefix}{quote(tenant, safe='')}:{quote(conversation_id, safe='')}"

    async def load(self, tenant: str, conversation_id: str) -> list[dict[str, Any]]:
        key = self.key(tenant, conversation_id)
        try:
            raw = await self._client.lrange(key, 0, -1)
        except (RedisError, OSError) as exc:
            raise HistoryStoreError(str(exc), store=self.name) from exc
        return decode_messages(raw, store=self.name)

    async def append(self, tenant: str, conversation_id: str, messages: Sequence[Mapping[str, object]]) -> None:
        key = self.key(tenant, conversation_id)
        encoded = encode_messages(messages)
        if not encoded:
            return
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *encoded)
                pipe.pexpire(key, max(int(self.ttl_s * 1000), 1))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise HistoryStoreError(str(exc), store=self.name) from exc

    async def clear(self, tenant: str, conversation_id: str) -> None:
        key = self.key(tenant, conversation_id)
        try:
            await self._client.delete(key)
        except (RedisError, OSError) as exc:
            raise HistoryStoreError(str(exc), store=self.name) from exc

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
