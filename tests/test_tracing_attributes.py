"""router/tracing_attributes.py: semconv values, and what must never reach a span."""

from __future__ import annotations

import json

import pytest

from router.redact import scrub
from router.schema import Deployment
from router.tracing_attributes import (
    DURATION_BUCKETS,
    TOKEN_BUCKETS,
    input_messages_json,
    output_messages_json,
    provider_name,
    request_attributes,
    request_model,
    server_attributes,
)


def test_bucket_boundaries_are_the_specs() -> None:
    assert list(DURATION_BUCKETS) == [
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ]  # fmt: skip
    assert list(TOKEN_BUCKETS) == [
        1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "provider", "model_name"),
    [
        ("openai/gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("azure/my-gpt4o-deployment", "azure.ai.openai", "my-gpt4o-deployment"),
        ("azure_ai/mistral-large", "azure.ai.inference", "mistral-large"),
        ("anthropic/claude-3-5-haiku-latest", "anthropic", "claude-3-5-haiku-latest"),
        ("bedrock/anthropic.claude-3-haiku-20240307-v1:0", "aws.bedrock",
         "anthropic.claude-3-haiku-20240307-v1:0"),
        ("vertex_ai/gemini-1.5-pro", "gcp.vertex_ai", "gemini-1.5-pro"),
        ("gemini/gemini-1.5-flash", "gcp.gemini", "gemini-1.5-flash"),
        ("cohere_chat/command-r", "cohere", "command-r"),
        ("mistral/mistral-small", "mistral_ai", "mistral-small"),
        ("xai/grok-2", "x_ai", "grok-2"),
        ("ollama/llama3.1", "ollama", "llama3.1"),
        ("ollama_chat/llama3.1", "ollama", "llama3.1"),
        ("hosted_vllm/meta-llama/Llama-3-8B", "hosted_vllm", "meta-llama/Llama-3-8B"),
    ],
)  # fmt: skip
def test_provider_and_model_names(model: str, provider: str, model_name: str) -> None:
    deployment = Deployment(name="d", model=model)
    assert provider_name(deployment) == provider
    assert request_model(deployment) == model_name


@pytest.mark.parametrize(
    ("api_base", "expected"),
    [
        (None, {}),
        ("", {}),
        ("http://127.0.0.1:8000/v1", {"server.address": "127.0.0.1", "server.port": 8000}),
        ("https://api.example.com", {"server.address": "api.example.com", "server.port": 443}),
        ("https://u:p@h.example.com:8443/x?key=1", {"server.address": "h.example.com",
                                                    "server.port": 8443}),
        ("localhost:11434", {"server.address": "localhost", "server.port": 11434}),
        ("http://[::1]:9000", {"server.address": "::1", "server.port": 9000}),
        ("http://host:notaport", {}),
    ],
)  # fmt: skip
def test_server_attributes_keep_only_host_and_port(api_base: str | None, expected: dict[str, object]) -> None:
    assert server_attributes(api_base) == expected


def test_request_attributes_skip_wrong_types() -> None:
    params = {"max_tokens": True, "temperature": "hot", "stream": 1}
    assert request_attributes(params) == {}
    assert request_attributes({"max_tokens": 5, "temperature": 1, "stream": True}) == {
        "gen_ai.request.max_tokens": 5,
        "gen_ai.request.temperature": 1.0,
        "gen_ai.request.stream": True,
    }


def test_input_messages_keep_text_parts_only() -> None:
    messages: list[dict[str, object]] = [
        {"role": "user", "content": [
            {"type": "text", "text": "what is in"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "this picture?"},
        ]},
        {"role": "assistant", "content": None},
    ]  # fmt: skip
    decoded = json.loads(input_messages_json(messages, max_chars=100))
    assert decoded == [
        {"role": "user", "parts": [{"type": "text", "content": "what is in"},
                                   {"type": "text", "content": "this picture?"}]},
        {"role": "assistant", "parts": []},
    ]  # fmt: skip
    assert "base64" not in input_messages_json(messages, max_chars=100)


def test_one_budget_for_all_messages() -> None:
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "a" * 8},
        {"role": "user", "content": "b" * 8},
    ]
    decoded = json.loads(input_messages_json(messages, max_chars=10))
    assert [p["content"] for m in decoded for p in m["parts"]] == ["a" * 8, "bb"]
    assert json.loads(output_messages_json("ü" * 50, ["length"], max_chars=4)) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "üüüü"}],
         "finish_reason": "length"},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("Incorrect API key provided: sk-proj-AbCdEf123456", "sk-proj-AbCdEf123456"),
        ('{"api_key": "k-123"}', "k-123"),
        ("x-api-key=zzz999", "zzz999"),
        ("GET https://gen.example.com/v1?key=AIzaSyD-1234567890abcdefghij", "AIzaSyD"),
        ("proxy https://bob:hunter2@proxy.local:3128 refused", "hunter2"),
        ("password: letmein", "letmein"),
    ],
)
def test_scrub_blanks_credentials(text: str, secret: str) -> None:
    assert secret not in scrub(text)
    assert "[REDACTED]" in scrub(text)


def test_scrub_leaves_ordinary_text_alone() -> None:
    text = "gpt-mini: 503 Service Unavailable from https://api.example.com/v1/chat (retry in 2s)"
    assert scrub(text) == text
