"""The contract of a conversation history store, and what every store shares.

A store keeps, per (tenant, conversation id), the list of OpenAI-shaped chat
message dicts of one conversation, oldest first, for `ttl_s` seconds after its
last append. The tenant is part of the key, so one tenant can never read
another's conversation, whatever ids they choose. Messages are stored as JSON,
so what comes back is plain data (dicts, lists, str, numbers), never the
caller's own objects.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from router.errors import InvalidRequest, RouterError

#: Seconds a conversation is kept after its last append, unless the store URL says otherwise.
DEFAULT_TTL_S = 86_400.0
_MAX_KEY_PART = 256


class HistoryStoreError(RouterError):
    """The history store could not be reached or answered with something unreadable."""

    def __init__(self, message: str, *, store: str) -> None:
        self.store = store
        super().__init__(f"history store {store}: {message}")


def check_key(tenant: str, conversation_id: str) -> None:
    """InvalidRequest unless both parts are non-empty strings of at most 256 characters."""
    for field, value in (("tenant", tenant), ("conversation_id", conversation_id)):
        if not isinstance(value, str) or not value or len(value) > _MAX_KEY_PART:
            raise InvalidRequest(f"{field} must be a non-empty string of at most {_MAX_KEY_PART} characters")


def encode_messages(messages: Sequence[Mapping[str, object]]) -> list[str]:
    """Each message as compact JSON; InvalidRequest naming `messages[i]` if one is not JSON data."""
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be a mapping with a string 'role'")
        try:
            out.append(json.dumps(dict(message), ensure_ascii=False, separators=(",", ":"), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"messages[{i}] is not JSON data: {exc}") from exc
    return out


def decode_messages(raw: Sequence[str | bytes], *, store: str) -> list[dict[str, Any]]:
    try:
        return [json.loads(item) for item in raw]
    except ValueError as exc:
        raise HistoryStoreError(f"unreadable message: {exc}", store=store) from exc


class HistoryStore(ABC):
    """Where conversations are kept; `router.history.history_store_from_url` picks one by URL.

    Every method may raise `HistoryStoreError` (store down) and, for bad
    arguments, `InvalidRequest`.
    """

    #: What the URL names, without credentials (`memory://`, `redis://host:6379/0`).
    name: str
    #: Seconds a conversation lives after its last append.
    ttl_s: float

    @abstractmethod
    async def load(self, tenant: str, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation's messages, oldest first; [] when unknown or expired."""

    @abstractmethod
    async def append(self, tenant: str, conversation_id: str, messages: Sequence[Mapping[str, object]]) -> None:
        """Add `messages` at the end, all or none, and keep the conversation `ttl_s` more seconds."""

    @abstractmethod
    async def clear(self, tenant: str, conversation_id: str) -> None:
        """Forget the conversation."""

    async def aclose(self) -> None:  # noqa: B027 - optional: a store with nothing to release keeps this
        """Release connections this store opened."""
