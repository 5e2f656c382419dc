"""Fixtures for the relay: the OpenAI Realtime simulator, the gateway with the relay mounted,
and official-SDK clients connected through it."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from gateway.app import create_app
from pipelines.contracts import Settings, load_settings
from simulators.n8n import N8nSimulator
from simulators.openai_realtime import CHUNK_MS, RealtimeSimulator, silence, tone
from simulators.server import RunningServer, serve
from voicegw.serve import SERVER_OPTIONS

API_KEY = "sk-simulated-openai-key"
SILENCE_MS = 200


@pytest.fixture
def realtime() -> RealtimeSimulator:
    return RealtimeSimulator(api_key=API_KEY)


@pytest.fixture
async def realtime_server(realtime: RealtimeSimulator) -> AsyncIterator[RunningServer]:
    async with serve(realtime.app) as server:
        yield server


@pytest.fixture
def relay_env(realtime_server: RunningServer, n8n_server: RunningServer) -> dict[str, str]:
    """Environment for a gateway whose relay talks to the simulators. Tests may amend it."""
    return {
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_REALTIME_URL": f"{realtime_server.ws_url}/v1/realtime",
        "N8N_WEBHOOK_BASE_URL": n8n_server.url,
        "OPENAI_VAD_SILENCE_MS": str(SILENCE_MS),
        "RELAY_MAX_FRAME_BYTES": str(64 * 1024),
        "VOICE_DEFAULT_MODE": "openai",
    }


@pytest.fixture
def settings(relay_env: dict[str, str]) -> Settings:
    return load_settings(relay_env)


@pytest.fixture(params=["direct", "asgi"])
async def gateway(
    settings: Settings, request: pytest.FixtureRequest
) -> AsyncIterator[RunningServer]:
    """The gateway as `voicegw serve` runs it (the relay's direct client leg), and on plain
    uvicorn (the portable ASGI leg): every relay test runs on both."""
    options = SERVER_OPTIONS if request.param == "direct" else {}
    async with serve(create_app(settings), **options) as server:
        yield server


@dataclass
class Relay:
    """How a test reaches the relay: fresh tickets and SDK connections."""

    server: RunningServer

    async def ticket(self, session_id: str = "relay-test") -> str:
        async with httpx.AsyncClient(base_url=self.server.url) as http:
            response = await http.get(
                "/v1/session", params={"mode": "openai", "session_id": session_id}
            )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        assert body["relay"]["url"] == "/v1/realtime"
        ticket: str = body["relay"]["ticket"]
        return ticket

    def client(self, ticket: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=ticket,
            base_url=f"{self.server.url}/v1",
            websocket_base_url=f"{self.server.ws_url}/v1",
        )

    @contextlib.asynccontextmanager
    async def connect(
        self, session_id: str = "relay-test"
    ) -> AsyncIterator[AsyncRealtimeConnection]:
        client = self.client(await self.ticket(session_id))
        try:
            async with client.realtime.connect(model="gpt-realtime") as connection:
                yield connection
        finally:
            await client.close()


@pytest.fixture
def relay(gateway: RunningServer) -> Relay:
    return Relay(gateway)


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


async def speak(
    connection: AsyncRealtimeConnection, speech_ms: int = 300, trailing_ms: int = SILENCE_MS + 60
) -> None:
    """Append an utterance (tone) and enough silence for the simulator's VAD to end the turn."""
    for _ in range(speech_ms // CHUNK_MS):
        await connection.input_audio_buffer.append(audio=b64(tone(CHUNK_MS)))
    for _ in range(trailing_ms // CHUNK_MS):
        await connection.input_audio_buffer.append(audio=b64(silence(CHUNK_MS)))


async def collect_until(
    connection: AsyncRealtimeConnection, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Every frame (OpenAI events and state messages, as dicts) up to and including `done`."""
    import json

    frames: list[dict[str, Any]] = []
    while True:
        frame: dict[str, Any] = json.loads(await connection.recv_bytes())
        frames.append(frame)
        if done(frame):
            return frames


__all__ = ["N8nSimulator", "Relay", "b64", "collect_until", "speak"]
