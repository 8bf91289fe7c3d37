"""What a simulated model is, which faults it can inject, and what it has counted.

``SimModel`` is the frozen description of one fake deployment: its latency
profile, its reply length, its context window and the probability of each
``Fault``. ``ModelStats`` is the read-only snapshot of what the server did for
that model.

What each outcome sends, and what ``litellm.acompletion`` (litellm 1.110.2,
``openai/<model>``, retries off) raises for it, as pinned by
``tests/integration/test_sim_litellm.py``. "call" means ``acompletion()``
itself raises; "iter" means it returns a stream that raises while iterated.

============== ========================================= =====================================
outcome        what the simulator sends                  LiteLLM raises (status_code)
============== ========================================= =====================================
RATE_LIMIT     429 ``rate_limit_exceeded``, headers      ``RateLimitError`` (429), call;
               ``Retry-After`` (whole s, rounded up) and headers on ``exc.response.headers``
               ``retry-after-ms`` (exact)                and ``exc.litellm_response_headers``
SERVER_ERROR   500 ``server_error``                      ``InternalServerError`` (500), call
UNAVAILABLE    503 ``server_error`` ("overloaded")       ``ServiceUnavailableError`` (503), call
HANG           nothing for ``hang_s``, then a normal     ``Timeout`` (408), call, once the
               answer (handler cancelled if the client   client timeout fires
               hangs up)
MALFORMED      200 ``application/json``, body not JSON   ``InternalServerError`` (500), call,
                                                         message "Expecting value: ..."
MALFORMED,     200 ``text/event-stream``, one event      ``MidStreamFallbackError`` (500),
stream         whose data is not JSON                    iter, ``is_pre_first_chunk=True``
STREAM_CUT     200, Content-Length of the whole body,    ``InternalServerError`` (500), call,
               half of it sent, socket closed            message "Connection error."
STREAM_CUT,    role chunk + half the tokens, socket      ``MidStreamFallbackError`` (500),
stream         closed: no last chunk, no ``[DONE]``      iter, ``generated_content`` = text so
                                                         far, ``is_pre_first_chunk=False``
BAD_REQUEST    400 ``invalid_request_error``             ``BadRequestError`` (400), call
KEEPALIVE      stream: SSE comments ``: PROCESSING``     a normal answer, ``keepalive_s`` late
               every ``keepalive_interval_s`` for
               ``keepalive_s``, then the answer; plain:
               the answer ``keepalive_s`` late
CUT_AFTER_     like STREAM_CUT but after the first       stream: ``MidStreamFallbackError``,
FIRST_CHUNK    token chunk                               iter, one token generated; plain:
                                                         ``InternalServerError``, call
CONTEXT_       400, ``code: null``, "... is too large    ``ContextWindowExceededError`` (400)
OVERFLOW       for model with N maximum context length"
CONTENT_POLICY 400 ``content_policy_violation``          ``BadRequestError`` (400), call
CONTENT_FILTER 400 Azure ``content_filter`` (with        ``BadRequestError`` (400), call
               ``innererror``)
CUSTOM_ERROR   ``SimModel.custom_error``: any status,    the class of that status (429:
               message, type, code, param, headers       ``RateLimitError``)
ECHO_AUTH      400 quoting the Authorization header      ``BadRequestError``, key in message
RATE_LIMIT_MS  429 with ``retry-after-ms`` only          ``RateLimitError`` (429), call
RATE_LIMIT_    429 with ``x-ratelimit-reset-requests``   ``RateLimitError`` (429), call
RESET          (OpenAI format: ``2.5s``, ``6m0s``) only
NO_CHOICES     200 JSON without ``choices`` (stream:     plain: ``InternalServerError``;
               one chunk without ``choices``, [DONE])    stream: ``MidStreamFallbackError``
(context)      400 ``context_length_exceeded``           ``ContextWindowExceededError`` (400)
(wrong key)    401 ``invalid_api_key``                   ``AuthenticationError`` (401)
(no model)     404 ``model_not_found``                   ``NotFoundError`` (404)
============== ========================================= =====================================

Streamed requests get the same class as plain ones for every row not marked
"stream", raised by the call before any chunk. ``MidStreamFallbackError`` lives
in ``litellm.exceptions`` (not re-exported as ``litellm.MidStreamFallbackError``),
subclasses ``ServiceUnavailableError`` and keeps the ``APIConnectionError`` of
the broken stream in ``original_exception``. Embeddings behave like plain chat
(NO_CHOICES drops ``data``).

Through the Anthropic endpoint (``anthropic/<model>``, ``tests/test_sim_faults.py``)
the same classes come back, except: UNAVAILABLE is sent as 529
``overloaded_error`` and LiteLLM raises ``InternalServerError`` (500); plain
MALFORMED and NO_CHOICES raise ``APIConnectionError``; a streamed
CONTEXT_OVERFLOW is only a ``BadRequestError``; and a streamed MALFORMED is
swallowed by LiteLLM's Anthropic parser (an empty stream, no exception).

``error_rates`` may mix any of these; a seeded server draws them reproducibly.

Example:
    >>> model = SimModel(name="sim-fast", ttft_ms=(20, 5), tokens_per_s=200,
    ...                  error_rates={Fault.RATE_LIMIT: 0.05})
    >>> model.error_rates[Fault.RATE_LIMIT]
    0.05
    >>> SimModel(name="x", error_rates={Fault.HANG: 0.7, Fault.MALFORMED: 0.7})
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for SimModel
    ...
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Fault", "ModelStats", "SimError", "SimModel"]


class Fault(enum.Enum):
    """An outcome the simulator can force on one request.

    ``NONE`` is a normal answer; it is only meaningful in ``SimServer.script``.
    What each fault sends and the LiteLLM exception it becomes are tabled in
    this module's docstring.
    """

    NONE = "none"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    UNAVAILABLE = "unavailable"
    HANG = "hang"
    MALFORMED = "malformed"
    STREAM_CUT = "stream_cut"
    BAD_REQUEST = "bad_request"
    # Appended after the original members: a seeded draw walks this order, so
    # existing seeds keep their sequences.
    KEEPALIVE = "keepalive"
    CUT_AFTER_FIRST_CHUNK = "cut_after_first_chunk"
    CONTEXT_OVERFLOW = "context_overflow"
    CONTENT_POLICY = "content_policy"
    CONTENT_FILTER = "content_filter"
    CUSTOM_ERROR = "custom_error"
    ECHO_AUTH = "echo_auth"
    RATE_LIMIT_MS = "rate_limit_ms"
    RATE_LIMIT_RESET = "rate_limit_reset"
    NO_CHOICES = "no_choices"


NonNegative = Annotated[float, Field(ge=0)]


class SimError(BaseModel):
    """The error ``Fault.CUSTOM_ERROR`` sends: status, OpenAI error fields, headers.

    The body is ``{"error": {"message", "type", "param", "code"}}`` (Anthropic
    endpoint: ``{"type": "error", "error": {"type", "message"}}``).

    Example:
        >>> SimError(message="quota gone", code="insufficient_quota", status=429).status
        429
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: int = Field(default=400, ge=400, le=599)
    message: str = "Simulated error."
    type: str | None = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: Mapping[str, str] = Field(default_factory=dict)


class SimModel(BaseModel):
    """One simulated deployment, addressed by LiteLLM as ``openai/<name>``.

    Attributes:
        name: model name clients send in the ``model`` field.
        ttft_ms: (mean, stddev) of the time to first token, normal, clamped >= 0.
        tokens_per_s: generation speed; ``None`` or ``0`` means instant.
        output_tokens: (mean, stddev) of the reply length (normal, at least 1),
            or a fixed length; ``max_tokens`` cuts it with finish "length".
        context_window: prompt tokens + ``max_tokens`` above this get a 400
            ``context_length_exceeded``.
        required_api_key: when set, any other Bearer token gets a 401.
        error_rates: probability of each fault per request (sum <= 1).
        retry_after_s: value advertised by RATE_LIMIT (``Retry-After`` header is
            this rounded up to whole seconds, ``retry-after-ms`` is exact).
        hang_s: how long HANG sleeps before answering normally.
        embedding_dim: length of the vectors ``/v1/embeddings`` returns
            (embeddings wait ``ttft_ms`` only; ``tokens_per_s`` is for chat).
        vision: ``False`` answers image parts with a 400 ``invalid_request_error``
            ("Invalid content type. image_url is only supported by certain models.").
        cache_min_tokens: a prompt sharing at least this many leading tokens with
            one of the last ``cache_history`` prompts reports the shared prefix,
            rounded down to ``cache_block_tokens``, as ``cached_tokens``
            (OpenAI: 1024 and 128). ``None`` turns prompt caching off.
        cache_block_tokens: granularity of ``cached_tokens``.
        cache_history: how many recent prompts per model are remembered.
        reasoning_tokens: added to ``completion_tokens`` and reported as
            ``completion_tokens_details.reasoning_tokens``.
        omit_usage: send no ``usage`` at all (chat, stream, embeddings).
        keepalive_s: how long KEEPALIVE sends SSE comments (``: PROCESSING``) before
            the first chunk; a plain request just waits that long.
        keepalive_interval_s: time between two keep-alive comments.
        custom_error: what CUSTOM_ERROR sends.

    Example:
        >>> SimModel(name="sim-smart", output_tokens=3).output_tokens
        3
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    ttft_ms: tuple[NonNegative, NonNegative] = (0.0, 0.0)
    tokens_per_s: NonNegative | None = None
    output_tokens: tuple[NonNegative, NonNegative] | Annotated[int, Field(ge=1)] = (24.0, 8.0)
    context_window: int = Field(default=8192, gt=0)
    required_api_key: str | None = None
    error_rates: Mapping[Fault, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    retry_after_s: NonNegative = 1.0
    hang_s: NonNegative = 30.0
    embedding_dim: int = Field(default=64, gt=0)
    vision: bool = True
    cache_min_tokens: int | None = Field(default=1024, ge=1)
    cache_block_tokens: int = Field(default=128, ge=1)
    cache_history: int = Field(default=16, ge=1)
    reasoning_tokens: int = Field(default=0, ge=0)
    omit_usage: bool = False
    keepalive_s: NonNegative = 1.0
    keepalive_interval_s: float = Field(default=0.25, gt=0)
    custom_error: SimError = SimError()

    @field_validator("error_rates")
    @classmethod
    def _no_rate_for_success(cls, rates: Mapping[Fault, float]) -> Mapping[Fault, float]:
        if Fault.NONE in rates:
            raise ValueError("Fault.NONE has no rate: success is whatever the faults leave")
        return dict(rates)

    @model_validator(mode="after")
    def _rates_sum_to_at_most_one(self) -> SimModel:
        total = sum(self.error_rates.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"error_rates sum to {total:.3f}, more than 1")
        return self


@dataclass(frozen=True)
class ModelStats:
    """What the server did for one model since start or ``reset_stats``.

    ``requests`` counts every request that named the model (chat and
    embeddings); ``successes`` the normal answers; ``faults`` the injected
    faults by kind; ``context_errors`` and ``auth_errors`` the requests the
    model rejected on its own rules. Token totals cover successes only.

    Example:
        >>> ModelStats().faults[Fault.RATE_LIMIT]
        0
    """

    requests: int = 0
    successes: int = 0
    faults: Mapping[Fault, int] = field(
        default_factory=lambda: {fault: 0 for fault in Fault if fault is not Fault.NONE}
    )
    context_errors: int = 0
    auth_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
