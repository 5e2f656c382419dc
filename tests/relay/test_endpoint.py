"""Tickets: every way to present one, and every way one is refused before OpenAI is reached."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.store import Store
from pipelines.contracts import Settings, load_settings
from relay.endpoint import redact_query
from relay.tickets import issue_ticket
from simulators.openai_realtime import RealtimeSimulator
from simulators.server import RunningServer
from tests.redis_server import free_port
from tests.stack import until
from voicegw.serve import running_gateway

from .conftest import API_KEY, Relay


async def refused_code(relay: Relay, ticket: str) -> int:
    """Connect with the official SDK using `ticket` as its API key; the close code it gets."""
    client = relay.client(ticket)
    try:
        async with client.realtime.connect(model="gpt-realtime") as connection:
            with pytest.raises(ConnectionClosed) as closed:
                await connection.recv()
    finally:
        await client.close()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_forged_ticket_is_refused(relay: Relay, realtime: RealtimeSimulator) -> None:
    forged, _ = issue_ticket("x" * 40, session_id="s1", user=None)
    assert await refused_code(relay, forged) == 4401
    assert await refused_code(relay, "not-a-jwt") == 4401
    assert realtime.connections == 0


async def test_expired_ticket_is_refused(
    relay: Relay, realtime: RealtimeSimulator, settings: Settings
) -> None:
    assert settings.gateway_secret is not None
    expired, _ = issue_ticket(
        settings.gateway_secret.get_secret_value(), session_id="s1", user=None, ttl_s=-10
    )
    assert await refused_code(relay, expired) == 4401
    assert realtime.connections == 0


async def test_used_ticket_is_refused(relay: Relay, realtime: RealtimeSimulator) -> None:
    ticket = await relay.ticket()
    client = relay.client(ticket)
    try:
        async with client.realtime.connect(model="gpt-realtime") as connection:
            first = json.loads(await connection.recv_bytes())
            assert first == {"type": "agent.state", "state": "initializing"}
            created = await connection.recv()
            assert created.type == "session.created"
    finally:
        await client.close()
    assert await refused_code(relay, ticket) == 4403
    assert realtime.connections == 1


async def test_missing_ticket_is_refused(
    gateway: RunningServer, realtime: RealtimeSimulator
) -> None:
    async with connect(f"{gateway.ws_url}/v1/realtime") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert realtime.connections == 0


async def test_ticket_in_query(
    relay: Relay, gateway: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    ticket = await relay.ticket()
    with caplog.at_level(logging.DEBUG):
        async with connect(f"{gateway.ws_url}/v1/realtime?ticket={ticket}") as ws:
            assert json.loads(await ws.recv())["type"] == "agent.state"
            assert json.loads(await ws.recv())["type"] == "session.created"
    assert any("ticket=<redacted>" in r.getMessage() for r in caplog.records)
    assert_no_secrets(caplog, ticket)


@pytest.mark.parametrize(
    "query",
    [
        "%74icket={ticket}",  # the key spelled with an escape: still `ticket` to the server
        "mode=openai&%74ic%6Bet={ticket}",
        "ticket={encoded}",  # the value spelled with escapes
        "%2574icket={ticket}&ticket={ticket}",  # and a key the server does not read as one
    ],
)
async def test_no_spelling_of_a_ticket_in_the_query_reaches_a_log_line(
    relay: Relay, gateway: RunningServer, caplog: pytest.LogCaptureFixture, query: str
) -> None:
    """Issue 17.12: uvicorn logs each accepted WebSocket's path with its raw query."""
    ticket = await relay.ticket()
    encoded = "".join(f"%{byte:02X}" for byte in ticket.encode())
    with caplog.at_level(logging.DEBUG):
        url = f"{gateway.ws_url}/v1/realtime?{query.format(ticket=ticket, encoded=encoded)}"
        async with connect(url) as ws:
            assert json.loads(await ws.recv())["type"] == "agent.state"
            assert json.loads(await ws.recv())["type"] == "session.created"
    assert any("/v1/realtime?" in r.getMessage() for r in caplog.records)
    assert_no_secrets(caplog, ticket, encoded, encoded.lower())


def test_a_logged_query_keeps_only_plain_names_and_harmless_values() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzaWQiOiJzIn0.c2lnbmF0dXJl"
    assert redact_query(f"/v1/realtime?mode=openai&%74icket={jwt}") == (
        "/v1/realtime?mode=openai&ticket=<redacted>"
    )
    assert redact_query(f"/v1/realtime?{jwt}") == "/v1/realtime?<redacted>=<redacted>"
    assert redact_query(f"/v1/realtime?{jwt}=1&launch=x") == (
        "/v1/realtime?<redacted>=<redacted>&launch=<redacted>"
    )
    assert redact_query("/v1/realtime") == "/v1/realtime"


def assert_no_secrets(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """Nothing the server side logged (the test's own client aside) shows a secret."""
    server_side = [r for r in caplog.records if r.name != "websockets.client"]
    assert server_side
    for record in server_side:
        for secret in secrets:
            assert secret not in record.getMessage(), record.name


async def test_sdk_handshake_logs_no_secrets(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    ticket = await relay.ticket()
    client = relay.client(ticket)
    try:
        with caplog.at_level(logging.DEBUG):
            async with client.realtime.connect(model="gpt-realtime") as connection:
                await connection.recv_bytes()
                await connection.recv_bytes()
    finally:
        await client.close()
    assert any("<redacted>" in r.getMessage() for r in caplog.records)
    assert_no_secrets(caplog, ticket, API_KEY)


async def test_ticket_as_browser_subprotocol(relay: Relay, gateway: RunningServer) -> None:
    ticket = await relay.ticket()
    async with connect(
        f"{gateway.ws_url}/v1/realtime",
        subprotocols=["realtime", f"openai-insecure-api-key.{ticket}"],  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "realtime"
        assert json.loads(await ws.recv())["type"] == "agent.state"
        assert json.loads(await ws.recv())["type"] == "session.created"


async def test_refusal_never_echoes_the_ticket(relay: Relay, gateway: RunningServer) -> None:
    forged, _ = issue_ticket("y" * 40, session_id="s1", user=None)
    async with connect(f"{gateway.ws_url}/v1/realtime?ticket={forged}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert forged not in closed.value.rcvd.reason


async def refusal(url: str) -> tuple[dict[str, object], int]:
    """Connect to a relay that refuses: the voice.error it sends first, and its close code."""
    async with connect(url) as ws:
        error = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    return error, closed.value.rcvd.code


async def test_a_ticket_used_on_one_replica_is_refused_on_another(
    relay_env: dict[str, str], store: Store, realtime: RealtimeSimulator, server_options: Any
) -> None:
    settings = load_settings(relay_env)
    async with (
        running_gateway(settings, store=store, **server_options) as a,
        running_gateway(settings, store=store, **server_options) as b,
    ):
        ticket = await Relay(a.server).ticket()
        async with connect(f"{b.server.ws_url}/v1/realtime?ticket={ticket}") as ws:
            assert json.loads(await ws.recv())["type"] == "agent.state"
        assert await refused_code(Relay(a.server), ticket) == 4403
    assert realtime.connections == 1


async def test_one_session_id_holds_at_most_its_limit_of_relay_sessions(
    relay: Relay, gateway: RunningServer, realtime: RealtimeSimulator
) -> None:
    """Issue 17 item 8: one launch token opened 300 concurrent relay sessions, each a paid
    upstream session. RELAY_MAX_SESSIONS_PER_ID (2: a reload overlaps the closing socket)."""
    url = f"{gateway.ws_url}/v1/realtime?ticket="
    async with contextlib.AsyncExitStack() as held:
        for _ in range(2):
            ws = await held.enter_async_context(connect(url + await relay.ticket("greedy")))
            assert json.loads(await ws.recv())["type"] == "agent.state"
        error, code = await refusal(url + await relay.ticket("greedy"))
        assert (code, error["code"], error["fatal"]) == (4429, "too_many_sessions", True)
        other = await held.enter_async_context(connect(url + await relay.ticket("modest")))
        assert json.loads(await other.recv())["type"] == "agent.state"
    assert realtime.connections == 3

    async def admitted_again() -> bool:
        async with connect(url + await relay.ticket("greedy")) as ws:
            return bool(json.loads(await ws.recv())["type"] == "agent.state")

    await until(admitted_again, "the closed sessions give their slots back")


async def test_tickets_fail_closed_when_redis_is_unreachable(
    relay_env: dict[str, str], realtime: RealtimeSimulator, server_options: Any
) -> None:
    settings = load_settings({**relay_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    async with running_gateway(settings, **server_options) as served:
        relay = Relay(served.server)
        ticket = await relay.ticket()  # routing goes on from memory
        error, code = await refusal(f"{relay.server.ws_url}/v1/realtime?ticket={ticket}")
    assert (code, error["code"], error["fatal"]) == (1013, "state_unavailable", True)
    assert realtime.connections == 0
