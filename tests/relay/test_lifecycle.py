"""How sessions end: upstream failures, vanishing clients, the session limit, slow clients."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from simulators.openai_realtime import RealtimeSimulator, Say
from simulators.server import RunningServer

from .conftest import Relay, collect_until
from .test_guard import relay_with


async def frames_until_closed(relay: Relay) -> tuple[list[dict[str, Any]], int]:
    """Ask for a response, then read every frame until the relay closes the socket."""
    frames: list[dict[str, Any]] = []
    async with relay.connect() as connection:
        await connection.response.create()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(await connection.recv_bytes()))
    assert closed.value.rcvd is not None
    return frames, closed.value.rcvd.code


async def test_upstream_dropping_mid_response(relay: Relay, realtime: RealtimeSimulator) -> None:
    realtime.drop_after_audio_deltas = 3
    realtime.script(Say(audio_ms=2000, pace=True))
    frames, code = await frames_until_closed(relay)
    assert code == 1011
    kinds = [f["type"] for f in frames]
    assert kinds.count("response.output_audio.delta") == 3
    assert frames[-1]["type"] == "voice.error"
    assert frames[-1]["code"] == "upstream_closed" and frames[-1]["fatal"] is True
    await realtime.wait_for(lambda: realtime.open_connections == 0)


async def test_upstream_unreachable(relay_env: dict[str, str], realtime: RealtimeSimulator) -> None:
    async with relay_with(relay_env, OPENAI_REALTIME_URL="ws://127.0.0.1:9/v1/realtime") as relay:
        frames, code = await frames_until_closed(relay)
    assert code == 1011
    assert frames[-1]["code"] == "upstream_unavailable" and frames[-1]["fatal"] is True
    assert "127.0.0.1" not in frames[-1]["message"]


async def test_client_vanishing_mid_response_closes_upstream(
    relay: Relay, gateway: RunningServer, realtime: RealtimeSimulator
) -> None:
    realtime.script(Say(audio_ms=5000, pace=True))
    ticket = await relay.ticket()
    async with connect(f"{gateway.ws_url}/v1/realtime?ticket={ticket}") as ws:
        await ws.send(json.dumps({"type": "response.create"}))
        async for message in ws:
            if json.loads(message)["type"] == "response.output_audio.delta":
                break
        assert realtime.open_connections == 1
        ws.transport.abort()  # no close frame: the client is simply gone
    await realtime.wait_for(lambda: realtime.open_connections == 0, within=2.0)
    assert realtime.of_type("response.cancel") == []


async def test_sdk_client_leaving_mid_response(relay: Relay, realtime: RealtimeSimulator) -> None:
    realtime.script(Say(audio_ms=5000, pace=True))
    async with relay.connect() as connection:
        await connection.response.create()
        await collect_until(connection, lambda f: f["type"] == "response.output_audio.delta")
    await realtime.wait_for(lambda: realtime.open_connections == 0, within=2.0)


async def test_session_limit_ends_cleanly(
    relay_env: dict[str, str], realtime: RealtimeSimulator
) -> None:
    async with relay_with(relay_env, RELAY_MAX_SESSION_SECONDS="0.5") as relay:
        frames: list[dict[str, Any]] = []
        async with relay.connect() as connection:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frames.append(json.loads(await connection.recv_bytes()))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert frames[-1]["type"] == "voice.error" and frames[-1]["code"] == "session_expired"
    await realtime.wait_for(lambda: realtime.open_connections == 0)


async def test_client_that_cannot_keep_up_is_closed_1013(
    relay_env: dict[str, str], realtime: RealtimeSimulator
) -> None:
    realtime.validate_outgoing = False
    realtime.script(Say(audio_ms=600_000))  # ten minutes of audio, as fast as it goes
    async with relay_with(relay_env, RELAY_CLIENT_STALL_SECONDS="0.5") as relay:
        ticket = await relay.ticket()
        async with connect(f"{relay.server.ws_url}/v1/realtime?ticket={ticket}", max_queue=1) as ws:
            await ws.send(json.dumps({"type": "response.create"}))
            # Never read: the socket's buffers fill, the relay's sends stall, and it gives up.
            await realtime.wait_for(lambda: realtime.connections == 1)
            await realtime.wait_for(lambda: realtime.open_connections == 0, within=20.0)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
