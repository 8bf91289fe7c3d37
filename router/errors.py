"""The router's exceptions, one tree, all carrying fields rather than just text.

```
RouterError
├── ConfigError                 a deployments/policies/tenants file is invalid
│                               (file, line, field path); `errors` lists them all
├── QuotaExceeded               a tenant limit would be passed (tenant, limit,
│                               usage, retry_after); raised before any call
├── QuotaStoreUnavailable       the quota store is down and the limit fails closed
├── TenantNotAllowed            unknown tenant (when rejected) or route not allowed
├── NoRouteAvailable            no deployment is eligible for the request
├── DeadlineExceeded            the request's overall deadline ran out
├── AllAttemptsFailed           every attempt failed; `attempts` says why each did
└── ProviderError               one attempt at one deployment failed
    ├── RetryableError          worth trying again, here or elsewhere
    │   ├── RateLimited         429; `retry_after` when the provider said
    │   ├── ProviderTimeout     no answer within the attempt's timeout
    │   ├── ProviderUnavailable connection refused/reset, 5xx
    │   ├── MalformedResponse   a 200 whose body is not what was promised
    │   └── StreamInterrupted   a stream cut before it finished
    ├── ContentFiltered         the provider's content filter refused; another provider may answer
    ├── ContextWindowExceeded   prompt too long: fall back to a larger window
    ├── AuthenticationFailed    401/403: skip this deployment
    ├── DeploymentNotFound      404: the deployment's model is misconfigured; skip it
    └── InvalidRequest          the caller's bad request: fail fast, no fallback;
                                `field` names what was wrong
```

What each kind means for the attempt loop, the health tracker and the
policy's `retry.on` is one table, `ERROR_KINDS`, below; every layer reads it.

Messages never contain API keys: errors carry deployment names, not
credentials, and provider messages are scrubbed by the backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from router.models import Attempt


class RouterError(Exception):
    """Base class of every error the router raises."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in one configuration file."""

    file: str
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" [{self.field}]" if self.field else ""
        return f"{where}{field}: {self.message}"


class ConfigError(RouterError):
    """Configuration failed validation; `issues` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues) or "invalid configuration")

    @property
    def file(self) -> str:
        return self.issues[0].file if self.issues else ""

    @property
    def field(self) -> str:
        return self.issues[0].field if self.issues else ""

    @property
    def line(self) -> int | None:
        return self.issues[0].line if self.issues else None


class QuotaExceeded(RouterError):
    """A tenant limit would be exceeded; nothing was sent to a provider."""

    def __init__(
        self,
        *,
        tenant: str,
        limit: str,
        limit_value: float,
        usage: float,
        retry_after: float | None,
        scope: str = "",
    ) -> None:
        self.tenant = tenant
        self.limit = limit
        self.limit_value = limit_value
        self.usage = usage
        self.retry_after = retry_after
        self.scope = scope
        where = f" ({scope})" if scope else ""
        retry = f"; retry after {retry_after:.2f}s" if retry_after is not None else ""
        super().__init__(
            f"tenant {tenant!r} would exceed {limit}{where}: "
            f"usage {usage:g} of {limit_value:g}{retry}"
        )


class QuotaStoreUnavailable(RouterError):
    """The quota store cannot be reached and the limit is declared fail-closed."""

    def __init__(self, *, tenant: str, limit: str, store: str) -> None:
        self.tenant = tenant
        self.limit = limit
        self.store = store
        super().__init__(f"quota store {store} unavailable; {limit} fails closed for {tenant!r}")


class TenantNotAllowed(RouterError):
    """The tenant is unknown (and unknown tenants are rejected) or may not use the route."""

    def __init__(self, *, tenant: str, reason: str, route: str | None = None) -> None:
        self.tenant = tenant
        self.route = route
        self.reason = reason
        super().__init__(f"tenant {tenant!r}: {reason}")


class NoRouteAvailable(RouterError):
    """No deployment passed the route's constraints for this request."""

    def __init__(self, *, route: str, reasons: dict[str, str]) -> None:
        self.route = route
        self.reasons = dict(reasons)
        detail = "; ".join(f"{d}: {r}" for d, r in self.reasons.items()) or "no targets"
        super().__init__(f"route {route!r} has no eligible deployment ({detail})")


class DeadlineExceeded(RouterError):
    """The request's overall deadline ran out before an attempt succeeded."""

    def __init__(self, *, route: str, deadline_s: float, attempts: Sequence[Attempt]) -> None:
        self.route = route
        self.deadline_s = deadline_s
        self.attempts = tuple(attempts)
        super().__init__(
            f"route {route!r}: deadline of {deadline_s:g}s exceeded after "
            f"{len(self.attempts)} attempt(s){_describe(self.attempts)}"
        )


class AllAttemptsFailed(RouterError):
    """Every attempt failed; `attempts` records each deployment and why."""

    def __init__(self, *, route: str, attempts: Sequence[Attempt]) -> None:
        self.route = route
        self.attempts = tuple(attempts)
        super().__init__(
            f"route {route!r}: all {len(self.attempts)} attempt(s) failed{_describe(self.attempts)}"
        )


#: Longest provider text one attempt contributes to a message: enough to read why, not a 2 kB body.
ATTEMPT_TEXT_MAX = 200


def attempt_line(attempt: Attempt, max_chars: int = ATTEMPT_TEXT_MAX) -> str:
    """One attempt as one line: `deployment -> kind: message`, the message on one line and cut.

    >>> from router.models import Attempt
    >>> attempt_line(Attempt(deployment="gpt", outcome="error", error_type="auth", error="no API key"))
    'gpt -> auth: no API key'
    """
    kind = attempt.error_type or attempt.outcome
    text = one_line(attempt.error or "", max_chars)
    return f"{attempt.deployment} -> {kind}: {text}" if text else f"{attempt.deployment} -> {kind}"


def one_line(text: str, max_chars: int = ATTEMPT_TEXT_MAX) -> str:
    """`text` with its whitespace runs (newlines included) made single spaces, cut to `max_chars` with "...".

    >>> one_line("a   b " + "x" * 10, max_chars=8)
    'a b x...'
    """
    flat = " ".join(text.split())
    return flat if len(flat) <= max_chars else flat[: max_chars - 3].rstrip() + "..."


def _describe(attempts: Sequence[Attempt]) -> str:
    """`: a -> error (timeout): ...; b -> skipped (circuit_open): circuit open`, each text on one line and cut."""
    if not attempts:
        return ""
    parts = []
    for a in attempts:
        kind = f" ({a.error_type})" if a.error_type and a.error_type != a.outcome else ""
        text = one_line(a.error or "")
        parts.append(f"{a.deployment} -> {a.outcome}{kind}" + (f": {text}" if text else ""))
    return ": " + "; ".join(parts)


class ProviderError(RouterError):
    """One attempt at one deployment failed."""

    #: Short, stable name used in attempt records, spans and metrics.
    kind = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        deployment: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.deployment = deployment
        self.status_code = status_code
        self.retry_after = retry_after
        self.message = message
        super().__init__(f"{deployment}: {message}" if deployment else message)


class RetryableError(ProviderError):
    """The attempt may succeed if tried again, here or on another deployment."""

    kind = "retryable"


class RateLimited(RetryableError):
    kind = "rate_limited"


class ProviderTimeout(RetryableError):
    kind = "timeout"


class ProviderUnavailable(RetryableError):
    kind = "unavailable"


class MalformedResponse(RetryableError):
    kind = "malformed_response"


class StreamInterrupted(RetryableError):
    kind = "stream_interrupted"


class ContextWindowExceeded(ProviderError):
    kind = "context_window"


class AuthenticationFailed(ProviderError):
    kind = "auth"


class DeploymentNotFound(ProviderError):
    kind = "not_found"


class ContentFiltered(ProviderError):
    kind = "content_filtered"


class InvalidRequest(ProviderError):
    """The caller's request is wrong; nothing was (or will be) retried or sent elsewhere.

    `field` is the path of the offending input (``messages[1].tool_call_id``,
    ``temperature``), empty when the provider refused without saying which.

    >>> InvalidRequest("must be >= 1", field="max_tokens").field
    'max_tokens'
    """

    kind = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        field: str = "",
        deployment: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.field = field
        text = f"{field}: {message}" if field else message
        super().__init__(text, deployment=deployment, status_code=status_code, retry_after=retry_after)


HealthEffect = Literal["fault", "neutral", "cool_retry_after", "cool_long"]


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """What one kind of failed attempt means, for every layer that acts on it.

    - `retryable`: the policy's `retry.on` may name it (try the same deployment again);
    - `default_retry`: in `retry.on` when the policy does not say;
    - `falls_back`: after it, the next deployment is tried; False fails the request at once;
    - `health`: "fault" counts against the circuit breaker, "neutral" neither hurts nor
      helps, "cool_retry_after" cools the deployment for the provider's Retry-After,
      "cool_long" cools it for the auth cooldown (a misconfigured deployment).
    """

    name: str
    retryable: bool
    default_retry: bool
    falls_back: bool
    health: HealthEffect


#: The one vocabulary of error kinds (`ProviderError.kind`); attempts, health, the
#: breaker and the schema's `retry.on` derive from it.
ERROR_KINDS: dict[str, ErrorKind] = {
    k.name: k
    for k in (
        ErrorKind("rate_limited", retryable=True, default_retry=True, falls_back=True, health="cool_retry_after"),
        ErrorKind("timeout", retryable=True, default_retry=True, falls_back=True, health="fault"),
        ErrorKind("unavailable", retryable=True, default_retry=True, falls_back=True, health="fault"),
        ErrorKind("malformed_response", retryable=True, default_retry=True, falls_back=True, health="fault"),
        ErrorKind("stream_interrupted", retryable=True, default_retry=True, falls_back=True, health="fault"),
        # Another provider's policy may answer; the same one will most likely refuse again.
        ErrorKind("content_filtered", retryable=True, default_retry=False, falls_back=True, health="neutral"),
        ErrorKind("context_window", retryable=False, default_retry=False, falls_back=True, health="neutral"),
        ErrorKind("auth", retryable=False, default_retry=False, falls_back=True, health="cool_long"),
        ErrorKind("not_found", retryable=False, default_retry=False, falls_back=True, health="cool_long"),
        ErrorKind("invalid_request", retryable=False, default_retry=False, falls_back=False, health="neutral"),
        # A timeout while our own event loop lagged (router.loop_lag): not the provider's fault.
        ErrorKind("timeout_starved", retryable=False, default_retry=False, falls_back=True, health="neutral"),
        # The caller went away: says nothing about the deployment.
        ErrorKind("cancelled", retryable=False, default_retry=False, falls_back=False, health="neutral"),
    )
}

#: Kinds a policy's `retry.on` may name, and the default list.
RETRYABLE_KINDS = frozenset(k.name for k in ERROR_KINDS.values() if k.retryable)
DEFAULT_RETRY_ON = frozenset(k.name for k in ERROR_KINDS.values() if k.default_retry)
#: An unknown kind (a new class someone forgot to list) is treated as an outage.
UNKNOWN_KIND = ErrorKind("unknown", retryable=False, default_retry=False, falls_back=True, health="fault")


def error_kind(name: str | None) -> ErrorKind:
    """The table row for `name`; unknown names count as faults that fall back."""
    return ERROR_KINDS.get(name or "", UNKNOWN_KIND)


#: Names accepted in a policy's `retry.on` list, mapped to the classes they mean.
ERROR_CLASSES: dict[str, type[ProviderError]] = {
    cls.kind: cls
    for cls in (
        RateLimited,
        ProviderTimeout,
        ProviderUnavailable,
        MalformedResponse,
        StreamInterrupted,
        ContentFiltered,
        ContextWindowExceeded,
        AuthenticationFailed,
        DeploymentNotFound,
        InvalidRequest,
    )
}


def error_type(exc: BaseException) -> str:
    """The `error.type` of a failure: a provider error's kind, "cancelled" for a caller that went
    away (task cancelled or a stream closed early), else the exception's class name."""
    if isinstance(exc, ProviderError):
        return exc.kind
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return type(exc).__name__
