"""Routing policies for LLM calls on top of LiteLLM.

>>> from router import create_default_router, LLMMessage
>>> router = await create_default_router()  # doctest: +SKIP
>>> r = await router.complete("What is 2+2?")  # doctest: +SKIP
"""

import logging

from router.client import Router
from router.errors import (
    AllAttemptsFailed,
    AuthenticationFailed,
    ConfigError,
    ConfigIssue,
    ContextWindowExceeded,
    DeadlineExceeded,
    DeploymentNotFound,
    InvalidRequest,
    MalformedResponse,
    NoRouteAvailable,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    QuotaStoreUnavailable,
    RateLimited,
    RetryableError,
    RouterError,
    StreamInterrupted,
    TenantNotAllowed,
)
from router.factory import create_default_router
from router.models import Attempt, EmbeddingResponse, LLMMessage, LLMResponse, StreamChunk, Usage
from router.policy.reload import ReloadResult
from router.routing import Decision
from router.settings import RouterSettings

# A library logs; the application decides where logs go (Python's logging HOWTO for libraries).
logging.getLogger("router").addHandler(logging.NullHandler())

__all__ = [
    "AllAttemptsFailed",
    "Attempt",
    "AuthenticationFailed",
    "ConfigError",
    "ConfigIssue",
    "ContextWindowExceeded",
    "DeadlineExceeded",
    "Decision",
    "DeploymentNotFound",
    "EmbeddingResponse",
    "InvalidRequest",
    "LLMMessage",
    "LLMResponse",
    "MalformedResponse",
    "NoRouteAvailable",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "QuotaExceeded",
    "QuotaStoreUnavailable",
    "RateLimited",
    "ReloadResult",
    "RetryableError",
    "Router",
    "RouterError",
    "RouterSettings",
    "StreamChunk",
    "StreamInterrupted",
    "TenantNotAllowed",
    "Usage",
    "create_default_router",
]
