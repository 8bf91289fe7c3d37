"""Quality evidence and pending feedback ids in Redis, shared by every replica.

Layout, under a prefix (default `llmr:quality:`):

- `{prefix}evidence`: one hash; field `route\\x1fdeployment\\x1ftask`, value
  `alpha|beta|samples|updated_ms`, with `updated_ms` on Redis's own `TIME`,
  so replicas never compare clocks. A Lua script decays and adds atomically;
  it refuses a new field once the hash holds `max_keys`.
- `{prefix}fb:{response_id}`: the JSON `FeedbackTarget`, with a TTL; scoring
  it swaps the value for a tombstone (keeping the TTL), so feedback may arrive
  at any replica, once.

>>> store = RedisQualityStore("redis://127.0.0.1:6379/0", prefix="llmr:quality:")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from router.quality.base import Decay, Evidence, FeedbackNotFound, FeedbackTarget, QualityKey, QualityStore
from router.redact import url_for_display
from router.redis_client import client_from_url, pop_query_option, read_hash_at_server_time

if TYPE_CHECKING:
    from redis.asyncio import Redis

_SEP = "\x1f"
_SCORED = "scored"

_ADD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = tonumber(ARGV[1])
local half_life_ms = tonumber(ARGV[2])
local sample_factor = tonumber(ARGV[3])
local max_fields = tonumber(ARGV[4])
local out = {}
for i = 6, #ARGV do
  local a, b, n, at = 0, 0, 0, now
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local refused = false
  if cur then
    local x, y, z, w = string.match(cur, '^([^|]+)|([^|]+)|([^|]+)|([^|]+)$')
    a, b, n, at = tonumber(x), tonumber(y), tonumber(z), tonumber(w)
  elseif redis.call('HLEN', KEYS[1]) >= max_fields then
    refused = true
  end
  if refused then
    out[#out + 1] = ''
  else
    local f = sample_factor
    if half_life_ms > 0 and now > at then f = f * math.pow(0.5, (now - at) / half_life_ms) end
    a = a * f + s
    b = b * f + (1 - s)
    n = n + 1
    local value = string.format('%.17g|%.17g|%d|%d', a, b, n, now)
    redis.call('HSET', KEYS[1], ARGV[i], value)
    out[#out + 1] = value
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return out
"""

_TAKE = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
if v == ARGV[1] then return ARGV[1] end
if ARGV[2] == '1' and cjson.decode(v)['tenant'] ~= ARGV[3] then return false end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return v
"""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _parse(value: str, age_s: float) -> Evidence:
    alpha, beta, samples, _ = value.split("|")
    return Evidence(float(alpha), float(beta), int(samples), age_s)


class RedisQualityStore(QualityStore):
    """Evidence and pending ids in Redis (see the module docstring for the layout).

    Give it a URL (it creates the client, with short timeouts and no retries,
    and closes it in `aclose`) or a `redis.asyncio.Redis` client (left open).
    The evidence hash expires `retention_s` after its last update.
    """

    def __init__(self, url_or_client: str | Redis, *, prefix: str = "llmr:quality:", max_keys: int = 10_000,
                 retention_s: float = 30 * 24 * 3600.0, timeout_s: float = 1.0) -> None:
        self._owns_client = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            self.name = url_for_display(url_or_client)  # never the password in the URL
            # A URL's own `?prefix=` wins over the argument; redis-py would refuse it.
            url_or_client, prefix = pop_query_option(url_or_client, "prefix", prefix)
            self._client: Redis = client_from_url(url_or_client, timeout_s=timeout_s, retries=0,
                                                  needed_by="the Redis quality store")
        else:
            self.name = "redis"
            self._client = url_or_client
        self._prefix = prefix
        self._evidence_key = f"{prefix}evidence"
        self._max_keys = max_keys
        self._retention_ms = int(retention_s * 1000)
        self._add = self._client.register_script(_ADD)
        self._take = self._client.register_script(_TAKE)

    async def add(self, keys: Sequence[QualityKey], score: float, decay: Decay) -> list[Evidence | None]:
        half_life_ms = 0 if decay.half_life_s is None else decay.half_life_s * 1000
        sample_factor = decay.factor(elapsed_s=0.0, new_samples=1)
        reply = await self._add(keys=[self._evidence_key], args=[
            repr(score), repr(half_life_ms), repr(sample_factor), self._max_keys, self._retention_ms,
            *(_SEP.join(k) for k in keys)])
        return [_parse(_text(raw), 0.0) if _text(raw) else None for raw in reply]

    async def fetch_all(self) -> dict[QualityKey, Evidence]:
        now_ms, fields = await read_hash_at_server_time(self._client, self._evidence_key)
        out: dict[QualityKey, Evidence] = {}
        for raw_field, raw_value in fields.items():
            parts = _text(raw_field).split(_SEP)
            value = _text(raw_value)
            if len(parts) != 3 or value.count("|") != 3:
                continue  # not ours: skip rather than fail every refresh
            age_s = max(0.0, (now_ms - int(value.rsplit("|", 1)[1])) / 1000)
            out[(parts[0], parts[1], parts[2])] = _parse(value, age_s)
        return out

    async def put_target(self, response_id: str, target: FeedbackTarget, ttl_s: float) -> None:
        value = json.dumps({"deployment": target.deployment, "route": target.route, "task": target.task,
                            "tenant": target.tenant})
        await self._client.set(f"{self._prefix}fb:{response_id}", value, px=max(1, int(ttl_s * 1000)))

    async def take_target(self, response_id: str, tenant: str | None = None) -> FeedbackTarget:
        checked = ["1", tenant] if tenant is not None else ["0", ""]
        raw = await self._take(keys=[f"{self._prefix}fb:{response_id}"], args=[_SCORED, *checked])
        if raw is None:
            raise FeedbackNotFound(response_id=response_id, reason="unknown or expired")
        text = _text(raw)
        if text == _SCORED:
            raise FeedbackNotFound(response_id=response_id, reason="feedback already recorded")
        data = json.loads(text)
        return FeedbackTarget(deployment=data["deployment"], route=data["route"], task=data["task"],
                              tenant=data["tenant"])

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
