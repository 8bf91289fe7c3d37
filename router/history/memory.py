"""Conversations kept in this process's memory: for tests, demos and single-process services.

>>> import asyncio
>>> store = MemoryHistoryStore(ttl_s=60, clock=lambda: 0.0)
>>> asyncio.run(store.append("acme", "c1", [{"role": "user", "content": "hi"}]))
>>> asyncio.run(store.load("acme", "c1"))
[{'role': 'user', 'content': 'hi'}]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from router.history.base import DEFAULT_TTL_S, HistoryStore, check_key, decode_messages, encode_messages

#: Appends between two sweeps of expired conversations (a sweep reads every entry).
_SWEEP_EVERY = 1000


class MemoryHistoryStore(HistoryStore):
    """A dict of (tenant, id) -> (expiry, JSON messages); expired entries vanish on read and in sweeps.

    `clock` is monotonic seconds (default `time.monotonic`); inject one in tests.
    """

    def __init__(self, *, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = "memory://"
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: dict[tuple[str, str], tuple[float, list[str]]] = {}
        self._appends = 0

    async def load(self, tenant: str, conversation_id: str) -> list[dict[str, Any]]:
        check_key(tenant, conversation_id)
        entry = self._data.get((tenant, conversation_id))
        if entry is None:
            return []
        if entry[0] <= self._clock():
            del self._data[(tenant, conversation_id)]
            return []
        return decode_messages(entry[1], store=self.name)

    async def append(self, tenant: str, conversation_id: str, messages: Sequence[Mapping[str, object]]) -> None:
        check_key(tenant, conversation_id)
        encoded = encode_messages(messages)
        now = self._clock()
        key = (tenant, conversation_id)
        entry = self._data.get(key)
        kept = entry[1] if entry is not None and entry[0] > now else []
        self._data[key] = (now + self.ttl_s, kept + encoded)
        self._appends += 1
        if self._appends % _SWEEP_EVERY == 0:
            self._data = {k: v for k, v in self._data.items() if v[0] > now}

    async def clear(self, tenant: str, conversation_id: str) -> None:
        check_key(tenant, conversation_id)
        self._data.pop((tenant, conversation_id), None)

    def __len__(self) -> int:
        """Conversations held, expired ones not yet swept included."""
        return len(self._data)
