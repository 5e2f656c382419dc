"""The rollback breaker: opened by fallback reports, kept open while failures go on, closed by
one probe session that survives its probe window. Time moves only when the test moves it."""

from __future__ import annotations

import pytest

from gateway.breaker import Breaker
from tests.stack import AUTH, FakeClock, Gw, gateway_env, metric, served_gateway


def breaker(clock: FakeClock) -> Breaker:
    return Breaker(threshold=3, window_s=60, cooldown_s=30, probe_window_s=20, clock=clock)


def test_opens_at_threshold_distinct_sessions_within_the_window(clock: FakeClock) -> None:
    b = breaker(clock)
    b.record_failure("s1")
    b.record_failure("s1")  # one broken page reporting twice is one failure
    b.record_failure("s2")
    assert b.state() == "closed"
    assert not b.blocks()
    b.record_failure("s3")
    assert b.state() == "open"
    assert b.blocks()
    assert not b.admit_probe("s4")


def test_failures_older_than_the_window_do_not_count(clock: FakeClock) -> None:
    b = breaker(clock)
    b.record_failure("s1")
    b.record_failure("s2")
    clock.advance(61)
    b.record_failure("s3")
    assert b.state() == "closed"
    assert b.snapshot().failures_in_window == 1


def test_stays_open_while_failures_continue(clock: FakeClock) -> None:
    b = breaker(clock)
    for key in ("s1", "s2", "s3"):
        b.record_failure(key)
    clock.advance(25)
    b.record_failure("s4")  # a late report restarts the cooldown
    clock.advance(25)
    assert b.state() == "open"
    assert b.snapshot().seconds_until_half_open == pytest.approx(5)
    clock.advance(5)
    assert b.state() == "half_open"


def test_half_open_admits_one_probe_and_closes_after_its_window(clock: FakeClock) -> None:
    b = breaker(clock)
    for key in ("s1", "s2", "s3"):
        b.record_failure(key)
    clock.advance(30)
    assert b.state() == "half_open"
    assert not b.blocks("p1")  # no probe yet: the next livekit session may be it
    assert b.admit_probe("p1")
    assert b.admit_probe("p1")  # a reload of the probe session stays the probe
    assert not b.admit_probe("p2")
    assert b.blocks("p2") and not b.blocks("p1")
    clock.advance(19)
    assert b.state() == "half_open"
    clock.advance(1)
    assert b.state() == "closed"
    assert b.snapshot().failures_in_window == 0
    assert b.admit_probe("p2")


def test_a_failure_during_the_probe_reopens(clock: FakeClock) -> None:
    b = breaker(clock)
    for key in ("s1", "s2", "s3"):
        b.record_failure(key)
    clock.advance(30)
    assert b.admit_probe("p1")
    clock.advance(5)
    b.record_failure("p1")
    assert b.state() == "open"
    assert b.snapshot().opened_count == 2
    clock.advance(29)
    assert b.state() == "open"
    clock.advance(1)
    assert b.state() == "half_open"
    assert b.snapshot().probe_session_id is None  # a fresh probe is needed


async def _session(gw: Gw, session_id: str) -> tuple[str, str]:
    response = await gw.client.get(
        "/v1/session", params={"session_id": session_id, "mode": "livekit"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["mode"], body["reason"]


async def _fallback(gw: Gw, session_id: str) -> None:
    response = await gw.client.post(
        "/v1/session/fallback", json={"session_id": session_id, "reason": "ice failed"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["mode"] == "openai"


async def test_breaker_through_the_gateway(clock: FakeClock) -> None:
    b = breaker(clock)
    opened_before = metric("voicegw_breaker_transitions_total", state="open")
    async with served_gateway(gateway_env(), breaker=b) as gw:
        assert await _session(gw, "a1") == ("livekit", "url_flag")
        for sid in ("a1", "a2", "a3"):
            await _fallback(gw, sid)

        # Open: new sessions go to openai, and every surface says so.
        assert await _session(gw, "b1") == ("openai", "breaker_open")
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
        assert await _session(gw, "b2") == ("openai", "breaker_open")

        # Half-open: one probe session gets livekit, the others still openai.
        clock.advance(1)
        assert await _session(gw, "probe") == ("livekit", "url_flag")
        assert await _session(gw, "b3") == ("openai", "breaker_open")
        assert await _session(gw, "probe") == ("livekit", "url_flag")  # page reload
        admin = (await gw.client.get("/v1/admin/routing", headers=AUTH)).json()
        assert admin["breaker"]["state"] == "half_open"
        assert admin["breaker"]["probe_session_id"] == "probe"

        # The probe survives its window: closed, livekit for everyone again.
        clock.advance(20)
        assert await _session(gw, "c1") == ("livekit", "url_flag")
        assert (await gw.client.get("/readyz")).json()["breaker"]["state"] == "closed"
        text = (await gw.client.get("/metrics")).text
        assert 'voicegw_breaker_state{state="closed"} 1.0' in text


async def test_forced_mode_beats_the_breaker(clock: FakeClock) -> None:
    b = breaker(clock)
    for key in ("s1", "s2", "s3"):
        b.record_failure(key)
    async with served_gateway(gateway_env(VOICE_FORCE_MODE="livekit"), breaker=b) as gw:
        assert await _session(gw, "f1") == ("livekit", "forced")


async def test_breaker_settings_come_from_the_environment() -> None:
    env = gateway_env(BREAKER_FAILURE_THRESHOLD="1", BREAKER_COOLDOWN_SECONDS="600")
    async with served_gateway(env) as gw:
        await _fallback(gw, "x1")
        assert await _session(gw, "x2") == ("openai", "breaker_open")
        snapshot = gw.gateway.breaker.snapshot()
        assert (snapshot.threshold, snapshot.cooldown_s) == (1, 600)
