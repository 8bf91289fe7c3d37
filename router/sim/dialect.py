"""The wire format a chat endpoint speaks: OpenAI chat completions or Anthropic messages.

The server runs one request path for both: it asks the dialect to turn the
request into the OpenAI chat shape ``replies.plan_reply`` reads, then to
encode the reply (JSON or SSE) and any error in its own shape.

Example:
    >>> OPENAI.keepalive_frame
    b': PROCESSING\\n\\n'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from router.sim import payloads, replies

__all__ = ["OPENAI", "Dialect", "OpenAIDialect"]


class Dialect(Protocol):
    """How one API family reads requests and writes replies and errors."""

    #: prefix of reply ids (``chatcmpl-``, ``msg_``)
    id_prefix: str
    #: what a KEEPALIVE stream sends while the model "thinks"
    keepalive_frame: bytes
    #: whether ``max_tokens`` counts against the context window
    limit_in_window: bool
    #: what comes before ``data:`` in an SSE event (an ``event:`` line, or nothing)
    event_prefix: bytes

    def chat_body(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """The request as an OpenAI chat body; raises ``wire.Reject`` (400) if malformed."""
        ...

    def completion(self, reply: replies.Reply, *, without_choices: bool) -> payloads.JSONDict:
        """The whole answer as JSON; ``without_choices`` drops the answer part (NO_CHOICES)."""
        ...

    def frames(self, reply: replies.Reply, *, without_choices: bool) -> tuple[bytes, list[bytes], bytes]:
        """The answer as SSE: head, one frame per piece (sent paced), tail."""
        ...

    def error(self, response: web.Response) -> web.Response:
        """Re-encode an OpenAI-shaped error response in this dialect."""
        ...


class OpenAIDialect:
    """``POST /v1/chat/completions``: the simulator's native shape."""

    id_prefix = "chatcmpl-sim"
    keepalive_frame = b": PROCESSING\n\n"  # an SSE comment, as OpenRouter sends while waiting
    limit_in_window = True
    event_prefix = b""

    def chat_body(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """Already in shape."""
        return body

    def completion(self, reply: replies.Reply, *, without_choices: bool) -> payloads.JSONDict:
        """A ``chat.completion``."""
        return replies.completion_body(reply, without_choices=without_choices)

    def frames(self, reply: replies.Reply, *, without_choices: bool) -> tuple[bytes, list[bytes], bytes]:
        """``chat.completion.chunk`` events ending in ``[DONE]``."""
        return replies.stream_frames(reply, without_choices=without_choices)

    def error(self, response: web.Response) -> web.Response:
        """Already in shape."""
        return response


OPENAI = OpenAIDialect()
