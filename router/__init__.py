"""Routing policies for LLM calls on top of LiteLLM.

>>> from router import create_default_router, LLMMessage
>>> router = await create_default_router()  # doctest: +SKIP
>>> r = await router.complete("What is 2+2?")  # doctest: +SKIP
"""

import logging

from router.client import Router
from router.conversation import Conversation
from router.errors import (
    AllAttemptsFailed,
    AuthenticationFailed,
    ConfigError,
    ConfigIssue,
    ContentFiltered,
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
from router.models import (
    AssistantMessage,
    Attempt,
    Choice,
    EmbeddingResponse,
    FunctionCall,
    LLMMessage,
    LLMResponse,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from router.policy.reload import ReloadResult
from router.quality import FeedbackNotFound
from router.request import ChatRequest, build_chat_request
from router.routing import Decision
from router.settings import RouterSettings
from router.sync import SyncRouter, create_sync_router
from router.templates import PromptRenderError

# A library logs; the application decides where logs go (Python's logging HOWTO for libraries).
logging.getLogger("router").addHandler(logging.NullHandler())

__all__ = [
    "AllAttemptsFailed",
    "AssistantMessage",
    "Attempt",
    "AuthenticationFailed",
    "ChatRequest",
    "Choice",
    "ConfigError",
    "ConfigIssue",
    "ContentFiltered",
    "ContextWindowExceeded",
    "Conversation",
    "DeadlineExceeded",
    "Decision",
    "DeploymentNotFound",
    "EmbeddingResponse",
    "FeedbackNotFound",
    "FunctionCall",
    "InvalidRequest",
    "LLMMessage",
    "LLMResponse",
    "MalformedResponse",
    "NoRouteAvailable",
    "PromptRenderError",
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
    "SyncRouter",
    "TenantNotAllowed",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "build_chat_request",
    "create_default_router",
    "create_sync_router",
]
