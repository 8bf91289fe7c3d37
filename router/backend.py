"""The one module that imports LiteLLM: the `Backend` protocol, its LiteLLM implementation,
and the one table that maps LiteLLM's exceptions to ours.

LiteLLM is imported lazily (it costs ~2.7 s and ~195 MiB), on the first call,
so validating or explaining a policy never pays for it. Switches such as
`drop_params` go with each call; the one LiteLLM global we set is
`suppress_debug_info` (no "Give Feedback" banner printed on every error), which
changes nothing but that print for other LiteLLM users in the process.

Every call passes `num_retries=0` and `max_retries=0` (our attempt loop
retries, not LiteLLM or the provider SDK) and an explicit timeout.

>>> result = await LiteLLMBackend().chat(deployment, messages, {}, timeout_s=5)  # doctest: +SKIP
>>> result.choices[0].message.content  # doctest: +SKIP
'4'
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from types import ModuleType
from typing import Any, Protocol

from router import errors
from router.health import parse_retry_after
from router.models import AssistantMessage, Choice, FunctionCall, ToolCall, ToolCallDelta, Usage
from router.records import record
from router.redact import scrub
from router.schema import Deployment

_litellm: ModuleType | None = None


def litellm_module() -> ModuleType:
    """Import LiteLLM once (see the module docstring for the one switch set)."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
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


@record
class ChatResult:
    """One chat completion: the first choice's `message` and `finish_reason`; `choices`, every
    choice, only when there are several (else empty); `usage` (None when the provider sent none)."""

    id: str
    message: AssistantMessage
    finish_reason: str | None
    model: str
    usage: Usage | None
    choices: tuple[Choice, ...] = ()


@record
class StreamPiece:
    """One streamed chunk: text and tool-call fragments; the last carries usage."""

    delta: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    id: str | None = None


@record
class EmbedResult:
    vectors: list[list[float]]
    model: str
    usage: Usage | None


class Backend(Protocol):
    """What the router needs of a provider client: three calls, our errors only.

    Each raises a `router.errors.ProviderError` subclass (never a foreign
    exception) and takes `timeout_s`, the attempt's timeout in seconds, to pass
    on to the provider's client; the caller (the attempt loop, the prober)
    bounds the whole call.
    """

    async def chat(
        self, d: Deployment, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], *, timeout_s: float
    ) -> ChatResult: ...

    def stream(
        self, d: Deployment, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], *, timeout_s: float
    ) -> AsyncIterator[StreamPiece]: ...

    async def embed(self, d: Deployment, inputs: Sequence[str], *, timeout_s: float) -> EmbedResult: ...


class LiteLLMBackend:
    """The default `Backend`: `litellm.acompletion` / `aembedding`, one call per attempt."""

    async def chat(
        self, d: Deployment, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], *, timeout_s: float
    ) -> ChatResult:
        litellm = litellm_module()
        try:
            # The attempt loop bounds the whole call (backend calls are never unbounded there);
            # `timeout` tells LiteLLM's HTTP client the same. The call's arguments (the key among
            # them) are never a local of this frame: a traceback that captures locals must not carry it.
            resp = await litellm.acompletion(messages=list(messages), **params, **_call_args(d, timeout_s))
            result = _chat_result(resp, d)
        except Exception as exc:
            error = map_error(exc, d)
        else:
            return result
        # Raised outside the handler so the provider's exception (and any text in it)
        # is not kept as __context__.
        raise error

    async def stream(
        self, d: Deployment, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], *, timeout_s: float
    ) -> AsyncIterator[StreamPiece]:
        litellm = litellm_module()
        error: errors.ProviderError | None = None
        try:
            stream = await litellm.acompletion(
                messages=list(messages), stream=True, stream_options={"include_usage": True}, **params,
                **_call_args(d, timeout_s))
            async for chunk in stream:
                piece = _stream_piece(chunk)
                if piece is not None and piece.usage is not None and not _provider_sent_usage(stream):
                    # LiteLLM counts the tokens itself when the provider sent no usage: an estimate
                    # it does not mark as one. Dropped, so the router's own estimate is reported.
                    piece = dataclasses.replace(piece, usage=None)
                    if not (piece.delta or piece.tool_calls or piece.finish_reason):
                        continue
                if piece is not None:
                    yield piece
        except Exception as exc:
            error = map_error(exc, d, streaming=True)
        if error is not None:
            raise error

    async def embed(self, d: Deployment, inputs: Sequence[str], *, timeout_s: float) -> EmbedResult:
        litellm = litellm_module()
        try:
            resp = await litellm.aembedding(input=list(inputs), **_call_args(d, timeout_s))
            data = sorted(resp.data, key=lambda e: e["index"] if isinstance(e, dict) else e.index)
            vectors = [list(e["embedding"] if isinstance(e, dict) else e.embedding) for e in data]
            result = EmbedResult(vectors, resp.model or d.model, _usage(getattr(resp, "usage", None)))
        except Exception as exc:
            error = map_error(exc, d)
        else:
            return result
        raise error


def _call_args(d: Deployment, timeout_s: float) -> dict[str, Any]:
    """Connection arguments from config and the environment only, never from callers."""
    kwargs: dict[str, Any] = {"model": d.model, "timeout": timeout_s, "num_retries": 0, "max_retries": 0,
                              "drop_params": True}
    api_base = d.api_base or (os.environ.get(d.api_base_env) if d.api_base_env else None)
    if api_base:
        kwargs["api_base"] = api_base
    if d.api_version:
        kwargs["api_version"] = d.api_version
    if d.api_key_env:
        key = os.environ.get(d.api_key_env)
        if not key:
            raise errors.AuthenticationFailed(
                f"no API key: set the environment variable {d.api_key_env}", deployment=d.name)
        kwargs["api_key"] = key
    if d.price is not None:
        # Declared prices spare LiteLLM its slow path for models missing from its cost map.
        kwargs["input_cost_per_token"] = d.price.input_per_mtok / 1e6
        kwargs["output_cost_per_token"] = d.price.output_per_mtok / 1e6
    return kwargs


def _chat_result(resp: Any, d: Deployment) -> ChatResult:
    raw_choices = getattr(resp, "choices", None)
    if not raw_choices:
        raise errors.MalformedResponse("the answer has no choices", deployment=d.name)
    messages = []
    for c in raw_choices:
        msg = getattr(c, "message", None)
        if msg is None:
            raise errors.MalformedResponse("a choice has no message", deployment=d.name)
        messages.append(_message(msg))
    first = raw_choices[0]
    choices = () if len(messages) == 1 else tuple(
        Choice(index=getattr(c, "index", i) or i, message=m, finish_reason=getattr(c, "finish_reason", None))
        for i, (c, m) in enumerate(zip(raw_choices, messages, strict=True)))
    rid = getattr(resp, "id", None)
    return ChatResult(rid if type(rid) is str else str(rid or ""), messages[0], getattr(first, "finish_reason", None),
                      getattr(resp, "model", None) or d.model, _usage(getattr(resp, "usage", None)), choices)


def _message(msg: Any) -> AssistantMessage:
    calls = getattr(msg, "tool_calls", None)
    content = getattr(msg, "content", None)
    refusal = getattr(msg, "refusal", None)
    if not calls and refusal is None and (content is None or type(content) is str):
        return AssistantMessage(content=content)  # the common case: text only
    tool_calls = tuple(
        ToolCall(id=str(getattr(c, "id", "") or ""),
                 function=FunctionCall(name=str(c.function.name or ""), arguments=str(c.function.arguments or "")))
        for c in calls
    ) if calls else None
    return AssistantMessage(content=content if isinstance(content, str) else None, tool_calls=tool_calls,
                            refusal=refusal if isinstance(refusal, str) else None)


def _usage(raw: Any) -> Usage | None:
    """Our usage from LiteLLM's (OpenAI-shaped, with Anthropic's cache fields); None when absent or
    empty. A negative count (a broken provider) is read as 0: it must not refund a tenant's budget."""
    if raw is None:
        return None
    prompt = max(0, int(getattr(raw, "prompt_tokens", 0) or 0))
    completion = max(0, int(getattr(raw, "completion_tokens", 0) or 0))
    if prompt == 0 and completion == 0:
        return None
    prompt_details = getattr(raw, "prompt_tokens_details", None)
    completion_details = getattr(raw, "completion_tokens_details", None)
    written = getattr(raw, "cache_creation_input_tokens", None)
    if prompt_details is None and completion_details is None and not written:
        return Usage(input_tokens=prompt, output_tokens=completion)  # the plain case, half the cost
    cached = max(0, int(getattr(prompt_details, "cached_tokens", 0) or 0))
    reasoning = max(0, int(getattr(completion_details, "reasoning_tokens", 0) or 0))
    return Usage(input_tokens=prompt, output_tokens=completion, cached_input_tokens=cached,
                 cache_write_tokens=max(0, int(written or 0)), reasoning_tokens=reasoning)


def _provider_sent_usage(stream: Any) -> bool:
    """Whether any chunk LiteLLM received from the provider carried usage (its wrapper keeps them in
    `chunks`); True when that cannot be told, so a provider's figures are never taken for an estimate."""
    chunks = getattr(stream, "chunks", None)
    if not isinstance(chunks, list):
        return True
    return any(getattr(c, "usage", None) is not None for c in chunks)


def _stream_piece(chunk: Any) -> StreamPiece | None:
    choices = getattr(chunk, "choices", None) or []
    delta, finish = "", None
    calls: tuple[ToolCallDelta, ...] = ()
    if choices:
        d = getattr(choices[0], "delta", None)
        delta = getattr(d, "content", None) or ""
        finish = choices[0].finish_reason
        raw_calls = getattr(d, "tool_calls", None)
        if raw_calls:
            calls = tuple(
                ToolCallDelta(index=int(getattr(c, "index", 0) or 0), id=getattr(c, "id", None),
                              name=getattr(getattr(c, "function", None), "name", None),
                              arguments=getattr(getattr(c, "function", None), "arguments", None) or "")
                for c in raw_calls
            )
    usage = _usage(getattr(chunk, "usage", None))
    if not (delta or finish or usage or calls):
        return None
    return StreamPiece(delta=delta, tool_calls=calls, finish_reason=finish, usage=usage,
                       model=getattr(chunk, "model", None), id=getattr(chunk, "id", None))


# -- errors ------------------------------------------------------------------------------

#: LiteLLM's exception classes (by name in `litellm.exceptions`) -> ours, most specific first.
#: A subclass must come before its base: ContextWindowExceededError and
#: ContentPolicyViolationError are BadRequestErrors.
LITELLM_ERRORS: tuple[tuple[str, type[errors.ProviderError]], ...] = (
    ("ContextWindowExceededError", errors.ContextWindowExceeded),
    ("ContentPolicyViolationError", errors.ContentFiltered),
    ("MidStreamFallbackError", errors.StreamInterrupted),
    ("RateLimitError", errors.RateLimited),
    ("Timeout", errors.ProviderTimeout),
    ("AuthenticationError", errors.AuthenticationFailed),
    ("PermissionDeniedError", errors.AuthenticationFailed),
    ("NotFoundError", errors.DeploymentNotFound),
    ("BadRequestError", errors.InvalidRequest),
    ("UnprocessableEntityError", errors.InvalidRequest),
    ("APIConnectionError", errors.ProviderUnavailable),
)

# Provider wordings LiteLLM does not classify (checked on 400s it calls BadRequestError).
_CONTEXT_WORDS = re.compile(
    r"context[ _-]?(length|window)|maximum context|too many tokens|prompt is too long|too long|"
    r"too large for model|reduce the length|exceeds? the (maximum|max)|max_tokens.*exceed|input length",
    re.IGNORECASE,
)
_FILTER_WORDS = re.compile(r"content[ _-]?(policy|filter|management)|safety (system|filter)|responsible ai",
                           re.IGNORECASE)
# LiteLLM's wordings for a key it could not find: "Missing credentials" (openai, azure), "Missing <provider>
# API key" (anthropic, gemini), the OpenAI SDK's "api_key client option must be set".
_MISSING_KEY = re.compile(r"missing credentials|missing [\w ]*api[ _-]?key|api_key client option must be set",
                          re.IGNORECASE)
# aiohttp refuses userinfo in the URL next to the Authorization header LiteLLM sets.
_URL_CREDENTIALS = "credentials encoded in url"
_MALFORMED_WORDS = ("jsondecode", "expecting value", "invalid json", "not valid json", "no choices",
                    "unable to parse", "malformed")


def map_error(exc: BaseException, d: Deployment, *, streaming: bool = False) -> errors.ProviderError:
    """LiteLLM's exception -> ours, through `LITELLM_ERRORS`, then our classifier for wordings
    LiteLLM does not know. The only such mapping in the project."""
    if isinstance(exc, errors.ProviderError):
        return exc
    lx = litellm_module().exceptions
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    msg = _provider_message(str(getattr(exc, "message", "") or exc) or type(exc).__name__, d)
    cls: type[errors.ProviderError] | None = None
    for name, ours in LITELLM_ERRORS:
        theirs = getattr(lx, name, None)
        if theirs is not None and isinstance(exc, theirs):
            cls = ours
            break
    if cls is None and isinstance(exc, asyncio.TimeoutError | TimeoutError):
        cls = errors.ProviderTimeout
    if _MISSING_KEY.search(msg):
        cls = errors.AuthenticationFailed  # LiteLLM reports a key it found nowhere as a 500 (openai, azure, gemini)
    elif _URL_CREDENTIALS in msg.lower():
        cls = errors.AuthenticationFailed  # a configuration error: no retry, no outage
        msg = ("api_base has credentials in its URL (user:password@host), which LiteLLM's HTTP client refuses "
               "alongside an API key; " + msg)
    elif cls is None and status in (401, 403):
        cls = errors.AuthenticationFailed  # a 403 arrives as a bare APIError, not PermissionDeniedError
    if cls is errors.InvalidRequest:
        if _FILTER_WORDS.search(msg):
            cls = errors.ContentFiltered
        elif _CONTEXT_WORDS.search(msg):
            cls = errors.ContextWindowExceeded
    elif cls is errors.ProviderUnavailable and streaming:
        cls = errors.StreamInterrupted
    elif cls is None:
        lowered = msg.lower()
        if any(s in lowered for s in _MALFORMED_WORDS):
            cls = errors.MalformedResponse
        elif status is not None and 400 <= status < 500 and status not in (408, 409, 425, 429):
            cls = errors.InvalidRequest
        else:
            cls = errors.StreamInterrupted if streaming else errors.ProviderUnavailable
    retry_after = _retry_after(exc) if cls is errors.RateLimited else None
    return cls(msg, deployment=d.name, status_code=status, retry_after=retry_after)


def _provider_message(message: str, d: Deployment) -> str:
    """A provider's error text without the deployment's key or anything shaped like a credential."""
    if d.api_key_env:
        key = os.environ.get(d.api_key_env)
        if key and len(key) >= 4:
            message = message.replace(key, "[REDACTED]")
    return scrub(message)[:500]


def _retry_after(exc: BaseException) -> float | None:
    """Seconds to wait, from any header form providers send (Retry-After in seconds or as a
    date, retry-after-ms, x-ratelimit-reset-requests/-tokens like "1s" or "6m0s")."""
    headers: Any = getattr(exc, "litellm_response_headers", None)
    response = getattr(exc, "response", None)
    if headers is None and response is not None:
        headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        get = headers.get
        ms = get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        raw = get("retry-after")
        if raw is not None:
            return parse_retry_after(raw, now_wall=time.time())
        resets = [_duration_s(get(h)) for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")]
    except (AttributeError, TypeError, ValueError):
        return None
    known = [r for r in resets if r is not None]
    return max(known) if known else None


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def _duration_s(raw: object) -> float | None:
    """OpenAI's reset headers: "1s", "6m0s", "20ms", "1h2m3.5s", or plain seconds."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    m = _DURATION.match(raw.strip())
    if m is None or not any(m.groups()):
        return None
    h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


#: The default backend, shared: it holds no state of its own.
DEFAULT_BACKEND = LiteLLMBackend()
