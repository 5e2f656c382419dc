"""Simulate wiring: every provider as a local simulator, and Settings pointed at them.

`voicegw serve --simulate`, `voicegw talk --simulate`, `voicegw compare --simulate`, the tests'
`stack` fixture and the benchmarks build the simulated stack here, so what they exercise is
one and the same thing.

`simulated_livekit` adds what livekit mode needs on top (`voicegw serve --simulate` and the
end-to-end tests): the LiveKit server stand-in in this process and one agent worker, `voicegw
agent dev` on the simulated providers, as a supervised child process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Unpack

from pydantic import SecretStr

from pipelines.contracts import Settings
from simulators.profiles import (
    GivenSimulators,
    LatencyProfile,
    SimulatedProviders,
    simulated_providers,
)

from .providers import PROVIDER_SIMULATORS, simulated_variables
from .supervise import Supervised

if TYPE_CHECKING:  # imported when it starts: aiortc is not needed to serve openai mode
    from simulators.livekit_server import LiveKitServer

log = logging.getLogger("voicegw.simulate")


def with_overrides(settings: Settings, env: Mapping[str, str]) -> Settings:
    """`settings` pointed at other endpoints (the simulators' known-good URLs and keys)."""
    update: dict[str, Any] = {
        name.lower(): SecretStr(value) if name.endswith("_API_KEY") else value
        for name, value in env.items()
    }
    return settings.model_copy(update=update)


@dataclass(frozen=True)
class SimulatedStack:
    """The simulated providers, running, and `settings` pointed at those in `simulated`
    (`env`: the variables that do it)."""

    providers: SimulatedProviders
    settings: Settings
    simulated: frozenset[str]
    env: dict[str, str]


@contextlib.asynccontextmanager
async def simulated_stack(
    settings: Settings,
    profile: LatencyProfile | str = "published",
    *,
    speak_replies: bool = True,
    only: Collection[str] | None = None,
    **given: Unpack[GivenSimulators],
) -> AsyncIterator[SimulatedStack]:
    """Start every provider simulator for `profile` until the block ends; `settings` come back
    pointed at them, or only at those named in `only` (`voicegw.providers` names; the others
    stay as configured). A simulator given here is used (and served) instead of a default
    one."""
    simulated = PROVIDER_SIMULATORS if only is None else frozenset(only) & PROVIDER_SIMULATORS
    variables = simulated_variables(simulated)
    async with simulated_providers(profile, speak_replies=speak_replies, **given) as providers:
        env = {name: value for name, value in providers.env.items() if name in variables}
        yield SimulatedStack(providers, with_overrides(settings, env), simulated, env)


@dataclass(frozen=True)
class SimulatedLiveKit:
    """The LiveKit stand-in, serving, its agent workers, and `settings` pointed at it."""

    server: LiveKitServer
    workers: list[Supervised]
    settings: Settings

    async def start_workers(self) -> None:
        """Start the workers `simulated_livekit(start_workers=False)` left waiting."""
        for worker in self.workers:
            if worker.starts == 0:
                await worker.start()


def agent_command(mode: str = "dev") -> list[str]:
    """`voicegw agent <mode>` in this interpreter, logging at this process's level."""
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    return [sys.executable, "-m", "voicegw", "--log-level", level, "agent", mode]


def agent_env(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for a worker on `settings`' LiveKit, plus `env` (provider
    endpoints and keys, ports): the worker reads its settings from the environment."""
    key, secret = settings.livekit_api_key, settings.livekit_api_secret
    assert settings.livekit_url and key is not None and secret is not None
    return {
        **os.environ,
        **env,
        "LIVEKIT_URL": settings.livekit_url,
        "LIVEKIT_API_KEY": key.get_secret_value(),
        "LIVEKIT_API_SECRET": secret.get_secret_value(),
        "LIVEKIT_AGENT_NAME": settings.livekit_agent_name,
    }


def free_port() -> int:
    """A port of 127.0.0.1 free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def simulated_livekit(
    settings: Settings,
    *,
    worker_env: Mapping[str, str],
    host: str = "127.0.0.1",
    server: LiveKitServer | None = None,
    workers: int = 1,
    agent_mode: Literal["dev", "start"] = "dev",
    start_workers: bool = True,
    **supervise: Any,
) -> AsyncIterator[SimulatedLiveKit]:
    """The LiveKit stand-in on `host` (its API keys: `settings`' LiveKit key and secret; a
    `server` given here is served instead) and `workers` `voicegw agent <agent_mode>` workers
    on `worker_env` (the simulated providers' environment), each on ports of its own and
    restarted when it dies (`supervise`: `Supervised` options), until the block ends.
    `settings` come back pointed at the stand-in, with the gateway's dispatch check on unless
    LIVEKIT_DISPATCH_CHECK says no. `start_workers=False` leaves the workers to
    `SimulatedLiveKit.start_workers()` (`voicegw serve` starts them once it serves: a worker
    loading LiveKit Agents takes the CPU the gateway's own start needs)."""
    from simulators.livekit_server import LiveKitServer

    key, secret = settings.livekit_api_key, settings.livekit_api_secret
    assert key is not None and secret is not None, "dev settings always have LiveKit keys"
    if server is None:
        server = LiveKitServer({key.get_secret_value(): secret.get_secret_value()})
    # The workers outlive the server by a moment: it closes its rooms first (everyone hears
    # why), as a LiveKit that goes away would; then they are stopped.
    async with contextlib.AsyncExitStack() as started:
        async with server.serve(host):
            check = settings.livekit_dispatch_check
            settings = settings.model_copy(
                update={
                    "livekit_url": server.ws_url,
                    "livekit_dispatch_check": True if check is None else check,
                }
            )
            children = []
            for number in range(1, workers + 1):
                ports = {"METRICS_PORT": str(free_port()), "AGENT_HEALTH_PORT": str(free_port())}
                env = agent_env(settings, {**worker_env, **ports})
                name = "agent worker" if workers == 1 else f"agent worker {number}"
                child = Supervised(agent_command(agent_mode), env=env, name=name, **supervise)
                started.push_async_callback(child.stop)
                children.append(child)
            room = SimulatedLiveKit(server, children, settings)
            if start_workers:
                await room.start_workers()
            yield room
