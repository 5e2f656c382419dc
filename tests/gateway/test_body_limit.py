"""Request bodies (gateway/body_limit.py and the handlers): a body over the cap is refused
before it is read, whatever its framing and whoever sends it; a request without credentials
is refused before its body is read (issue 17.2)."""

from __future__ import annotations

import pytest

from gateway.app import MAX_BODY_BYTES
from tests import stack
from tests.raw_http import raw_connection

PROD = stack.gateway_env(VOICEGW_ENV="production", GATEWAY_PUBLIC_URL="https://gw.example.com")
DEV = stack.gateway_env()
HUGE = 500 * 1024 * 1024


def head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gw.example.com", *headers, "", ""]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(
    ("env", "method", "path"),
    [
        (PROD, "POST", "/v1/session/fallback"),
        (DEV, "POST", "/v1/session/fallback"),
        (PROD, "POST", "/v1/launch"),
        (DEV, "GET", "/healthz"),
        (DEV, "GET", "/static/page.js"),
    ],
)
async def test_a_declared_length_over_the_cap_is_refused_unread(
    env: dict[str, str], method: str, path: str
) -> None:
    async with stack.served_gateway(env) as gw, raw_connection(gw.server.port) as http:
        await http.send(
            head(method, path, "Content-Type: application/json", f"Content-Length: {HUGE}")
        )
        response = await http.response()  # not one byte of the body was sent
        assert response.status == 413
        assert response.headers["connection"] == "close"
        assert b"body_too_large" in response.body
        await http.closed_by_server()


async def test_a_chunked_body_is_refused_once_it_passes_the_cap() -> None:
    async with stack.served_gateway(DEV) as gw, raw_connection(gw.server.port) as http:
        await http.send(
            head(
                "POST",
                "/v1/session/fallback",
                "Content-Type: application/json",
                "Transfer-Encoding: chunked",
            )
        )
        chunk = b"x" * 16384
        for _ in range(3 * MAX_BODY_BYTES // len(chunk)):  # and never the last chunk
            await http.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        response = await http.response()
    assert response.status == 413


async def test_credentials_are_checked_before_the_body_is_read() -> None:
    async with stack.served_gateway(PROD) as gw:
        for path in ("/v1/session/fallback", "/v1/launch"):
            async with raw_connection(gw.server.port) as http:
                await http.send(
                    head("POST", path, "Content-Type: application/json", "Content-Length: 1000")
                )
                response = await http.response()  # the body never comes
                assert response.status == 401, path


async def test_a_body_within_the_cap_is_still_read() -> None:
    async with stack.served_gateway(DEV) as gw:
        body = b'{"session_id": "x", "reason": "' + b"r" * 200 + b'"}' + b" " * 60_000
        response = await gw.client.post(
            "/v1/session/fallback",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        too_big = await gw.client.post(
            "/v1/session/fallback",
            content=b" " * (MAX_BODY_BYTES + 1),
            headers={"Content-Type": "application/json"},
        )
        assert too_big.status_code == 413
