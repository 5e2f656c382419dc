"""The admin view and /metrics: what ops look at during a rollout or a rollback."""

from __future__ import annotations

from pipelines.contracts import N8nExecutor
from pipelines.contracts.metrics import observe_turn
from simulators.n8n import N8nSimulator
from simulators.server import RunningServer

from .conftest import AUTH, SECRETS, Gw, metric, ops_env, running_gateway


async def _issue(gw: Gw, **params: str) -> None:
    response = await gw.client.get("/v1/session", params=params)
    assert response.status_code == 200, response.text


async def test_admin_view_shows_rules_breaker_and_counts() -> None:
    env = ops_env(
        VOICE_LIVEKIT_ROLLOUT_PERCENT="25",
        VOICE_LIVEKIT_ALLOWLIST="ann@example.com, BO@example.com,,cy@example.com",
    )
    async with running_gateway(env) as gw:
        await _issue(gw, session_id="a1", mode="livekit")
        await _issue(gw, session_id="a2", mode="livekit")
        await _issue(gw, session_id="a3", mode="openai")
        await _issue(gw, session_id="a4", user="ann@example.com")
        fallback = await gw.client.post(
            "/v1/session/fallback", json={"session_id": "a1", "reason": "no agent"}
        )
        assert fallback.status_code == 200

        assert (await gw.client.get("/v1/admin/routing")).status_code == 401
        wrong = await gw.client.get("/v1/admin/routing", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        response = await gw.client.get("/v1/admin/routing", headers=AUTH)
    assert response.status_code == 200
    view = response.json()
    assert view["routing"] == {
        "effective_default_mode": "openai",
        "default_mode": "openai",
        "force_mode": None,
        "allow_mode_override": True,
        "rollout_percent": 25,
        "allowlist_size": 3,
    }
    assert view["breaker"]["state"] == "closed"
    assert view["breaker"]["failures_in_window"] == 1
    assert view["breaker"]["threshold"] == 3
    assert view["fallbacks_reported"] == 1
    sessions = view["sessions"]
    assert sessions["total"] == 5
    assert sessions["by_mode"] == {"livekit": 3, "openai": 2}
    assert sessions["by_reason"] == {"allowlist": 1, "fallback": 1, "url_flag": 3}
    assert {"mode": "livekit", "reason": "url_flag", "count": 2} in sessions["by_mode_and_reason"]
    for value in SECRETS.values():
        assert value not in response.text


async def test_admin_view_shows_the_kill_switch() -> None:
    async with running_gateway(ops_env(VOICE_FORCE_MODE="openai")) as gw:
        await _issue(gw, session_id="k1", mode="livekit")
        view = (await gw.client.get("/v1/admin/routing", headers=AUTH)).json()
    assert view["routing"]["effective_default_mode"] == "openai"
    assert view["routing"]["force_mode"] == "openai"
    assert view["sessions"]["by_reason"] == {"forced": 1}


async def test_metrics_count_sessions_by_mode_and_reason() -> None:
    before = metric("voicegw_sessions_issued_total", mode="livekit", reason="url_flag")
    fallbacks = metric("voicegw_fallbacks_reported_total")
    async with running_gateway(ops_env()) as gw:
        await _issue(gw, session_id="m1", mode="livekit")
        await _issue(gw, session_id="m2", mode="livekit")
        await gw.client.post("/v1/session/fallback", json={"session_id": "m1", "reason": "x"})
        response = await gw.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert metric("voicegw_sessions_issued_total", mode="livekit", reason="url_flag") == before + 2
    assert metric("voicegw_fallbacks_reported_total") == fallbacks + 1
    text = response.text
    for name in (
        "voicegw_sessions_issued_total",
        "voicegw_breaker_state",
        "voicegw_relay_sessions_active",
        "voicegw_upstream_errors_total",
        "voicegw_tool_calls_total",
        "voicegw_tool_latency_seconds",
        "voicegw_turn_stage_latency_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    for value in SECRETS.values():
        assert value not in text


async def test_tool_calls_are_counted_by_name_and_status(
    n8n: N8nSimulator, n8n_server: RunningServer
) -> None:
    ok = metric("voicegw_tool_calls_total", name="query_database", status="ok")
    err = metric("voicegw_tool_calls_total", name="query_database", status="error")
    unknown = metric("voicegw_tool_calls_total", name="unknown", status="error")
    observed = metric("voicegw_tool_latency_seconds_count", name="query_database")
    n8n.script("query-database", "ok", "http_500")
    executor = N8nExecutor(n8n_server.url, timeout_s=2)
    try:
        for call in ("c1", "c2"):
            await executor.execute(
                session_id="t1", call_id=call, name="query_database", arguments={"query": "q"}
            )
        await executor.execute(session_id="t1", call_id="c3", name="made_up_tool", arguments={})
    finally:
        await executor.aclose()
    assert metric("voicegw_tool_calls_total", name="query_database", status="ok") == ok + 1
    assert metric("voicegw_tool_calls_total", name="query_database", status="error") == err + 1
    assert metric("voicegw_tool_calls_total", name="unknown", status="error") == unknown + 1
    assert metric("voicegw_tool_latency_seconds_count", name="query_database") == observed + 2


def test_turn_latencies_are_recorded_per_stage_in_seconds() -> None:
    count = metric("voicegw_turn_stage_latency_seconds_count", mode="livekit", stage="stt")
    total = metric("voicegw_turn_stage_latency_seconds_sum", mode="livekit", stage="stt")
    v2v = metric("voicegw_turn_stage_latency_seconds_count", mode="livekit", stage="voice_to_voice")
    observe_turn("livekit", {"stt_ms": 150.0, "voice_to_voice_ms": None, "bogus_ms": 3.0})
    assert metric("voicegw_turn_stage_latency_seconds_count", mode="livekit", stage="stt") == (
        count + 1
    )
    stt_sum = metric("voicegw_turn_stage_latency_seconds_sum", mode="livekit", stage="stt")
    assert abs(stt_sum - total - 0.15) < 1e-9
    assert (
        metric("voicegw_turn_stage_latency_seconds_count", mode="livekit", stage="voice_to_voice")
        == v2v
    )
