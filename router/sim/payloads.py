"""OpenAI-shaped bodies the simulator sends: completions, chunks, errors.

Error messages are worded like OpenAI's and chosen with LiteLLM's string
matching in mind (``litellm/litellm_core_utils/exception_mapping_utils.py``):
only the rate-limit body mentions a rate limit, only the context body says
"maximum context length", so each status maps to one exception class.

Example:
    >>> context_length_error(window=100, used=150)["error"]["code"]
    'context_length_exceeded'
    >>> chat_chunk("id", 0, "m", {"content": "hi"})["object"]
    'chat.completion.chunk'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MALFORMED_BODY",
    "auth_error",
    "bad_request_error",
    "chat_chunk",
    "chat_completion",
    "content_filter_error",
    "content_policy_error",
    "context_length_error",
    "context_overflow_error",
    "echo_auth_error",
    "embeddings",
    "error_body",
    "model_list",
    "model_not_found_error",
    "rate_limit_error",
    "server_error",
    "sse",
    "unavailable_error",
    "usage",
]

JSONDict = dict[str, Any]

MALFORMED_BODY = b"upstream sent garbage <not json>"
SSE_DONE = b"data: [DONE]\n\n"


def error_body(
    message: str, type_: str | None, param: str | None = None, code: str | None = None
) -> JSONDict:
    """Build ``{"error": {...}}`` the way OpenAI does.

    Example:
        >>> error_body("boom", "server_error")
        {'error': {'message': 'boom', 'type': 'server_error', 'param': None, 'code': None}}
    """
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def context_length_error(window: int, used: int) -> JSONDict:
    """400 body LiteLLM maps to ``ContextWindowExceededError``."""
    return error_body(
        f"This model's maximum context length is {window} tokens. However, your messages "
        f"resulted in {used} tokens. Please reduce the length of the messages.",
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    )


def auth_error() -> JSONDict:
    """401 body LiteLLM maps to ``AuthenticationError``."""
    return error_body(
        "Incorrect API key provided. You can find your API key in the simulator configuration.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    )


def model_not_found_error(model: str) -> JSONDict:
    """404 body LiteLLM maps to ``NotFoundError``."""
    return error_body(
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        None,
        "model_not_found",
    )


def bad_request_error(message: str, param: str | None = None) -> JSONDict:
    """400 body for a request the simulator refuses (not about context)."""
    return error_body(message, "invalid_request_error", param, "invalid_value")


def rate_limit_error(model: str, retry_after_s: float) -> JSONDict:
    """429 body LiteLLM maps to ``RateLimitError``."""
    return error_body(
        f"Rate limit reached for {model} (simulated). Please try again in {retry_after_s:g}s.",
        "requests",
        None,
        "rate_limit_exceeded",
    )


def server_error() -> JSONDict:
    """500 body."""
    return error_body(
        "The server had an error while processing your request. Sorry about that!", "server_error"
    )


def unavailable_error() -> JSONDict:
    """503 body."""
    return error_body("The engine is currently overloaded, please try again later.", "server_error")


def context_overflow_error(window: int, used: int) -> JSONDict:
    """400 a vLLM-style OpenAI server sends when the prompt is too long: ``code`` is null."""
    return {
        "error": {
            "message": f"This model's maximum context length is {window} tokens. However, you requested "
            f"{used} tokens in the messages, Please reduce the length of the messages. "
            f"{used} is too large for model with {window} maximum context length",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def content_policy_error() -> JSONDict:
    """400 OpenAI sends when a prompt breaks its usage policies."""
    return error_body(
        "Your request was rejected as a result of our safety system. Your prompt may contain text "
        "that is not allowed by our safety system.",
        "invalid_request_error",
        None,
        "content_policy_violation",
    )


def content_filter_error() -> JSONDict:
    """400 Azure OpenAI sends when its content filter trips on the prompt."""
    body = error_body(
        "The response was filtered due to the prompt triggering Azure OpenAI's content management "
        "policy. Please modify your prompt and retry.",
        None,  # Azure sends a null type
        "prompt",
        "content_filter",
    )
    body["error"]["status"] = 400
    body["error"]["innererror"] = {
        "code": "ResponsibleAIPolicyViolation",
        "content_filter_result": {
            "hate": {"filtered": False, "severity": "safe"},
            "self_harm": {"filtered": False, "severity": "safe"},
            "sexual": {"filtered": False, "severity": "safe"},
            "violence": {"filtered": True, "severity": "high"},
        },
    }
    return body


def echo_auth_error(authorization: str) -> JSONDict:
    """400 of a careless proxy that quotes the credential it was given (secret-leak tests)."""
    return error_body(
        f"Invalid request: the upstream rejected credentials '{authorization}' for this deployment.",
        "invalid_request_error",
        None,
        "invalid_request",
    )


def usage(
    prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> JSONDict:
    """The ``usage`` object of completions and final stream chunks, with OpenAI's details.

    ``completion_tokens`` already includes ``reasoning_tokens``, as OpenAI counts them.

    Example:
        >>> usage(10, 2, cached_tokens=0)["prompt_tokens_details"]
        {'cached_tokens': 0, 'audio_tokens': 0}
    """
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(
    id_: str,
    created: int,
    model: str,
    message: JSONDict,
    finish_reason: str,
    usage_: JSONDict | None,
) -> JSONDict:
    """A non-streaming ``chat.completion`` with one choice; ``usage_=None`` leaves usage out."""
    body: JSONDict = {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, **message},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def chat_chunk(
    id_: str,
    created: int,
    model: str,
    delta: Mapping[str, Any] | None,
    finish_reason: str | None = None,
    *,
    with_usage_field: bool = False,
    usage_: JSONDict | None = None,
) -> JSONDict:
    """One ``chat.completion.chunk``; ``delta=None`` is the usage-only chunk.

    With ``include_usage`` OpenAI puts ``"usage": null`` on every chunk and
    sends a last chunk with no choices and the usage.
    """
    chunk: JSONDict = {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_field:
        chunk["usage"] = usage_
    return chunk


def sse(payload: JSONDict) -> bytes:
    """Encode one server-sent event line.

    Example:
        >>> sse({"a": 1})
        b'data: {"a":1}\\n\\n'
    """
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def embeddings(model: str, vectors: list[list[float]], prompt_tokens: int | None) -> JSONDict:
    """An OpenAI embeddings ``list`` response; ``prompt_tokens=None`` leaves usage out."""
    body: JSONDict = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(vectors)
        ],
        "model": model,
    }
    if prompt_tokens is not None:
        body["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return body


def model_list(names: list[str], created: int) -> JSONDict:
    """The ``GET /v1/models`` body."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "sim"} for name in names
        ],
    }
