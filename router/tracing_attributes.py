"""Turn router values into GenAI semantic-convention attribute values, safely.

Kept apart from `router/tracing.py` so that module holds only span and metric
lifecycles. Everything here is a pure function; nothing reads the environment.

Conventions followed: GenAI semconv as of semantic-conventions 1.44 (python
package opentelemetry-semantic-conventions 0.66b2, schema 1.44.0).

>>> from router.schema import Deployment
>>> provider_name(Deployment(name="az", model="azure/gpt-4o"))
'azure.ai.openai'
>>> server_attributes("https://user:secret@example.com/v1?key=abc")
{'server.address': 'example.com', 'server.port': 443}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_STREAM,
    GEN_AI_REQUEST_TEMPERATURE,
)
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GenAiProviderNameValues as _P,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.util.types import AttributeValue

from router.schema import Deployment

SCHEMA_URL = Schemas.V1_44_0.value

# Explicit bucket boundaries the GenAI metric conventions recommend:
# 0.01 s doubling up to 81.92 s, and 1 token quadrupling up to 67,108,864.
DURATION_BUCKETS: tuple[float, ...] = tuple(0.01 * 2**i for i in range(14))
TOKEN_BUCKETS: tuple[int, ...] = tuple(4**i for i in range(14))

# LiteLLM's provider prefix -> the semconv well-known gen_ai.provider.name value.
_PREFIXES: Mapping[str, tuple[str, ...]] = {
    _P.OPENAI.value: ("openai", "text-completion-openai"),
    _P.AZURE_AI_OPENAI.value: ("azure", "azure_text"),
    _P.AZURE_AI_INFERENCE.value: ("azure_ai",),
    _P.ANTHROPIC.value: ("anthropic",),
    _P.AWS_BEDROCK.value: ("bedrock",),
    _P.GCP_VERTEX_AI.value: ("vertex_ai",),
    _P.GCP_GEMINI.value: ("gemini",),
    _P.COHERE.value: ("cohere", "cohere_chat"),
    _P.MISTRAL_AI.value: ("mistral",),
    _P.GROQ.value: ("groq",),
    _P.DEEPSEEK.value: ("deepseek",),
    _P.X_AI.value: ("xai",),
    _P.PERPLEXITY.value: ("perplexity",),
    _P.IBM_WATSONX_AI.value: ("watsonx",),
    "ollama": ("ollama_chat",),  # not well-known: one name for LiteLLM's two Ollama routes
}
PROVIDER_NAMES: Mapping[str, str] = {p: name for name, ps in _PREFIXES.items() for p in ps}


def provider_name(deployment: Deployment) -> str:
    """gen_ai.provider.name of a deployment: the semconv value, else LiteLLM's raw prefix."""
    return PROVIDER_NAMES.get(deployment.provider, deployment.provider)


def request_model(deployment: Deployment) -> str:
    """gen_ai.request.model: the model string after LiteLLM's provider prefix."""
    return deployment.model.split("/", 1)[1]


def request_attributes(params: Mapping[str, object]) -> dict[str, AttributeValue]:
    """gen_ai.request.* of the call's parameters; values of the wrong type are left out.

    >>> request_attributes({"max_tokens": 64, "temperature": 0, "user": "x"})
    {'gen_ai.request.max_tokens': 64, 'gen_ai.request.temperature': 0.0}
    """
    attrs: dict[str, AttributeValue] = {}
    max_tokens, temperature = params.get("max_tokens"), params.get("temperature")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        attrs[GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        attrs[GEN_AI_REQUEST_TEMPERATURE] = float(temperature)
    if isinstance(stream := params.get("stream"), bool):
        attrs[GEN_AI_REQUEST_STREAM] = stream
    return attrs


def server_attributes(api_base: str | None) -> dict[str, AttributeValue]:
    """server.address and server.port of an api_base; never its userinfo, path or query."""
    if not api_base:
        return {}
    try:
        parts = urlsplit(api_base if "://" in api_base else f"//{api_base}")
        host, port = parts.hostname, parts.port
    except ValueError:  # a malformed port: better no attribute than a wrong one
        return {}
    if not host:
        return {}
    port = port or {"http": 80, "https": 443}.get(parts.scheme)
    return {SERVER_ADDRESS: host, SERVER_PORT: port} if port else {SERVER_ADDRESS: host}


def _text_parts(content: object) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, Sequence):  # OpenAI content parts: images and audio are not kept
        return [str(p["text"]) for p in content if isinstance(p, Mapping) and "text" in p]
    return []


def _messages_json(messages: Iterable[tuple[str, list[str], str | None]], max_chars: int) -> str:
    # One character budget for the whole attribute, cut per part so the JSON stays valid.
    budget = max_chars
    out: list[dict[str, object]] = []
    for role, texts, finish_reason in messages:
        parts = []
        for text in texts:
            parts.append({"type": "text", "content": text[: max(budget, 0)]})
            budget -= len(text)
        message: dict[str, object] = {"role": role, "parts": parts}
        if finish_reason is not None:
            message["finish_reason"] = finish_reason
        out.append(message)
    return json.dumps(out, ensure_ascii=False)


def input_messages_json(messages: Iterable[Mapping[str, object]], max_chars: int) -> str:
    """gen_ai.input.messages: chat messages as semconv JSON, text capped at `max_chars`.

    >>> input_messages_json([{"role": "user", "content": "hello"}], max_chars=3)
    '[{"role": "user", "parts": [{"type": "text", "content": "hel"}]}]'
    """
    return _messages_json(
        ((str(m.get("role", "user")), _text_parts(m.get("content")), None) for m in messages),
        max_chars,
    )


def output_messages_json(text: str, finish_reasons: Sequence[str], max_chars: int) -> str:
    """gen_ai.output.messages: the answer as one assistant message, capped at `max_chars`."""
    reason = finish_reasons[0] if finish_reasons else "stop"
    return _messages_json([("assistant", [text], reason)], max_chars)


# Defence in depth: our errors are key-free, but a provider may echo a key back.
