"""Every fault kind through LiteLLM's real path, and seeded fault mixes.

The exception each fault becomes is the finding (litellm 1.110.2); the table
in ``router.sim.models`` says the same in prose.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import litellm
import pytest
from litellm.exceptions import (
    APIConnectionError,
    BadRequestError,
    ContextWindowExceededError,
    InternalServerError,
    MidStreamFallbackError,
    RateLimitError,
    ServiceUnavailableError,
    Timeout,
)

from router.sim import Fault, SimError, SimModel, SimServer

litellm.suppress_debug_info = True
pytestmark = pytest.mark.timeout(30)

HELLO = [{"role": "user", "content": "Hello there, simulator."}]
SECRET = "sk-secret-0123456789"
QUOTA = SimError(status=429, message="You exceeded your current quota.", type="insufficient_quota",
                 code="insufficient_quota", headers={"x-request-id": "req-1"})


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    models = [
        SimModel(name="faulty", output_tokens=8, hang_s=5, retry_after_s=2.5, keepalive_s=0.3,
                 keepalive_interval_s=0.1, context_window=32768, custom_error=QUOTA),
    ]
    async with SimServer(models, seed=5) as server:
        yield server


async def complete(sim: SimServer, provider: str = "openai", **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "model": f"{provider}/faulty",
        "api_base": sim.base_url,
        "api_key": SECRET,
        "messages": HELLO,
        "num_retries": 0,
        "max_retries": 0,
        "timeout": 5,
        **overrides,
    }
    return await litellm.acompletion(**arguments)


async def outcome(sim: SimServer, fault: Fault, provider: str, stream: bool, timeout: float = 5) -> tuple[Any, str]:
    """Script one fault; return (exception or response text, "call" | "iteration")."""
    sim.script("faulty", [fault])
    where = "call"
    try:
        response = await complete(sim, provider, stream=stream, timeout=timeout)
        where = "iteration"
        if not stream:
            return response.choices[0].message.content, where
        return "".join([c.choices[0].delta.content or "" async for c in response if c.choices]), where
    except Exception as exc:  # the class is the finding
        return exc, where


# fault, provider, stream, class LiteLLM raises (None: a normal answer), where it raises
TABLE: list[tuple[Fault, str, bool, type[Exception] | None, str]] = [
    (Fault.KEEPALIVE, "openai", False, None, "iteration"),
    (Fault.KEEPALIVE, "openai", True, None, "iteration"),
    (Fault.KEEPALIVE, "anthropic", True, None, "iteration"),
    (Fault.CUT_AFTER_FIRST_CHUNK, "openai", True, MidStreamFallbackError, "iteration"),
    (Fault.CUT_AFTER_FIRST_CHUNK, "openai", False, InternalServerError, "call"),
    (Fault.CUT_AFTER_FIRST_CHUNK, "anthropic", True, MidStreamFallbackError, "iteration"),
    (Fault.CONTEXT_OVERFLOW, "openai", False, ContextWindowExceededError, "call"),
    (Fault.CONTEXT_OVERFLOW, "openai", True, ContextWindowExceededError, "call"),
    (Fault.CONTEXT_OVERFLOW, "anthropic", False, ContextWindowExceededError, "call"),
    (Fault.CONTEXT_OVERFLOW, "anthropic", True, BadRequestError, "call"),  # LiteLLM misses it when streaming
    (Fault.CONTENT_POLICY, "openai", False, BadRequestError, "call"),
    (Fault.CONTENT_FILTER, "openai", False, BadRequestError, "call"),
    (Fault.CUSTOM_ERROR, "openai", False, RateLimitError, "call"),
    (Fault.CUSTOM_ERROR, "anthropic", True, RateLimitError, "call"),
    (Fault.ECHO_AUTH, "openai", False, BadRequestError, "call"),
    (Fault.RATE_LIMIT_MS, "openai", False, RateLimitError, "call"),
    (Fault.RATE_LIMIT_RESET, "openai", True, RateLimitError, "call"),
    (Fault.RATE_LIMIT, "anthropic", False, RateLimitError, "call"),
    (Fault.NO_CHOICES, "openai", False, InternalServerError, "call"),
    (Fault.NO_CHOICES, "openai", True, MidStreamFallbackError, "iteration"),
    (Fault.NO_CHOICES, "anthropic", False, APIConnectionError, "call"),
    (Fault.SERVER_ERROR, "anthropic", False, InternalServerError, "call"),
    (Fault.UNAVAILABLE, "anthropic", False, InternalServerError, "call"),  # 529 overloaded_error
    (Fault.MALFORMED, "anthropic", False, APIConnectionError, "call"),
    (Fault.STREAM_CUT, "anthropic", True, MidStreamFallbackError, "iteration"),
]


@pytest.mark.parametrize(
    ("fault", "provider", "stream", "expected", "where"),
    TABLE,
    ids=[f"{row[0].name}-{row[1]}-{'stream' if row[2] else 'plain'}" for row in TABLE],
)
async def test_fault_through_litellm(
    sim: SimServer, fault: Fault, provider: str, stream: bool, expected: type[Exception] | None, where: str
) -> None:
    before = sim.stats("faulty").faults[fault]
    result, raised_at = await outcome(sim, fault, provider, stream)
    if expected is None:
        assert isinstance(result, str) and len(result.split()) == 8, result
    else:
        assert type(result) is expected, f"{fault} raised {type(result)!r}: {result}"
    assert raised_at == where
    assert sim.stats("faulty").faults[fault] == before + 1


async def test_anthropic_hang_is_a_timeout(sim: SimServer) -> None:
    started = time.perf_counter()
    result, _ = await outcome(sim, Fault.HANG, "anthropic", stream=False, timeout=0.3)
    assert type(result) is Timeout
    assert time.perf_counter() - started < 2.0


async def test_cut_after_first_chunk_keeps_exactly_one_token(sim: SimServer) -> None:
    sim.script("faulty", [Fault.CUT_AFTER_FIRST_CHUNK])
    with pytest.raises(MidStreamFallbackError) as caught:
        stream = await complete(sim, stream=True)
        async for _ in stream:
            pass
    assert len(caught.value.generated_content.split()) == 1
    assert caught.value.is_pre_first_chunk is False


async def test_keepalive_comments_come_before_the_first_token(sim: SimServer) -> None:
    sim.script("faulty", [Fault.KEEPALIVE])
    body = {"model": "faulty", "messages": HELLO, "stream": True}
    async with aiohttp.ClientSession() as http, http.post(f"{sim.base_url}/chat/completions", json=body) as response:
        raw = (await response.read()).decode()
    comments = raw[: raw.index("data: ")].split("\n\n")
    assert [c for c in comments if c] == [": PROCESSING"] * 3  # at 0, 0.1, 0.2 s of keepalive_s = 0.3
    assert raw.endswith("data: [DONE]\n\n")


async def test_context_overflow_has_openai_wording(sim: SimServer) -> None:
    sim.script("faulty", [Fault.CONTEXT_OVERFLOW])
    async with aiohttp.ClientSession() as http, http.post(
        f"{sim.base_url}/chat/completions", json={"model": "faulty", "messages": HELLO}
    ) as response:
        error = (await response.json())["error"]
    assert response.status == 400
    assert error["code"] is None and error["type"] == "invalid_request_error"
    assert error["message"].endswith("is too large for model with 32768 maximum context length")


@pytest.mark.parametrize(("fault", "code"), [(Fault.CONTENT_POLICY, "content_policy_violation"),
                                              (Fault.CONTENT_FILTER, "content_filter")])
async def test_refusals_carry_their_codes(sim: SimServer, fault: Fault, code: str) -> None:
    sim.script("faulty", [fault])
    with pytest.raises(BadRequestError) as caught:
        await complete(sim)
    assert caught.value.status_code == 400
    assert code in caught.value.response.text


async def test_custom_error_sends_status_body_and_headers(sim: SimServer) -> None:
    sim.script("faulty", [Fault.CUSTOM_ERROR])
    with pytest.raises(RateLimitError, match="You exceeded your current quota") as caught:
        await complete(sim)
    assert caught.value.response.json()["error"]["code"] == "insufficient_quota"
    assert caught.value.response.headers["x-request-id"] == "req-1"


async def test_echo_auth_puts_the_key_in_the_error(sim: SimServer) -> None:
    """What a router must scrub: the provider quotes the credential back."""
    sim.script("faulty", [Fault.ECHO_AUTH])
    with pytest.raises(BadRequestError) as caught:
        await complete(sim)
    assert SECRET in str(caught.value)


@pytest.mark.parametrize(
    ("fault", "headers"),
    [
        (Fault.RATE_LIMIT, {"retry-after": "3", "retry-after-ms": "2500"}),
        (Fault.RATE_LIMIT_MS, {"retry-after-ms": "2500"}),
        (Fault.RATE_LIMIT_RESET, {"x-ratelimit-reset-requests": "2.5s", "x-ratelimit-remaining-requests": "0"}),
    ],
)
async def test_rate_limit_variants_reach_litellm(sim: SimServer, fault: Fault, headers: dict[str, str]) -> None:
    sim.script("faulty", [fault])
    with pytest.raises(RateLimitError) as caught:
        await complete(sim)
    got = caught.value.response.headers
    assert {name: got.get(name) for name in headers} == headers
    others = {"retry-after", "retry-after-ms", "x-ratelimit-reset-requests"} - set(headers)
    assert not any(name in got for name in others)


async def test_anthropic_errors_have_anthropic_shape(sim: SimServer) -> None:
    sim.script("faulty", [Fault.UNAVAILABLE])
    async with aiohttp.ClientSession() as http, http.post(
        f"{sim.root_url}/v1/messages", json={"model": "faulty", "max_tokens": 10, "messages": HELLO}
    ) as response:
        body = await response.json()
    assert response.status == 529
    message = "The engine is currently overloaded, please try again later."
    assert body == {"type": "error", "error": {"type": "overloaded_error", "message": message}}


MIX = {
    Fault.SERVER_ERROR: 0.15,
    Fault.UNAVAILABLE: 0.15,
    Fault.HANG: 0.10,
    Fault.RATE_LIMIT: 0.10,
    Fault.MALFORMED: 0.05,
    Fault.CUT_AFTER_FIRST_CHUNK: 0.05,
    Fault.CONTENT_FILTER: 0.05,
    Fault.KEEPALIVE: 0.05,
}


async def test_seeded_fault_mix_is_reproducible_and_proportionate() -> None:
    """200 streamed requests per seed; counts follow the rates and repeat with the seed."""
    model = SimModel(name="mix", output_tokens=3, hang_s=0.01, keepalive_s=0.0, error_rates=MIX)

    async def run(seed: int) -> collections.Counter[Fault]:
        async with SimServer([model], seed=seed) as sim, aiohttp.ClientSession() as http:
            async def one() -> None:
                body = {"model": "mix", "messages": HELLO, "stream": True}
                try:
                    async with http.post(f"{sim.base_url}/chat/completions", json=body) as response:
                        await response.read()
                except aiohttp.ClientPayloadError:
                    pass  # the cut

            for _ in range(200):  # in order: the draws then follow the seed exactly
                await one()
            stats = sim.stats("mix")
            return collections.Counter({**stats.faults, Fault.NONE: stats.successes})

    first, again, other = await run(1), await run(1), await run(2)
    assert first == again and first != other
    assert sum(first.values()) == 200
    for fault, rate in MIX.items():
        assert abs(first[fault] - 200 * rate) <= 14, (fault, first[fault])
    assert 40 <= first[Fault.NONE] <= 80  # 30% expected


async def test_stream_cut_half_and_hang_still_work_with_new_faults(sim: SimServer) -> None:
    sim.script("faulty", [Fault.STREAM_CUT, Fault.NONE])
    with pytest.raises(MidStreamFallbackError) as caught:
        async for _ in await complete(sim, stream=True):
            pass
    assert isinstance(caught.value, ServiceUnavailableError)
    assert len(caught.value.generated_content.split()) == 4
    assert (await complete(sim)).choices[0].finish_reason == "stop"
    await asyncio.sleep(0)
