"""The OpenAPI document of the HTTP API, as the gateway serves it."""

from __future__ import annotations

from tests.stack import gateway_env, served_gateway


async def test_openapi_describes_every_route() -> None:
    async with served_gateway(gateway_env()) as gw:
        document = (await gw.client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    assert {"/v1/session", "/v1/session/fallback", "/v1/launch", "/healthz", "/readyz"} <= set(
        document["paths"]
    )
    assert "SessionConfig" in document["components"]["schemas"]
