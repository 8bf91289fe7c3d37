"""The simulator over plain HTTP: shapes, usage, latency, faults, control API."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pydantic
import pytest

from router.sim import Fault, ModelStats, SimModel, SimServer
from router.sim.__main__ import default_models, load_models, usage_banner
from router.sim.generation import embed_text, estimate_prompt_tokens

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[1]
HELLO = [{"role": "user", "content": "Hello there, simulator."}]


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    models = [
        SimModel(name="fixed", output_tokens=12),
        SimModel(name="varied", output_tokens=(30, 10)),
        SimModel(name="small", context_window=50, output_tokens=5),
        SimModel(name="locked", required_api_key="sk-right"),
        SimModel(name="faulty", retry_after_s=0.2, hang_s=5, output_tokens=8),
    ]
    async with SimServer(models, seed=7) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    sim: SimServer,
    body: dict[str, Any],
    path: str = "chat/completions",
) -> tuple[int, Any]:
    async with http.post(f"{sim.base_url}/{path}", json=body) as response:
        raw = await response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw


async def read_sse(http: aiohttp.ClientSession, sim: SimServer, body: dict[str, Any]) -> list[Any]:
    """Return the decoded ``data:`` payloads of a stream, ``"[DONE]"`` kept as is."""
    async with http.post(
        f"{sim.base_url}/chat/completions", json={**body, "stream": True}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text = (await response.read()).decode()
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    return [event if event == "[DONE]" else json.loads(event) for event in events]


# -- shapes and usage ----------------------------------------------------------


async def test_models_endpoint_lists_every_model(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{sim.base_url}/models") as response:
        body = await response.json()
    assert [entry["id"] for entry in body["data"]] == [
        "fixed",
        "varied",
        "small",
        "locked",
        "faulty",
    ]


async def test_chat_completion_has_openai_shape_and_usage(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, sim, {"model": "fixed", "messages": HELLO})
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["model"] == "fixed"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    # 4 overhead + ceil(23 chars / 4)
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (10, 12, 22)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0  # OpenAI always sends the details
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert estimate_prompt_tokens(HELLO) == 10
    assert len(choice["message"]["content"].split()) == 12


async def test_reply_is_deterministic_per_seed_and_request(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    first = await post(http, sim, {"model": "varied", "messages": HELLO})
    again = await post(http, sim, {"model": "varied", "messages": HELLO})
    other = await post(
        http, sim, {"model": "varied", "messages": [{"role": "user", "content": "x"}]}
    )
    assert first[1]["choices"] == again[1]["choices"]
    assert first[1]["choices"] != other[1]["choices"]
    async with SimServer([SimModel(name="varied", output_tokens=(30, 10))], seed=8) as reseeded:
        _, body = await post(http, reseeded, {"model": "varied", "messages": HELLO})
    assert body["choices"] != first[1]["choices"]


async def test_two_plus_two_is_four(sim: SimServer, http: aiohttp.ClientSession) -> None:
    _, body = await post(
        http, sim, {"model": "fixed", "messages": [{"role": "user", "content": "What is 2+2?"}]}
    )
    assert body["choices"][0]["message"]["content"] == "4"
    assert body["usage"]["completion_tokens"] == 1


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_token_limit_cuts_reply_with_length(
    sim: SimServer, http: aiohttp.ClientSession, field: str
) -> None:
    _, body = await post(http, sim, {"model": "fixed", "messages": HELLO, field: 5})
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert len(body["choices"][0]["message"]["content"].split()) == 5


async def test_stream_sends_chunks_then_finish_then_done(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    _, whole = await post(http, sim, {"model": "fixed", "messages": HELLO})
    events = await read_sse(http, sim, {"model": "fixed", "messages": HELLO})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "fixed" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert all("usage" not in c for c in chunks)


async def test_stream_usage_chunk_when_asked(sim: SimServer, http: aiohttp.ClientSession) -> None:
    body = {
        "model": "fixed",
        "messages": HELLO,
        "max_tokens": 3,
        "stream_options": {"include_usage": True},
    }
    events = await read_sse(http, sim, body)
    *chunks, usage_chunk, done = events
    assert done == "[DONE]"
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (10, 3, 13)
    assert all(c["usage"] is None for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_latency_follows_ttft_and_speed(http: aiohttp.ClientSession) -> None:
    model = SimModel(name="slow", ttft_ms=(60, 0), tokens_per_s=400, output_tokens=20)
    async with SimServer([model]) as sim:
        started = time.perf_counter()
        await post(http, sim, {"model": "slow", "messages": HELLO})
        whole = time.perf_counter() - started  # 60 ms + 20 / 400 s
        started = time.perf_counter()
        async with http.post(
            f"{sim.base_url}/chat/completions",
            json={"model": "slow", "messages": HELLO, "stream": True},
        ) as response:
            await response.content.readuntil(b"\n\n")
            first = time.perf_counter() - started
            await response.read()
            last = time.perf_counter() - started
    assert 0.105 <= whole < 0.5
    assert 0.055 <= first < 0.1
    assert last - first >= 19 / 400 - 0.005


# -- client-side errors ----------------------------------------------------------


async def test_context_window_error_matches_openai(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    long = [{"role": "user", "content": "x" * 200}]  # 4 + 50 tokens
    status, body = await post(http, sim, {"model": "small", "messages": long})
    assert status == 400
    error = body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert error["code"] == "context_length_exceeded"
    assert error["message"].startswith(
        "This model's maximum context length is 50 tokens. "
        "However, your messages resulted in 54 tokens"
    )
    # max_tokens counts against the window too
    status, _ = await post(http, sim, {"model": "small", "messages": HELLO, "max_tokens": 41})
    assert status == 400
    status, _ = await post(http, sim, {"model": "small", "messages": HELLO, "max_tokens": 40})
    assert status == 200
    assert sim.stats("small").context_errors == 2


async def test_api_key_is_checked_when_required(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, sim, {"model": "locked", "messages": HELLO})
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"
    url = f"{sim.base_url}/chat/completions"
    async with http.post(
        url,
        json={"model": "locked", "messages": HELLO},
        headers={"Authorization": "Bearer sk-right"},
    ) as response:
        assert response.status == 200
    stats = sim.stats("locked")
    assert (stats.requests, stats.auth_errors, stats.successes) == (2, 1, 1)


async def test_unknown_model_is_404(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, sim, {"model": "nope", "messages": HELLO})
    assert status == 404
    assert body["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "fixed"},
        {"model": "fixed", "messages": []},
        {"model": "fixed", "messages": HELLO, "max_tokens": 0},
    ],
)
async def test_invalid_requests_are_400(
    sim: SimServer, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    status, payload = await post(http, sim, body)
    assert status == 400
    assert payload["error"]["type"] == "invalid_request_error"


async def test_body_that_is_not_json_is_400(sim: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim.base_url}/chat/completions", data=b"{oops") as response:
        assert response.status == 400


# -- faults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status"),
    [(Fault.SERVER_ERROR, 500), (Fault.UNAVAILABLE, 503), (Fault.BAD_REQUEST, 400)],
)
async def test_error_faults_send_openai_errors(
    sim: SimServer, http: aiohttp.ClientSession, fault: Fault, status: int
) -> None:
    sim.script("faulty", [fault])
    got, body = await post(http, sim, {"model": "faulty", "messages": HELLO})
    assert got == status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert sim.stats("faulty").faults[fault] == 1


async def test_rate_limit_sends_retry_after(sim: SimServer, http: aiohttp.ClientSession) -> None:
    sim.script("faulty", [Fault.RATE_LIMIT])
    async with http.post(
        f"{sim.base_url}/chat/completions", json={"model": "faulty", "messages": HELLO}
    ) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"  # 0.2 s rounded up to whole seconds
        assert response.headers["retry-after-ms"] == "200"
        assert (await response.json())["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_is_200_that_does_not_parse(
    sim: SimServer, http: aiohttp.ClientSession, stream: bool
) -> None:
    sim.script("faulty", [Fault.MALFORMED])
    url = f"{sim.base_url}/chat/completions"
    async with http.post(
        url, json={"model": "faulty", "messages": HELLO, "stream": stream}
    ) as response:
        assert response.status == 200
        raw = await response.read()
    if stream:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = raw.removeprefix(b"data: ")
    else:
        assert response.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(raw)


async def test_stream_cut_drops_the_connection_midway(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    sim.script("faulty", [Fault.STREAM_CUT])
    received = b""
    url = f"{sim.base_url}/chat/completions"
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(
            url, json={"model": "faulty", "messages": HELLO, "stream": True}
        ) as response:
            assert response.status == 200
            async for line in response.content:
                received += line
    assert b'"role":"assistant"' in received
    assert received.count(b"data: ") == 1 + 4  # role chunk + half of 8 tokens
    assert b"[DONE]" not in received
    stats = sim.stats("faulty")
    assert (stats.faults[Fault.STREAM_CUT], stats.successes) == (1, 0)


async def test_stream_cut_truncates_a_plain_response(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    sim.script("faulty", [Fault.STREAM_CUT])
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(http, sim, {"model": "faulty", "messages": HELLO})


async def test_hang_outlasts_the_client_and_never_blocks_stop(http: aiohttp.ClientSession) -> None:
    sim = SimServer([SimModel(name="stuck", hang_s=5, error_rates={Fault.HANG: 1.0})])
    await sim.start()
    with pytest.raises(asyncio.TimeoutError):
        await http.post(
            f"{sim.base_url}/chat/completions",
            json={"model": "stuck", "messages": HELLO},
            timeout=aiohttp.ClientTimeout(total=0.2),
        )
    pending = asyncio.ensure_future(post(http, sim, {"model": "stuck", "messages": HELLO}))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await sim.stop()
    assert time.perf_counter() - started < 1.0
    with pytest.raises(aiohttp.ClientError):
        await pending
    assert sim.stats("stuck").faults[Fault.HANG] == 2


async def test_hang_answers_once_hang_s_is_over(http: aiohttp.ClientSession) -> None:
    async with SimServer([SimModel(name="m", hang_s=0.05)]) as sim:
        sim.script("m", [Fault.HANG])
        started = time.perf_counter()
        status, _ = await post(http, sim, {"model": "m", "messages": HELLO})
        assert status == 200
        assert time.perf_counter() - started >= 0.05
        stats = sim.stats("m")
    assert (stats.faults[Fault.HANG], stats.successes) == (1, 0)


# -- control API -------------------------------------------------------------------


async def test_script_runs_in_order_then_normal_behaviour_resumes(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    sim.script("faulty", [Fault.SERVER_ERROR, Fault.NONE, Fault.RATE_LIMIT])
    statuses = [
        (await post(http, sim, {"model": "faulty", "messages": HELLO}))[0] for _ in range(4)
    ]
    assert statuses == [500, 200, 429, 200]
    stats = sim.stats("faulty")
    assert (stats.requests, stats.successes) == (4, 2)
    assert stats.faults[Fault.SERVER_ERROR] == stats.faults[Fault.RATE_LIMIT] == 1


async def test_script_replaces_pending_outcomes_and_skips_rejected_requests(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    sim.script("faulty", [Fault.SERVER_ERROR, Fault.SERVER_ERROR])
    sim.script("faulty", [Fault.UNAVAILABLE])
    assert (await post(http, sim, {"model": "faulty"}))[0] == 400  # invalid: script untouched
    assert (await post(http, sim, {"model": "faulty", "messages": HELLO}))[0] == 503
    assert (await post(http, sim, {"model": "faulty", "messages": HELLO}))[0] == 200


async def test_error_rates_are_reproducible_with_a_seed(http: aiohttp.ClientSession) -> None:
    model = SimModel(name="coin", error_rates={Fault.SERVER_ERROR: 0.3, Fault.UNAVAILABLE: 0.2})

    async def statuses(seed: int) -> list[int]:
        async with SimServer([model], seed=seed) as sim:
            return [
                (await post(http, sim, {"model": "coin", "messages": HELLO}))[0] for _ in range(40)
            ]

    first, again, other = await statuses(3), await statuses(3), await statuses(4)
    assert first == again
    assert first != other
    assert {200, 500, 503} <= set(first)


async def test_update_changes_behaviour_at_runtime(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    assert (await post(http, sim, {"model": "fixed", "messages": HELLO}))[0] == 200
    updated = sim.update("fixed", ttft_ms=(80, 0), error_rates={Fault.UNAVAILABLE: 1.0})
    assert updated.ttft_ms == (80.0, 0.0)
    assert sim.models["fixed"] is updated
    assert (await post(http, sim, {"model": "fixed", "messages": HELLO}))[0] == 503
    sim.update("fixed", error_rates={})
    started = time.perf_counter()
    assert (await post(http, sim, {"model": "fixed", "messages": HELLO}))[0] == 200
    assert time.perf_counter() - started >= 0.08
    with pytest.raises(ValueError, match="renamed"):
        sim.update("fixed", name="other")
    with pytest.raises(pydantic.ValidationError):
        sim.update("fixed", tokens_per_s=-1)


async def test_restore_undoes_updates_and_scripts(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    original = sim.models["fixed"]
    sim.update("fixed", error_rates={Fault.UNAVAILABLE: 1.0})
    sim.script("faulty", [Fault.SERVER_ERROR])
    sim.restore("fixed")
    assert sim.models["fixed"] is original
    assert (await post(http, sim, {"model": "fixed", "messages": HELLO}))[0] == 200
    sim.restore()
    assert (await post(http, sim, {"model": "faulty", "messages": HELLO}))[0] == 200
    assert sim.stats("fixed").requests == 1  # counters survive a restore


async def test_stats_snapshot_and_reset(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await post(http, sim, {"model": "fixed", "messages": HELLO})
    before = sim.stats("fixed")
    await post(http, sim, {"model": "fixed", "messages": HELLO})
    assert (before.requests, before.successes, before.prompt_tokens, before.completion_tokens) == (
        1,
        1,
        10,
        12,
    )
    assert sim.stats("fixed").requests == 2
    sim.reset_stats("fixed")
    assert sim.stats("fixed") == ModelStats()
    await post(http, sim, {"model": "small", "messages": HELLO})
    sim.reset_stats()
    assert sim.stats("small").requests == 0
    with pytest.raises(KeyError):
        sim.stats("nope")


# -- embeddings ----------------------------------------------------------------------


async def test_embeddings_are_deterministic_unit_vectors(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    status, body = await post(
        http, sim, {"model": "fixed", "input": ["hello", "world"]}, "embeddings"
    )
    assert status == 200
    assert body["model"] == "fixed"
    assert [item["index"] for item in body["data"]] == [0, 1]
    vector = body["data"][0]["embedding"]
    assert len(vector) == 64
    assert math.isclose(sum(x * x for x in vector), 1.0)
    assert vector == embed_text("hello", model="fixed", dim=64)
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    _, single = await post(http, sim, {"model": "fixed", "input": "hello"}, "embeddings")
    assert single["data"][0]["embedding"] == vector


async def test_embeddings_in_base64(sim: SimServer, http: aiohttp.ClientSession) -> None:
    _, body = await post(
        http, sim, {"model": "fixed", "input": "hello", "encoding_format": "base64"}, "embeddings"
    )
    decoded = struct.unpack("<64f", base64.b64decode(body["data"][0]["embedding"]))
    assert decoded == pytest.approx(embed_text("hello", model="fixed", dim=64), abs=1e-6)


async def test_embeddings_errors(sim: SimServer, http: aiohttp.ClientSession) -> None:
    assert (await post(http, sim, {"model": "fixed", "input": []}, "embeddings"))[0] == 400
    status, body = await post(http, sim, {"model": "small", "input": "x" * 400}, "embeddings")
    assert (status, body["error"]["code"]) == (400, "context_length_exceeded")
    sim.script("fixed", [Fault.RATE_LIMIT])
    assert (await post(http, sim, {"model": "fixed", "input": "x"}, "embeddings"))[0] == 429


# -- construction, lifecycle, load ---------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"error_rates": {Fault.HANG: 0.6, Fault.MALFORMED: 0.6}},
        {"error_rates": {Fault.NONE: 0.1}},
        {"ttft_ms": (-1, 0)},
        {"unknown": 1},
    ],
)
def test_sim_model_rejects_bad_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        SimModel(name="m", **fields)


async def test_lifecycle_errors() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        SimServer([SimModel(name="m"), SimModel(name="m")])
    sim = SimServer([SimModel(name="m")])
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    await sim.start()
    assert sim.base_url == f"http://127.0.0.1:{sim.port}/v1"
    with pytest.raises(RuntimeError):
        await sim.start()
    await sim.stop()
    await sim.stop()


async def test_instant_model_serves_hundreds_of_requests_quickly(
    http: aiohttp.ClientSession,
) -> None:
    async with SimServer([SimModel(name="instant")]) as sim:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(post(http, sim, {"model": "instant", "messages": HELLO}) for _ in range(300))
        )
        elapsed = time.perf_counter() - started
    assert all(status == 200 for status, _ in results)
    assert elapsed < 3.0  # ~0.3 s on a laptop; generous for CI


def test_cli_serves_default_models() -> None:
    assert [m.name for m in default_models()] == ["sim-fast", "sim-cheap", "sim-smart", "sim-flaky", "sim-embed"]
    process = subprocess.Popen(
        [sys.executable, "-m", "router.sim", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(
            "sim serving sim-fast, sim-cheap, sim-smart, sim-flaky, sim-embed at http://127.0.0.1:"
        )
        base_url = line.rsplit(" ", 1)[1].strip()
        import urllib.request

        with urllib.request.urlopen(f"{base_url}/models", timeout=5) as response:
            assert len(json.load(response)["data"]) == 5
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_cli_loads_models_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("- name: a\n  ttft_ms: [20, 5]\n  error_rates: {rate_limit: 0.05}\n- name: b\n")
    models = load_models(path)
    assert [m.name for m in models] == ["a", "b"]
    assert models[0].error_rates == {Fault.RATE_LIMIT: 0.05}
    assert models[0].ttft_ms == (20.0, 5.0)


async def test_banner_tells_how_to_point_clients_at_the_sim(sim: SimServer) -> None:
    banner = usage_banner(sim)
    assert banner.splitlines()[0] == f"sim serving fixed, varied, small, locked, faulty at {sim.base_url}"
    assert f"OPENAI_API_BASE={sim.base_url}" in banner
    assert f"ANTHROPIC_API_BASE={sim.root_url}" in banner


def test_yaml_models_take_the_new_fields(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(
        "- name: a\n  vision: false\n  omit_usage: true\n  cache_min_tokens: 32\n"
        "  error_rates: {keepalive: 0.1, no_choices: 0.1, custom_error: 0.1}\n"
        "  custom_error: {status: 429, message: quota, code: insufficient_quota}\n"
    )
    (model,) = load_models(path)
    assert model.error_rates == {Fault.KEEPALIVE: 0.1, Fault.NO_CHOICES: 0.1, Fault.CUSTOM_ERROR: 0.1}
    assert (model.custom_error.status, model.custom_error.code) == (429, "insufficient_quota")
    assert (model.vision, model.omit_usage, model.cache_min_tokens) == (False, True, 32)
    server = SimServer([model])
    assert server.update("a", custom_error={"status": 503}).custom_error.status == 503
