"""What reached the simulator: the last requests per model, for tests to inspect.

``RecordedRequest`` keeps the parsed JSON body, the headers without the
credential, and the credential itself as ``api_key`` (taken from
``Authorization: Bearer``, Anthropic's ``x-api-key`` or Azure's ``api-key``),
so a test can check which key a tenant's request used. The key never shows in
``repr``.

Example:
    >>> recorded = RecordedRequest.of("/v1/chat/completions", {"model": "m"},
    ...                               {"Authorization": "Bearer sk-1", "X-Trace": "t"})
    >>> recorded.api_key, dict(recorded.headers)
    ('sk-1', {'x-trace': 't'})
    >>> "sk-1" in repr(recorded)
    False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CREDENTIAL_HEADERS", "RecordedRequest"]

CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the simulator received it.

    Attributes:
        path: the URL path (``/v1/chat/completions``, ``/v1/messages``, ...).
        body: the parsed JSON body, as sent (Anthropic bodies are not translated).
        headers: every header but the credential ones, names lower-cased.
        api_key: the credential sent, without ``Bearer``; ``None`` if none.
    """

    path: str
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(repr=False)
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, path: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> RecordedRequest:
        """Split the credential out of ``headers``."""
        lowered = {name.lower(): value for name, value in headers.items()}
        api_key = None
        for name in CREDENTIAL_HEADERS:
            value = lowered.get(name)
            if value is not None:
                api_key = value.removeprefix("Bearer ").removeprefix("bearer ")
                break
        kept = {name: value for name, value in lowered.items() if name not in CREDENTIAL_HEADERS}
        return cls(path=path, body=body, headers=kept, api_key=api_key)
