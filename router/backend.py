"""The one module that imports LiteLLM: calls it and maps its exceptions to ours.

LiteLLM is imported lazily (it costs ~2.7 s and ~195 MiB), on the first call,
so validating or explaining a policy never pays for it. Its switches are
module globals; the few we set, once, are:

| switch | value | why |
|---|---|---|
| `litellm.suppress_debug_info` | True | no "Give Feedback" banner on every error |
| `litellm.telemetry` | False | nothing leaves the process but the call itself |
| `litellm.drop_params` | True | a parameter a provider lacks is dropped, not an error |
| `litellm.turn_off_message_logging` | True | LiteLLM's own logging never sees prompt text |

Every call passes `num_retries=0` and `max_retries=0` (our attempt loop
retries, not LiteLLM or the provider SDK) and an explicit timeout.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from router import errors
from router.health import parse_retry_after
from router.redact import scrub
from router.schema import Deployment

_litellm: ModuleType | None = None


def litellm_module() -> ModuleType:
    """Import LiteLLM once and set the switches listed in the module docstring."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        litellm.telemetry = False
        litellm.drop_params = True
        litellm.turn_off_message_logging = True
        _litellm = litellm
    return _litellm


_warmed = False


async def warm_up() -> None:
    """Import LiteLLM off the event loop, then run one mocked completion (no network).

    LiteLLM's first call in a process costs ~300 ms of one-time set-up; paid
    here, it is neither a stall for the first user nor counted as the first
    deployment's latency by the health tracker.
    """
    global _warmed
    if _warmed:
        return
    litellm = await asyncio.to_thread(litellm_module)
    await litellm.acompletion(model="openai/warm-up", messages=[{"role": "user", "content": "hi"}],
                              mock_response="ok", api_key="mock", num_retries=0, max_retries=0)
    _warmed = True


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    model: str
    finish_reason: str | None
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class StreamPiece:
    delta: str
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: list[list[float]]
    model: str
    input_tokens: int


def _credentials(d: Deployment) -> dict[str, Any]:
    """Connection arguments from config and the environment only, never from callers."""
    kwargs: dict[str, Any] = {}
    api_base = d.api_base or (os.environ.get(d.api_base_env) if d.api_base_env else None)
    if api_base:
        kwargs["api_base"] = api_base
    if d.api_version:
        kwargs["api_version"] = d.api_version
    if d.api_key_env:
        key = os.environ.get(d.api_key_env)
        if key:
            kwargs["api_key"] = key
    if d.price is not None:
        # Declared prices spare LiteLLM its slow path for models missing from its cost map.
        kwargs["input_cost_per_token"] = d.price.input_per_mtok / 1e6
        kwargs["output_cost_per_token"] = d.price.output_per_mtok / 1e6
    return kwargs


def _call_args(d: Deployment, timeout_s: float) -> dict[str, Any]:
    return {"model": d.model, "timeout": timeout_s, "num_retries": 0, "max_retries": 0, **_credentials(d)}


async def chat(
    d: Deployment,
    messages: Sequence[dict[str, str]],
    *,
    timeout_s: float,
    params: dict[str, Any],
) -> ChatResult:
    """One non-streaming chat completion; raises a `router.errors.ProviderError`."""
    litellm = litellm_module()
    try:
        # asyncio.timeout, not wait_for: wait_for wraps the call in a new Task (~10 µs a call)
        async with asyncio.timeout(timeout_s + 1.0):
            resp = await litellm.acompletion(messages=list(messages), **params, **_call_args(d, timeout_s))
        choice = resp.choices[0]
        usage = getattr(resp, "usage", None)
        return ChatResult(
            text=choice.message.content or "",
            model=resp.model or d.model,
            finish_reason=choice.finish_reason,
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )
    except Exception as exc:
        raise map_error(exc, d) from None


async def stream_chat(
    d: Deployment,
    messages: Sequence[dict[str, str]],
    *,
    timeout_s: float,
    params: dict[str, Any],
) -> AsyncGenerator[StreamPiece, None]:
    """Stream a chat completion as text deltas; the last piece carries usage."""
    litellm = litellm_module()
    try:
        async with asyncio.timeout(timeout_s + 1.0):
            stream = await litellm.acompletion(
                messages=list(messages),
                stream=True,
                stream_options={"include_usage": True},
                **params,
                **_call_args(d, timeout_s),
            )
        async for chunk in stream:
            choices = getattr(chunk, "choices", None) or []
            delta = ""
            finish = None
            if choices:
                delta = getattr(choices[0].delta, "content", None) or ""
                finish = choices[0].finish_reason
            usage = getattr(chunk, "usage", None)
            if delta or finish or usage:
                yield StreamPiece(
                    delta=delta,
                    finish_reason=finish,
                    input_tokens=getattr(usage, "prompt_tokens", None) if usage else None,
                    output_tokens=getattr(usage, "completion_tokens", None) if usage else None,
                    model=getattr(chunk, "model", None),
                )
    except Exception as exc:
        raise map_error(exc, d, streaming=True) from None


async def embed(d: Deployment, inputs: Sequence[str], *, timeout_s: float) -> EmbedResult:
    """Embed texts; one vector per input, in order."""
    litellm = litellm_module()
    try:
        async with asyncio.timeout(timeout_s + 1.0):
            resp = await litellm.aembedding(input=list(inputs), **_call_args(d, timeout_s))
        data = sorted(resp.data, key=lambda e: e["index"] if isinstance(e, dict) else e.index)
        vectors = [list(e["embedding"] if isinstance(e, dict) else e.embedding) for e in data]
        usage = getattr(resp, "usage", None)
        return EmbedResult(vectors, resp.model or d.model, int(getattr(usage, "prompt_tokens", 0) or 0))
    except Exception as exc:
        raise map_error(exc, d) from None


def _provider_message(message: str, d: Deployment) -> str:
    """A provider's error text without the deployment's key or anything shaped like a credential."""
    if d.api_key_env:
        key = os.environ.get(d.api_key_env)
        if key and len(key) >= 4:
            message = message.replace(key, "[REDACTED]")
    return scrub(message)[:500]


def _retry_after(exc: Exception) -> float | None:
    headers: Any = getattr(exc, "litellm_response_headers", None)
    response = getattr(exc, "response", None)
    if headers is None and response is not None:
        headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        raw = headers.get("retry-after")
    except Exception:
        return None
    return parse_retry_after(raw, now_wall=time.time())


def map_error(exc: BaseException, d: Deployment, *, streaming: bool = False) -> errors.ProviderError:
    """LiteLLM's exception -> ours, most specific first. The only such mapping in the project."""
    if isinstance(exc, errors.ProviderError):
        return exc
    lx = litellm_module().exceptions
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    msg = _provider_message(str(getattr(exc, "message", "") or exc) or type(exc).__name__, d)
    name = d.name

    def make(cls: type[errors.ProviderError], **kw: Any) -> errors.ProviderError:
        return cls(msg, deployment=name, status_code=status, **kw)

    if isinstance(exc, lx.ContextWindowExceededError):
        return make(errors.ContextWindowExceeded)
    if isinstance(exc, lx.MidStreamFallbackError):
        return make(errors.StreamInterrupted)
    if isinstance(exc, lx.RateLimitError):
        return make(errors.RateLimited, retry_after=_retry_after(exc))
    if isinstance(exc, lx.Timeout | asyncio.TimeoutError | TimeoutError):
        return make(errors.ProviderTimeout)
    if isinstance(exc, lx.AuthenticationError | lx.PermissionDeniedError):
        return make(errors.AuthenticationFailed)
    if isinstance(exc, lx.NotFoundError):
        return make(errors.DeploymentNotFound)
    if isinstance(exc, lx.BadRequestError | lx.UnprocessableEntityError):
        return make(errors.InvalidRequest)
    if isinstance(exc, lx.APIConnectionError):
        return make(errors.StreamInterrupted if streaming else errors.ProviderUnavailable)
    if _looks_malformed(msg):
        return make(errors.MalformedResponse)
    if streaming:
        return make(errors.StreamInterrupted)
    return make(errors.ProviderUnavailable)


def _looks_malformed(message: str) -> bool:
    lowered = message.lower()
    return any(s in lowered for s in ("jsondecode", "expecting value", "invalid json", "not valid json"))
