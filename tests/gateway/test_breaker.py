"""The rollback breaker: its rules as pure functions (opened by distinct failures, a cooldown no
report restarts, one probe, closed when the probe survives its window), then through the
gateway against both stores. Time moves only when the test moves it."""

from __future__ import annotations

import pytest

from gateway.breaker import CLOSED, BreakerRecord, BreakerRules
from gateway.store import Store
from gateway.tokens import issue_launch_token
from tests.stack import AUTH, SECRETS, FakeClock, Gw, gateway_env, metric, served_gateway

RULES = BreakerRules(threshold=3, window_s=60, cooldown_s=30, probe_window_s=20)


def failed(record: BreakerRecord, key: str, now: float) -> BreakerRecord:
    return RULES.fail(RULES.advance(record, now), key, now)


def opened(now: float) -> BreakerRecord:
    record = CLOSED
    for key in ("s1", "s2", "s3"):
        record = failed(record, key, now)
    assert record.state == "open"
    return record


def test_opens_at_threshold_distinct_sessions_within_the_window() -> None:
    r = failed(CLOSED, "s1", 0)
    r = failed(r, "s1", 1)  # one broken page reporting twice is one failure
    r = failed(r, "s2", 2)
    assert r.state == "closed" and not RULES.blocks(r)
    r = failed(r, "s3", 3)
    assert r.state == "open" and RULES.blocks(r)
    assert RULES.admit(r, "s4", 3) is None


def test_failures_older_than_the_window_do_not_count() -> None:
    r = failed(failed(CLOSED, "s1", 0), "s2", 0)
    r = failed(r, "s3", 61)
    assert r.state == "closed"
    assert RULES.snapshot(r, 61).failures_in_window == 1


def test_the_cooldown_runs_from_the_opening_whatever_is_reported() -> None:
    r = opened(0)
    r = failed(r, "s4", 25)  # a late report (before: restarted the cooldown)
    assert RULES.snapshot(RULES.advance(r, 25), 25).seconds_until_half_open == pytest.approx(5)
    assert RULES.advance(r, 29.9).state == "open"
    assert RULES.advance(r, 30).state == "half_open"


def test_half_open_admits_one_probe_and_closes_after_its_window() -> None:
    r = RULES.advance(opened(0), 30)
    assert r.state == "half_open"
    assert not RULES.blocks(r, "p1")  # no probe yet: the next livekit session may be it
    admitted = RULES.admit(r, "p1", 30)
    assert admitted is not None and admitted.probe == "p1"
    assert RULES.admit(admitted, "p1", 31) == admitted  # a reload stays the probe
    assert RULES.admit(admitted, "p2", 31) is None
    assert RULES.blocks(admitted, "p2") and not RULES.blocks(admitted, "p1")
    assert RULES.advance(admitted, 49.9).state == "half_open"
    closed = RULES.advance(admitted, 50)
    assert closed.state == "closed" and closed.failures == ()
    assert RULES.admit(closed, "p2", 50) == closed


def test_only_the_probes_own_failure_reopens() -> None:
    r = RULES.admit(RULES.advance(opened(0), 30), "p1", 30)
    assert r is not None
    assert failed(r, "s1", 35).state == "half_open"  # an old session's late report
    reopened = failed(r, "p1", 35)
    assert reopened.state == "open" and reopened.opened_count == 2
    assert RULES.advance(reopened, 64.9).state == "open"
    half = RULES.advance(reopened, 65)
    assert half.state == "half_open" and half.probe is None  # a fresh probe is needed


def test_a_failed_active_probe_reopens_a_half_open_breaker() -> None:
    half = RULES.advance(opened(0), 30)
    assert RULES.fail(half, "probe:x:1", 31, active_probe=True).state == "open"


def test_the_record_survives_storage_and_a_bad_one_reads_as_closed() -> None:
    r = RULES.admit(RULES.advance(opened(0), 30), "p1", 30)
    assert r is not None
    assert BreakerRecord.loads(r.dumps()) == r
    assert BreakerRecord.loads(None) == CLOSED
    assert BreakerRecord.loads('{"state": "melted"}') == CLOSED


# -- through the gateway, on both stores --------------------------------------------------------


def launch_token(session_id: str) -> str:
    return issue_launch_token(
        SECRETS["GATEWAY_SECRET"], session_id=session_id, user=None, mode=None, ttl_s=3600
    )


async def session(gw: Gw, session_id: str) -> tuple[str, str]:
    response = await gw.client.get(
        "/v1/session", params={"launch": launch_token(session_id), "mode": "livekit"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["mode"], body["reason"]


async def fallback(gw: Gw, session_id: str) -> None:
    response = await gw.client.post(
        "/v1/session/fallback",
        json={"session_id": session_id, "reason": "ice failed"},
        headers={"Authorization": f"Bearer {launch_token(session_id)}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["mode"] == "openai"


async def test_breaker_through_the_gateway(clock: FakeClock, store_env: dict[str, str]) -> None:
    opened_before = metric("voicegw_breaker_transitions_total", state="open")
    env = gateway_env(BREAKER_COOLDOWN_SECONDS="30", BREAKER_PROBE_WINDOW_SECONDS="20", **store_env)
    async with served_gateway(env, clock=clock) as gw:
        for sid in ("a1", "a2", "a3"):
            assert await session(gw, sid) == ("livekit", "url_flag")
            await fallback(gw, sid)

        # Open: new sessions go to openai, and every surface says so.
        assert await session(gw, "b1") == ("openai", "breaker_open")
        ready = await gw.client.get("/readyz")
        assert ready.status_code == 200  # openai still serves
        assert ready.json()["breaker"]["state"] == "open"
        assert ready.json()["modes"]["livekit"]["breaker"] == "open"
        text = (await gw.client.get("/metrics")).text
        assert 'voicegw_breaker_state{state="open"} 1.0' in text
        assert 'voicegw_breaker_state{state="closed"} 0.0' in text
        admin = (await gw.client.get("/v1/admin/routing", headers=AUTH)).json()
        assert admin["breaker"]["state"] == "open"
        assert admin["breaker"]["failures_in_window"] == 3
        assert metric("voicegw_breaker_transitions_total", state="open") == opened_before + 1

        # Kept open while the cooldown runs.
        clock.advance(29)
        assert await session(gw, "b2") == ("openai", "breaker_open")

        # Half-open: one probe session gets livekit, the others still openai.
        clock.advance(1)
        assert await session(gw, "probe") == ("livekit", "url_flag")
        assert await session(gw, "b3") == ("openai", "breaker_open")
        assert await session(gw, "probe") == ("livekit", "url_flag")  # page reload
        admin = (await gw.client.get("/v1/admin/routing", headers=AUTH)).json()
        assert admin["breaker"]["state"] == "half_open"
        assert admin["breaker"]["probe_session_id"] == "probe"

        # The probe survives its window: closed, livekit for everyone again.
        clock.advance(20)
        assert await session(gw, "c1") == ("livekit", "url_flag")
        assert (await gw.client.get("/readyz")).json()["breaker"]["state"] == "closed"
        text = (await gw.client.get("/metrics")).text
        assert 'voicegw_breaker_state{state="closed"} 1.0' in text


async def test_forced_mode_beats_the_breaker(clock: FakeClock, store: Store) -> None:
    async with served_gateway(gateway_env(), clock=clock, store=store) as gw:
        for sid in ("s1", "s2", "s3"):
            await session(gw, sid)
            await fallback(gw, sid)
        assert await session(gw, "x") == ("openai", "breaker_open")
    env = gateway_env(VOICE_FORCE_MODE="livekit")
    async with served_gateway(env, clock=clock, store=store) as gw:  # redeployed, kill switch on
        assert await session(gw, "f1") == ("livekit", "forced")
        assert (await gw.gateway.router.breaker()).state == "open"


async def test_breaker_settings_come_from_the_environment() -> None:
    env = gateway_env(BREAKER_FAILURE_THRESHOLD="1", BREAKER_COOLDOWN_SECONDS="600")
    async with served_gateway(env) as gw:
        await session(gw, "x1")
        await fallback(gw, "x1")
        assert await session(gw, "x2") == ("openai", "breaker_open")
        snapshot = await gw.gateway.router.breaker()
        assert (snapshot.threshold, snapshot.cooldown_s) == (1, 600)
