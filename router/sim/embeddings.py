"""The simulator's ``POST /v1/embeddings`` answer, for a request ``SimServer`` has already admitted.

Checks the context window (400), takes the outcome like the chat endpoints
(``router.sim.outcome``), then answers deterministic unit vectors, as floats
or, with ``encoding_format: base64``, as packed little-endian float32.
"""

from __future__ import annotations

import base64
import json
import random
import struct
from typing import Any

from aiohttp import web

from router.sim import generation, payloads, wire
from router.sim.dialect import OPENAI
from router.sim.models import Fault
from router.sim.outcome import take_outcome
from router.sim.state import ModelState


async def answer_embeddings(
    request: web.Request, body: payloads.JSONDict, state: ModelState, rng: random.Random
) -> web.StreamResponse:
    """Answer an admitted embeddings request ``body`` for the model of ``state``; rejections raise ``wire.Reject``."""
    model = state.model
    texts = wire.embedding_inputs(body.get("input"))
    token_counts = [generation.estimate_text_tokens(text) for text in texts]
    if max(token_counts) > model.context_window:
        state.context_errors += 1
        raise wire.reject(
            400, payloads.context_length_error(model.context_window, max(token_counts))
        )
    fault, _ = await take_outcome(
        request, state, rng, stream=False, prompt_tokens=sum(token_counts), dialect=OPENAI
    )
    vectors: list[Any] = [
        generation.embed_text(text, model.name, model.embedding_dim) for text in texts
    ]
    if body.get("encoding_format") == "base64":
        vectors = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
    result = payloads.embeddings(model.name, vectors, None if model.omit_usage else sum(token_counts))
    if fault is Fault.NO_CHOICES:
        del result["data"]
    if fault in (Fault.STREAM_CUT, Fault.CUT_AFTER_FIRST_CHUNK):
        return await wire.send_truncated(request, json.dumps(result).encode())
    if fault is Fault.NONE:
        state.record_success(sum(token_counts), 0)
    return wire.json_response(result)
