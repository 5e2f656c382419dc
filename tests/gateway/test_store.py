"""The store's semantics, the same tests against both stores (in memory; Redis, where `peer` is
a second client as another replica holds it): tickets used once until they expire, relay slots
per session id, sticky fallbacks, livekit issues reported once, rate-limit windows, the
breaker's compare-and-swap, counts across replicas, and keys that never outlive their TTL."""

from __future__ import annotations

import asyncio
import sys
import time
from types import FrameType
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.store import MemoryStore, Quota, Store
from tests.stack import until

LEASE_S = 60.0


async def admit(
    store: Store, jti: str, *, session_id: str = "s1", ttl_s: float = 60.0, limit: int = 10
) -> str:
    outcome, slot = await store.admit_relay(
        jti=jti,
        expires_at=time.time() + ttl_s,
        session_id=session_id,
        limit=limit,
        lease_s=LEASE_S,
    )
    assert (slot is not None) == (outcome == "admitted")
    return outcome


async def test_a_ticket_is_admitted_once_on_every_replica(store: Store, peer: Store) -> None:
    assert await admit(store, "t1") == "admitted"
    assert await admit(peer, "t1") == "used"
    assert await admit(store, "t1") == "used"
    assert await admit(peer, "t2") == "admitted"


async def test_simultaneous_redemptions_admit_exactly_one(store: Store, peer: Store) -> None:
    outcomes = await asyncio.gather(*(admit(s, "race") for s in [store, peer] * 10))
    assert sorted(outcomes) == ["admitted"] + ["used"] * 19


async def test_a_used_ticket_is_forgotten_when_it_expires(store: Store) -> None:
    assert await admit(store, "short", ttl_s=0.3) == "admitted"
    assert await admit(store, "short", ttl_s=0.3) == "used"

    async def forgotten() -> bool:
        return await admit(store, "short", ttl_s=0.3) == "admitted"

    await until(forgotten, "the expired ticket is forgotten")


async def test_relay_slots_cap_each_session_id_and_come_back(store: Store, peer: Store) -> None:
    slots = []
    for jti in ("a", "b"):
        outcome, slot = await store.admit_relay(
            jti=jti, expires_at=time.time() + 60, session_id="s1", limit=2, lease_s=LEASE_S
        )
        assert outcome == "admitted" and slot is not None
        slots.append(slot)
    assert await admit(peer, "c", limit=2) == "full"
    assert await admit(peer, "c", session_id="s2", limit=2) == "admitted"
    await store.release_relay(session_id="s1", slot=slots[0])
    assert await admit(peer, "c", limit=2) == "used"  # a refused ticket was not used up ...
    assert await admit(peer, "d", limit=2) == "admitted"  # ... and the slot is back


async def test_a_slot_whose_holder_vanished_expires_with_its_lease(store: Store) -> None:
    outcome, _ = await store.admit_relay(
        jti="held", expires_at=time.time() + 60, session_id="s1", limit=1, lease_s=0.3
    )
    assert outcome == "admitted"
    assert await admit(store, "next", limit=1) == "full"

    async def free() -> bool:
        return await admit(store, "next", limit=1) == "admitted"

    await until(free, "the dead holder's slot expires")


async def test_a_fallback_sticks_everywhere_and_a_livekit_issue_is_reported_once(
    store: Store, peer: Store
) -> None:
    quota = Quota("caller", 100, 60)
    assert not (await store.session_facts("s1", quota)).fell_back
    never_livekit = await store.fallback_reported("s1", quota, sticky_ttl_s=60)
    assert not never_livekit.first_report
    assert (await peer.session_facts("s1", quota)).fell_back

    await store.session_issued("s2", "livekit", "url_flag", livekit_ttl_s=60)
    assert (await peer.fallback_reported("s2", quota, sticky_ttl_s=60)).first_report
    assert not (await store.fallback_reported("s2", quota, sticky_ttl_s=60)).first_report
    assert (await store.overview()).fallbacks_reported == 1


async def test_a_sticky_fallback_expires(store: Store) -> None:
    quota = Quota("caller", 100, 60)
    await store.fallback_reported("s1", quota, sticky_ttl_s=0.3)
    assert (await store.session_facts("s1", quota)).fell_back

    async def expired() -> bool:
        return not (await store.session_facts("s1", quota)).fell_back

    await until(expired, "the sticky fallback expires")


async def test_rate_limit_windows_are_shared_and_say_when_to_retry(
    store: Store, peer: Store
) -> None:
    quota = Quota("launch:abc", 3, 1.0)
    for s in (store, peer, store):
        assert (await s.session_facts("abc", quota)).retry_after_s is None
    over = await peer.session_facts("abc", quota)
    assert over.retry_after_s is not None and 0 < over.retry_after_s <= 1.0
    limited = await store.fallback_reported("abc", quota, sticky_ttl_s=60)
    assert limited.retry_after_s is not None
    assert not (await store.session_facts("abc", Quota("other", 3, 1.0))).fell_back  # no effect
    assert (await store.session_facts("abc", Quota("launch:xyz", 3, 1.0))).retry_after_s is None

    async def new_window() -> bool:
        return (await store.session_facts("abc", quota)).retry_after_s is None

    await until(new_window, "the next window starts")


async def test_the_breaker_record_is_swapped_only_from_what_it_was(
    store: Store, peer: Store
) -> None:
    assert await store.load_breaker() is None
    assert await store.swap_breaker(None, "one", ttl_s=60) == (True, "one")
    assert await peer.swap_breaker(None, "two", ttl_s=60) == (False, "one")
    assert await peer.swap_breaker("one", "two", ttl_s=60) == (True, "two")
    assert await store.load_breaker() == "two"
    assert (await store.session_facts("s", Quota("c", 9, 60))).breaker == "two"


async def test_counts_add_up_across_replicas(store: Store, peer: Store) -> None:
    await store.session_issued("a", "livekit", "rollout", livekit_ttl_s=60)
    await peer.session_issued("b", "livekit", "rollout", livekit_ttl_s=60)
    await peer.session_issued("c", "openai", "default", livekit_ttl_s=60)
    overview = await store.overview()
    assert overview.issued == {("livekit", "rollout"): 2, ("openai", "default"): 1}
    assert overview.since is not None and abs(overview.since - time.time()) < 60


async def test_check_says_the_store_works(store: Store, store_kind: str) -> None:
    health = await store.check()
    assert (health.kind, health.state) == (store_kind, "ok")


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_every_redis_key_is_namespaced_and_expires(
    store: Store, store_env: dict[str, str]
) -> None:
    quota = Quota("launch:s1", 10, 60)
    await store.session_facts("s1", quota)
    await store.session_issued("s1", "livekit", "url_flag", livekit_ttl_s=60)
    await store.session_issued("s2", "livekit", "url_flag", livekit_ttl_s=60)
    await store.fallback_reported("s1", quota, sticky_ttl_s=60)
    await store.swap_breaker(None, "record", ttl_s=60)
    await admit(store, "jti-1")
    prefix = f"voicegw:{store_env['REDIS_KEY_PREFIX']}:"
    async with Redis.from_url(store_env["REDIS_URL"], decode_responses=True) as redis:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        ttls = {k: await redis.pttl(k) for k in keys}
    kinds = {k.removeprefix(prefix).split(":")[0] for k in keys}
    assert kinds == {"rate", "fallback", "livekit", "counts", "breaker", "ticket", "relay"}
    assert all(ttl > 0 for ttl in ttls.values()), ttls


def _line_events(call: Any) -> int:
    """Python lines executed while `call()` runs (a loop over n entries costs n)."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(None)
    return count


def test_admitting_a_ticket_costs_the_same_with_100k_used_ones() -> None:
    """Issue 17 item 13: the used-ticket map was rebuilt on every redemption (12.9 ms at 100k
    entries). Expiry now leaves through a heap: the work per admission must not grow with the
    number of live entries."""
    store = MemoryStore()
    now = time.time()

    def admit_one(jti: str) -> None:
        coro = store.admit_relay(
            jti=jti, expires_at=now + 60, session_id=jti, limit=1, lease_s=LEASE_S
        )
        try:
            coro.send(None)
        except StopIteration as done:
            assert done.value[0] == "admitted"

    for i in range(10):
        admit_one(f"warm-{i}")
    few = _line_events(lambda: admit_one("probe-few"))
    for i in range(100_000):
        admit_one(f"bulk-{i}")
    many = _line_events(lambda: admit_one("probe-many"))
    assert many <= few + 50, (few, many)
