"""A streamed answer on the request path: first-token and idle timeouts, assembly, resume.

Retries and fallbacks happen before the first content: the attempt loop
opens a stream and waits for its first piece at most the time-to-first-token
timeout (keep-alive comments and empty deltas are not progress), so a stalled
first token falls back. After that, each piece must come within the idle
timeout and the whole stream within the route's deadline; a cut raises
`StreamInterrupted`, unless the route sets `resume_streams`: then the next
deployment continues from the partial answer (sent as an assistant prefix)
and its text is spliced into the same stream, marked on the span.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from router.attempts import Plan, Success
from router.backend import StreamPiece
from router.errors import ProviderError, ProviderTimeout, StreamInterrupted, error_type
from router.health import AttemptResult
from router.loop_lag import credited_timeout
from router.models import AssistantMessage, Attempt, FunctionCall, StreamChunk, ToolCall, Usage, new_response_id
from router.request import ChatRequest
from router.schema import Deployment
from router.tokens import count_text, estimate_usage
from router.tracing import AttemptTrace

if TYPE_CHECKING:
    from router.pipeline import MessagesFor, Pipeline, _Exchange


@dataclass(slots=True)
class OpenStream:
    """A stream whose first piece arrived (or that ended with none)."""

    pieces: AsyncIterator[StreamPiece]
    first: StreamPiece | None
    trace: AttemptTrace
    started: float
    ttft_s: float


def ttft_timeout(d: Deployment, route_override: float | None, attempt_timeout: float) -> float:
    return min(attempt_timeout, route_override or d.stream_ttft_timeout_s or d.timeout_s)


def idle_timeout(d: Deployment, route_override: float | None) -> float:
    return route_override or d.stream_idle_timeout_s or d.timeout_s


async def stream_answer(
    p: Pipeline, ex: _Exchange, request: ChatRequest, params: dict[str, Any], messages_for: MessagesFor | None
) -> AsyncGenerator[StreamChunk, None]:
    """The streamed answer of one request over its exchange; the last chunk has `done=True`."""
    ctx = ex.decision.ctx
    spec = ex.decision.route.spec
    out_budget = ex.output_budget()

    def opener(messages_of: Callable[[Deployment], Sequence[Mapping[str, Any]]]) -> Any:
        async def call(d: Deployment, timeout: float) -> OpenStream:
            msgs = messages_of(d)
            at = ex.start_attempt(d, params, msgs)
            pieces = p.backend.stream(d, msgs, params, timeout_s=timeout)
            t0 = p.clock()
            wait = ttft_timeout(d, spec.stream_ttft_timeout_s, timeout)
            error: BaseException | None = None
            try:
                async with credited_timeout(p.loop.lag, wait, limit_s=timeout):
                    first = await anext(pieces, None)
            except TimeoutError:
                error = ProviderTimeout(f"no content within {wait:g}s of the request (first-token timeout)",
                                        deployment=d.name)
            except BaseException as exc:
                error = exc
            if error is not None:
                at.fail(error, error_type=error_type(error))
                with contextlib.suppress(Exception):
                    await _aclose(pieces)
                raise error
            return OpenStream(pieces, first, at, t0, p.clock() - t0)
        return call

    def first_messages(d: Deployment) -> Sequence[Mapping[str, Any]]:
        return request.messages if messages_for is None else messages_for(d, out_budget)

    ok = await ex.run(opener(first_messages), record_success=False)
    d, s, attempts = ok.deployment, ok.value, list(ok.attempts)
    deadline = ok.started + ex.decision.plan.deadline_s
    acc = Assembler(ctx.prompt_tokens)
    total, spent = Usage(), 0.0
    tried = {a.deployment for a in attempts}
    resumable = spec.resume_streams and request.n == 1
    while True:
        failure: BaseException | None = None
        try:
            async with contextlib.aclosing(
                    _pieces(p, s, d, acc, idle_timeout(d, spec.stream_idle_timeout_s), deadline)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except BaseException as exc:
            failure = exc
        segment = acc.segment_usage()
        total = _plus(total, segment)
        cost = ex.snapshot.prices.usage_cost(d, segment)
        spent += cost
        kind = failure.kind if isinstance(failure, ProviderError) else None
        p.loop.record(d, ex.trace, AttemptResult(
            deployment=d.name, ok=failure is None or kind is None, latency_s=p.clock() - s.started,
            error_kind=kind, ttft_s=s.ttft_s, output_tokens=segment.output_tokens))
        if failure is None:
            s.trace.end(response_model=acc.model or d.model, input_tokens=segment.input_tokens,
                        output_tokens=segment.output_tokens, finish_reasons=[acc.finish or "stop"],
                        cost_usd=cost, ttft_s=s.ttft_s, output_text=acc.text())
            break
        s.trace.fail(failure, error_type=error_type(failure))
        with contextlib.suppress(Exception):
            await _aclose(s.pieces)
        attempts.append(Attempt(deployment=d.name, outcome="error", error_type=error_type(failure),
                                error=str(getattr(failure, "message", "")) or None))
        resumed = None
        if resumable and kind is not None and acc.text() and not acc.has_tool_calls():
            resumed = await _resume(p, ex, opener, request, acc.text(), tried, deadline)
        if resumed is None:
            ex.settle(d, total, spent)
            ex.fail(failure, attempts)
            raise failure
        ex.trace.event("router.stream.resumed", {"from": d.name, "to": resumed.deployment.name,
                                                 "chars": len(acc.text())})
        attempts.extend(resumed.attempts)
        d, s = resumed.deployment, resumed.value
        tried.add(d.name)
        acc.next_segment(ctx.prompt_tokens + count_text(acc.text()))
    response_id = acc.id or new_response_id()
    ex.settle(d, total, spent)
    ex.succeed(d, tuple(attempts), total, spent, response_id=response_id)
    yield StreamChunk(deployment=d.name, done=True, id=response_id, route=ex.decision.route.name,
                      finish_reason=acc.finish, message=acc.message(), usage=total, cost_usd=spent,
                      latency_ms=(p.clock() - ok.started) * 1000, attempts=tuple(attempts))


async def _pieces(p: Pipeline, s: OpenStream, d: Deployment, acc: Assembler, idle_s: float,
                  deadline: float) -> AsyncGenerator[StreamChunk, None]:
    """The stream's chunks; each piece within `idle_s`, the whole within `deadline`."""
    piece = s.first
    while piece is not None:
        chunk = acc.add(piece, d.name)
        if chunk is not None:
            yield chunk
        left = deadline - p.clock()
        wait = min(idle_s, left)
        error: ProviderError | None = None
        try:
            async with credited_timeout(p.loop.lag, idle_s, limit_s=left):
                piece = await anext(s.pieces, None)
        except TimeoutError:
            error = StreamInterrupted(f"no content for {max(wait, 0.0):.3g}s after the stream began (idle timeout"
                                      f"{' or route deadline' if wait < idle_s else ''})", deployment=d.name)
        if error is not None:
            raise error


async def _resume(p: Pipeline, ex: _Exchange, opener: Callable[..., Any], request: ChatRequest, partial: str,
                  tried: set[str], deadline: float) -> Success[OpenStream] | None:
    """Open the continuation of a cut stream on a deployment not yet tried, or None."""
    plan = ex.decision.plan
    rest = tuple(x for x in plan.order if x.name not in tried)
    left = deadline - p.clock()
    if not rest or left <= 0:
        return None
    prefix = [*request.messages, {"role": "assistant", "content": partial}]
    resume_plan: Plan = replace(plan, order=rest, deadline_s=left)
    try:
        return await p.loop.run(resume_plan, ex.decision.ctx, opener(lambda d: prefix), ex.trace,
                                record_success=False,
                                admit=ex.admit if ex.reservation is not None else None)
    except (ProviderError, Exception):  # no continuation: the caller gets the original cut
        return None


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class Assembler:
    """Builds the streamed answer: text, tool calls, and usage per segment (a resumed stream has
    two or more), estimated where the provider sent none."""

    def __init__(self, prompt_tokens: int) -> None:
        self._text: list[str] = []
        self._calls: dict[int, _Call] = {}
        self._usage: Usage | None = None
        self._segment_prompt = prompt_tokens
        self._segment_start = 0
        self.finish: str | None = None
        self.model: str | None = None
        self.id: str | None = None

    def add(self, piece: StreamPiece, deployment: str) -> StreamChunk | None:
        self.finish = piece.finish_reason or self.finish
        self.model = piece.model or self.model
        self.id = self.id or piece.id
        if piece.usage is not None:
            self._usage = piece.usage
        for c in piece.tool_calls:
            call = self._calls.setdefault(c.index, _Call())
            call.id = c.id or call.id
            call.name = c.name or call.name
            call.arguments.append(c.arguments)
        if piece.delta:
            self._text.append(piece.delta)
        if not piece.delta and not piece.tool_calls:
            return None
        return StreamChunk(delta=piece.delta, tool_calls=piece.tool_calls, deployment=deployment)

    def next_segment(self, prompt_tokens: int) -> None:
        """A continuation starts: its prompt is the request plus the text so far."""
        self._usage = None
        self._segment_prompt = prompt_tokens
        self._segment_start = len(self._text)

    def text(self) -> str:
        return "".join(self._text)

    def has_tool_calls(self) -> bool:
        return bool(self._calls)

    def message(self) -> AssistantMessage:
        calls = tuple(
            ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments="".join(c.arguments)))
            for _, c in sorted(self._calls.items())
        )
        return AssistantMessage(content="".join(self._text) if self._text or not calls else None,
                                tool_calls=calls or None)

    def segment_usage(self) -> Usage:
        """What the current segment used: the provider's figures, else an estimate from its text."""
        if self._usage is not None:
            return self._usage
        if self._segment_start == 0:
            return estimate_usage(self._segment_prompt, self.message())
        text = "".join(self._text[self._segment_start:])
        return estimate_usage(self._segment_prompt, AssistantMessage(content=text))


def _plus(a: Usage, b: Usage) -> Usage:
    return Usage(input_tokens=a.input_tokens + b.input_tokens, output_tokens=a.output_tokens + b.output_tokens,
                 cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
                 cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
                 reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens, estimated=a.estimated or b.estimated)




async def _aclose(pieces: AsyncIterator[StreamPiece]) -> None:
    if isinstance(pieces, AsyncGenerator):
        await pieces.aclose()

