"""The admin view (`GET /v1/admin/routing`): what ops look at during a rollout or a rollback."""

from __future__ import annotations

import pytest

from gateway.tokens import issue_launch_token
from tests.stack import AUTH, SECRETS, gateway_env, issue_session, served_gateway


async def test_admin_view_shows_rules_breaker_and_counts(
    store_env: dict[str, str], store_kind: str
) -> None:
    env = gateway_env(
        VOICE_LIVEKIT_ROLLOUT_PERCENT="25",
        VOICE_LIVEKIT_ALLOWLIST="ann@example.com, BO@example.com,,cy@example.com",
        **store_env,
    )
    launch = issue_launch_token(
        SECRETS["GATEWAY_SECRET"], session_id="a1", user=None, mode=None, ttl_s=600
    )
    async with served_gateway(env) as gw:
        await issue_session(gw, launch=launch, mode="livekit")
        await issue_session(gw, session_id="a2", mode="livekit")
        await issue_session(gw, session_id="a3", mode="openai")
        await issue_session(gw, session_id="a4", user="ann@example.com")
        fallback = await gw.client.post(
            "/v1/session/fallback",
            json={"session_id": "a1", "reason": "no agent"},
            headers={"Authorization": f"Bearer {launch}"},
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
    assert view["store"] == {"kind": store_kind, "state": "ok", "detail": None}
    assert view["counts_since"] is not None
    for value in SECRETS.values():
        assert value not in response.text


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_admin_view_counts_every_replica(store_env: dict[str, str]) -> None:
    env = gateway_env(**store_env)
    async with served_gateway(env) as a, served_gateway(env) as b:
        await issue_session(a, session_id="r1", mode="livekit")
        await issue_session(b, session_id="r2", mode="livekit")
        await issue_session(b, session_id="r3", mode="openai")
        views = [(await gw.client.get("/v1/admin/routing", headers=AUTH)).json() for gw in (a, b)]
    for view in views:
        assert view["sessions"]["by_mode"] == {"livekit": 2, "openai": 1}


async def test_admin_view_shows_the_kill_switch() -> None:
    async with served_gateway(gateway_env(VOICE_FORCE_MODE="openai")) as gw:
        await issue_session(gw, session_id="k1", mode="livekit")
        view = (await gw.client.get("/v1/admin/routing", headers=AUTH)).json()
    assert view["routing"]["effective_default_mode"] == "openai"
    assert view["routing"]["force_mode"] == "openai"
    assert view["sessions"]["by_reason"] == {"forced": 1}
