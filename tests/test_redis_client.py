"""router.redis_client: how every Redis-backed store builds its client (no server needed: clients connect lazily)."""

from __future__ import annotations

import pytest
from redis.asyncio import BlockingConnectionPool

from router.redis_client import client_from_url, pop_query_option, redis_missing, store_name

pytestmark = pytest.mark.timeout(10)


async def test_a_blocking_pool_with_the_given_timeouts_and_retries() -> None:
    client = client_from_url("redis://127.0.0.1:6390/3", timeout_s=0.25, retries=1, max_connections=7,
                             needed_by="a test")
    pool = client.connection_pool
    assert isinstance(pool, BlockingConnectionPool)
    assert pool.max_connections == 7 and pool.timeout == 0.25
    kwargs = pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.25 and kwargs["socket_connect_timeout"] == 0.25
    assert kwargs["retry"].get_retries() == 1
    assert kwargs["port"] == 6390 and kwargs["db"] == 3
    await client.aclose()


async def test_without_max_connections_the_default_pool() -> None:
    client = client_from_url("redis://127.0.0.1:6390/0", timeout_s=0.5, retries=0, needed_by="a test")
    pool = client.connection_pool
    assert not isinstance(pool, BlockingConnectionPool)
    assert pool.connection_kwargs["socket_timeout"] == 0.5
    assert pool.connection_kwargs["retry"].get_retries() == 0
    await client.aclose()


def test_pop_query_option_keeps_the_others_and_takes_the_first() -> None:
    url, prefix = pop_query_option("redis://h:1/0?prefix=a:&health_check_interval=5&prefix=b:", "prefix", "d:")
    assert (url, prefix) == ("redis://h:1/0?health_check_interval=5", "a:")
    assert pop_query_option("redis://h:1/0", "prefix", "d:") == ("redis://h:1/0", "d:")


def test_store_name_shows_no_password_and_no_query() -> None:
    assert store_name("redis://:hunter2@cache.internal:6380/2?prefix=x") == "redis://cache.internal:6380/2"
    assert store_name("redis:///0") == "redis://localhost/0"


def test_the_install_hint_names_who_needs_redis() -> None:
    assert str(redis_missing("the Redis cache store")) == (
        "the Redis cache store needs the redis package: pip install llm-policy-router[redis]")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6390/0?nope=1", "redis://:pw@127.0.0.1:6390/0?prefx=a:"])
@pytest.mark.parametrize("max_connections", [None, 5])
def test_an_option_no_connection_takes_is_refused_at_once(url: str, max_connections: int | None) -> None:
    """redis-py would accept it and raise TypeError from every command; no password in the message."""
    with pytest.raises(ValueError, match="unknown option") as refused:
        client_from_url(url, timeout_s=0.5, retries=0, max_connections=max_connections, needed_by="a test")
    assert "pw@" not in str(refused.value)


async def test_options_a_connection_takes_are_kept() -> None:
    client = client_from_url("redis://127.0.0.1:6390/0?health_check_interval=5&client_name=app", timeout_s=0.5,
                             retries=0, needed_by="a test")
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["health_check_interval"] == 5 and kwargs["client_name"] == "app"
    await client.aclose()
