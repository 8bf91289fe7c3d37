"""The outcome of one admitted simulator request: a scripted or drawn fault, then the latency waited out.

Shared by the chat handlers (``router.sim.server``) and the embeddings handler
(``router.sim.embeddings``), so every endpoint fails and waits the same way.
"""

from __future__ import annotations

import asyncio
import random

from aiohttp import web

from router.sim import generation, wire
from router.sim.dialect import Dialect
from router.sim.models import Fault
from router.sim.state import ModelState


async def take_outcome(
    request: web.Request,
    state: ModelState,
    rng: random.Random,
    *,
    stream: bool,
    prompt_tokens: int,
    dialect: Dialect,
) -> tuple[Fault, web.StreamResponse | None]:
    """Draw the outcome with ``rng`` and wait out the latency; error outcomes raise ``wire.Reject``.

    Returns the fault and, for a streamed KEEPALIVE, the SSE response
    already opened (its comments went out while "thinking").
    """
    model = state.model
    fault = state.next_outcome(rng)
    credential = request.headers.get("Authorization") or request.headers.get("x-api-key") or ""
    failure = wire.fault_response(
        fault,
        model,
        stream=stream,
        authorization=credential,
        prompt_tokens=prompt_tokens,
        event_prefix=dialect.event_prefix,
    )
    if failure is not None:
        raise wire.Reject(failure)
    opened = None
    if fault is Fault.KEEPALIVE and stream:
        opened = web.StreamResponse(headers=wire.SSE_HEADERS)
        await opened.prepare(request)
        await wire.keep_alive(opened, dialect.keepalive_frame, model.keepalive_s, model.keepalive_interval_s)
    elif fault is Fault.KEEPALIVE:
        await asyncio.sleep(model.keepalive_s)
    if fault is Fault.HANG:
        await asyncio.sleep(model.hang_s)
    ttft_s = generation.sample_ttft_s(model.ttft_ms, rng)
    if ttft_s > 0:
        await asyncio.sleep(ttft_s)
    return fault, opened
