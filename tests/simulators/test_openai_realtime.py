"""The benchmark's upstream: the OpenAI Realtime simulator in echo mode, with the relay's direct
WebSocket protocol plugged in as its `take_over` hook (so, served like the gateway, it answers
appends from the socket's callback), still speaks GA and still validates."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from relay.client_leg import direct_leg
from simulators.openai_realtime import DEFAULT_API_KEY as API_KEY
from simulators.openai_realtime import RealtimeSimulator, silence
from simulators.server import serve
from voicegw.serve import SERVER_OPTIONS

TIMEOUT_S = 5.0


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


@pytest.fixture(params=["direct", "asgi"])
async def echo(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[RealtimeSimulator, str, bool]]:
    """An echo simulator served like the gateway (callback echo) and on plain uvicorn (where the
    hook finds nothing to take over)."""
    sim = RealtimeSimulator(api_key=API_KEY, echo=True, take_over=direct_leg)
    options = SERVER_OPTIONS if request.param == "direct" else {}
    async with serve(sim.app, **options) as server:
        yield sim, f"{server.ws_url}/v1/realtime?model=gpt-realtime", request.param == "direct"


async def next_event(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT_S):
        event: dict[str, Any] = json.loads(await ws.recv())
        return event


async def test_appends_come_back_as_deltas_named_by_their_event_id(
    echo: tuple[RealtimeSimulator, str, bool],
) -> None:
    sim, url, direct = echo
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with connect(url, additional_headers=headers, compression=None) as ws:
        assert (await next_event(ws))["type"] == "session.created"
        audio = [b64(silence(20)) for _ in range(3)]
        for n, chunk in enumerate(audio):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "event_id": f"e{n}",
                                      "audio": chunk}))  # fmt: skip
        assert (await next_event(ws))["type"] == "response.created"
        deltas = [await next_event(ws) for _ in audio]
        await ws.send('{"type":"input_audio_buffer.append","audio":7}')  # not GA: audio is text
        error = await next_event(ws)
    assert [(d["type"], d["item_id"], d["delta"]) for d in deltas] == [
        ("response.output_audio.delta", f"e{n}", chunk) for n, chunk in enumerate(audio)
    ]
    assert error["type"] == "error"
    assert sim.violations and "input_audio_buffer.append" in sim.violations[0]
    # served like the gateway, the hook took the frames over; on plain uvicorn it found nothing
    assert sim.taken_over == (1 if direct else 0)
