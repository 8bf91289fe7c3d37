"""HTTP-level pieces of the simulator: error responses, faults, paced writes.

Kept apart from ``server`` so the handlers read as the order of checks and
this module holds the byte-level details of each fault.

Example:
    >>> fault_response(Fault.SERVER_ERROR, SimModel(name="m"), stream=False).status
    500
    >>> fault_response(Fault.HANG, SimModel(name="m"), stream=False) is None
    True
    >>> fault_response(Fault.RATE_LIMIT_RESET, SimModel(name="m"), stream=False).headers["x-ratelimit-reset-requests"]
    '1s'
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping

from aiohttp import web

from router.sim import payloads
from router.sim.models import Fault, SimModel

__all__ = [
    "Reject",
    "drop_connection",
    "embedding_inputs",
    "fault_response",
    "json_response",
    "keep_alive",
    "openai_duration",
    "reject",
    "send_truncated",
    "write_paced",
]

JSON_HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_PACING_SLACK_S = 0.001  # tokens due within 1 ms of each other share one write


class Reject(Exception):
    """Abort a handler and send ``response`` instead."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def json_response(
    body: payloads.JSONDict, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Serialise ``body`` compactly with the stdlib ``json``."""
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        headers={**JSON_HEADERS, **(headers or {})},
    )


def reject(status: int, body: payloads.JSONDict) -> Reject:
    """Build the exception that makes a handler answer ``status`` with ``body``.

    Example:
        >>> reject(404, payloads.model_not_found_error("x")).response.status
        404
    """
    return Reject(json_response(body, status))


def openai_duration(seconds: float) -> str:
    """Format a delay like OpenAI's ``x-ratelimit-reset-*`` headers.

    Example:
        >>> openai_duration(0.02), openai_duration(1.5), openai_duration(360)
        ('20ms', '1.5s', '6m0s')
    """
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"


def _rate_limit_headers(fault: Fault, retry_after_s: float) -> dict[str, str]:
    if fault is Fault.RATE_LIMIT_MS:
        return {"retry-after-ms": str(round(retry_after_s * 1000))}
    if fault is Fault.RATE_LIMIT_RESET:
        return {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": openai_duration(retry_after_s),
        }
    return {
        "Retry-After": str(math.ceil(retry_after_s)),
        "retry-after-ms": str(round(retry_after_s * 1000)),
    }


def fault_response(
    fault: Fault,
    model: SimModel,
    *,
    stream: bool,
    authorization: str = "",
    prompt_tokens: int = 0,
    event_prefix: bytes = b"",
) -> web.Response | None:
    """The response an error fault sends instead of an answer, else ``None``.

    MALFORMED is a 200 whose body does not parse: plain garbage with
    ``Content-Type: application/json``, or for a stream one SSE event whose data
    is not JSON (a non-SSE body would make LiteLLM yield an empty stream).
    ``authorization`` is what ECHO_AUTH quotes; ``prompt_tokens`` what
    CONTEXT_OVERFLOW reports; ``event_prefix`` precedes the ``data:`` line of a
    malformed stream event (Anthropic's parser skips events without a name).
    Faults that still answer (HANG, KEEPALIVE, the
    cuts, NO_CHOICES) give ``None``.
    """
    if fault in (Fault.RATE_LIMIT, Fault.RATE_LIMIT_MS, Fault.RATE_LIMIT_RESET):
        headers = _rate_limit_headers(fault, model.retry_after_s)
        return json_response(payloads.rate_limit_error(model.name, model.retry_after_s), 429, headers)
    if fault is Fault.SERVER_ERROR:
        return json_response(payloads.server_error(), 500)
    if fault is Fault.UNAVAILABLE:
        return json_response(payloads.unavailable_error(), 503)
    if fault is Fault.BAD_REQUEST:
        message = "Invalid value for 'temperature' (simulated)."
        return json_response(payloads.bad_request_error(message, "temperature"), 400)
    if fault is Fault.CONTEXT_OVERFLOW:
        used = max(prompt_tokens, model.context_window + 1)
        return json_response(payloads.context_overflow_error(model.context_window, used), 400)
    if fault is Fault.CONTENT_POLICY:
        return json_response(payloads.content_policy_error(), 400)
    if fault is Fault.CONTENT_FILTER:
        return json_response(payloads.content_filter_error(), 400)
    if fault is Fault.ECHO_AUTH:
        return json_response(payloads.echo_auth_error(authorization), 400)
    if fault is Fault.CUSTOM_ERROR:
        error = model.custom_error
        body = payloads.error_body(error.message, error.type, error.param, error.code)
        return json_response(body, error.status, error.headers)
    if fault is Fault.MALFORMED and stream:
        return web.Response(body=event_prefix + b"data: " + payloads.MALFORMED_BODY + b"\n\n", headers=SSE_HEADERS)
    if fault is Fault.MALFORMED:
        return web.Response(body=payloads.MALFORMED_BODY, headers=JSON_HEADERS)
    return None


def embedding_inputs(value: object) -> list[str]:
    """Normalise an embeddings ``input`` (str, list of str, token ids) to texts.

    Example:
        >>> embedding_inputs("a"), embedding_inputs(["a", "b"]), embedding_inputs([1, 2])
        (['a'], ['a', 'b'], ['1 2'])
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) for item in value):
            return [" ".join(map(str, value))]
        if all(isinstance(item, str) for item in value):
            return list(value)
        if all(isinstance(item, list) for item in value):
            return [" ".join(map(str, item)) for item in value]
    message = "'input' must be a string or a non-empty array."
    raise reject(400, payloads.bad_request_error(message, "input"))


async def write_paced(
    response: web.StreamResponse, head: bytes, frames: list[bytes], tokens_per_s: float | None
) -> None:
    """Write ``head`` now, then frame ``i`` at ``i / tokens_per_s`` seconds.

    Without a speed everything goes out in one write, which keeps the
    simulator cheap under benchmark load.
    """
    if not tokens_per_s:
        await response.write(head + b"".join(frames))
        return
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending = [head]
    for index, frame in enumerate(frames):
        delay = start + index / tokens_per_s - loop.time()
        if delay > _PACING_SLACK_S:
            await response.write(b"".join(pending))
            pending = []
            await asyncio.sleep(delay)
        pending.append(frame)
    await response.write(b"".join(pending))


async def keep_alive(response: web.StreamResponse, frame: bytes, duration_s: float, interval_s: float) -> None:
    """Send ``frame`` at 0, ``interval_s``, ... before ``duration_s``, then wait out ``duration_s``.

    The count is ``ceil(duration_s / interval_s)`` (at least one), whatever
    the machine's speed.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index in range(max(1, math.ceil(duration_s / interval_s - 1e-9))):
        await asyncio.sleep(max(0.0, start + index * interval_s - loop.time()))
        await response.write(frame)
    await asyncio.sleep(max(0.0, start + duration_s - loop.time()))


async def send_truncated(request: web.Request, body: bytes) -> web.StreamResponse:
    """Announce ``body`` in full (Content-Length) but send half, then hang up."""
    response = web.StreamResponse(headers=JSON_HEADERS)
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    drop_connection(request)
    return response


def drop_connection(request: web.Request) -> None:
    """Close the socket under a response in progress (no chunked terminator)."""
    transport = request.transport
    if transport is not None:
        transport.close()
