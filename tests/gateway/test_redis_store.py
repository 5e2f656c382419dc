"""The Redis store when Redis fails: killed, it refuses relay tickets (fail closed) and answers
everything else from this replica's memory, says so once per outage, and comes back by itself
when Redis does; frozen (SIGSTOP), each call gives up within its bound. Each test has a
redis-server of its own, since it kills it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.breaker import BreakerRules
from gateway.redis_store import RedisStore
from gateway.router import Router
from gateway.store import Quota
from pipelines.contracts.routing import RoutingPolicy
from tests.redis_server import RedisServer, new_prefix, running_redis
from tests.stack import FakeClock, metric, until

QUOTA_CALLER = "launch:s1"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def store(own_redis: RedisServer) -> AsyncIterator[RedisStore]:
    redis = RedisStore(own_redis.url, prefix=new_prefix(), timeout_s=0.3, retry_s=0.2)
    try:
        yield redis
    finally:
        await redis.aclose()


async def admit(store: RedisStore, jti: str) -> str:
    outcome, _ = await store.admit_relay(
        jti=jti, expires_at=time.time() + 60, session_id="s1", limit=5, lease_s=60
    )
    return outcome


def outage_lines(caplog: pytest.LogCaptureFixture, msg: str) -> int:
    return sum(r.getMessage() == msg for r in caplog.records if r.name == "voicegw.store")


async def test_redis_down_then_back(
    own_redis: RedisServer, store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    rules = BreakerRules(threshold=2, window_s=60, cooldown_s=60, probe_window_s=60)
    router = Router(RoutingPolicy(), rules, store, clock=clock)

    async def livekit(session_id: str) -> tuple[str, str]:
        decided = await router.route(
            session_id=session_id, user=None, requested="livekit", caller=f"launch:{session_id}"
        )
        await router.issued(session_id, *decided)
        return decided

    assert await admit(store, "before") == "admitted"
    await livekit("early")
    await router.fallback("early", caller="launch:early", anonymous=False)

    own_redis.kill()
    with caplog.at_level(logging.WARNING, logger="voicegw.store"):
        # Tickets fail closed: neither a new one nor the one used before the outage passes.
        assert await admit(store, "during") == "unavailable"
        assert await admit(store, "before") == "unavailable"
        # Routing goes on from this replica's memory: what it wrote (the sticky fallback of
        # "early") and the breaker record it last read (one failure), counted on locally.
        assert await livekit("early") == ("openai", "fallback")
        assert await livekit("late") == ("livekit", "url_flag")
        await router.fallback("late", caller="launch:late", anonymous=False)
        assert await livekit("next") == ("openai", "breaker_open")
        assert (await store.check()).state == "degraded"
        assert metric("voicegw_store_up") == 0
        assert outage_lines(caplog, "shared store unavailable") == 1

        own_redis.start()
        health = await store.check()
        assert health.state == "ok"
        assert metric("voicegw_store_up") == 1
        assert outage_lines(caplog, "shared store recovered") == 1
    assert await admit(store, "after") == "admitted"
    assert await admit(store, "after") == "used"
    # The outage's failures stayed local: the shared breaker (an empty Redis) is closed.
    assert (await router.breaker()).state == "closed"
    for record in caplog.records:
        assert own_redis.url not in record.getMessage() + str(vars(record))


async def test_a_frozen_redis_costs_each_call_one_bounded_wait(
    own_redis: RedisServer, store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    assert await admit(store, "warm") == "admitted"
    own_redis.freeze()
    try:
        async with asyncio.timeout(3):  # the store's bound is 0.3 s: a hang fails here
            assert await admit(store, "frozen") == "unavailable"
            facts = await store.session_facts("s1", Quota(QUOTA_CALLER, 10, 60))
            assert facts.retry_after_s is None and not facts.fell_back
            assert (await store.check()).state == "degraded"
    finally:
        own_redis.thaw()

    async def recovered() -> bool:
        return (await store.check()).state == "ok"

    await until(recovered, "the thawed Redis answers again")
    assert await admit(store, "thawed") == "admitted"
