"""Fixtures for the operations tests: the Recall.ai and LiveKit server-API simulators, a clock
the tests move by hand, and the gateway served on 127.0.0.1 with a given environment."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client import REGISTRY

from gateway.app import Gateway, create_app
from gateway.breaker import Breaker
from pipelines.contracts import load_settings
from simulators.livekit_api import LiveKitApiSimulator
from simulators.recall import RecallSimulator
from simulators.server import RunningServer, serve

SECRETS = {
    "GATEWAY_SECRET": "ops-gateway-secret-" * 3,
    "GATEWAY_API_KEY": "ops-gateway-api-key-value",
    "LIVEKIT_API_KEY": "APIopslivekitkey",
    "LIVEKIT_API_SECRET": "ops-livekit-secret-" * 3,
    "OPENAI_API_KEY": "sk-ops-openai-secret-value",
    "RECALL_API_KEY": "ops-recall-secret-key-value",
}
API_KEY = SECRETS["GATEWAY_API_KEY"]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Gw:
    client: httpx.AsyncClient
    gateway: Gateway
    server: RunningServer


def metric(sample: str, /, **labels: str) -> float:
    """The current value of a sample on the default registry (0 when never observed)."""
    return REGISTRY.get_sample_value(sample, labels) or 0.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recall() -> Iterator[RecallSimulator]:
    yield RecallSimulator(api_key=SECRETS["RECALL_API_KEY"])


@pytest.fixture
async def recall_server(recall: RecallSimulator) -> AsyncIterator[RunningServer]:
    async with serve(recall.app) as server:
        yield server


@pytest.fixture
def livekit() -> Iterator[LiveKitApiSimulator]:
    yield LiveKitApiSimulator(
        api_key=SECRETS["LIVEKIT_API_KEY"], api_secret=SECRETS["LIVEKIT_API_SECRET"]
    )


@pytest.fixture
async def livekit_server(livekit: LiveKitApiSimulator) -> AsyncIterator[RunningServer]:
    async with serve(livekit.app) as server:
        yield server


def ops_env(**overrides: str) -> dict[str, str]:
    """Dev settings with every secret set and nothing reaching beyond 127.0.0.1."""
    env = {
        **SECRETS,
        "LIVEKIT_URL": "ws://127.0.0.1:9",  # discard port: nothing listens
        "RECALL_API_BASE": "http://127.0.0.1:9",
        "LIVEKIT_DISPATCH_CHECK": "false",
    }
    env.update(overrides)
    return env


@contextlib.asynccontextmanager
async def running_gateway(
    env: dict[str, str], *, breaker: Breaker | None = None
) -> AsyncIterator[Gw]:
    app = create_app(load_settings(env), breaker=breaker)
    async with serve(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            yield Gw(client=client, gateway=app.state.gateway, server=server)
