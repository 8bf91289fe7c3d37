"""The async `Router`: thin adapters over the one request path (`router.pipeline`).

>>> router = await create_default_router()  # doctest: +SKIP
>>> r = await router.chat("What is 2+2?", temperature=0)  # doctest: +SKIP
>>> r.text, r.deployment, r.cost_usd  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from router.backend import DEFAULT_BACKEND, Backend
from router.cache import ResponseCache
from router.context import RequestContext
from router.conversation import Conversation
from router.decision_log import DecisionLog
from router.errors import InvalidRequest, RouterError, StreamInterrupted
from router.health import DeploymentHealth, HealthTracker
from router.history import HistoryStore
from router.history.fit import fit_messages
from router.loop_lag import LoopLag
from router.models import EmbeddingResponse, LLMMessage, LLMResponse, StreamChunk
from router.pipeline import MessagesFor, Pipeline, prompt_tokens
from router.policy.reload import PolicySource, ReloadResult
from router.quality import QualityTracker
from router.quota import QuotaManager, TenantUsage
from router.request import ChatRequest, MessagesIn, build_chat_request
from router.response_cache import CacheMode
from router.routing import Decision
from router.schema import Deployment
from router.settings import RouterSettings
from router.templates import RenderedPrompt, TemplateSet, TemplateSource
from router.tokens import count_tokens
from router.tracing import Telemetry


class Router:
    """Routes chat, streaming and embedding calls by the policies in its snapshot.

    Built by `create_default_router()`; use it as an async context manager or
    call `aclose()` to release what it opened. `backend` is what makes each
    call (default: LiteLLM); tests may pass their own.
    """

    def __init__(
        self,
        source: PolicySource,
        *,
        settings: RouterSettings | None = None,
        health: HealthTracker | None = None,
        quota: QuotaManager | None = None,
        telemetry: Telemetry | None = None,
        backend: Backend = DEFAULT_BACKEND,
        cache: ResponseCache | None = None,
        history: HistoryStore | None = None,
        templates: TemplateSource | None = None,
        quality: QualityTracker | None = None,
        decision_log: DecisionLog | None = None,
        lag: LoopLag | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_close: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.source = source
        self.settings = settings or RouterSettings()
        self.tracker = health or HealthTracker(clock=clock)
        self.quota = quota
        self.telemetry = telemetry or Telemetry()
        self.clock = clock
        self.rng = rng or random.Random(self.settings.seed)
        self.pipeline = Pipeline(source, settings=self.settings, health=self.tracker, quota=quota,
                                 telemetry=self.telemetry, backend=backend, clock=clock, rng=self.rng, sleep=sleep,
                                 cache=cache, quality=quality, decision_log=decision_log,
                                 lag=lag)
        self.cache = cache
        self.quality = quality
        self.decision_log = decision_log
        self.history = history
        self.templates = templates
        self._on_close = list(on_close)
        self._closed = False

    # -- public API -----------------------------------------------------------------------

    async def chat(
        self,
        messages: MessagesIn | None = None,
        *,
        tenant: str | None = None,
        route: str | None = None,
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        model: str | None = None,
        cache: CacheMode = "default",
        template: str | None = None,
        variables: Mapping[str, object] | None = None,
        template_version: str | None = None,
        fit_history: bool = False,
        **params: Any,
    ) -> LLMResponse:
        """Send a chat request through the route its rules pick.

        `messages` is a string (one user message) or OpenAI-shaped messages
        (dicts or `LLMMessage`); `params` are the OpenAI chat parameters
        (`tools`, `tool_choice`, `response_format`, `temperature`, `max_tokens`,
        `seed`, `stop`, `n`, `extra_body`, ...). `tenant`, `route`, `tags`,
        `metadata` and `model` (an alias) steer routing. `cache` is "default",
        "no-cache" (skip the lookup) or "no-store" (do not keep the answer); it
        matters only on routes whose `cache:` is on. `template` renders a prompt
        template from `policies/prompts/` with `variables` (its messages come
        first, then `messages`; its defaults apply where the call sets none).
        `fit_history` trims the oldest turns to each attempted deployment's
        context window (what `conversation()` uses). Raises
        `InvalidRequest` naming the field before any call for bad input,
        `QuotaExceeded`, `NoRouteAvailable`, `AllAttemptsFailed` or
        `DeadlineExceeded`.

        >>> r = await router.chat("Weather in Paris?", tools=[WEATHER_TOOL])  # doctest: +SKIP
        >>> r.message.tool_calls[0].function.name  # doctest: +SKIP
        'get_weather'
        """
        prompt = self._prompt(template, variables, template_version)
        if prompt is not None:
            messages, params = _with_prompt(prompt, messages, params)
            route = route if route is not None or model is not None else prompt.route
            model = model if model is not None else prompt.model
        request = build_chat_request(messages, params)
        ctx = self.pipeline.context(request, tenant=tenant, route=route, tags=tags, metadata=metadata,
                                    model=model, prompt_tokens=_routing_tokens(request, fit_history))
        return await self.pipeline.chat(request, ctx, cache=cache, messages_for=_fitter(request, fit_history),
                                        prompt=(prompt.name, prompt.version) if prompt is not None else None)

    async def complete(self, prompt: str, *, system: str | None = None, **kwargs: Any) -> LLMResponse:
        """One prompt in, one answer out: `chat` with a user message (and an optional system one)."""
        if not isinstance(prompt, str):
            raise InvalidRequest(f"expected a string, got {type(prompt).__name__}", field="prompt")
        messages = [LLMMessage(role="system", content=system)] if system else []
        messages.append(LLMMessage(role="user", content=prompt))
        return await self.chat(messages, **kwargs)

    async def stream(
        self,
        messages: MessagesIn,
        *,
        tenant: str | None = None,
        route: str | None = None,
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        model: str | None = None,
        cache: CacheMode = "default",
        **params: Any,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream the answer: text `delta`s and `tool_calls` fragments; the last chunk has
        `done=True` and the assembled `message`, usage, cost and route. Retries and
        fallbacks happen before the first chunk; a stream cut after it raises
        `StreamInterrupted`. Takes what `chat` takes.

        >>> async for chunk in router.stream("Tell me a story"):  # doctest: +SKIP
        ...     print(chunk.delta, end="")
        """
        request = build_chat_request(messages, params, stream=True)
        ctx = self.pipeline.context(request, tenant=tenant, route=route, tags=tags, metadata=metadata,
                                    model=model, prompt_tokens=prompt_tokens(request))
        # aclosing: a caller that stops early closes the inner streams now, so the quota
        # settles and the spans end at once, not when the garbage collector gets to them.
        async with contextlib.aclosing(self.pipeline.stream(request, ctx, cache=cache)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def embed(
        self,
        texts: str | Sequence[str],
        *,
        tenant: str | None = None,
        route: str | None = None,
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        model: str | None = None,
        cache: CacheMode = "default",
    ) -> EmbeddingResponse:
        """Embed one text or many; `embeddings[i]` belongs to input i.

        >>> (await router.embed("Some text")).embeddings[0][:3]  # doctest: +SKIP
        """
        inputs = _texts(texts)
        tokens = count_tokens([{"role": "user", "content": t} for t in inputs])
        ctx = self.pipeline.context(None, operation="embeddings", tenant=tenant, route=route, tags=tags,
                                    metadata=metadata, model=model, prompt_tokens=tokens)
        return await self.pipeline.embed(inputs, ctx, cache=cache)

    async def feedback(self, response_id: str, score: float, *, task: str | None = None,
                       tenant: str | None = None) -> None:
        """Score an answer this router (or a replica sharing the quality store) returned:
        `score` in 0..1 for the deployment that answered, per route and optional `task`.
        `best_quality` and `thompson` routes learn from it.

        Raises `InvalidRequest` (naming `score`) for a score outside 0..1, and
        `FeedbackNotFound` for an unknown, expired or already-scored id.

        >>> r = await router.chat("Summarise this ...")  # doctest: +SKIP
        >>> await router.feedback(r.id, 0.9, task="summary")  # doctest: +SKIP
        """
        if self.quality is None:
            raise RouterError("this router has no quality store")
        await self.quality.feedback(response_id, score, task, tenant=tenant)

    def conversation(
        self, *, tenant: str | None = None, id: str | None = None,
        system: str | Sequence[Mapping[str, Any]] | None = None, **params: Any,
    ) -> Conversation[LLMResponse]:
        """A conversation whose history the router keeps (in `history_store_url`) and fits to
        each attempted deployment's context window. `id` resumes one; `params` are
        defaults for every turn (`tools`, `route`, `temperature`, ...).

        >>> conv = router.conversation(tenant="acme")  # doctest: +SKIP
        >>> (await conv.chat("Hi, I am Ada.")).text  # doctest: +SKIP
        """
        if self.history is None:
            raise RouterError("this router has no history store")
        return Conversation(self.chat, self.history, tenant=tenant or self.settings.default_tenant, id=id,
                            system=system, params=params)

    @property
    def prompts(self) -> TemplateSet:
        """The serving prompt templates (`policies/prompts/*.yaml`)."""
        if self.templates is None:
            raise RouterError("this router has no prompt templates")
        return self.templates.current

    def _prompt(self, name: str | None, variables: Mapping[str, object] | None,
                version: str | None) -> RenderedPrompt | None:
        if name is None:
            if variables is not None:
                raise InvalidRequest("variables need a template", field="variables")
            return None
        return self.prompts.render(name, variables or {}, version=version)

    def decide(self, ctx: RequestContext) -> Decision:
        """Pick rule, route and attempt order for `ctx` from the serving snapshot."""
        return self.pipeline.decide(ctx)

    async def reload(self) -> ReloadResult:
        """Re-read the policy files and prompt templates off the event loop, once the files have
        settled; an invalid edit keeps what serves (`deferred=True` while files are still written)."""
        if self.templates is not None:
            await asyncio.to_thread(self.templates.reload)
        elif (self.settings.policy_dir / "prompts").is_dir():  # created after the router started
            self.templates = await asyncio.to_thread(TemplateSource, self.settings.policy_dir / "prompts")
            self.templates.start_watching(self.settings.reload_interval_s)
        return await self.source.areload()

    @property
    def last_reload_error(self) -> RouterError | None:
        """The error of the last rejected reload, or None once a reload succeeds."""
        return self.source.last_error

    def health(self) -> list[DeploymentHealth]:
        """Health and latency of every deployment in the serving snapshot."""
        return self.tracker.snapshot(self.source.current.deployments)

    async def usage(self, tenant: str) -> TenantUsage:
        """Spend, tokens and requests of a tenant per window."""
        if self.quota is None:
            raise RouterError("this router has no quota store")
        return await self.quota.usage(tenant)

    def add_closer(self, close: Callable[[], Awaitable[None]]) -> None:
        """Register something `aclose()` must release (run first-registered first)."""
        self._on_close.append(close)

    async def aclose(self) -> None:
        """Stop the reload watcher, close stores and flush telemetry. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.source.aclose()
        await self.tracker.aclose()
        if self.quota is not None:
            await self.quota.aclose()
        if self.cache is not None:
            await self.cache.store.aclose()
        if self.history is not None:
            await self.history.aclose()
        if self.quality is not None:
            await self.quality.aclose()
        if self.decision_log is not None:
            await self.decision_log.aclose()
        if self.templates is not None:
            await self.templates.aclose()
        for close in self._on_close:
            await close()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        snap = self.source.current
        return f"<Router version={snap.version} routes={sorted(snap.routes)} deployments={len(snap.deployments)}>"


def _with_prompt(
    prompt: RenderedPrompt, messages: MessagesIn | None, params: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """The template's messages then the caller's; the template's defaults under the caller's params."""
    extra: list[Any] = [] if messages is None else (
        [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages))
    # route and model steer routing (chat() applies them), they are not provider parameters
    defaults = {k: v for k, v in prompt.params().items() if k not in ("route", "model")}
    return [*prompt.messages, *extra], {**defaults, **params}


def _routing_tokens(request: ChatRequest, fit_history: bool) -> int:
    """Prompt tokens as routing sees them; for a fitted history, what can never be trimmed."""
    if not fit_history:
        return prompt_tokens(request)
    return count_tokens(fit_messages(request.messages, budget_tokens=0, count=count_tokens),
                        request.params.get("tools"))


def _fitter(request: ChatRequest, fit_history: bool) -> MessagesFor | None:
    if not fit_history:
        return None

    def fit(d: Deployment, output_tokens: int) -> list[dict[str, object]]:
        return fit_messages(request.messages, budget_tokens=d.context_window - output_tokens, count=count_tokens)

    return fit


def _texts(texts: object) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or not texts:
        raise InvalidRequest("expected a string or a non-empty list of strings", field="texts")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t:
            raise InvalidRequest("expected a non-empty string", field=f"texts[{i}]")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest("contains a lone surrogate; text must be valid Unicode", field=f"texts[{i}]") from None
        out.append(t)
    return out


__all__ = ["Decision", "Router", "RouterError", "StreamInterrupted"]
