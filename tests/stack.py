"""Helpers for tests that serve the gateway in-process with an environment of their own (no
simulated providers: they set what they need), and read what it counted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
from prometheus_client import REGISTRY

from gateway.app import Gateway
from gateway.store import Store
from history import History
from pipelines.contracts import load_settings
from simulators.server import RunningServer
from voicegw.serve import running_gateway

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


def gateway_env(**overrides: str) -> dict[str, str]:
    """Dev settings with every secret set and nothing reaching beyond 127.0.0.1."""
    env = {
        **SECRETS,
        "LIVEKIT_URL": "ws://127.0.0.1:9",  # discard port: nothing listens
        "OPENAI_REALTIME_URL": "ws://127.0.0.1:9/v1/realtime",  # /readyz connects to it
        "RECALL_API_BASE": "http://127.0.0.1:9",
        "LIVEKIT_DISPATCH_CHECK": "false",
    }
    env.update(overrides)
    return env


@contextlib.asynccontextmanager
async def served_gateway(
    env: dict[str, str],
    *,
    clock: FakeClock | None = None,
    store: Store | None = None,
    history: History | None = None,
) -> AsyncIterator[Gw]:
    """The gateway on `env`, served as `voicegw serve` serves it, and a client for it; `clock`
    times its breaker; `store` (the caller's to close) replaces the one `env` names; `history`
    records its sessions (the gateway closes it)."""
    async with running_gateway(
        load_settings(env), clock=clock, store=store, history=history
    ) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
            yield Gw(client=client, gateway=served.gateway, server=served.server)


async def issue_session(gw: Gw, **params: str) -> None:
    """`GET /v1/session` with `params`; it must succeed."""
    response = await gw.client.get("/v1/session", params=params)
    assert response.status_code == 200, response.text


async def until(
    condition: Callable[[], Awaitable[bool]], what: str, *, timeout_s: float = 5.0
) -> None:
    """Wait for `condition` to hold, asking every 20 ms; fail naming `what` after the deadline.
    For what time alone changes (an expiry in Redis, a process that starts)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still waiting after {timeout_s} s: {what}")
        await asyncio.sleep(0.02)
