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


async def test_the_schema_says_what_the_server_requires_of_a_meeting_url() -> None:
    """Issue 17.15: the server refuses anything but an absolute https URL."""
    async with served_gateway(gateway_env()) as gw:
        document = (await gw.client.get("/openapi.json")).json()
    meeting_url = document["components"]["schemas"]["LaunchRequest"]["properties"]["meeting_url"]
    (url,) = [s for s in meeting_url.get("anyOf", [meeting_url]) if s.get("type") == "string"]
    assert url["format"] == "uri"
    assert url["pattern"] == "^https://"
