"""Fixtures for the relay: the simulated stack with the gateway (and its relay) served on it,
every test on both client legs, and official-SDK clients connected through it."""

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

from pipelines.contracts import Settings, load_settings
from simulators.openai_realtime import CHUNK_MS, DEFAULT_API_KEY, silence, tone
from simulators.server import RunningServer
from voicegw.serve import running_gateway
from voicegw.simulate import SimulatedStack

API_KEY = DEFAULT_API_KEY
SILENCE_MS = 200


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {
        "OPENAI_VAD_SILENCE_MS": str(SILENCE_MS),
        "RELAY_MAX_FRAME_BYTES": str(64 * 1024),
        "VOICE_DEFAULT_MODE": "openai",
    }


@pytest.fixture
def relay_env(stack: SimulatedStack, stack_env: dict[str, str]) -> dict[str, str]:
    """The stack's environment (pointed at its simulators), for a test that serves a gateway of
    its own with something changed (`relay_with`)."""
    return {**stack_env, **stack.providers.env}


@pytest.fixture
def settings(stack: SimulatedStack) -> Settings:
    return stack.settings


@pytest.fixture(params=["direct", "asgi"])
def server_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The gateway as `voicegw serve` runs it (the relay's direct client leg), and on uvicorn's
    own WebSocket protocol (the portable ASGI leg): every relay test runs on both."""
    return {} if request.param == "direct" else {"ws": "auto"}


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


@contextlib.asynccontextmanager
async def relay_with(env: dict[str, str], **overrides: str) -> AsyncIterator[Relay]:
    """A gateway of its own on `env` amended by `overrides`, served as `voicegw serve` does."""
    async with running_gateway(load_settings({**env, **overrides})) as served:
        yield Relay(served.server)


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
