"""Where the response cache meets the request path: what may be cached, under which key.

The cache itself (stores, keys, single-flight) is `router.cache`; this module
decides, per request, whether the route's `cache:` spec applies, builds the
key from the normalised request, and turns answers into stored bytes and
back. Never cached: errors, interrupted streams, answers the provider's
content filter flagged, `n > 1` unless deterministic.

Per request, `cache=` is "default", "no-cache" (skip the read) or
"no-store" (skip the write), as HTTP's Cache-Control.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from router.cache import chat_key_frame, chat_key_in_frame, embedding_key, partition_for
from router.errors import InvalidRequest
from router.models import AssistantMessage, LLMResponse, StreamChunk
from router.policy.snapshot import CompiledRoute
from router.records import record
from router.request import ChatRequest
from router.schema import CacheSpec

CacheMode = Literal["default", "no-cache", "no-store"]
CACHE_MODES: frozenset[str] = frozenset({"default", "no-cache", "no-store"})


@record
class CachePlan:
    """How one request uses the cache: `read` it, `write` it, for `ttl_s` seconds.
    `frame` is the key document around the request (`router.cache.chat_key_frame`)."""

    partition: str
    route: str
    deployments: tuple[str, ...]
    read: bool
    write: bool
    ttl_s: float
    lock_ttl_s: float
    frame: tuple[str, str]


def check_mode(mode: str) -> None:
    """Raise `InvalidRequest` naming `cache` for a mode other than the three."""
    if mode not in CACHE_MODES:
        raise InvalidRequest(f"must be one of {sorted(CACHE_MODES)}", field="cache")


#: (route name, tenant, mode) -> (the compiled route it was made for, its plan or None). Cleared
#: when full: tenants are many, and a plan costs two small JSON dumps (its key frame) to make again.
_PLANS: dict[tuple[str, str, str], tuple[CompiledRoute, CachePlan | None]] = {}
_MAX_PLANS = 4096


def plan_for(route: CompiledRoute, tenant: str, mode: str, *, deterministic: bool,
             n: int = 1) -> CachePlan | None:
    """The cache plan for a request on `route`, or None when the cache does not apply.
    Plans are made once per route, tenant and mode (the same value every time)."""
    spec: CacheSpec = route.spec.cache
    if spec.mode == "off":
        return None
    if (spec.deterministic_only or n > 1) and not deterministic:
        return None
    known = _PLANS.get((route.name, tenant, mode))
    if known is not None and known[0] is route:
        return known[1]
    check_mode(mode)
    plan = _make_plan(route, tenant, mode)
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[(route.name, tenant, mode)] = (route, plan)
    return plan


def _make_plan(route: CompiledRoute, tenant: str, mode: str) -> CachePlan | None:
    spec = route.spec.cache
    read = spec.reads and mode != "no-cache"
    write = spec.writes and mode != "no-store"
    if not (read or write):
        return None
    partition = partition_for(tenant, shared_across_tenants=spec.shared_across_tenants)
    frame = chat_key_frame(partition=partition, route=route.name, deployments=route.serves_from)
    return CachePlan(partition, route.name, route.serves_from, read, write, spec.ttl_s, route.spec.deadline_s, frame)


def chat_key(plan: CachePlan, request: ChatRequest, params: dict[str, Any]) -> str:
    """The key of a chat answer: partition, route, messages, every output-changing parameter,
    deployments (`router.cache.cache_key`'s, from the plan's precomputed frame)."""
    # build_chat_request validated every message and parameter as plain JSON
    head, tail = plan.frame
    return chat_key_in_frame(head, tail, request.messages, params, request.stream)


def embedding_keys(plan: CachePlan, texts: Sequence[str]) -> list[str]:
    """One key per input text, so a batch with one new text calls the provider for that text only."""
    return [embedding_key(partition=plan.partition, route=plan.route, text=t, deployments=plan.deployments)
            for t in texts]


def cacheable(response: LLMResponse) -> bool:
    """False for answers the content filter flagged (another call may answer differently)."""
    if response.choices:
        return all(c.finish_reason != "content_filter" for c in response.choices)
    return response.finish_reason != "content_filter"


_TO_JSON = LLMResponse.__pydantic_serializer__.to_json  # model_dump_json's bytes, without its str round trip
#: Fields that belong to one call, not to the answer: a hit sets its own (a new id, no attempts, no
#: cost, its own latency), so they are not stored (a fifth less to write, a third less to read).
PER_CALL_FIELDS: frozenset[str] = frozenset({"id", "attempts", "cost_usd", "latency_ms", "cached"})
_NOT_STORED = set(PER_CALL_FIELDS)  # pydantic's `exclude` is typed as a set (a frozenset works, but not to mypy)


def encode_chat(response: LLMResponse) -> bytes | None:
    """The stored form of an answer (its JSON without `PER_CALL_FIELDS`); None for one that must
    not be cached (`cacheable`)."""
    return _TO_JSON(response, exclude=_NOT_STORED) if cacheable(response) else None


#: What `encode_chat` writes besides the texts (keys, usage, names), in bytes: ~330 for a plain answer.
_ANSWER_FRAME = 340
_CALL_FRAME = 60
_CHOICE_FRAME = 120


def _calls_size(m: AssistantMessage) -> int:
    return sum(_CALL_FRAME + len(c.id) + len(c.function.name) + len(c.function.arguments) for c in m.tool_calls or ())


def chat_size(response: LLMResponse) -> int | None:
    """About how many bytes `encode_chat` would write for `response` (what a store that keeps the
    answer itself counts toward its byte bound), without encoding it; None when it must not be
    cached (`cacheable`)."""
    if not cacheable(response):
        return None
    # Every memory:// miss: the common answer (one text message, no choices) in this one frame.
    m = response.message
    size = _ANSWER_FRAME + len(response.text) + len(m.content or "") + len(m.refusal or "")
    if m.tool_calls:
        size += _calls_size(m)
    for c in response.choices:
        cm = c.message
        size += _CHOICE_FRAME + len(cm.content or "") + len(cm.refusal or "") + _calls_size(cm)
    return size


def decode_chat(payload: bytes) -> LLMResponse:
    """An answer from `encode_chat`'s bytes, its `PER_CALL_FIELDS` at their defaults; raises
    (ValidationError, a ValueError) for any other bytes."""
    return LLMResponse.model_validate_json(payload)


def encode_stream(chunks: Sequence[StreamChunk]) -> bytes | None:
    """A complete stream's chunks (the last one `done`); None for a stream not worth keeping."""
    if not chunks or not chunks[-1].done or chunks[-1].finish_reason == "content_filter":
        return None
    return json.dumps([c.model_dump(mode="json") for c in chunks]).encode()


def decode_stream(payload: bytes) -> list[StreamChunk]:
    return [StreamChunk.model_validate(c) for c in json.loads(payload)]


def encode_vector(vector: list[float]) -> bytes:
    return json.dumps(vector).encode()


def decode_vector(payload: bytes) -> list[float]:
    value = json.loads(payload)
    if not isinstance(value, list):
        raise ValueError("not a vector")
    return [float(v) for v in value]
