"""Single-flight lookups (`ResponseCache`) on every store: one computation for N identical calls.

"Replicas" are two `ResponseCache` objects with their own in-process state
sharing one backend: the same `MemoryCacheStore`, or two Redis clients on one
prefix. Computations wait on events the test sets, never on wall time; the
waits that poll are given a sleep that reports each poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest

from router.cache import (
    CacheEvent,
    CacheStore,
    Lookup,
    MemoryCacheStore,
    ResponseCache,
    cache_store_from_url,
)
from tests.conftest import FakeClock
from tests.test_cache_support import DOWN_URL, delete_prefix, needs_redis, new_prefix, redis_url

pytestmark = pytest.mark.timeout(30)

StoreFactory = Callable[[], CacheStore]


@pytest.fixture
def prefix() -> Iterator[str]:
    name = new_prefix()
    yield name
    delete_prefix(name)


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[StoreFactory]:
    """Makes stores that share one backend: each call is another replica's view of it."""
    made: list[CacheStore] = []
    shared = MemoryCacheStore(shared=True)  # one store behind several replicas' caches

    def make() -> CacheStore:
        store = shared if request.param == "memory" else cache_store_from_url(redis_url(prefix))
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


class Provider:
    """A computation that counts its calls and can be held at a gate."""

    def __init__(self, value: str = "answer", *, cacheable: bool = True) -> None:
        self.value = value
        self.cacheable = cacheable
        self.calls = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_with: BaseException | None = None

    async def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc
        return self.value

    def encode(self, value: str) -> bytes | None:
        """The stored form, or None when this provider's answers must not be cached."""
        return value.encode() if self.cacheable else None


async def ask(cache: ResponseCache, provider: Provider, key: str = "k", **kw: Any) -> Lookup[str]:
    return await cache.get_or_compute(key, provider, encode=provider.encode, decode=bytes.decode, route="r",
                                      ttl_s=60, **kw)


async def let_run(times: int = 5) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


class PollSpy:
    """An injected sleep: yields to the loop, counts polls, and says when polling began."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.polls = 0
        self.polling = asyncio.Event()
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.polls += 1
        self.polling.set()
        if self.clock is not None:
            self.clock.now += seconds
        await asyncio.sleep(0.001)


class TestSingleFlight:
    async def test_fifty_identical_calls_compute_once(self, backend: StoreFactory) -> None:
        cache, provider = ResponseCache(backend()), Provider()
        provider.gate.clear()
        tasks = [asyncio.create_task(ask(cache, provider)) for _ in range(50)]
        await provider.started.wait()
        await let_run()
        provider.gate.set()
        results = await asyncio.gather(*tasks)
        assert provider.calls == 1
        assert {r.value for r in results} == {"answer"}
        assert sorted(r.outcome for r in results) == ["coalesced"] * 49 + ["miss"]
        counters = cache.counters.route("r")
        assert (counters.misses, counters.coalesced, counters.writes) == (1, 49, 1)
        assert (await ask(cache, provider)).outcome == "hit"
        assert provider.calls == 1

    async def test_fifty_calls_on_two_replicas_compute_once(self, backend: StoreFactory) -> None:
        spy = PollSpy()
        a = ResponseCache(backend())
        b = ResponseCache(backend(), sleep=spy, poll_s=(0.001, 0.005))
        provider = Provider()
        provider.gate.clear()
        on_a = [asyncio.create_task(ask(a, provider)) for _ in range(25)]
        await provider.started.wait()
        on_b = [asyncio.create_task(ask(b, provider)) for _ in range(25)]
        await spy.polling.wait()  # b's leader found a's lock and waits for the entry
        provider.gate.set()
        results_a, results_b = await asyncio.gather(*on_a), await asyncio.gather(*on_b)
        assert provider.calls == 1
        assert {r.value for r in results_a + results_b} == {"answer"}
        assert sorted(r.outcome for r in results_a) == ["coalesced"] * 24 + ["miss"]
        assert [r.outcome for r in results_b] == ["coalesced"] * 25
        assert b.counters.route("r").bytes_read == len(b"answer")  # b's leader read it once

    async def test_a_waiter_computes_when_the_leader_stores_nothing(self, backend: StoreFactory) -> None:
        spy = PollSpy()
        a, b = ResponseCache(backend()), ResponseCache(backend(), sleep=spy)
        provider = Provider(cacheable=False)
        provider.gate.clear()
        first = asyncio.create_task(ask(a, provider))
        await provider.started.wait()
        second = asyncio.create_task(ask(b, provider))
        await spy.polling.wait()
        provider.gate.set()
        assert [(await first).outcome, (await second).outcome] == ["miss", "miss"]
        assert provider.calls == 2
        assert spy.polls < 10  # it stopped when the lock went, not at the time limit

    async def test_a_waiter_gives_up_after_max_wait(self, backend: StoreFactory) -> None:
        clock = FakeClock()
        spy = PollSpy(clock)
        store = backend()
        assert await store.try_lock("k", ttl_s=30)  # a leader elsewhere that never finishes
        cache = ResponseCache(store, clock=clock, sleep=spy, poll_s=(0.01, 0.2))
        provider = Provider()
        result = await ask(cache, provider, max_wait_s=2.0)
        assert (result.outcome, provider.calls) == ("miss", 1)
        assert clock.now - 1000.0 == pytest.approx(2.0)
        assert spy.polls < 25  # backoff: 0.01 growing to 0.2, not 200 polls of 0.01
        assert await store.get("k") == b"answer"  # stored all the same

    async def test_leader_error_reaches_every_follower_and_is_not_stored(self, backend: StoreFactory) -> None:
        cache, provider = ResponseCache(backend()), Provider()
        provider.gate.clear()
        provider.fail_with = RuntimeError("provider down")
        tasks = [asyncio.create_task(ask(cache, provider)) for _ in range(10)]
        await provider.started.wait()
        await let_run()
        provider.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert provider.calls == 1
        assert all(isinstance(r, RuntimeError) and str(r) == "provider down" for r in results)
        assert await cache.store.get("k") is None
        assert (await ask(cache, provider)).outcome == "miss"  # errors are never cached

    async def test_errors_about_one_caller_make_followers_try_again(self, backend: StoreFactory) -> None:
        class OverQuota(Exception):
            pass

        cache = ResponseCache(backend(), shares_error=lambda e: not isinstance(e, OverQuota))
        provider = Provider()
        provider.gate.clear()
        provider.fail_with = OverQuota()
        tasks = [asyncio.create_task(ask(cache, provider)) for _ in range(10)]
        await provider.started.wait()
        await let_run()
        provider.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], OverQuota)
        outcomes = sorted(r.outcome for r in results[1:] if isinstance(r, Lookup))
        # One follower leads the second try; the rest join it or read what it stored.
        assert len(outcomes) == 9 and outcomes.count("miss") == 1
        assert provider.calls == 2

    async def test_a_cancelled_leader_does_not_cancel_its_followers(self, backend: StoreFactory) -> None:
        cache, provider = ResponseCache(backend()), Provider()
        provider.gate.clear()
        leader = asyncio.create_task(ask(cache, provider))
        await provider.started.wait()
        followers = [asyncio.create_task(ask(cache, provider)) for _ in range(5)]
        await let_run()
        leader.cancel()
        await let_run()
        provider.gate.set()
        results = await asyncio.gather(*followers)
        assert leader.cancelled()
        assert sorted(r.outcome for r in results) == ["coalesced"] * 4 + ["miss"]
        assert provider.calls == 2
        assert (await cache.store.peek("k"))[1] is False  # the cancelled leader's lock was released

    async def test_a_cancelled_follower_does_not_cancel_the_leader(self, backend: StoreFactory) -> None:
        cache, provider = ResponseCache(backend()), Provider()
        provider.gate.clear()
        leader = asyncio.create_task(ask(cache, provider))
        await provider.started.wait()
        follower = asyncio.create_task(ask(cache, provider))
        await let_run()
        follower.cancel()
        await let_run()
        provider.gate.set()
        assert (await leader).outcome == "miss"
        assert follower.cancelled()


class TestReadWriteFlags:
    async def test_no_cache_computes_every_time_but_stores(self, backend: StoreFactory) -> None:
        cache, provider = ResponseCache(backend()), Provider()
        await ask(cache, provider)
        assert (await ask(cache, provider, read=False)).outcome == "bypass"
        assert provider.calls == 2
        provider.value = "newer"
        await ask(cache, provider, read=False)
        assert (await ask(cache, provider)).value == "newer"  # the bypass refreshed the entry

    async def test_no_store_reads_but_never_writes(self, backend: StoreFactory) -> None:
        cache, provider = ResponseCache(backend()), Provider()
        assert (await ask(cache, provider, write=False)).outcome == "miss"
        assert await cache.store.get("k") is None
        await ask(cache, provider)
        assert (await ask(cache, provider, write=False)).outcome == "hit"
        assert (await ask(cache, provider, read=False, write=False)).outcome == "bypass"
        assert provider.calls == 3

    async def test_an_uncacheable_result_is_returned_not_stored(self, backend: StoreFactory) -> None:
        cache, provider = ResponseCache(backend()), Provider(cacheable=False)
        assert (await ask(cache, provider)).value == "answer"
        assert await cache.store.get("k") is None
        assert cache.counters.route("r").writes == 0

    async def test_an_entry_that_does_not_decode_is_a_miss_and_replaced(self, backend: StoreFactory) -> None:
        cache, provider = ResponseCache(backend()), Provider()
        await cache.store.set("k", b"\xff\xfe", ttl_s=60)  # not UTF-8
        assert (await ask(cache, provider)).outcome == "miss"
        assert await cache.store.get("k") == b"answer"
        assert cache.counters.route("r").decode_errors == 1


class Answer:
    """An immutable value; `encode`/`decode` count their calls, so a test sees whether the cache used them."""

    encoded = decoded = 0

    def __init__(self, text: str) -> None:
        self.text = text

    @classmethod
    def encode(cls, value: Answer) -> bytes | None:
        cls.encoded += 1
        return None if value.text == "uncacheable" else value.text.encode()

    @classmethod
    def decode(cls, payload: bytes) -> Answer:
        cls.decoded += 1
        return Answer(payload.decode())

    @staticmethod
    def size(value: Answer) -> int | None:
        return None if value.text == "uncacheable" else 100 + len(value.text)


class TestKeptValues:
    """With `encode` and `size`, a store that keeps values (memory://, not shared) keeps the answer itself."""

    @pytest.fixture(autouse=True)
    def counts(self) -> None:
        Answer.encoded = Answer.decoded = 0

    async def ask(self, cache: ResponseCache, text: str, key: str = "k", **kw: Any) -> Lookup[Answer]:
        calls = []

        async def compute() -> Answer:
            calls.append(text)
            return Answer(text)
        return await cache.get_or_compute(key, compute, decode=Answer.decode, encode=Answer.encode,
                                          size=Answer.size, route="r", ttl_s=60, **kw)

    async def test_a_hit_is_the_kept_object_with_no_encoding_or_decoding(self) -> None:
        cache = ResponseCache(MemoryCacheStore())
        first = await self.ask(cache, "answer")
        again = await self.ask(cache, "other")  # same key: must not compute
        assert (first.outcome, again.outcome) == ("miss", "hit")
        assert again.value is first.value
        assert (Answer.encoded, Answer.decoded) == (0, 0)
        r = cache.counters.route("r")
        assert (r.misses, r.hits, r.writes, r.bytes_written, r.bytes_read) == (1, 1, 1, 106, 106)

    async def test_size_none_keeps_nothing(self) -> None:
        cache = ResponseCache(MemoryCacheStore())
        await self.ask(cache, "uncacheable")
        assert (await self.ask(cache, "answer")).outcome == "miss"

    async def test_flags_hold_for_kept_values(self) -> None:
        cache = ResponseCache(MemoryCacheStore())
        assert (await self.ask(cache, "a", write=False)).outcome == "miss"
        assert (await self.ask(cache, "b", read=False)).outcome == "bypass"  # computed, and kept
        assert (await self.ask(cache, "c")).value.text == "b"

    async def test_a_shared_store_gets_encoded_bytes(self) -> None:
        store = MemoryCacheStore(shared=True)
        await self.ask(ResponseCache(store), "answer")
        again = await self.ask(ResponseCache(store), "other")
        assert again.outcome == "hit" and again.value.text == "answer"
        assert (Answer.encoded, Answer.decoded) == (1, 1)

    async def test_without_size_a_memory_store_keeps_bytes(self) -> None:
        cache = ResponseCache(MemoryCacheStore())

        async def compute() -> Answer:
            return Answer("x")
        for _ in range(2):
            await cache.get_or_compute("k", compute, decode=Answer.decode, encode=Answer.encode, route="r", ttl_s=60)
        assert (Answer.encoded, Answer.decoded) == (1, 1)
        assert cache.store.get_now("k") is not None


class TestMetrics:
    async def test_events_per_route_with_bytes(self) -> None:
        events: list[CacheEvent] = []
        cache, provider = ResponseCache(MemoryCacheStore(), observer=events.append), Provider()
        await ask(cache, provider)
        await cache.get_or_compute("k", provider, encode=str.encode, decode=bytes.decode, route="r", ttl_s=60)
        await cache.get_or_compute("k2", provider, encode=str.encode, decode=bytes.decode, route="other", ttl_s=60)
        assert [(e.route, e.kind, e.nbytes) for e in events] == [
            ("r", "miss", 0), ("r", "write", 6), ("r", "hit", 6), ("other", "miss", 0), ("other", "write", 6),
        ]
        r = cache.counters.route("r")
        assert (r.hits, r.misses, r.bytes_read, r.bytes_written, r.hit_ratio) == (1, 1, 6, 6, 0.5)
        assert set(cache.counters.routes()) == {"r", "other"}


class TestBatch:
    @staticmethod
    def embedder(calls: list[list[int]], texts: Sequence[str]) -> Callable[
            [Sequence[int]], Awaitable[Sequence[str]]]:
        async def compute(indices: Sequence[int]) -> Sequence[str]:
            calls.append(list(indices))
            return [texts[i].upper() for i in indices]
        return compute

    async def test_only_new_texts_are_computed(self, backend: StoreFactory) -> None:
        cache, calls = ResponseCache(backend()), list[list[int]]()
        texts = ["a", "b", "c"]
        await cache.get_or_compute_batch(texts, self.embedder(calls, texts),
                                         encode=str.encode, decode=bytes.decode, route="e", ttl_s=60)
        texts = ["b", "new", "a", "new"]
        out = await cache.get_or_compute_batch(texts, self.embedder(calls, texts),
                                               encode=str.encode, decode=bytes.decode, route="e", ttl_s=60)
        assert calls == [[0, 1, 2], [1]]
        assert [(r.value, r.outcome) for r in out] == [("B", "hit"), ("NEW", "miss"), ("A", "hit"), ("NEW", "miss")]
        again = await cache.get_or_compute_batch(texts, self.embedder(calls, texts),
                                                 encode=str.encode, decode=bytes.decode, route="e", ttl_s=60)
        assert all(r.hit for r in again) and len(calls) == 2

    async def test_batch_flags(self, backend: StoreFactory) -> None:
        cache, calls = ResponseCache(backend()), list[list[int]]()
        texts = ["x"]
        out = await cache.get_or_compute_batch(texts, self.embedder(calls, texts), encode=str.encode,
                                               decode=bytes.decode, route="e", ttl_s=60, write=False)
        assert out[0].outcome == "miss" and await cache.store.get("x") is None
        await cache.store.set("x", b"OLD", ttl_s=60)
        out = await cache.get_or_compute_batch(texts, self.embedder(calls, texts), encode=str.encode,
                                               decode=bytes.decode, route="e", ttl_s=60, read=False)
        assert out[0].outcome == "bypass" and await cache.store.get("x") == b"X"

    async def test_wrong_count_from_compute_is_an_error(self) -> None:
        async def short(indices: Sequence[int]) -> Sequence[str]:
            return []

        with pytest.raises(ValueError, match="returned 0 items for 2"):
            await ResponseCache(MemoryCacheStore()).get_or_compute_batch(
                ["a", "b"], short, encode=str.encode, decode=bytes.decode, route="e", ttl_s=60)


class TestRedisDownLookups:
    async def test_a_down_store_computes_and_never_raises(self) -> None:
        store = cache_store_from_url(DOWN_URL, clock=FakeClock())
        try:
            cache, provider = ResponseCache(store), Provider()
            results = await asyncio.gather(*(ask(cache, provider) for _ in range(5)))
            assert [r.value for r in results] == ["answer"] * 5
            assert (await ask(cache, provider)).outcome == "miss"
            calls: list[list[int]] = []
            out = await cache.get_or_compute_batch(
                ["a"], TestBatch.embedder(calls, ["a"]), encode=str.encode, decode=bytes.decode, route="e", ttl_s=60)
            assert out[0].value == "A"
        finally:
            await store.aclose()
