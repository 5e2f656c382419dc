"""Shared fixtures. Every async test fails if it leaves an asyncio task behind.

`stack` is the one simulated stack every test that needs providers uses: the provider
simulators started for `profile` (`voicegw.simulate.simulated_stack`, what `--simulate` runs)
and Settings from `stack_env` pointed at them; `gateway` serves the gateway on those settings
as `voicegw serve` does. A test module scripts a provider by overriding its fixture
(`realtime`, `deepgram`, `groq`, `chatterbox`, `cartesia`, `elevenlabs`, `n8n`), and changes
the rest by overriding
`profile`, `stack_env` or `server_options`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pipelines.contracts import load_settings
from simulators.cartesia import CartesiaSimulator
from simulators.chatterbox import ChatterboxSimulator
from simulators.deepgram import DeepgramSimulator
from simulators.elevenlabs import ElevenLabsSimulator
from simulators.groq import GroqSimulator
from simulators.livekit_api import LiveKitApiSimulator
from simulators.n8n import N8nSimulator
from simulators.openai_realtime import RealtimeSimulator
from simulators.recall import RecallSimulator
from simulators.server import RunningServer, serve
from tests.stack import SECRETS
from voicegw.serve import running_gateway
from voicegw.simulate import SimulatedStack, simulated_stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.insert(0, "_no_leaked_tasks")


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if leaked:
        # Give tasks that are already finishing one loop turn, then insist.
        await asyncio.sleep(0)
        leaked = [t for t in leaked if not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"leaked asyncio tasks: {[t.get_coro() for t in leaked]}"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Tests that run `voicegw` in-process (CliRunner) configure logging for the whole
    process; put it back so no test depends on which ran before it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = {name: logging.getLogger(name) for name in logging.root.manager.loggerDict}
    saved = {name: (lg.level, lg.disabled) for name, lg in named.items()}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (lg_level, disabled) in saved.items():
        named[name].setLevel(lg_level)
        named[name].disabled = disabled


# -- the simulated stack ---------------------------------------------------------------------


@pytest.fixture
def profile() -> str:
    """The simulators' latency profile: none at all, unless a test asks for one."""
    return "instant"


@pytest.fixture
def stack_env() -> dict[str, str]:
    """The environment `stack`'s settings are read from, before they point at the simulators."""
    return {}


@pytest.fixture
def realtime() -> RealtimeSimulator:
    return RealtimeSimulator()


@pytest.fixture
def deepgram() -> DeepgramSimulator:
    return DeepgramSimulator()


@pytest.fixture
def groq() -> GroqSimulator:
    return GroqSimulator()


@pytest.fixture
def chatterbox() -> ChatterboxSimulator:
    return ChatterboxSimulator()


@pytest.fixture
def cartesia() -> CartesiaSimulator:
    return CartesiaSimulator()


@pytest.fixture
def elevenlabs() -> ElevenLabsSimulator:
    return ElevenLabsSimulator()


@pytest.fixture
def n8n() -> Iterator[N8nSimulator]:
    yield N8nSimulator(slow_seconds=5.0)


@pytest.fixture
async def stack(
    profile: str,
    stack_env: dict[str, str],
    realtime: RealtimeSimulator,
    deepgram: DeepgramSimulator,
    groq: GroqSimulator,
    chatterbox: ChatterboxSimulator,
    cartesia: CartesiaSimulator,
    elevenlabs: ElevenLabsSimulator,
    n8n: N8nSimulator,
) -> AsyncIterator[SimulatedStack]:
    async with simulated_stack(
        load_settings(stack_env),
        profile,
        realtime=realtime,
        deepgram=deepgram,
        groq=groq,
        chatterbox=chatterbox,
        cartesia=cartesia,
        elevenlabs=elevenlabs,
        n8n=n8n,
    ) as simulated:
        yield simulated


@pytest.fixture
def server_options() -> dict[str, Any]:
    """What `gateway` changes in how `voicegw serve` serves it (nothing, by default)."""
    return {}


@pytest.fixture
async def gateway(
    stack: SimulatedStack, server_options: dict[str, Any]
) -> AsyncIterator[RunningServer]:
    async with running_gateway(stack.settings, **server_options) as served:
        yield served.server


# -- one simulator alone -----------------------------------------------------------------------


@pytest.fixture
async def n8n_server(n8n: N8nSimulator) -> AsyncIterator[RunningServer]:
    async with serve(n8n.app) as server:
        yield server


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
