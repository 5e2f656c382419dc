"""The gateway's HTTP server bounds (voicegw/http_limits.py): request line and headers capped
in size and count, a head or a body that is too slow to arrive closed (issue 17.3, 17.11).
Driven with raw sockets against the gateway served as `voicegw serve` serves it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests import stack
from tests.raw_http import raw_connection

ENV = stack.gateway_env(
    HTTP_HEADER_TIMEOUT_SECONDS="0.5",
    HTTP_BODY_TIMEOUT_SECONDS="0.5",
    HTTP_MAX_HEADER_BYTES="16384",
    HTTP_MAX_HEADERS="100",
)
GET = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


async def test_a_header_that_never_ends_is_refused_as_it_grows() -> None:
    """One X-Big header, never finished: refused 431 once it passes the cap (what it would
    have grown to is never read), while other requests are answered as usual."""
    async with stack.served_gateway(ENV) as gw, raw_connection(gw.server.port) as http:
        await http.send(GET + b"X-Big: ")
        for _ in range(4):  # the cap, 16 KiB, a piece at a time (the server reads on)
            await http.send(b"a" * 4096)
            assert (await gw.client.get("/healthz")).status_code == 200
        await http.send(b"a")  # and no more: a write after the refusal would be reset
        response = await http.response()
        assert response.status == 431
        assert b"headers_too_large" in response.body
        await http.closed_by_server()


@pytest.mark.parametrize(
    "head",
    [
        GET + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n",  # whole, in one piece
        b"GET /healthz?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # the request line
        GET + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n",  # one too many
    ],
    ids=["header", "request-line", "count"],
)
async def test_a_head_over_the_bounds_is_refused(head: bytes) -> None:
    async with stack.served_gateway(ENV) as gw, raw_connection(gw.server.port) as http:
        await http.send(head)
        assert (await http.response()).status == 431


async def test_a_head_within_the_bounds_is_served() -> None:
    async with stack.served_gateway(ENV) as gw:
        headers = {f"X-{i}": "v" * 100 for i in range(90)}  # 90 headers, ~10 KiB
        response = await gw.client.get("/healthz", headers=headers)
        assert response.status_code == 200


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # a connection that never sends a byte
        GET,  # a head that stops
        b"G",  # a request that never gets past its first byte
    ],
    ids=["silent", "stalled-head", "one-byte"],
)
async def test_a_head_that_does_not_arrive_in_time_is_closed(sent: bytes) -> None:
    async with stack.served_gateway(ENV) as gw, raw_connection(gw.server.port) as http:
        await http.send(sent)
        answer = await http.closed_by_server(within=5)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408")


async def test_a_dripped_head_is_closed_at_its_deadline() -> None:
    """Slowloris: a header line every 0.1 s (each well within any per-read timeout)."""
    async with stack.served_gateway(ENV) as gw, raw_connection(gw.server.port) as http:
        await http.send(GET)

        async def drip() -> None:
            for i in range(100):
                await http.send(b"X-%d: 1\r\n" % i)
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(drip())
        try:
            answer = await http.closed_by_server(within=5)
        finally:
            dripping.cancel()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408")


async def test_a_body_that_does_not_arrive_in_time_is_closed() -> None:
    async with stack.served_gateway(ENV) as gw, raw_connection(gw.server.port) as http:
        await http.send(
            b"POST /v1/session/fallback HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"session_id\""
        )
        answer = await http.closed_by_server(within=5)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408")


async def test_a_keep_alive_connection_gets_a_fresh_deadline_per_request() -> None:
    async with stack.served_gateway(ENV) as gw:
        async with httpx.AsyncClient(base_url=gw.server.url) as client:
            for _ in range(3):
                assert (await client.get("/healthz")).status_code == 200
            async with raw_connection(gw.server.port) as http:
                await http.send(GET + b"\r\n")
                assert (await http.response()).status == 200
                await http.send(GET)  # the next request's head stops
                answer = await http.closed_by_server(within=5)
                assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
