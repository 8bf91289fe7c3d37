"""An OpenAI-compatible HTTP simulator for tests, the demo and benchmarks.

``SimServer`` runs an ``aiohttp.web`` server on 127.0.0.1 (ephemeral port by
default). LiteLLM reaches it as ``openai/<model>`` with ``api_base=sim.base_url``
so its real HTTP path runs.

Endpoints: ``POST /v1/chat/completions`` (JSON, or SSE with ``stream: true``),
``POST /v1/embeddings``, ``GET /v1/models`` (also served without ``/v1``), and
Anthropic's ``POST /v1/messages`` (also ``/v1/v1/messages``, where LiteLLM's
``anthropic/<model>`` lands with ``api_base=sim.base_url``; see
``router.sim.anthropic``). Both chat endpoints share one request path; the
embeddings answer is ``router.sim.embeddings``, and every endpoint takes its
outcome and latency from ``router.sim.outcome``.

Order of checks for a request: JSON body -> model known (404) -> recorded
(``last_request``) -> key (401) -> request shape (400) -> context window (400) -> outcome (scripted, else
drawn from ``error_rates``) -> time to first token -> answer. Only requests
that pass the client-side checks consume a scripted outcome. Response headers
go out with the first byte of the answer, after the time to first token, so
``acompletion(stream=True)`` returns after about one TTFT.

The HTTP sent for each ``Fault`` and the LiteLLM exception it becomes are
tabled in ``router.sim.models``.

Example:
    >>> import asyncio, aiohttp
    >>> async def main() -> list[int]:
    ...     body = {"model": "sim-fast", "messages": [{"role": "user", "content": "hi"}]}
    ...     async with SimServer([SimModel(name="sim-fast")], seed=7) as sim:
    ...         sim.script("sim-fast", [Fault.SERVER_ERROR])
    ...         async with aiohttp.ClientSession() as http:
    ...             for _ in range(2):
    ...                 async with http.post(f"{sim.base_url}/chat/completions", json=body):
    ...                     pass
    ...         stats = sim.stats("sim-fast")
    ...         return [stats.requests, stats.faults[Fault.SERVER_ERROR], stats.successes]
    >>> asyncio.run(main())
    [2, 1, 1]
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from router.sim import payloads, replies, wire
from router.sim.anthropic import ANTHROPIC
from router.sim.dialect import OPENAI, Dialect
from router.sim.embeddings import answer_embeddings
from router.sim.models import Fault, ModelStats, SimModel
from router.sim.outcome import take_outcome
from router.sim.recording import RecordedRequest
from router.sim.state import ModelState

__all__ = ["SimServer"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SimServer:
    """A fake OpenAI endpoint serving a fixed set of ``SimModel``.

    Args:
        models: the models served; names must be unique.
        seed: seeds the one ``random.Random`` used for latency and fault draws,
            and the reply text.
        host: interface to bind.
        port: port to bind; 0 picks a free one.
        clock: wall clock for the ``created`` fields.

    Example:
        >>> server = SimServer([SimModel(name="sim-fast")])
        >>> server.models["sim-fast"].context_window
        8192
    """

    def __init__(
        self,
        models: Iterable[SimModel],
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._states: dict[str, ModelState] = {}
        for model in models:
            if model.name in self._states:
                raise ValueError(f"duplicate simulated model {model.name!r}")
            self._states[model.name] = ModelState(model)
        self._seed = seed
        self._rng = random.Random(seed)
        self._host = host
        self._port = port
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._completions = 0

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; ``base_url`` is valid afterwards."""
        if self._runner is not None:
            raise RuntimeError("SimServer already started")
        app = web.Application(client_max_size=64 * 1024 * 1024)
        openai_chat = self._tracked(functools.partial(self._chat, dialect=OPENAI), OPENAI)
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", openai_chat)
            app.router.add_post(f"{prefix}/embeddings", self._tracked(self._embeddings, OPENAI))
            app.router.add_get(f"{prefix}/models", self._list_models)
        anthropic_chat = self._tracked(functools.partial(self._chat, dialect=ANTHROPIC), ANTHROPIC)
        # LiteLLM appends v1/messages to api_base: base_url (".../v1") gives /v1/v1/messages.
        for path in ("/v1/messages", "/v1/v1/messages"):
            app.router.add_post(path, anthropic_chat)
        # handler_cancellation: a client that gives up (timeout on HANG) frees its handler.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Cancel in-flight handlers (a HANG never delays shutdown) and unbind."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for task in list(self._inflight):
            task.cancel()
        await runner.cleanup()
        self._bound_port = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- control and inspection ------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the ``api_base`` to give LiteLLM."""
        return f"http://{self._host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``: the ``api_base`` for LiteLLM's ``anthropic/<model>``."""
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port; raises ``RuntimeError`` before ``start``."""
        if self._bound_port is None:
            raise RuntimeError("SimServer is not running; call start() or use 'async with'")
        return self._bound_port

    @property
    def models(self) -> Mapping[str, SimModel]:
        """The models currently served, by name."""
        return {name: state.model for name, state in self._states.items()}

    def stats(self, name: str) -> ModelStats:
        """Snapshot of one model's counters. Raises ``KeyError`` if unknown."""
        return self._state(name).snapshot()

    def last_request(self, name: str) -> RecordedRequest | None:
        """The last request that named model ``name`` (any endpoint), ``None`` if none yet.

        Recorded as soon as the model is known, before the key check, so a
        rejected request shows too. Raises ``KeyError`` if the model is unknown.

        Example:
            >>> SimServer([SimModel(name="m")]).last_request("m") is None
            True
        """
        recorded = self._state(name).recorded
        return recorded[-1] if recorded else None

    def requests(self, name: str) -> tuple[RecordedRequest, ...]:
        """The last requests (at most 64) that named model ``name``, oldest first."""
        return tuple(self._state(name).recorded)

    def reset_stats(self, name: str | None = None) -> None:
        """Zero the counters of one model, or of all models; forgets recorded requests and cached prompts."""
        for state in [self._state(name)] if name is not None else self._states.values():
            state.reset()

    def update(self, name: str, /, **changes: Any) -> SimModel:
        """Change a model's behaviour at runtime; returns the new ``SimModel``.

        Changes are validated like the constructor's fields. Requests already
        past their latency draw finish with the old behaviour.

        Example:
            >>> server = SimServer([SimModel(name="m")])
            >>> server.update("m", ttft_ms=(800, 50)).ttft_ms
            (800.0, 50.0)
        """
        state = self._state(name)
        if changes.get("name", name) != name:
            raise ValueError("a simulated model cannot be renamed")
        state.model = SimModel.model_validate({**state.model.model_dump(), **changes})
        return state.model

    def restore(self, name: str | None = None) -> None:
        """Undo ``update`` and ``script`` for one model or all (counters are kept).

        Handy for a session-wide simulator that some tests degrade.

        Example:
            >>> server = SimServer([SimModel(name="m")])
            >>> _ = server.update("m", hang_s=1)
            >>> server.restore()
            >>> server.models["m"].hang_s
            30.0
        """
        for state in [self._state(name)] if name is not None else self._states.values():
            state.model = state.original
            state.script = ()

    def script(self, name: str, outcomes: Iterable[Fault]) -> None:
        """Force the outcomes of the next requests to ``name``, in order.

        Replaces any outcomes still pending (an empty list clears them);
        ``Fault.NONE`` is a normal answer. Once the script is used up,
        ``error_rates`` apply again.

        Example:
            >>> server = SimServer([SimModel(name="m")])
            >>> server.script("m", [Fault.SERVER_ERROR, Fault.NONE])
        """
        self._state(name).script = outcomes

    def _state(self, name: str) -> ModelState:
        try:
            return self._states[name]
        except KeyError:
            raise KeyError(f"no simulated model named {name!r}") from None

    # -- HTTP handlers ---------------------------------------------------------

    def _tracked(self, handler: Handler, dialect: Dialect) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            if task is not None:
                self._inflight.add(task)
            try:
                return await handler(request)
            except wire.Reject as rejected:
                return dialect.error(rejected.response)
            finally:
                if task is not None:
                    self._inflight.discard(task)

        return run

    async def _list_models(self, request: web.Request) -> web.Response:
        return wire.json_response(payloads.model_list(list(self._states), int(self._clock())))

    async def _admit(self, request: web.Request) -> tuple[payloads.JSONDict, ModelState]:
        """Parse the body, find the model, record the request, check the key; counts the request."""
        try:
            body = json.loads(await request.read())
        except ValueError:
            message = "We could not parse the JSON body of your request."
            raise wire.reject(400, payloads.bad_request_error(message)) from None
        if not isinstance(body, dict):
            raise wire.reject(
                400, payloads.bad_request_error("The request body must be a JSON object.")
            )
        name = body.get("model")
        state = self._states.get(name) if isinstance(name, str) else None
        if state is None:
            raise wire.reject(404, payloads.model_not_found_error(str(name)))
        state.requests += 1
        recorded = RecordedRequest.of(request.path, body, request.headers)
        state.recorded.append(recorded)
        key = state.model.required_api_key
        if key is not None and recorded.api_key != key:
            state.auth_errors += 1
            raise wire.reject(401, payloads.auth_error())
        return body, state

    async def _chat(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        raw, state = await self._admit(request)
        body = dialect.chat_body(raw)
        self._completions += 1
        try:
            reply = replies.plan_reply(
                body,
                state.model,
                seed=self._seed,
                reply_id=f"{dialect.id_prefix}{self._completions:010d}",
                created=int(self._clock()),
                limit_in_window=dialect.limit_in_window,
            )
        except replies.ContextWindowExceeded:
            state.context_errors += 1
            raise
        fault, opened = await take_outcome(
            request, state, self._rng, stream=reply.stream, prompt_tokens=reply.prompt_tokens, dialect=dialect
        )
        cached = state.prompt_cache.cached_tokens(reply.prompt_units, state.model)
        reply = dataclasses.replace(reply, cached_tokens=cached)
        if reply.stream:
            return await self._stream(request, state, reply, dialect, fault, opened)
        tokens_per_s = state.model.tokens_per_s
        if tokens_per_s:
            await asyncio.sleep(reply.completion_tokens / tokens_per_s)
        completion = dialect.completion(reply, without_choices=fault is Fault.NO_CHOICES)
        if fault in (Fault.STREAM_CUT, Fault.CUT_AFTER_FIRST_CHUNK):
            return await wire.send_truncated(request, json.dumps(completion).encode())
        if fault is Fault.NONE:
            state.record_success(reply.prompt_tokens, reply.completion_tokens)
        return wire.json_response(completion)

    async def _stream(
        self,
        request: web.Request,
        state: ModelState,
        reply: replies.Reply,
        dialect: Dialect,
        fault: Fault,
        opened: web.StreamResponse | None,
    ) -> web.StreamResponse:
        """Send the reply as SSE; the cut faults hang up after half the frames, or after the first."""
        head, frames, tail = dialect.frames(reply, without_choices=fault is Fault.NO_CHOICES)
        cut = fault in (Fault.STREAM_CUT, Fault.CUT_AFTER_FIRST_CHUNK)
        if fault is Fault.STREAM_CUT:
            frames = frames[: max(1, len(frames) // 2)]
        elif fault is Fault.CUT_AFTER_FIRST_CHUNK:
            frames = frames[:1]
        response = opened
        if response is None:
            response = web.StreamResponse(headers=wire.SSE_HEADERS)
            await response.prepare(request)
        await wire.write_paced(response, head, frames, state.model.tokens_per_s)
        if cut:
            wire.drop_connection(request)
            return response
        await response.write(tail)
        if fault is Fault.NONE:
            state.record_success(reply.prompt_tokens, reply.completion_tokens)
        return response

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body, state = await self._admit(request)
        return await answer_embeddings(request, body, state, self._rng)
