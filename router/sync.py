"""A blocking facade for Flask, Django and scripts: the async router on its own loop thread.

Every method blocks until the async path returns; nothing here routes. One
event loop runs in a daemon thread for the router's whole life (LiteLLM's
logging worker is bound to one loop), and `close()` stops it.

>>> router = create_sync_router()  # doctest: +SKIP
>>> router.chat("What is 2+2?", temperature=0).text  # doctest: +SKIP
'4'
>>> for chunk in router.stream("Tell me a story"):  # doctest: +SKIP
...     print(chunk.delta, end="")
>>> router.close()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from router.client import Router
from router.health import DeploymentHealth
from router.models import EmbeddingResponse, LLMResponse, StreamChunk
from router.policy.reload import ReloadResult
from router.quota import TenantUsage
from router.request import MessagesIn

T = TypeVar("T")


class SyncRouter:
    """The `Router`'s methods, blocking. Build it with `create_sync_router()`.

    Safe to call from many threads at once: each call is a task on the
    router's loop. Do not call it from a coroutine running on that loop.
    """

    def __init__(self, build: Callable[[], Awaitable[Router]], *, start_timeout_s: float = 120.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm-router-loop", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self.router: Router = self._run(_awaited(build), timeout_s=start_timeout_s)
        except BaseException:
            self._stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], *, timeout_s: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this router is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def chat(self, messages: MessagesIn, **kwargs: Any) -> LLMResponse:
        """`Router.chat`, blocking."""
        return self._run(self.router.chat(messages, **kwargs))

    def complete(self, prompt: str, **kwargs: Any) -> LLMResponse:
        """`Router.complete`, blocking."""
        return self._run(self.router.complete(prompt, **kwargs))

    def stream(self, messages: MessagesIn, **kwargs: Any) -> Iterator[StreamChunk]:
        """`Router.stream` as a plain iterator; each chunk blocks until it arrives."""
        chunks: AsyncIterator[StreamChunk] = self.router.stream(messages, **kwargs)
        try:
            while True:
                try:
                    yield self._run(_next(chunks))
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(_close(chunks))

    def embed(self, texts: str | Sequence[str], **kwargs: Any) -> EmbeddingResponse:
        """`Router.embed`, blocking."""
        return self._run(self.router.embed(texts, **kwargs))

    def reload(self) -> ReloadResult:
        """`Router.reload`, blocking."""
        return self._run(self.router.reload())

    def health(self) -> list[DeploymentHealth]:
        return self.router.health()

    def usage(self, tenant: str) -> TenantUsage:
        """`Router.usage`, blocking."""
        return self._run(self.router.usage(tenant))

    def close(self) -> None:
        """Close the router and stop its loop thread. Safe to call twice."""
        if self._closed:
            return
        try:
            self._run(self.router.aclose(), timeout_s=60)
        finally:
            self._stop()

    def _stop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SyncRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SyncRouter {self.router!r}>"


async def _awaited(build: Callable[[], Awaitable[Router]]) -> Router:
    return await build()


async def _next(chunks: AsyncIterator[StreamChunk]) -> StreamChunk:
    return await anext(chunks)


async def _close(chunks: AsyncIterator[StreamChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


def create_sync_router(*args: Any, **kwargs: Any) -> SyncRouter:
    """`create_default_router(*args, **kwargs)` behind a blocking facade.

    >>> with create_sync_router() as router:  # doctest: +SKIP
    ...     print(router.complete("Hi").text)
    """
    from router.factory import create_default_router

    return SyncRouter(lambda: create_default_router(*args, **kwargs))
