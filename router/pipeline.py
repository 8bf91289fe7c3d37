"""The one request path: decide, reserve, attempt loop, settle, finish the trace.

`chat`, `stream` and `embed` differ only in the call each attempt makes and
in what an answer is made of; everything else (the decision, the quota
reservation and its settlement, attempt numbering and spans, usage estimates,
cost) is written once here, in `_Exchange`. This is the seam where a cache,
hedging or replay plug in.

```
Router.chat/stream/embed -> Pipeline -> decide -> reserve -> AttemptLoop -> Backend
                                     <- settle (actual or estimated usage) <- finish trace
```
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from router import response_cache as rc
from router.attempts import AttemptCall, AttemptLoop, Success
from router.backend import DEFAULT_BACKEND, Backend, ChatResult
from router.cache import ResponseCache, is_deterministic
from router.context import RequestContext
from router.decision_log import DecisionLog, record_for
from router.errors import (
    AllAttemptsFailed,
    DeadlineExceeded,
    NoRouteAvailable,
    QuotaExceeded,
    RouterError,
    TenantNotAllowed,
    error_type,
)
from router.health import HealthTracker
from router.loop_lag import LoopLag
from router.models import (
    Attempt,
    EmbeddingResponse,
    LLMResponse,
    StreamChunk,
    Usage,
    new_response_id,
)
from router.policy.reload import PolicySource
from router.quality import QualityTracker
from router.quota import QuotaManager, Reservation
from router.request import ChatRequest
from router.routing import Decision, decide
from router.schema import Deployment
from router.settings import RouterSettings
from router.strategies import HealthView
from router.strategies_learned import HealthWithQuality
from router.streaming import stream_answer
from router.tokens import count_text, count_tokens, estimate_usage
from router.tracing import AttemptTrace, RequestTrace, Telemetry

T = TypeVar("T")

#: Messages for one attempt at one deployment (e.g. a conversation fitted to its window).
MessagesFor = Callable[[Deployment, int], Sequence[Mapping[str, Any]]]


class Pipeline:
    """Runs requests; holds the collaborators, no per-request state."""

    def __init__(
        self,
        source: PolicySource,
        *,
        settings: RouterSettings,
        health: HealthTracker,
        quota: QuotaManager | None,
        telemetry: Telemetry,
        backend: Backend = DEFAULT_BACKEND,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cache: ResponseCache | None = None,
        quality: QualityTracker | None = None,
        decision_log: DecisionLog | None = None,
        lag: LoopLag | None = None,
    ) -> None:
        self.source = source
        self.cache = cache
        self.quality = quality
        self.decision_log = decision_log
        self._background: set[asyncio.Task[Any]] = set()
        #: What strategies read: health, and quality feedback when a tracker is kept.
        self._view: HealthView = health if quality is None else HealthWithQuality(health, quality)
        self.settings = settings
        self.health = health
        self.quota = quota
        self.telemetry = telemetry
        self.backend = backend
        self.clock = clock
        self.rng = rng
        self.loop = AttemptLoop(health=health, clock=clock, rng=rng, sleep=sleep, lag=lag)

    def decide(self, ctx: RequestContext) -> Decision:
        """Pick rule, route and attempt order for `ctx` from the serving snapshot."""
        return decide(self.source.current, ctx, self._view, self.rng)

    def remember(self, response_id: str, d: Deployment, decision: Decision) -> None:
        """Register a response id for `feedback()`; off the caller's path when the store is shared."""
        if self.quality is None:
            return
        ctx = decision.ctx
        # A tenant's key copy (NAME@TENANT) is the shared model: its feedback teaches the shared ranking.
        view = decision.snapshot.tenant_views.get(ctx.tenant) if "@" in d.name else None
        name = view.replaces.get(d.name, d.name) if view is not None and view.source(d.name) == "tenant key" else d.name
        if self.quality.local:
            self.quality.register_now(response_id, deployment=name, route=decision.route.name,
                                      task=ctx.metadata.get("task"), tenant=ctx.tenant)
            return
        work = self.quality.register(response_id, deployment=name, route=decision.route.name,
                                     task=ctx.metadata.get("task"), tenant=ctx.tenant)
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def context(
        self, request: ChatRequest | None, *, operation: str = "chat", tenant: str | None, route: str | None,
        tags: Sequence[str], metadata: Mapping[str, str] | None, model: str | None, prompt_tokens: int,
    ) -> RequestContext:
        """The routing view of a request."""
        return RequestContext(
            operation="embeddings" if operation == "embeddings" else "chat",
            tenant=tenant or self.settings.default_tenant, tags=frozenset(tags), metadata=dict(metadata or {}),
            model_alias=model, route=route, prompt_tokens=prompt_tokens,
            max_tokens=request.max_output_tokens if request is not None else 0,
            stream=request.stream if request is not None else False,
            capabilities=request.needs if request is not None else frozenset(),
        )

    # -- chat ------------------------------------------------------------------------------

    async def chat(
        self, request: ChatRequest, ctx: RequestContext, *, messages_for: MessagesFor | None = None,
        cache: str = "default", prompt: tuple[str, str] | None = None,
    ) -> LLMResponse:
        """One non-streamed chat completion: from the cache when the route's `cache:` allows,
        else through the attempt loop (identical requests in flight share one call).
        `prompt` is the template's (name, version), recorded on the request span."""
        rc.check_mode(cache)
        ex = await self._open(ctx)
        if prompt is not None:
            ex.trace.prompt(*prompt)
        params = ex.params(request)
        plan = self._cache_plan(ex, cache, request, params)
        if plan is None or self.cache is None:
            return await self._chat_once(ex, request, params, messages_for)
        started = self.clock()
        # memory:// keeps the answer itself (size); a store that keeps bytes (Redis) gets encode_chat's.
        try:
            lookup = await self.cache.get_or_compute(
                rc.chat_key(plan, request, params), partial(self._chat_once, ex, request, params, messages_for),
                encode=rc.encode_chat, decode=rc.decode_chat, size=rc.chat_size, route=plan.route,
                ttl_s=plan.ttl_s, read=plan.read, write=plan.write, lock_ttl_s=plan.lock_ttl_s)
        except BaseException as exc:
            ex.abandon(exc)
            raise
        hit = lookup.hit
        ex.trace.cache(hit=hit)
        if not hit:
            return lookup.value
        ex.served_from_cache(lookup.value.usage, lookup.value.deployment)
        # A fresh id: feedback on one caller's copy must not use up another's.
        return lookup.value.model_copy(update={
            "id": new_response_id(), "cached": True, "cost_usd": 0.0, "attempts": (),
            "latency_ms": (self.clock() - started) * 1000})

    async def _chat_once(
        self, ex: _Exchange, request: ChatRequest, params: dict[str, Any], messages_for: MessagesFor | None
    ) -> LLMResponse:
        ctx = ex.decision.ctx
        out_budget = ex.output_budget()

        async def call(d: Deployment, timeout: float) -> tuple[ChatResult, Usage, float]:
            msgs = request.messages if messages_for is None else messages_for(d, out_budget)
            at = ex.start_attempt(d, params, msgs)
            try:
                r = await self.backend.chat(d, msgs, params, timeout_s=timeout)
            except BaseException as exc:
                at.fail(exc, error_type=error_type(exc))
                raise
            usage = r.usage or estimate_usage(ctx.prompt_tokens, r.message)
            cost = ex.snapshot.prices.usage_cost(d, usage)
            reasons = [c.finish_reason or "stop" for c in r.choices] if r.choices else [r.finish_reason or "stop"]
            at.end(response_model=r.model, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                   finish_reasons=reasons, cost_usd=cost,
                   output_text=r.message.content or "")
            return r, usage, cost

        ok = await ex.run(call)
        result, usage, cost = ok.value
        ex.settle(ok.deployment, usage, cost)
        response_id = result.id or new_response_id()
        ex.succeed(ok.deployment, ok.attempts, usage, cost, response_id=response_id)
        return LLMResponse(
            id=response_id, text=result.message.content or "", message=result.message,
            choices=result.choices, deployment=ok.deployment.name,
            model=result.model, provider=ok.deployment.provider, route=ex.decision.route.name, usage=usage,
            cost_usd=cost, latency_ms=(self.clock() - ok.started) * 1000, finish_reason=result.finish_reason,
            attempts=ok.attempts,
        )

    # -- stream ----------------------------------------------------------------------------

    async def stream(
        self, request: ChatRequest, ctx: RequestContext, *, messages_for: MessagesFor | None = None,
        cache: str = "default",
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream deltas. Retries and fallbacks happen before the first piece; a stream
        cut after it raises `StreamInterrupted`. The last chunk has `done=True`.

        A stream the route's cache holds replays with the same chunks; a complete
        stream is stored once it ends (streams are not single-flighted)."""
        rc.check_mode(cache)
        ex = await self._open(ctx)
        params = ex.params(request)
        plan = self._cache_plan(ex, cache, request, params)
        if plan is None or self.cache is None:
            async with contextlib.aclosing(self._stream_once(ex, request, params, messages_for)) as answer:
                async for chunk in answer:
                    yield chunk
            return
        key = rc.chat_key(plan, request, params)
        started = self.clock()
        stored = await self.cache.peek(key, decode=rc.decode_stream, route=plan.route) if plan.read else None
        ex.trace.cache(hit=stored is not None)
        if stored is not None:
            ex.served_from_cache(stored[-1].usage, stored[-1].deployment)
            for chunk in stored[:-1]:
                yield chunk.model_copy(update={"cached": True})
            yield stored[-1].model_copy(update={
                "id": new_response_id(), "cached": True, "cost_usd": 0.0, "attempts": (),
                "latency_ms": (self.clock() - started) * 1000})
            return
        chunks: list[StreamChunk] = []
        async with contextlib.aclosing(self._stream_once(ex, request, params, messages_for)) as stream:
            async for chunk in stream:
                chunks.append(chunk)
                # Stored before the last chunk is handed over: a caller may stop reading at `done`.
                if chunk.done and plan.write and (payload := rc.encode_stream(chunks)) is not None:
                    await self.cache.put(key, payload, route=plan.route, ttl_s=plan.ttl_s)
                yield chunk

    async def _stream_once(
        self, ex: _Exchange, request: ChatRequest, params: dict[str, Any], messages_for: MessagesFor | None
    ) -> AsyncGenerator[StreamChunk, None]:
        async with contextlib.aclosing(stream_answer(self, ex, request, params, messages_for)) as chunks:
            async for chunk in chunks:
                yield chunk

    # -- embeddings ------------------------------------------------------------------------

    async def embed(self, inputs: Sequence[str], ctx: RequestContext, *, cache: str = "default") -> EmbeddingResponse:
        """Embed `inputs`; one vector per input, in order. With the route's cache on, each
        text is looked up alone and only the texts not found are sent."""
        rc.check_mode(cache)
        ex = await self._open(ctx)
        ex.inputs = len(inputs)
        plan = self._cache_plan(ex, cache, None, {})
        if plan is None or self.cache is None:
            return await self._embed_once(ex, inputs)
        started = self.clock()
        sent: list[EmbeddingResponse] = []

        async def compute_missing(indices: Sequence[int]) -> list[list[float]]:
            # the texts found in the cache, counted too for a tenant whose budgets count hits
            also = (sum(count_text(inputs[i]) for i in set(range(len(inputs))).difference(indices))
                    if ex.hits_count_toward_budgets else 0)
            response = await self._embed_once(ex, [inputs[i] for i in indices], also_tokens=also)
            sent.append(response)
            return response.embeddings

        try:
            lookups = await self.cache.get_or_compute_batch(
                rc.embedding_keys(plan, inputs), compute_missing, encode=rc.encode_vector, decode=rc.decode_vector,
                route=plan.route, ttl_s=plan.ttl_s, read=plan.read, write=plan.write)
        except BaseException as exc:
            ex.abandon(exc)
            raise
        vectors = [lk.value for lk in lookups]
        ex.trace.cache(hit=not sent)
        if sent:
            return sent[0].model_copy(update={"embeddings": vectors})
        first = ex.decision.plan.order[0]
        found = sum(map(count_text, inputs)) if ex.hits_count_toward_budgets else 0  # no usage is stored per text
        ex.served_from_cache(Usage(input_tokens=found, estimated=True), first.name)
        return EmbeddingResponse(embeddings=vectors, deployment=first.name, model=first.model,
                                 provider=first.provider, route=ex.decision.route.name, cached=True,
                                 latency_ms=(self.clock() - started) * 1000)

    async def _embed_once(self, ex: _Exchange, inputs: Sequence[str], *, also_tokens: int = 0) -> EmbeddingResponse:
        """Embed `inputs` through the attempt loop; the settle also counts `also_tokens` (texts of
        the same request found in the cache, for a tenant whose budgets count hits) at the same price."""
        ctx = ex.decision.ctx
        tokens = ctx.prompt_tokens if len(inputs) == ex.inputs else count_tokens(
            [{"role": "user", "content": t} for t in inputs])

        async def call(d: Deployment, timeout: float) -> tuple[list[list[float]], str, Usage, float]:
            at = ex.start_attempt(d, {}, None)
            try:
                r = await self.backend.embed(d, inputs, timeout_s=timeout)
            except BaseException as exc:
                at.fail(exc, error_type=error_type(exc))
                raise
            usage = r.usage or Usage(input_tokens=tokens, estimated=True)
            cost = ex.snapshot.prices.usage_cost(d, usage)
            at.end(response_model=r.model, input_tokens=usage.input_tokens, output_tokens=0, cost_usd=cost)
            return r.vectors, r.model, usage, cost

        ok = await ex.run(call)
        vectors, model, usage, cost = ok.value
        if also_tokens:
            found = Usage(input_tokens=also_tokens, estimated=True)
            ex.settle(ok.deployment, usage.model_copy(update={"input_tokens": usage.input_tokens + also_tokens}),
                      cost + ex.snapshot.prices.usage_cost(ok.deployment, found))
        else:
            ex.settle(ok.deployment, usage, cost)
        ex.succeed(ok.deployment, ok.attempts, usage, cost)
        return EmbeddingResponse(
            embeddings=vectors, deployment=ok.deployment.name, model=model, provider=ok.deployment.provider,
            route=ex.decision.route.name, usage=usage, cost_usd=cost,
            latency_ms=(self.clock() - ok.started) * 1000, attempts=ok.attempts,
        )

    # -- shared ----------------------------------------------------------------------------

    def log(self, ctx: RequestContext, decision: Decision | None, arrived: float, **outcome: Any) -> None:
        """Append the request's record to the decision log, if one is kept (never blocks)."""
        if self.decision_log is not None:
            self.decision_log.write(record_for(
                ctx, time=arrived, decision=decision, allowed_metadata=self.settings.decision_log_metadata_keys,
                capabilities=ctx.capabilities, **outcome))

    def _cache_plan(
        self, ex: _Exchange, mode: str, request: ChatRequest | None, params: Mapping[str, Any]
    ) -> rc.CachePlan | None:
        if self.cache is None or ex.decision.route.spec.cache.mode == "off":
            return None
        deterministic = request is None or is_deterministic(params)  # embeddings always are
        # n only matters to a request that is not deterministic
        return rc.plan_for(ex.decision.route, ex.decision.ctx.tenant, mode, deterministic=deterministic,
                           n=1 if deterministic or request is None else request.n)

    async def _open(self, ctx: RequestContext) -> _Exchange:
        """Decide, open the trace and reserve: everything before the first attempt."""
        try:
            decision = self.decide(ctx)
        except RouterError as exc:
            self.log(ctx, None, time.time(), error=_log_kind(exc))
            raise
        ctx = decision.ctx
        trace = self.telemetry.start_request(operation=ctx.operation, tenant=ctx.tenant, route=decision.route.name)
        trace.decision(rule=decision.rule.label if decision.rule else None, route=decision.route.name,
                       strategy=decision.route.strategy.name,
                       candidates=_first_names(decision.plan.order) if trace.recording else ())
        ex = _Exchange(self, decision, trace)
        if self.quota is not None and decision.snapshot.tenants is not None:
            await ex.reserve()
        else:
            trace.quota(decision="skipped")
        return ex


@dataclass(slots=True)
class _Exchange:
    """One request in flight: its decision, trace, reservation and attempt count."""

    pipeline: Pipeline
    decision: Decision
    trace: RequestTrace
    reservation: Reservation | None = None
    attempts: int = 0
    settled: bool = field(default=False)
    #: How many embedding inputs `decision.ctx.prompt_tokens` counts.
    inputs: int = 0
    #: Unix seconds when the request arrived (for the decision log).
    arrived: float = field(default_factory=time.time)

    def succeed(self, d: Deployment, attempts: tuple[Attempt, ...], usage: Usage, cost: float, *,
                      response_id: str | None = None) -> None:
        """The request is answered: end its trace, log it, remember its id for feedback."""
        fell_back = bool(attempts) and attempts[0].deployment != d.name
        self.trace.end(deployment=d.name, attempts=len(attempts), fallback_used=fell_back, cost_usd=cost,
                       input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
        p = self.pipeline
        if p.decision_log is not None:
            p.log(self.decision.ctx, self.decision, self.arrived, attempts=attempts, deployment=d.name,
                  input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_usd=cost,
                  latency_ms=(time.time() - self.arrived) * 1000)
        if response_id is not None and p.quality is not None:
            p.remember(response_id, d, self.decision)

    def fail(self, exc: BaseException, attempts: Sequence[Attempt] = ()) -> None:
        """The request failed: end its trace with `error.type` and log the error's kind (never its text)."""
        self.trace.fail(exc, error_type=error_type(exc))
        if self.pipeline.decision_log is None:
            return
        self.pipeline.log(self.decision.ctx, self.decision, self.arrived,
                          attempts=tuple(getattr(exc, "attempts", attempts)), error=_log_kind(exc),
                          limit=getattr(exc, "limit", None), latency_ms=(time.time() - self.arrived) * 1000)

    @property
    def snapshot(self) -> Any:
        return self.decision.snapshot

    def params(self, request: ChatRequest) -> dict[str, Any]:
        """The caller's parameters, with the route's defaults where the caller set none."""
        params = dict(request.params)
        spec = self.decision.route.spec
        if spec.max_tokens is not None and "max_tokens" not in params and "max_completion_tokens" not in params:
            params["max_tokens"] = spec.max_tokens
        if spec.temperature is not None and "temperature" not in params:
            params["temperature"] = spec.temperature
        return params

    def output_budget(self) -> int:
        """Output tokens the request may use: the caller's or route's max, else none for
        embeddings and the settings' default for chat (what quotas reserve and fits leave room for)."""
        ctx = self.decision.ctx
        if ctx.max_tokens is not None:
            return ctx.max_tokens
        return 0 if ctx.operation == "embeddings" else self.pipeline.settings.default_max_tokens

    def start_attempt(
        self, d: Deployment, params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]] | None
    ) -> AttemptTrace:
        self.attempts += 1
        return self.trace.start_attempt(deployment=d, attempt=self.attempts, request_params=params,
                                        messages=messages)

    async def run(self, call: AttemptCall[T], *, record_success: bool = True) -> Success[T]:
        """The attempt loop; on failure (or cancellation) the reservation is refunded and the trace closed."""
        try:
            return await self.pipeline.loop.run(self.decision.plan, self.decision.ctx, call, self.trace,
                                                record_success=record_success,
                                                admit=self.admit if self.reservation is not None else None)
        except BaseException as exc:
            self.refund()
            self.fail(exc)
            raise

    async def admit(self, d: Deployment, seconds_left: float) -> str | None:
        """Why not to try `d` now, or None: the tenant's budget cannot cover its price. The
        reservation is topped up atomically first, so a fallback never overspends."""
        p, ctx = self.pipeline, self.decision.ctx
        if self.reservation is None or p.quota is None:
            return None
        out = self.output_budget()
        cost = self.decision.snapshot.prices.cost(d, ctx.prompt_tokens, out)
        if not await p.quota.top_up(self.reservation, tokens=ctx.prompt_tokens + out, cost_usd=cost):
            return f"tenant budget cannot cover {d.name}'s price (${cost:.6f})"
        return None

    def abandon(self, exc: BaseException) -> None:
        """A cache lookup (which may have run the attempt loop) failed with `exc`: refund the
        reservation and close the trace."""
        self.refund()
        self.fail(exc)

    @property
    def hits_count_toward_budgets(self) -> bool:
        """Whether the tenant's token and dollar limits count answers served from the cache
        (`budgets_count_cache_hits` in tenants.yaml; off by default)."""
        return self.reservation is not None and self.reservation.limits.budgets_count_cache_hits

    def served_from_cache(self, usage: Usage | None, deployment: str) -> None:
        """A hit counts against request rates, and against token and dollar budgets only when the
        tenant says so (`hits_count_toward_budgets`): then `usage`, the replayed answer's, priced at
        `deployment`, the one that made it (the route's first candidate if it is gone)."""
        p, res = self.pipeline, self.reservation
        if res is not None and p.quota is not None and not self.settled:
            self.settled = True
            tokens, cost = 0, 0.0
            if usage is not None and self.hits_count_toward_budgets:
                d = self.snapshot.deployments.get(deployment) or self.decision.plan.order[0]
                tokens, cost = usage.total_tokens, self.snapshot.prices.usage_cost(d, usage)
            p.quota.settle_soon(res, tokens=tokens, cost_usd=cost)
        self.trace.end(deployment="", attempts=0, fallback_used=False)
        p.log(self.decision.ctx, self.decision, self.arrived, cached=True,
              latency_ms=(time.time() - self.arrived) * 1000)

    async def reserve(self) -> None:
        p, ctx = self.pipeline, self.decision.ctx
        tenants = self.decision.snapshot.tenants
        if p.quota is None or tenants is None:
            self.trace.quota(decision="skipped")
            return
        first = self.decision.plan.order[0]
        out = self.output_budget()
        try:
            self.reservation = await p.quota.reserve(
                tenants, tenant=ctx.tenant, route=self.decision.route.name, deployment=first.name,
                est_tokens=ctx.prompt_tokens + out,
                est_cost_usd=self.decision.snapshot.prices.cost(first, ctx.prompt_tokens, out),
            )
        except RouterError as exc:
            self.trace.quota(decision="rejected", limit=getattr(exc, "limit", None))
            self.fail(exc)
            raise
        self.trace.quota(decision="reserved")

    def settle(self, d: Deployment, usage: Usage, cost: float) -> None:
        """Replace the estimate with what the call used, off the caller's path (a background
        task delivers it; the reserve was the request's one quota round trip)."""
        p = self.pipeline
        if self.reservation is not None and p.quota is not None and not self.settled:
            self.settled = True
            p.quota.settle_soon(self.reservation, tokens=usage.total_tokens, cost_usd=cost, deployment=d.name)

    def refund(self) -> None:
        p = self.pipeline
        if self.reservation is not None and p.quota is not None and not self.settled:
            self.settled = True
            p.quota.refund_soon(self.reservation)






#: How many candidates a span names: a route of 10,000 deployments must not cost a 10,000-name list.
SPAN_CANDIDATES = 8


def _first_names(order: Sequence[Deployment]) -> list[str]:
    return [order[i].name for i in range(min(len(order), SPAN_CANDIDATES))]


def _log_kind(exc: BaseException) -> str:
    """The error's kind as the decision log and replay name it."""
    if isinstance(exc, AllAttemptsFailed):
        return "all_failed"
    if isinstance(exc, DeadlineExceeded):
        return "deadline"
    if isinstance(exc, QuotaExceeded):
        return "quota_exceeded"
    if isinstance(exc, TenantNotAllowed):
        return "tenant_not_allowed"
    if isinstance(exc, NoRouteAvailable):
        return "no_route"
    return error_type(exc)




def prompt_tokens(request: ChatRequest) -> int:
    """Tokens the request's prompt takes (messages and tool definitions)."""
    return count_tokens(request.messages, request.params.get("tools"))
