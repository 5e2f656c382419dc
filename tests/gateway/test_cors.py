"""GATEWAY_CORS_ORIGINS: a page hosted on another origin may ask for sessions and report a
fallback; no other origin may, and with the variable unset no origin at all."""

from __future__ import annotations

import httpx

from tests import stack

HOSTED = "https://meeting-page.example.com"
ELSEWHERE = "https://attacker.example.net"


async def preflight(client: httpx.AsyncClient, origin: str) -> httpx.Response:
    return await client.options(
        "/v1/session/fallback",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


async def test_an_allowlisted_origin_may_call_the_session_endpoints() -> None:
    env = stack.gateway_env(GATEWAY_CORS_ORIGINS=f"{HOSTED}/, http://127.0.0.1:5173")
    async with stack.served_gateway(env) as gw:
        allowed = await preflight(gw.client, HOSTED)
        response = await gw.client.get(
            "/v1/session", params={"mode": "openai"}, headers={"Origin": HOSTED}
        )
        other = await preflight(gw.client, ELSEWHERE)
        other_get = await gw.client.get(
            "/v1/session", params={"mode": "openai"}, headers={"Origin": ELSEWHERE}
        )

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == HOSTED
    assert "POST" in allowed.headers["access-control-allow-methods"]
    allowed_headers = allowed.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "access-control-allow-credentials" not in allowed.headers
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == HOSTED

    assert other.status_code == 400  # Starlette refuses a preflight from an unlisted origin
    assert "access-control-allow-origin" not in other.headers
    # The request itself is answered (CORS is the browser's to enforce), without the header
    # that would let the page read it.
    assert "access-control-allow-origin" not in other_get.headers


async def test_no_origin_is_allowed_by_default() -> None:
    async with stack.served_gateway(stack.gateway_env()) as gw:
        refused = await preflight(gw.client, HOSTED)
        response = await gw.client.get(
            "/v1/session", params={"mode": "openai"}, headers={"Origin": HOSTED}
        )
    assert "access-control-allow-origin" not in refused.headers
    assert refused.status_code == 405  # no middleware: OPTIONS is not a method of the route
    assert "access-control-allow-origin" not in response.headers
