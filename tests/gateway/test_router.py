"""The router: one decision in order (kill switch, sticky fallback, breaker and its probe, URL
flag, allowlist, rollout, default), the same on two replicas sharing a store (two routers on
one `MemoryStore`, or two Redis clients on one prefix), and the fallback reports that may feed
the breaker (issue 17 item 9: no single page can hold it) or not."""

from __future__ import annotations

import asyncio

import pytest

from gateway.breaker import BreakerRules
from gateway.errors import RateLimited
from gateway.router import Router
from gateway.store import Store
from pipelines.contracts.routing import RoutingPolicy
from tests.stack import FakeClock, metric

RULES = BreakerRules(threshold=3, window_s=60, cooldown_s=60, probe_window_s=60)


def router(store: Store, clock: FakeClock, **policy: object) -> Router:
    return Router(RoutingPolicy(**policy), RULES, store, clock=clock)  # type: ignore[arg-type]


async def livekit(r: Router, session_id: str) -> tuple[str, str]:
    """Ask for a livekit session by URL flag, as a page with a launch token does."""
    mode, reason = await r.route(
        session_id=session_id, user=None, requested="livekit", caller=f"launch:{session_id}"
    )
    await r.issued(session_id, mode, reason)
    return mode, reason


async def fell_back(r: Router, session_id: str, *, anonymous: bool = False) -> None:
    await r.fallback(session_id, caller=f"launch:{session_id}", anonymous=anonymous)


async def open_breaker(a: Router, b: Router) -> None:
    for r, sid in ((a, "f1"), (b, "f2"), (a, "f3")):
        assert await livekit(r, sid) == ("livekit", "url_flag")
        await fell_back(r, sid)
    assert (await a.breaker()).state == "open"


@pytest.fixture
def a(store: Store, clock: FakeClock) -> Router:
    return router(store, clock)


@pytest.fixture
def b(peer: Store, clock: FakeClock) -> Router:
    return router(peer, clock)


async def test_failures_split_over_two_replicas_open_the_breaker_on_both(
    a: Router, b: Router
) -> None:
    await open_breaker(a, b)
    assert await livekit(b, "next") == ("openai", "breaker_open")
    assert await livekit(a, "other") == ("openai", "breaker_open")


async def test_exactly_one_probe_is_admitted_across_replicas(
    a: Router, b: Router, clock: FakeClock
) -> None:
    await open_breaker(a, b)
    clock.advance(60)
    decided = await asyncio.gather(*(livekit(r, f"p{i}") for i, r in enumerate([a, b] * 10)))
    assert sorted(decided).count(("livekit", "url_flag")) == 1
    assert sorted(decided).count(("openai", "breaker_open")) == 19
    probe = (await b.breaker()).probe_session_id
    assert probe is not None and await livekit(a, probe) == ("livekit", "url_flag")  # a reload


async def test_a_fallback_at_one_replica_is_sticky_at_the_other(a: Router, b: Router) -> None:
    assert await livekit(a, "s1") == ("livekit", "url_flag")
    await fell_back(a, "s1")
    assert await livekit(b, "s1") == ("openai", "fallback")
    # Only the kill switch overrides it.
    forced = router(b.store, FakeClock(), force_mode="livekit")
    assert await livekit(forced, "s1") == ("livekit", "forced")


async def test_the_rules_keep_their_order(store: Store, clock: FakeClock) -> None:
    r = router(store, clock, allowlist=frozenset({"ann@example.com"}), rollout_percent=0)
    assert await r.route(session_id="x", user="ann@example.com", requested=None, caller="c") == (
        "livekit",
        "allowlist",
    )
    assert await r.route(
        session_id="x", user="ann@example.com", requested="openai", caller="c"
    ) == (
        "openai",
        "url_flag",
    )
    assert await r.route(session_id="y", user=None, requested=None, caller="c") == (
        "openai",
        "default",
    )


async def test_session_requests_are_rate_limited_per_caller(store: Store, clock: FakeClock) -> None:
    r = Router(RoutingPolicy(), RULES, store, rate_limit=3, rate_window_s=30, clock=clock)
    for _ in range(3):
        await r.route(session_id="s1", user=None, requested=None, caller="launch:s1")
    with pytest.raises(RateLimited) as limited:
        await r.route(session_id="s1", user=None, requested=None, caller="launch:s1")
    assert 1 <= limited.value.retry_after_s <= 30
    with pytest.raises(RateLimited):
        await r.fallback("s1", caller="launch:s1", anonymous=False)
    await r.route(session_id="s2", user=None, requested=None, caller="launch:s2")


# -- issue 17 item 9: a breaker no single page can hold ------------------------------------------


async def test_one_page_reporting_again_and_again_cannot_hold_the_breaker_open(
    a: Router, b: Router, clock: FakeClock
) -> None:
    """Before: after 3 genuine failures, one token reporting every 4 s kept it open for 40 s
    (each report restarted the cooldown), and each report counted."""
    reported = metric("voicegw_fallbacks_reported_total")
    await open_breaker(a, b)
    for _ in range(15):
        clock.advance(4)
        await fell_back(b, "f1")
    assert metric("voicegw_fallbacks_reported_total") == reported + 3
    assert (await a.breaker()).state == "half_open"  # 60 s after it opened


async def test_in_half_open_only_the_probes_own_failure_reopens(
    a: Router, b: Router, clock: FakeClock
) -> None:
    await open_breaker(a, b)
    clock.advance(60)
    assert await livekit(a, "probe") == ("livekit", "url_flag")
    await fell_back(b, "f2")  # before: any report re-opened it
    assert (await a.breaker()).state == "half_open"
    # A session issued livekit before the breaker opened reports late: it counts as a
    # report, but it is not the probe.
    await fell_back(b, "probe")
    assert (await a.breaker()).state == "open"


async def test_a_session_never_issued_livekit_cannot_feed_the_breaker(a: Router, b: Router) -> None:
    """Before: an openai-pinned session could report, as often as it liked."""
    for sid in ("o1", "o2", "o3", "o4"):
        mode, reason = await a.route(
            session_id=sid, user=None, requested="openai", caller=f"launch:{sid}"
        )
        await a.issued(sid, mode, reason)
        await fell_back(b, sid)
    snapshot = await a.breaker()
    assert (snapshot.state, snapshot.failures_in_window) == ("closed", 0)


async def test_anonymous_reports_cannot_open_the_breaker(a: Router, b: Router) -> None:
    """Before: in dev, 10,000 anonymous reports opened it."""
    reported = metric("voicegw_fallbacks_reported_total")
    for i in range(20):
        assert await livekit(a, f"anon{i}") == ("livekit", "url_flag")
        await fell_back(b, f"anon{i}", anonymous=True)
    assert metric("voicegw_fallbacks_reported_total") == reported + 20  # they did fall back
    assert (await a.breaker()).state == "closed"


async def test_a_repeated_report_is_not_counted_again(a: Router, b: Router) -> None:
    reported = metric("voicegw_fallbacks_reported_total")
    ignored = metric("voicegw_fallback_reports_ignored_total")
    await livekit(a, "s1")
    for r in (a, b, a, b):
        await fell_back(r, "s1")
    assert metric("voicegw_fallbacks_reported_total") == reported + 1
    assert metric("voicegw_fallback_reports_ignored_total") == ignored + 3
    assert (await a.overview()).counts.fallbacks_reported == 1
    assert (await a.breaker()).failures_in_window == 1
