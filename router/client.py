"""The async `Router`: wires rules, quotas, strategies, the attempt loop and the backend.

>>> router = await create_default_router()  # doctest: +SKIP
>>> r = await router.complete("What is 2+2?")  # doctest: +SKIP
>>> r.text, r.deployment, r.cost_usd  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from router import backend
from router.attempts import AttemptLoop, Plan, order_for
from router.context import Operation, RequestContext
from router.errors import NoRouteAvailable, ProviderError, RouterError, StreamInterrupted
from router.health import AttemptResult, DeploymentHealth, HealthTracker
from router.models import EmbeddingResponse, LLMMessage, LLMResponse, StreamChunk, Usage
from router.policy.reload import PolicySource, ReloadResult
from router.policy.schema import Deployment
from router.policy.snapshot import CompiledRoute, Snapshot, SourcedRule
from router.quota import QuotaManager, Reservation, TenantUsage
from router.settings import RouterSettings
from router.tracing import AttemptTrace, RequestTrace, Telemetry

Messages = Sequence[LLMMessage] | Sequence[Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes: the rule that matched, the route, the order to try."""

    snapshot: Snapshot
    route: CompiledRoute
    rule: SourcedRule | None
    plan: Plan
    ctx: RequestContext

    def params(self, max_tokens: int | None, temperature: float | None) -> dict[str, Any]:
        """Call parameters: the caller's, else the route's defaults."""
        params: dict[str, Any] = {}
        max_tokens = max_tokens if max_tokens is not None else self.route.spec.max_tokens
        temperature = temperature if temperature is not None else self.route.spec.temperature
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if temperature is not None:
            params["temperature"] = temperature
        return params


class Router:
    """Routes chat, streaming and embedding calls by the policies in its snapshot.

    Built by `create_default_router()`; use it as an async context manager or
    call `aclose()` to release what it opened.
    """

    def __init__(
        self,
        source: PolicySource,
        *,
        settings: RouterSettings | None = None,
        health: HealthTracker | None = None,
        quota: QuotaManager | None = None,
        telemetry: Telemetry | None = None,
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
        self.loop = AttemptLoop(health=self.tracker, clock=clock, rng=self.rng, sleep=sleep)
        self._on_close = list(on_close)
        self._closed = False

    # -- public API -----------------------------------------------------------------------

    async def chat(
        self,
        messages: Messages,
        *,
        tenant: str | None = None,
        route: str | None = None,
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> LLMResponse:
        """Send a chat conversation through the route its rules pick.

        >>> await router.chat([LLMMessage(role="user", content="Hi")], tenant="acme")  # doctest: +SKIP
        """
        msgs = _as_dicts(messages)
        decision = self.decide(self._context("chat", msgs, tenant, route, tags, metadata, model, max_tokens))
        ctx, params = decision.ctx, decision.params(max_tokens, temperature)
        trace = self._start_trace(ctx, decision)
        reservation = await self._reserve(decision, ctx, trace)
        attempt_no = 0

        async def call(d: Deployment, timeout: float) -> tuple[backend.ChatResult, float]:
            nonlocal attempt_no
            attempt_no += 1
            at = trace.start_attempt(deployment=d, attempt=attempt_no, request_params=params, messages=msgs)
            try:
                r = await backend.chat(d, msgs, timeout_s=timeout, params=params)
            except ProviderError as exc:
                at.fail(exc, error_type=exc.kind)
                raise
            cost = decision.snapshot.prices.cost(d, r.input_tokens, r.output_tokens)
            at.end(response_model=r.model, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                   finish_reasons=[r.finish_reason or "stop"], cost_usd=cost, output_text=r.text)
            return r, cost

        try:
            ok = await self.loop.run(decision.plan, ctx, call, trace)
        except BaseException as exc:
            await self._refund(reservation)
            trace.fail(exc, error_type=_error_type(exc))
            raise
        result, cost = ok.value
        await self._settle(reservation, result.input_tokens + result.output_tokens, cost, ok.deployment)
        response = LLMResponse(
            text=result.text, deployment=ok.deployment.name, model=result.model,
            provider=ok.deployment.provider, route=decision.route.name,
            usage=Usage(input_tokens=result.input_tokens, output_tokens=result.output_tokens),
            cost_usd=cost, latency_ms=(self.clock() - ok.started) * 1000,
            finish_reason=result.finish_reason, attempts=ok.attempts,
        )
        trace.end(deployment=response.deployment, attempts=len(ok.attempts),
                  fallback_used=response.fallback_used, cost_usd=cost,
                  input_tokens=result.input_tokens, output_tokens=result.output_tokens)
        return response

    async def complete(self, prompt: str, *, system: str | None = None, **kwargs: Any) -> LLMResponse:
        """One prompt in, one answer out: `chat` with a user message (and an optional system one)."""
        messages = [LLMMessage(role="system", content=system)] if system else []
        messages.append(LLMMessage(role="user", content=prompt))
        return await self.chat(messages, **kwargs)

    async def stream(
        self,
        messages: Messages | str,
        *,
        tenant: str | None = None,
        route: str | None = None,
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Stream text deltas. Retries and fallbacks happen before the first delta;
        a stream cut after it raises `StreamInterrupted`. The last chunk has `done=True`.

        >>> async for chunk in router.stream("Tell me a story"):  # doctest: +SKIP
        ...     print(chunk.delta, end="")
        """
        msgs = _as_dicts([LLMMessage(role="user", content=messages)] if isinstance(messages, str) else messages)
        decision = self.decide(
            self._context("chat", msgs, tenant, route, tags, metadata, model, max_tokens, stream=True))
        ctx, params = decision.ctx, decision.params(max_tokens, temperature)
        trace = self._start_trace(ctx, decision)
        reservation = await self._reserve(decision, ctx, trace)
        attempt_no = 0

        async def call(d: Deployment, timeout: float) -> _OpenStream:
            nonlocal attempt_no
            attempt_no += 1
            at = trace.start_attempt(deployment=d, attempt=attempt_no, request_params=params, messages=msgs)
            pieces = backend.stream_chat(d, msgs, timeout_s=timeout, params=params)
            t0 = self.clock()
            try:
                first = await anext(pieces, None)
            except ProviderError as exc:
                at.fail(exc, error_type=exc.kind)
                raise
            return _OpenStream(pieces, first, at, t0, self.clock() - t0)

        try:
            ok = await self.loop.run(decision.plan, ctx, call, trace, record_success=False)
        except BaseException as exc:
            await self._refund(reservation)
            trace.fail(exc, error_type=_error_type(exc))
            raise
        d, s = ok.deployment, ok.value
        text: list[str] = []
        in_tok, out_tok, finish, model_name = ctx.prompt_tokens, 0, None, d.model
        failure: BaseException | None = None
        try:
            piece = s.first
            while piece is not None:
                if piece.delta:
                    text.append(piece.delta)
                    yield StreamChunk(delta=piece.delta, deployment=d.name)
                finish = piece.finish_reason or finish
                in_tok = piece.input_tokens if piece.input_tokens is not None else in_tok
                out_tok = piece.output_tokens if piece.output_tokens is not None else out_tok
                model_name = piece.model or model_name
                piece = await anext(s.pieces, None)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            latency = self.clock() - s.started
            out_tok = out_tok or len("".join(text)) // 4
            cost = decision.snapshot.prices.cost(d, in_tok, out_tok)
            kind = failure.kind if isinstance(failure, ProviderError) else None
            self.tracker.record(AttemptResult(
                deployment=d.name, ok=failure is None or kind is None, latency_s=latency,
                error_kind=kind, ttft_s=s.ttft_s, output_tokens=out_tok))
            await self._settle(reservation, in_tok + out_tok, cost, d)
            if failure is None:
                s.trace.end(response_model=model_name, input_tokens=in_tok, output_tokens=out_tok,
                            finish_reasons=[finish or "stop"], cost_usd=cost, ttft_s=s.ttft_s,
                            output_text="".join(text))
                trace.end(deployment=d.name, attempts=len(ok.attempts), cost_usd=cost,
                          fallback_used=ok.attempts[0].deployment != d.name,
                          input_tokens=in_tok, output_tokens=out_tok)
            else:
                s.trace.fail(failure, error_type=_error_type(failure))
                trace.fail(failure, error_type=_error_type(failure))
                with contextlib.suppress(Exception):
                    await s.pieces.aclose()
        yield StreamChunk(deployment=d.name, done=True, finish_reason=finish,
                          usage=Usage(input_tokens=in_tok, output_tokens=out_tok), cost_usd=cost,
                          latency_ms=latency * 1000, attempts=ok.attempts)

    async def embed(
        self,
        texts: str | Sequence[str],
        *,
        tenant: str | None = None,
        route: str | None = None,
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        model: str | None = None,
    ) -> EmbeddingResponse:
        """Embed one text or many; `embeddings[i]` belongs to input i.

        >>> (await router.embed("Some text")).embeddings[0][:3]  # doctest: +SKIP
        """
        inputs = [texts] if isinstance(texts, str) else list(texts)
        msgs = [{"role": "user", "content": t} for t in inputs]
        decision = self.decide(self._context("embeddings", msgs, tenant, route, tags, metadata, model, 0))
        ctx = decision.ctx
        trace = self._start_trace(ctx, decision)
        reservation = await self._reserve(decision, ctx, trace)
        attempt_no = 0

        async def call(d: Deployment, timeout: float) -> tuple[backend.EmbedResult, float]:
            nonlocal attempt_no
            attempt_no += 1
            at = trace.start_attempt(deployment=d, attempt=attempt_no, request_params={}, messages=None)
            try:
                r = await backend.embed(d, inputs, timeout_s=timeout)
            except ProviderError as exc:
                at.fail(exc, error_type=exc.kind)
                raise
            cost = decision.snapshot.prices.cost(d, r.input_tokens, 0)
            at.end(response_model=r.model, input_tokens=r.input_tokens, output_tokens=0,
                   finish_reasons=[], cost_usd=cost)
            return r, cost

        try:
            ok = await self.loop.run(decision.plan, ctx, call, trace)
        except BaseException as exc:
            await self._refund(reservation)
            trace.fail(exc, error_type=_error_type(exc))
            raise
        result, cost = ok.value
        await self._settle(reservation, result.input_tokens, cost, ok.deployment)
        trace.end(deployment=ok.deployment.name, attempts=len(ok.attempts), cost_usd=cost,
                  fallback_used=ok.attempts[0].deployment != ok.deployment.name,
                  input_tokens=result.input_tokens, output_tokens=0)
        return EmbeddingResponse(
            embeddings=result.vectors, deployment=ok.deployment.name, model=result.model,
            provider=ok.deployment.provider, route=decision.route.name,
            usage=Usage(input_tokens=result.input_tokens), cost_usd=cost,
            latency_ms=(self.clock() - ok.started) * 1000, attempts=ok.attempts,
        )

    async def reload(self) -> ReloadResult:
        """Re-read the files now; an invalid edit keeps the current snapshot serving."""
        return self.source.reload()

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
        for close in self._on_close:
            await close()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        snap = self.source.current
        return f"<Router version={snap.version} routes={sorted(snap.routes)} deployments={len(snap.deployments)}>"

    # -- the request path -----------------------------------------------------------------

    def _context(
        self, operation: Operation, msgs: list[dict[str, str]], tenant: str | None, route: str | None,
        tags: Sequence[str], metadata: Mapping[str, str] | None, model: str | None,
        max_tokens: int | None, *, stream: bool = False,
    ) -> RequestContext:
        return RequestContext(
            operation=operation, tenant=tenant or self.settings.default_tenant,
            tags=frozenset(tags), metadata=dict(metadata or {}), model_alias=model, route=route,
            prompt_tokens=backend.count_tokens(msgs), max_tokens=max_tokens, stream=stream,
        )

    def decide(self, ctx: RequestContext) -> Decision:
        """Pick rule, route and attempt order for `ctx` from the serving snapshot."""
        snap = self.source.current
        rule = None
        if ctx.route is not None:
            name = ctx.route
        elif ctx.model_alias is not None and ctx.model_alias in snap.model_aliases:
            name = snap.model_aliases[ctx.model_alias]
        else:
            rule = snap.match_rule(ctx)
            name = rule.rule.route if rule else self._default_route(snap, ctx)
        route = snap.routes.get(name)
        if route is None:
            raise NoRouteAvailable(route=name, reasons={"route": "no such route"})
        spec = route.spec
        if spec.max_tokens is not None and ctx.max_tokens is None:
            ctx = replace(ctx, max_tokens=spec.max_tokens)
        orders = [route.strategy.order(ctx, self.tracker, self.rng)]
        orders.extend(snap.routes[fb].strategy.order(ctx, self.tracker, self.rng)
                      for fb in route.fallback_chain)
        plan = Plan(route=name, order=order_for(orders), retry=spec.retry, deadline_s=spec.deadline_s,
                    attempt_timeout_s=spec.attempt_timeout_s, fit_context=spec.constraints.fit_context)
        if not any(d.context_window >= ctx.needed_context for d in plan.order) and plan.fit_context:
            raise NoRouteAvailable(route=name, reasons={
                d.name: f"context window {d.context_window} < {ctx.needed_context} tokens" for d in plan.order})
        return Decision(snap, route, rule, plan, ctx)

    def _default_route(self, snap: Snapshot, ctx: RequestContext) -> str:
        if ctx.operation == "embeddings" and snap.embedding_route is not None:
            return snap.embedding_route
        if snap.tenants is not None and self.quota is not None:
            limits = snap.tenants.tenants.get(ctx.tenant)
            if limits is not None and limits.default_route is not None:
                return limits.default_route
        return snap.default_route

    def _start_trace(self, ctx: RequestContext, decision: Decision) -> RequestTrace:
        trace = self.telemetry.start_request(operation=ctx.operation, tenant=ctx.tenant, route=decision.route.name)
        trace.decision(rule=decision.rule.label if decision.rule else None, route=decision.route.name,
                       strategy=decision.route.strategy.name, candidates=[d.name for d in decision.plan.order])
        return trace

    async def _reserve(self, decision: Decision, ctx: RequestContext, trace: RequestTrace) -> Reservation | None:
        tenants = decision.snapshot.tenants
        if self.quota is None or tenants is None:
            trace.quota(decision="skipped")
            return None
        first = decision.plan.order[0]
        out = ctx.max_tokens if ctx.max_tokens is not None else (
            0 if ctx.operation == "embeddings" else self.settings.default_max_tokens)
        try:
            reservation = await self.quota.reserve(
                tenants, tenant=ctx.tenant, route=decision.route.name, deployment=first.name,
                est_tokens=ctx.prompt_tokens + out,
                est_cost_usd=decision.snapshot.prices.cost(first, ctx.prompt_tokens, out),
            )
        except RouterError as exc:
            trace.quota(decision="rejected", limit=getattr(exc, "limit", None))
            trace.fail(exc, error_type=_error_type(exc))
            raise
        trace.quota(decision="reserved")
        return reservation

    async def _settle(self, reservation: Reservation | None, tokens: int, cost: float, d: Deployment) -> None:
        if reservation is not None and self.quota is not None:
            await self.quota.settle(reservation, tokens=tokens, cost_usd=cost, deployment=d.name)

    async def _refund(self, reservation: Reservation | None) -> None:
        if reservation is not None and self.quota is not None:
            await self.quota.refund(reservation)


@dataclass(slots=True)
class _OpenStream:
    pieces: AsyncGenerator[backend.StreamPiece, None]
    first: backend.StreamPiece | None
    trace: AttemptTrace
    started: float
    ttft_s: float


def _as_dicts(messages: Messages) -> list[dict[str, str]]:
    return [m.as_dict() if isinstance(m, LLMMessage) else dict(m) for m in messages]


def _error_type(exc: BaseException) -> str:
    return exc.kind if isinstance(exc, ProviderError) else type(exc).__name__


__all__ = ["Decision", "Router", "StreamInterrupted"]
