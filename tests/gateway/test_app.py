"""The gateway's HTTP surface, served by a real uvicorn on 127.0.0.1 and called with httpx."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from livekit import api

from gateway.tokens import issue_launch_token
from pipelines.contracts import SessionConfig
from relay.tickets import verify_ticket
from tests import stack

SECRETS = {
    "GATEWAY_SECRET": "gateway-secret-" * 3,
    "GATEWAY_API_KEY": "gateway-api-key-value",
    "LIVEKIT_API_KEY": "APIlivekitkey",
    "LIVEKIT_API_SECRET": "livekit-secret-" * 3,
    "OPENAI_API_KEY": "sk-openai-secret-value",
}
DEV = {**SECRETS, "LIVEKIT_URL": "wss://lk.example.com"}
PROD = {**DEV, "VOICEGW_ENV": "production", "GATEWAY_PUBLIC_URL": "https://gw.example.com"}


@contextlib.asynccontextmanager
async def gateway(env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with stack.served_gateway(env) as gw:
        yield gw.client


def assert_no_secret(text: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name} leaked"


async def session(client: httpx.AsyncClient, **params: str) -> SessionConfig:
    response = await client.get("/v1/session", params=params)
    assert response.status_code == 200, response.text
    assert_no_secret(response.text)
    return SessionConfig.model_validate_json(response.text)


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[str]:
    """A port of 127.0.0.1 that accepts connections (and closes them): a reachable service."""

    def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_health_and_readiness_name_what_is_missing() -> None:
    async with gateway({"LIVEKIT_URL": "ws://127.0.0.1:9"}) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["modes"]["openai"]["missing"] == ["OPENAI_API_KEY"]
    async with listening() as livekit, listening() as openai:
        env = {
            **DEV,
            "LIVEKIT_URL": f"ws://{livekit}",
            "OPENAI_REALTIME_URL": f"ws://{openai}/v1/realtime",
        }
        async with gateway(env) as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    for mode in ("livekit", "openai"):
        assert ready.json()["modes"][mode] | {"breaker": None} == {
            "selectable": True,
            "ready": True,
            "missing": [],
            "reachable": True,
            "breaker": None,
        }
    assert_no_secret(ready.text)


async def test_readiness_connects_to_what_each_mode_needs() -> None:
    """A mode whose service does not answer is not ready, and says where it tried; the
    gateway stays in rotation (degraded), serving the other mode and the page."""
    async with listening() as openai:
        env = {
            **DEV,
            "LIVEKIT_URL": "ws://127.0.0.1:9",  # discard port: nothing listens
            "OPENAI_REALTIME_URL": f"ws://{openai}/v1/realtime",
        }
        async with gateway(env) as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    livekit = body["modes"]["livekit"]
    assert (livekit["ready"], livekit["reachable"], livekit["missing"]) == (False, False, [])
    assert livekit["unreachable"] == "127.0.0.1:9: connection refused"
    assert body["modes"]["openai"]["ready"] is True


async def test_livekit_session_token_verifies_with_room_grant_and_dispatch() -> None:
    async with gateway(DEV) as client:
        config = await session(client, mode="livekit", session_id="x", user="ana@example.com")
    assert (config.mode, config.reason, config.session_id) == ("livekit", "url_flag", "x")
    assert config.relay is None and config.livekit is not None
    assert config.livekit.url == "wss://lk.example.com"
    claims = api.TokenVerifier(DEV["LIVEKIT_API_KEY"], DEV["LIVEKIT_API_SECRET"]).verify(
        config.livekit.token
    )
    assert claims.video is not None and claims.video.room == "meeting_x"
    assert claims.room_config is not None
    [dispatch] = claims.room_config.agents
    assert dispatch.agent_name == "voice-agent"
    assert json.loads(dispatch.metadata)["session_id"] == "x"
    assert config.fallback is not None and config.fallback.mode == "openai"


async def test_fallback_url_gives_an_openai_session_for_the_same_id() -> None:
    async with gateway(DEV) as client:
        config = await session(client, mode="livekit", session_id="x", user="u1")
        assert config.fallback is not None
        response = await client.get(config.fallback.session_url)
        fallback = SessionConfig.model_validate_json(response.text)
    assert (fallback.mode, fallback.session_id) == ("openai", "x")
    assert fallback.relay is not None and fallback.fallback is None


async def test_kill_switch_turns_the_same_request_into_openai() -> None:
    async with gateway({**DEV, "VOICE_FORCE_MODE": "openai"}) as client:
        config = await session(client, mode="livekit", session_id="x")
    assert (config.mode, config.reason) == ("openai", "forced")
    assert config.relay is not None and config.relay.url == "/v1/realtime"
    ticket = verify_ticket(SECRETS["GATEWAY_SECRET"], config.relay.ticket)
    assert ticket.session_id == "x"


async def test_missing_session_id_is_generated_in_dev() -> None:
    async with gateway(DEV) as client:
        first, second = await session(client), await session(client)
    assert first.session_id != second.session_id
    assert (first.mode, first.reason) == ("openai", "default")


@pytest.mark.parametrize(
    ("params", "code", "needle"),
    [
        ({"mode": "webrtc"}, "invalid_mode", "livekit, openai"),
        ({"session_id": "../etc"}, "invalid_session_id", "session_id"),
        ({"user": " "}, "invalid_user", "user"),
        ({"launch": "garbage"}, "invalid_launch", "launch token invalid"),
    ],
)
async def test_bad_requests_are_400_or_401_naming_the_problem(
    params: dict[str, str], code: str, needle: str
) -> None:
    async with gateway(DEV) as client:
        response = await client.get("/v1/session", params=params)
    assert response.status_code in (400, 401)
    assert response.json()["error"]["code"] == code
    assert needle in response.json()["error"]["message"]


async def test_unconfigured_mode_is_503_naming_the_variable() -> None:
    async with gateway({}) as client:
        response = await client.get("/v1/session", params={"mode": "openai"})
    assert response.status_code == 503
    assert "OPENAI_API_KEY" in response.json()["error"]["message"]


async def test_launch_then_session_in_production() -> None:
    auth = {"Authorization": f"Bearer {SECRETS['GATEWAY_API_KEY']}"}
    async with gateway(PROD) as client:
        launched = await client.post(
            "/v1/launch", headers=auth, json={"user": "Ana@Example.com", "mode": "livekit"}
        )
        assert launched.status_code == 201, launched.text
        assert_no_secret(launched.text)
        body = launched.json()
        page = urlsplit(body["page_url"])
        assert f"{page.scheme}://{page.netloc}" == "https://gw.example.com"
        query = {k: v[0] for k, v in parse_qs(page.query).items()}
        assert query["session"] == body["session_id"] and query["mode"] == "livekit"

        # The page's request: session id and user come from the token, not the query.
        config = await session(client, launch=query["launch"], mode="livekit")
        assert config.session_id == body["session_id"]
        assert config.livekit is not None
        claims = api.TokenVerifier(PROD["LIVEKIT_API_KEY"], PROD["LIVEKIT_API_SECRET"]).verify(
            config.livekit.token
        )
        assert claims.name == "Ana@Example.com"

        missing = await client.get("/v1/session", params={"session_id": "x"})
        assert missing.status_code == 401
        other = await client.get(
            "/v1/session", params={"launch": query["launch"], "session_id": "other"}
        )
        assert other.status_code == 403


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": "Basic x"}, 401)],
)
async def test_launch_requires_the_api_key(headers: dict[str, str], status: int) -> None:
    async with gateway(DEV) as client:
        response = await client.post("/v1/launch", headers=headers, json={})
    assert response.status_code == status
    assert_no_secret(response.text)


async def test_launch_without_a_configured_key_is_disabled() -> None:
    async with gateway({}) as client:
        response = await client.post(
            "/v1/launch", json={}, headers={"Authorization": "Bearer anything"}
        )
    assert response.status_code == 503
    assert "GATEWAY_API_KEY" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "needle"),
    [
        ("{", "application/json", 400, "not valid JSON"),
        ('{"mode": "x"}', "application/json", 400, "mode"),
        ('{"extra": 1}', "application/json", 400, "extra"),
        ("{}", "text/plain", 415, "application/json"),
    ],
)
async def test_launch_body_errors(
    content: str, content_type: str, status: int, needle: str
) -> None:
    headers = {
        "Authorization": f"Bearer {SECRETS['GATEWAY_API_KEY']}",
        "Content-Type": content_type,
    }
    async with gateway(DEV) as client:
        response = await client.post("/v1/launch", headers=headers, content=content)
    assert response.status_code == status
    assert needle in response.json()["error"]["message"]


async def test_fallback_report_returns_an_openai_session() -> None:
    async with gateway({**DEV, "VOICE_ALLOW_MODE_OVERRIDE": "false"}) as client:
        response = await client.post(
            "/v1/session/fallback", json={"session_id": "x", "reason": "no agent joined"}
        )
        assert response.status_code == 200, response.text
        config = SessionConfig.model_validate_json(response.text)
        bad = await client.post("/v1/session/fallback", json={"session_id": "x"})
    assert (config.mode, config.reason, config.session_id) == ("openai", "fallback", "x")
    assert bad.status_code == 400 and "reason" in bad.json()["error"]["message"]


async def test_fallback_in_production_needs_the_sessions_launch_token() -> None:
    auth = {"Authorization": f"Bearer {SECRETS['GATEWAY_API_KEY']}"}
    async with gateway(PROD) as client:
        launched = (await client.post("/v1/launch", headers=auth, json={})).json()
        token = parse_qs(urlsplit(launched["page_url"]).query)["launch"][0]
        body = {"session_id": launched["session_id"], "reason": "connect failed"}
        anonymous = await client.post("/v1/session/fallback", json=body)
        wrong = await client.post(
            "/v1/session/fallback",
            json={**body, "session_id": "zz"},
            headers={"Authorization": f"Bearer {token}"},
        )
        ok = await client.post(
            "/v1/session/fallback", json=body, headers={"Authorization": f"Bearer {token}"}
        )
    assert (anonymous.status_code, wrong.status_code, ok.status_code) == (401, 403, 200)


async def test_unknown_path_is_a_json_404() -> None:
    async with gateway(DEV) as client:
        response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_a_fallen_back_session_stays_on_openai_when_it_reconnects() -> None:
    env = {**DEV, "VOICE_ALLOW_MODE_OVERRIDE": "false", "VOICE_LIVEKIT_ALLOWLIST": "ana"}
    async with gateway(env) as client:
        before = await session(client, session_id="s9", user="ana")
        report = {"session_id": "s9", "reason": "livekit_connect_failed"}
        assert (await client.post("/v1/session/fallback", json=report)).status_code == 200
        after = await session(client, session_id="s9", user="ana", mode="openai")
        other = await session(client, session_id="s10", user="ana")
    assert (before.mode, before.reason) == ("livekit", "allowlist")
    assert (after.mode, after.reason) == ("openai", "fallback")
    assert (other.mode, other.reason) == ("livekit", "allowlist")  # only that session


async def test_the_kill_switch_still_beats_a_sticky_fallback() -> None:
    async with gateway({**DEV, "VOICE_FORCE_MODE": "livekit"}) as client:
        report = {"session_id": "s9", "reason": "agent_timeout"}
        await client.post("/v1/session/fallback", json=report)
        config = await session(client, session_id="s9")
    assert (config.mode, config.reason) == ("livekit", "forced")


async def test_metrics_count_sessions_by_mode_and_reason() -> None:
    before = stack.metric("voicegw_sessions_issued_total", mode="livekit", reason="url_flag")
    fallbacks = stack.metric("voicegw_fallbacks_reported_total")
    async with stack.served_gateway(stack.gateway_env()) as gw:
        await stack.issue_session(gw, session_id="m1", mode="livekit")
        await stack.issue_session(gw, session_id="m2", mode="livekit")
        await gw.client.post("/v1/session/fallback", json={"session_id": "m1", "reason": "x"})
        response = await gw.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    issued = stack.metric("voicegw_sessions_issued_total", mode="livekit", reason="url_flag")
    assert issued == before + 2
    assert stack.metric("voicegw_fallbacks_reported_total") == fallbacks + 1
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
    for value in stack.SECRETS.values():
        assert value not in text


async def test_one_launch_token_gets_a_bounded_number_of_sessions(
    store_env: dict[str, str],
) -> None:
    """Issue 17 item 8: one launch token asked for sessions (each a relay ticket, each a paid
    upstream session) without limit."""
    env = stack.gateway_env(SESSION_RATE_LIMIT="3", SESSION_RATE_WINDOW_SECONDS="60", **store_env)

    def token(session_id: str) -> str:
        return issue_launch_token(
            stack.SECRETS["GATEWAY_SECRET"], session_id=session_id, user=None, mode=None, ttl_s=600
        )

    async with stack.served_gateway(env) as gw:
        for _ in range(3):
            ok = await gw.client.get("/v1/session", params={"launch": token("t1")})
            assert ok.status_code == 200
        limited = await gw.client.get("/v1/session", params={"launch": token("t1")})
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        fallback = await gw.client.post(
            "/v1/session/fallback",
            json={"session_id": "t1", "reason": "x"},
            headers={"Authorization": f"Bearer {token('t1')}"},
        )
        assert fallback.status_code == 429 and "Retry-After" in fallback.headers
        other = await gw.client.get("/v1/session", params={"launch": token("t2")})
        assert other.status_code == 200


# -- HTTP details (issue 17.15) ----------------------------------------------------------------


async def test_405_says_which_methods_are_allowed() -> None:
    async with gateway(DEV) as client:
        response = await client.post("/healthz")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


@pytest.mark.parametrize("path", ["/static", "/v1/session/"])
async def test_no_redirect_is_built_from_the_host_header(path: str) -> None:
    async with gateway(DEV) as client:
        response = await client.get(path, headers={"Host": "evil.example"})
    assert "evil.example" not in response.headers.get("location", "")
    assert response.status_code == 404


async def test_an_empty_session_id_is_refused_not_ignored() -> None:
    async with gateway(DEV) as client:
        response = await client.get("/v1/session?session_id=&mode=openai")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_session_id"


@pytest.mark.parametrize(
    "content_type", ["Application/JSON", "application/json; charset=UTF-8", "APPLICATION/json;x=1"]
)
async def test_the_json_media_type_is_case_insensitive_and_takes_parameters(
    content_type: str,
) -> None:
    async with gateway(DEV) as client:
        response = await client.post(
            "/v1/session/fallback",
            content=json.dumps({"session_id": "x", "reason": "no agent"}),
            headers={"Content-Type": content_type},
        )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/", "/static/index.html"])
async def test_the_page_carries_a_content_security_policy(path: str) -> None:
    async with gateway({**DEV, "GATEWAY_PUBLIC_URL": "https://gw.example.com"}) as client:
        response = await client.get(path)
    assert response.status_code == 200
    policy = dict(
        (directive.split(" ", 1) + [""])[:2]
        for directive in response.headers["content-security-policy"].split("; ")
    )
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"  # Recall.ai loads it as the top-level page
    assert policy["script-src"] == "'self'"  # its modules and livekit-client, no inline code
    assert policy["base-uri"] == "'none'" and policy["object-src"] == "'none'"
    connect = set(policy["connect-src"].split())
    assert {"'self'", "wss://gw.example.com", "wss://lk.example.com"} <= connect
    assert "https://lk.example.com" in connect  # livekit-client's HTTP validation
