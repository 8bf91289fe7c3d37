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
from dataclasses import dataclass
from typing import Any, TypeVar

from router import backend
from router.attempts import AttemptCall, AttemptLoop, Success
from router.context import Operation, RequestContext
from router.errors import ProviderError, RouterError, StreamInterrupted
from router.health import AttemptResult, DeploymentHealth, HealthTracker
from router.models import EmbeddingResponse, LLMMessage, LLMResponse, StreamChunk, Usage
from router.policy.reload import PolicySource, ReloadResult
from router.quota import QuotaManager, Reservation, TenantUsage
from router.routing import Decision, decide
from router.schema import Deployment
from router.settings import RouterSettings
from router.tokens import count_tokens
from router.tracing import AttemptTrace, RequestTrace, Telemetry

Messages = Sequence[LLMMessage] | Sequence[Mapping[str, str]]
T = TypeVar("T")


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
        req = await self._begin(self._context("chat", msgs, tenant, route, tags, metadata, model, max_tokens))
        decision, trace = req.decision, req.trace
        params = decision.params(max_tokens, temperature)

        async def call(d: Deployment, timeout: float) -> tuple[backend.ChatResult, float]:
            at = req.start_attempt(d, params, msgs)
            try:
                r = await backend.chat(d, msgs, timeout_s=timeout, params=params)
            except ProviderError as exc:
                at.fail(exc, error_type=exc.kind)
                raise
            cost = decision.snapshot.prices.cost(d, r.input_tokens, r.output_tokens)
            at.end(response_model=r.model, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                   finish_reasons=[r.finish_reason or "stop"], cost_usd=cost, output_text=r.text)
            return r, cost

        ok = await self._run(req, call)
        result, cost = ok.value
        await self._settle(req.reservation, result.input_tokens + result.output_tokens, cost, ok.deployment)
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
        req = await self._begin(
            self._context("chat", msgs, tenant, route, tags, metadata, model, max_tokens, stream=True))
        decision, trace, ctx = req.decision, req.trace, req.decision.ctx
        params = decision.params(max_tokens, temperature)

        async def call(d: Deployment, timeout: float) -> _OpenStream:
            at = req.start_attempt(d, params, msgs)
            pieces = backend.stream_chat(d, msgs, timeout_s=timeout, params=params)
            t0 = self.clock()
            try:
                first = await anext(pieces, None)
            except ProviderError as exc:
                at.fail(exc, error_type=exc.kind)
                raise
            return _OpenStream(pieces, first, at, t0, self.clock() - t0)

        ok = await self._run(req, call, record_success=False)
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
            self.loop.record(d, trace, AttemptResult(
                deployment=d.name, ok=failure is None or kind is None, latency_s=latency,
                error_kind=kind, ttft_s=s.ttft_s, output_tokens=out_tok))
            await self._settle(req.reservation, in_tok + out_tok, cost, d)
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
        req = await self._begin(self._context("embeddings", msgs, tenant, route, tags, metadata, model, 0))
        decision, trace = req.decision, req.trace

        async def call(d: Deployment, timeout: float) -> tuple[backend.EmbedResult, float]:
            at = req.start_attempt(d, {}, None)
            try:
                r = await backend.embed(d, inputs, timeout_s=timeout)
            except ProviderError as exc:
                at.fail(exc, error_type=exc.kind)
                raise
            cost = decision.snapshot.prices.cost(d, r.input_tokens, 0)
            at.end(response_model=r.model, input_tokens=r.input_tokens, output_tokens=0,
                   finish_reasons=[], cost_usd=cost)
            return r, cost

        ok = await self._run(req, call)
        result, cost = ok.value
        await self._settle(req.reservation, result.input_tokens, cost, ok.deployment)
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
            prompt_tokens=count_tokens(msgs), max_tokens=max_tokens, stream=stream,
        )

    def decide(self, ctx: RequestContext) -> Decision:
        """Pick rule, route and attempt order for `ctx` from the serving snapshot."""
        return decide(self.source.current, ctx, self.tracker, self.rng)

    async def _begin(self, ctx: RequestContext) -> _Request:
        """Decide, open the request's trace and reserve its quota: everything before the first attempt."""
        decision = self.decide(ctx)
        ctx = decision.ctx
        trace = self.telemetry.start_request(operation=ctx.operation, tenant=ctx.tenant, route=decision.route.name)
        trace.decision(rule=decision.rule.label if decision.rule else None, route=decision.route.name,
                       strategy=decision.route.strategy.name, candidates=[d.name for d in decision.plan.order])
        return _Request(decision, trace, await self._reserve(decision, ctx, trace))

    async def _run(self, req: _Request, call: AttemptCall[T], *, record_success: bool = True) -> Success[T]:
        """The attempt loop; on failure the reservation is refunded and the trace closed."""
        try:
            return await self.loop.run(req.decision.plan, req.decision.ctx, call, req.trace,
                                       record_success=record_success)
        except BaseException as exc:
            await self._refund(req.reservation)
            req.trace.fail(exc, error_type=_error_type(exc))
            raise

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
class _Request:
    """One call in flight: its decision, trace, reservation and attempt count."""

    decision: Decision
    trace: RequestTrace
    reservation: Reservation | None
    attempts: int = 0

    def start_attempt(
        self, d: Deployment, params: dict[str, Any], messages: list[dict[str, str]] | None
    ) -> AttemptTrace:
        self.attempts += 1
        return self.trace.start_attempt(deployment=d, attempt=self.attempts, request_params=params,
                                        messages=messages)


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
