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
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from gateway.redis_store import RedisStore
from gateway.store import MemoryStore, Store
from history.database import sqlite_url
from pipelines.contracts import load_settings
from simulators.cartesia import CartesiaSimulator
from simulators.chatterbox import ChatterboxSimulator
from simulators.deepgram import DeepgramSimulator
from simulators.elevenlabs import ElevenLabsSimulator
from simulators.groq import GroqSimulator
from simulators.livekit_server import LiveKitServer
from simulators.n8n import N8nSimulator
from simulators.openai_realtime import RealtimeSimulator
from simulators.recall import RecallSimulator
from simulators.server import RunningServer, serve
from tests.postgres_server import PostgresServer, running_postgres
from tests.redis_server import RedisServer, new_prefix, running_redis
from tests.stack import SECRETS
from voicegw.serve import running_gateway
from voicegw.simulate import SimulatedStack, simulated_stack

# Hypothesis properties (the `fuzz` tests): a bounded run in `make test`, no per-example
# deadline on the shared cores; `--hypothesis-profile=fuzz` for a long run (README, "Security").
settings.register_profile("default", deadline=None)
settings.register_profile(
    "fuzz",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def pytest_configure(config: pytest.Config) -> None:
    """Processes the tests start (`voicegw serve`, the agent) keep their SQLite history in a
    directory of this run, never in the working tree's ./data."""
    os.environ.setdefault("VOICEGW_DATA_DIR", tempfile.mkdtemp(prefix="voicegw-data-"))


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


# -- the store: in memory, or Redis --------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server per test module (it starts in milliseconds); tests keep apart by key
    prefix (`store_env`)."""
    with running_redis() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Tests that take it run against both stores."""
    return str(request.param)


@pytest.fixture
def store_env(store_kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """What the environment adds for the store under test: nothing (memory), or REDIS_URL and
    a key prefix of this test's own."""
    if store_kind == "memory":
        return {}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"REDIS_URL": server.url, "REDIS_KEY_PREFIX": new_prefix()}


@pytest.fixture
async def store(store_env: dict[str, str]) -> AsyncIterator[Store]:
    """The store under test, as one replica holds it."""
    if not store_env:
        yield MemoryStore()
        return
    redis = RedisStore(store_env["REDIS_URL"], prefix=store_env["REDIS_KEY_PREFIX"])
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
async def peer(store: Store, store_env: dict[str, str]) -> AsyncIterator[Store]:
    """The same state as another replica sees it: on Redis a second client with the same
    prefix; in memory the same store (one process is all the memory store serves)."""
    if not store_env:
        yield store
        return
    redis = RedisStore(store_env["REDIS_URL"], prefix=store_env["REDIS_KEY_PREFIX"])
    try:
        yield redis
    finally:
        await redis.aclose()


# -- the history database: SQLite, or PostgreSQL ---------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run (initdb takes a second or two); tests keep apart
    by database (`database_url`). Tests that stop or freeze a server start their own."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_kind(request: pytest.FixtureRequest) -> str:
    """Tests that take it run against both databases."""
    return str(request.param)


@pytest.fixture
async def database_url(database_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A history database of this test's own: a SQLite file, or a new PostgreSQL database."""
    if database_kind == "sqlite":
        return sqlite_url(tmp_path / "history.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return await server.new_database()


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
def livekit_track_job_status() -> bool:
    """Whether `livekit` keeps dispatch job states current (LiveKit Cloud) or freezes them at
    assignment (the open-source server); parametrize it to run a test on both."""
    return True


@pytest.fixture
async def livekit(livekit_track_job_status: bool) -> AsyncIterator[LiveKitServer]:
    """The LiveKit server stand-in on 127.0.0.1, knowing the tests' LiveKit key and secret:
    signal, server API (Twirp) and agent workers; no media (that needs a network namespace,
    see tests/netns.py)."""
    stand_in = LiveKitServer(
        {SECRETS["LIVEKIT_API_KEY"]: SECRETS["LIVEKIT_API_SECRET"]},
        track_job_status=livekit_track_job_status,
        idle_check_s=0.05,
    )
    async with stand_in.serve():
        yield stand_in
