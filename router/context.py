"""The one typed state object that travels through a request's layers.

Rules read it to pick a route, strategies and quotas read it to decide; no
layer hands a mutable dict of extras to the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Literal

from router.records import record

Operation = Literal["chat", "embeddings"]


@record
class RequestContext:
    """What the caller asked for, as the router sees it.

    `prompt_tokens` is an estimate (LiteLLM's token counter when available, a
    character count otherwise); `max_tokens` is the output budget the call
    will request. Immutable (a `router.records.record`: mypy refuses an
    assignment); `dataclasses.replace` makes a changed copy.
    """

    operation: Operation
    tenant: str
    tags: frozenset[str] = frozenset()
    metadata: Mapping[str, str] = field(default_factory=dict)
    model_alias: str | None = None
    route: str | None = None
    prompt_tokens: int = 0
    max_tokens: int | None = None
    stream: bool = False
    #: Capabilities a deployment must declare to serve the request (tools, json, vision, audio).
    capabilities: frozenset[str] = frozenset()

    @property
    def needed_context(self) -> int:
        """Tokens the deployment's context window must hold."""
        return self.prompt_tokens + (self.max_tokens or 0)
