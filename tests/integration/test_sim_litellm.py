"""The simulator through LiteLLM's real HTTP path, and what each fault becomes.

The table in ``router.sim.models`` is what these tests pin down: when a
LiteLLM upgrade changes an exception class, a test here fails first.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import time
from collections.abc import AsyncIterator
from typing import Any

import litellm
import pytest
from litellm.exceptions import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ContextWindowExceededError,
    InternalServerError,
    MidStreamFallbackError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    Timeout,
)

from router.sim import Fault, SimModel, SimServer
from router.sim.generation import embed_text

litellm.suppress_debug_info = True

HELLO = [{"role": "user", "content": "Hello there, simulator."}]


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    models = [
        SimModel(name="fast", output_tokens=12, tokens_per_s=2000),
        SimModel(name="faulty", output_tokens=8, hang_s=5, retry_after_s=2),
        SimModel(name="small", context_window=30),
        SimModel(name="locked", required_api_key="sk-right"),
    ]
    async with SimServer(models, seed=7) as server:
        yield server


async def complete(sim: SimServer, model: str, **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "model": f"openai/{model}",
        "api_base": sim.base_url,
        "api_key": "sk-sim",
        "messages": HELLO,
        "num_retries": 0,
        "max_retries": 0,
        "timeout": 5,
        **overrides,
    }
    return await litellm.acompletion(**arguments)


async def drain(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


async def test_completion_through_litellm(sim: SimServer) -> None:
    response = await complete(sim, "fast")
    assert response.choices[0].finish_reason == "stop"
    assert len(response.choices[0].message.content.split()) == 12
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (10, 12)


async def test_stream_through_litellm_matches_the_plain_reply(sim: SimServer) -> None:
    whole = await complete(sim, "fast")
    chunks = await drain(
        await complete(sim, "fast", stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    usages = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert (usages[-1].prompt_tokens, usages[-1].completion_tokens) == (10, 12)


async def test_length_finish_through_litellm(sim: SimServer) -> None:
    response = await complete(sim, "fast", max_tokens=4)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 4


async def test_embeddings_through_litellm(sim: SimServer) -> None:
    response = await litellm.aembedding(
        model="openai/fast", api_base=sim.base_url, api_key="sk-sim", input=["hello", "world"]
    )
    vectors = [item["embedding"] for item in response.data]
    assert vectors[0] == pytest.approx(embed_text("hello", model="fast", dim=64), abs=1e-6)
    assert len(vectors) == 2
    assert response.usage.prompt_tokens == 4


# Each row: fault, whether the request streams, the class LiteLLM raises, and
# whether it raises from acompletion() itself ("call") or while iterating.
FAULT_TABLE = [
    (Fault.RATE_LIMIT, False, RateLimitError, "call"),
    (Fault.RATE_LIMIT, True, RateLimitError, "call"),
    (Fault.SERVER_ERROR, False, InternalServerError, "call"),
    (Fault.SERVER_ERROR, True, InternalServerError, "call"),
    (Fault.UNAVAILABLE, False, ServiceUnavailableError, "call"),
    (Fault.UNAVAILABLE, True, ServiceUnavailableError, "call"),
    (Fault.HANG, False, Timeout, "call"),
    (Fault.HANG, True, Timeout, "call"),
    (Fault.MALFORMED, False, InternalServerError, "call"),
    (Fault.MALFORMED, True, MidStreamFallbackError, "iteration"),
    (Fault.STREAM_CUT, False, InternalServerError, "call"),
    (Fault.STREAM_CUT, True, MidStreamFallbackError, "iteration"),
    (Fault.BAD_REQUEST, False, BadRequestError, "call"),
    (Fault.BAD_REQUEST, True, BadRequestError, "call"),
]


@pytest.mark.parametrize(
    ("fault", "stream", "expected", "where"),
    FAULT_TABLE,
    ids=[f"{row[0].name}-{'stream' if row[1] else 'plain'}" for row in FAULT_TABLE],
)
async def test_fault_becomes_litellm_exception(
    sim: SimServer, fault: Fault, stream: bool, expected: type[Exception], where: str
) -> None:
    sim.script("faulty", [fault])
    timeout = 0.3 if fault is Fault.HANG else 5
    started = time.perf_counter()
    raised_at = "call"
    with pytest.raises(Exception) as caught:  # the class is the finding
        response = await complete(sim, "faulty", stream=stream, timeout=timeout)
        raised_at = "iteration"
        if stream:
            await drain(response)
    assert type(caught.value) is expected, f"{fault} raised {type(caught.value)!r}: {caught.value}"
    assert raised_at == where
    assert time.perf_counter() - started < 2.0
    assert sim.stats("faulty").faults[fault] >= 1


async def test_mid_stream_failures_are_service_unavailable(sim: SimServer) -> None:
    sim.script("faulty", [Fault.STREAM_CUT])
    with pytest.raises(MidStreamFallbackError) as caught:
        await drain(await complete(sim, "faulty", stream=True))
    assert isinstance(caught.value, ServiceUnavailableError)
    assert isinstance(caught.value.original_exception, APIConnectionError)


async def test_non_stream_stream_cut_reads_as_a_connection_error(sim: SimServer) -> None:
    sim.script("faulty", [Fault.STREAM_CUT])
    with pytest.raises(InternalServerError, match="Connection error"):
        await complete(sim, "faulty")


async def test_rate_limit_exposes_retry_after(sim: SimServer) -> None:
    sim.script("faulty", [Fault.RATE_LIMIT])
    with pytest.raises(RateLimitError) as caught:
        await complete(sim, "faulty")
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "2"
    assert getattr(caught.value, "litellm_response_headers", {})["retry-after-ms"] == "2000"


async def test_hang_is_a_timeout_that_frees_the_server(sim: SimServer) -> None:
    sim.script("faulty", [Fault.HANG])
    started = time.perf_counter()
    with pytest.raises(Timeout):
        await complete(sim, "faulty", timeout=0.3)
    assert 0.25 < time.perf_counter() - started < 1.5
    assert (await complete(sim, "faulty")).choices[0].finish_reason == "stop"


async def test_context_window_is_context_window_exceeded(sim: SimServer) -> None:
    with pytest.raises(ContextWindowExceededError):
        await complete(sim, "small", messages=[{"role": "user", "content": "x" * 200}])
    with pytest.raises(ContextWindowExceededError):
        await complete(sim, "small", max_tokens=100)


async def test_wrong_key_is_authentication_error(sim: SimServer) -> None:
    with pytest.raises(AuthenticationError):
        await complete(sim, "locked")
    response = await complete(sim, "locked", api_key="sk-right")
    assert response.choices[0].message.content


async def test_unknown_model_is_not_found(sim: SimServer) -> None:
    with pytest.raises(NotFoundError):
        await complete(sim, "missing")
