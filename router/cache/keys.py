"""Cache keys: the canonical JSON of everything that changes an answer.

A key covers the tenant partition, the route, the request (messages and every
parameter that changes the output) and the sorted deployments the route may
serve from, so an answer is never reused across tenants (unless the route
shares its cache), routes, parameters or a changed set of targets.

A key of up to `MAX_TEXT_KEY` characters is that JSON text itself: two
requests share a key only if they are the same request, and a miss hashes
nothing (an in-memory store's dict hashes the text anyway). A longer one is
`"sha256:"` and its SHA-256 in hex, so that an entry for a long prompt does not
hold the prompt again. The two kinds never meet: a text key starts with `{`.
The Redis store names its entries by the SHA-256 of the key, whichever kind,
so no prompt text appears in Redis key names.

Canonical JSON: object keys sorted, no whitespace, floats as their shortest
repr, tuples as arrays, non-ASCII kept as is. Anything JSON cannot hold
exactly (bytes, sets, NaN, a non-string object key, an arbitrary object) is
rejected with `CacheKeyError` naming where it was, rather than being turned
into a string that two different values might share.

>>> k1 = cache_key(partition="acme", route="default",
...                request={"messages": [{"role": "user", "content": "hi"}], "temperature": 0},
...                deployments=["b", "a"])
>>> k2 = cache_key(partition="acme", route="default",
...                request={"temperature": 0, "messages": [{"content": "hi", "role": "user"}]},
...                deployments=["a", "b"])
>>> k1 == k2, k1.startswith('{"deployments":["a","b"],"kind":"chat","partition":"acme"')
(True, True)
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import math
from collections.abc import Mapping, Sequence
from typing import Any

#: Bumped when the key document changes shape, so old entries are never read as new.
KEY_VERSION = 1
#: The partition of a route whose cache is shared by every tenant.
SHARED_PARTITION = "*"

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


class CacheKeyError(TypeError):
    """A request holds a value that has no exact canonical JSON form.

    `path` says where, e.g. `request.messages[0].content`.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


def _plain(value: object, path: str) -> JSONValue:
    """`value` as plain JSON types, checked all the way down."""
    # bool before int: bool is an int subclass, and True must not read as 1.
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CacheKeyError(path, f"{value!r} is not a finite number")
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, JSONValue] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CacheKeyError(path, f"object key {k!r} is a {type(k).__name__}, not a string")
            out[k] = _plain(v, f"{path}.{k}" if path else k)
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise CacheKeyError(path, f"a {type(value).__name__} is not a JSON value (use str, number, "
                              "bool, None, list or dict)")


def canonical_json(value: object, *, path: str = "value") -> str:
    """`value` as canonical JSON text; raises `CacheKeyError` for non-JSON values.

    >>> canonical_json({"b": 1.0, "a": [True, None, "é"]})
    '{"a":[true,null,"é"],"b":1.0}'
    """
    return json.dumps(_plain(value, path), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)


def _not_json(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json.dumps builds its C encoder on every call (~1.2 µs of a 2.5 µs dump of a short request);
# with the C speedups present, one encoder made once, with `dumps`' own arguments, serves every
# key. No cycle check (markers=None): a checked value came out of a successful json.dumps.
_make_c_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER: Any = (_make_c_encoder(None, _not_json, json.encoder.encode_basestring, None, ":", ",", True, False, False)
                   if _make_c_encoder is not None else None)


def checked_json(value: object) -> str:
    """Canonical JSON of a value already known to be plain JSON (string keys, finite numbers):
    json keeps true apart from 1 and 1 apart from 1.0 as `_plain` does, at a fifth of its cost.

    >>> checked_json({"b": [1, 1.0, True], "a": "é"})
    '{"a":"é","b":[1,1.0,true]}'
    """
    if _C_ENCODER is not None and isinstance(value, dict | list):
        return "".join(_C_ENCODER(value, 0))
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


#: The longest key kept as the request's text; a longer one is its SHA-256 (see the module docstring).
MAX_TEXT_KEY = 1024


def key_of_text(text: str) -> str:
    """The key of a canonical JSON document: the text itself up to `MAX_TEXT_KEY` characters,
    else `"sha256:"` and its SHA-256 in hex (71 characters)."""
    if len(text) <= MAX_TEXT_KEY:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def key_digest(key: str) -> str:
    """The SHA-256 of a key in hex (64 characters): how a store outside this process names it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _key(document: Mapping[str, object], *, checked: bool = False) -> str:
    return key_of_text(checked_json(document) if checked else canonical_json(document, path=""))


def partition_for(tenant: str, *, shared_across_tenants: bool) -> str:
    """The key partition of `tenant`: its name, or `"*"` when the route shares its cache.

    >>> partition_for("acme", shared_across_tenants=True)
    '*'
    """
    return SHARED_PARTITION if shared_across_tenants else tenant


def cache_key(
    *,
    partition: str,
    route: str,
    request: Mapping[str, object],
    deployments: Sequence[str],
    checked: bool = False,
) -> str:
    """The key of one chat request (`key_of_text` of its canonical document).

    `request` holds the messages and every parameter that changes the output
    (model alias, temperature, max_tokens, tools, response_format, seed, ...),
    as the caller normalised them; leave out what does not (timeouts, tags,
    trace ids), or every call becomes a miss. `deployments` is the set the
    route may serve from; its order does not matter.

    Raises `CacheKeyError` (a `TypeError`) when `request` holds a non-JSON
    value, naming its path. `checked=True` skips that walk for a request already
    validated as plain JSON (the router's `ChatRequest`).
    """
    return _key({
        "v": KEY_VERSION,
        "kind": "chat",
        "partition": partition,
        "route": route,
        "request": request,
        "deployments": sorted(set(deployments)),
    }, checked=checked)


def chat_key_frame(*, partition: str, route: str, deployments: Sequence[str]) -> tuple[str, str]:
    """The canonical JSON of `cache_key`'s document around its request: `(head, tail)`, so that
    `key_of_text(head + canonical request + tail)` is `cache_key` with the same arguments.

    Everything but the request is fixed for a route and a tenant: a caller that keys
    many requests computes the frame once (the router does, per route and partition).

    >>> head, tail = chat_key_frame(partition="acme", route="default", deployments=["b", "a"])
    >>> request = {"messages": [{"role": "user", "content": "hi"}]}
    >>> key_in_frame(head, tail, request) == cache_key(partition="acme", route="default",
    ...                                                request=request, deployments=["a", "b"])
    True
    """
    before = checked_json({"deployments": sorted(set(deployments)), "kind": "chat", "partition": partition})
    after = checked_json({"route": route, "v": KEY_VERSION})
    return before[:-1] + ',"request":', "," + after[1:]


def key_in_frame(head: str, tail: str, request: Mapping[str, object]) -> str:
    """The key of `request` (already validated as plain JSON) in a frame from `chat_key_frame`."""
    return _framed(head, checked_json(request), tail)


def _framed(head: str, request_json: str, tail: str) -> str:
    return key_of_text(head + request_json + tail)


_encode_str = json.encoder.encode_basestring  # json's own string encoder (non-ASCII kept), in C


def chat_key_in_frame(head: str, tail: str, messages: Sequence[Mapping[str, object]],
                      params: Mapping[str, object], stream: bool) -> str:
    """`key_in_frame` of the request `{"messages": ..., "params": ..., "stream": ...}`: the same key.
    Text-only messages (a role and a string content) are written out directly rather than through
    the encoder's generic walk (the common request, ~1 µs less)."""
    parts = []
    for m in messages:
        content, role = m.get("content"), m.get("role")
        if len(m) != 2 or type(content) is not str or type(role) is not str:
            return key_in_frame(head, tail, {"messages": messages, "params": params, "stream": stream})
        parts.append('{"content":' + _encode_str(content) + ',"role":' + _encode_str(role) + "}")
    # checked_json and _framed inline (two frames less a request)
    params_json = ("".join(_C_ENCODER(params, 0)) if _C_ENCODER is not None and type(params) is dict
                   else checked_json(dict(params)))
    text = (head + '{"messages":[' + ",".join(parts) + '],"params":' + params_json
            + (',"stream":true}' if stream else ',"stream":false}') + tail)
    return text if len(text) <= MAX_TEXT_KEY else key_of_text(text)


def embedding_key(
    *,
    partition: str,
    route: str,
    text: str,
    deployments: Sequence[str],
    params: Mapping[str, object] | None = None,
) -> str:
    """The key of one input text of an embeddings request.

    One key per text, so a batch reuses every text it has seen before and
    calls a provider for the new ones only. `params` are the model parameters
    that change a vector (`dimensions`, `encoding_format`, ...).
    Raises `CacheKeyError` like `cache_key`.
    """
    return _key({
        "v": KEY_VERSION,
        "kind": "embedding",
        "partition": partition,
        "route": route,
        "text": text,
        "params": _plain(params or {}, "params"),
        "deployments": sorted(set(deployments)),
    })


def is_deterministic(request: Mapping[str, object]) -> bool:
    """Whether a chat request asks for an answer that does not vary between calls.

    True when `temperature` is 0 or a `seed` is set. A route with `cache.deterministic_only` caches only these; pass the
    request with the route's own defaults (e.g. its temperature) applied.

    >>> is_deterministic({"temperature": 0}), is_deterministic({"temperature": 0.7})
    (True, False)
    """
    temperature = request.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature == 0:
        return True
    return request.get("seed") is not None
