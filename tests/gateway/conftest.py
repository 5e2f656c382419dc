"""Fixtures of the gateway's tests: a clock the tests move by hand, and the store under test
(in memory and on Redis) with a second view of it, as another replica has."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.redis_store import RedisStore
from gateway.store import MemoryStore, Store
from tests.stack import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(store_env: dict[str, str]) -> AsyncIterator[Store]:
    """The store under test, as one replica holds it."""
    if not store_env:
        yield MemoryStore()
        return
    redis = RedisStore(store_env["REDIS_URL"], prefix=store_env["REDIS_KEY_PREFIX"])
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
async def peer(store: Store, store_env: dict[str, str]) -> AsyncIterator[Store]:
    """The same state as another replica sees it: on Redis a second client with the same
    prefix; in memory the same store (one process is all the memory store serves)."""
    if not store_env:
        yield store
        return
    redis = RedisStore(store_env["REDIS_URL"], prefix=store_env["REDIS_KEY_PREFIX"])
    try:
        yield redis
    finally:
        await redis.aclose()
