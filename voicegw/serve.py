"""How the gateway is served: by `voicegw serve`, the lab, the tests and the benchmarks alike.

uvicorn with the relay's direct WebSocket protocol (`SERVER_OPTIONS`), on uvloop as
`uvicorn.run` would (`run_server`). `serve_gateway` runs the process's server until it is told
to stop; `running_gateway` serves one on a free port of 127.0.0.1 inside the current event loop.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.routing import BaseRoute

from gateway.app import Gateway, create_app
from gateway.store import Store
from pipelines.contracts import Settings
from pipelines.contracts.settings import Process
from relay.client_leg import DirectWebSocketProtocol
from simulators.server import RunningServer, serve

from . import providers
from .simulate import simulated_stack

log = logging.getLogger("voicegw.cli")

# Frames go straight to a relay session, no ASGI queue per frame. No per-message deflate: it
# would cost the relay more CPU per audio frame than everything else it does, for a quarter
# less bandwidth on base64 audio.
SERVER_OPTIONS: dict[str, Any] = {
    "ws": DirectWebSocketProtocol,
    "ws_per_message_deflate": False,
    "ws_max_size": 16 * 1024 * 1024,
}


def run_server(main: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop (installed with uvicorn[standard]) as `uvicorn.run` would:
    `uvicorn.Server.serve()` inside a plain `asyncio.run` gets the default asyncio loop, which
    costs the relay about a fifth more CPU per frame and a longer latency tail."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        import asyncio

        asyncio.run(main)
        return
    uvloop.run(main)


async def serve_gateway(
    settings: Settings,
    host: str,
    port: int,
    *,
    profile: str | None = None,
    simulated: Collection[str] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> None:
    """Serve the gateway until the process is told to stop, as `voicegw serve` does (the relay
    benchmark runs it through here too). `profile` runs providers as simulators: those named
    in `simulated` (`voicegw.providers` names), or all of them."""
    async with contextlib.AsyncExitStack() as stack:
        running: frozenset[str] = frozenset()
        if profile is not None:
            simulation = await stack.enter_async_context(
                simulated_stack(settings, profile, only=simulated)
            )
            settings, running = simulation.settings, simulation.simulated
            providers.report_simulation(running, every=simulated is None)
        store = "redis" if settings.redis_url is not None else "memory"
        log.info(
            "gateway starting",
            extra={"host": host, "port": port, "env": settings.voicegw_env, "store": store},
        )
        if store == "memory" and settings.voicegw_env == "production":
            log.warning(
                "shared state is in this process only: run one replica, or set REDIS_URL",
                extra={"store": store},
            )
        # In dev the gateway is the whole system `make run` starts: say where each provider is.
        uses: tuple[Process, ...] = ("gateway", "agent") if settings.voicegw_env == "dev" else (
            "gateway",
        )
        providers.report(settings, uses, running)
        providers.report_routing(settings)
        config = uvicorn.Config(
            create_app(settings, extra_routes=extra_routes),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            **SERVER_OPTIONS,
        )
        await uvicorn.Server(config).serve()


@dataclass(frozen=True)
class ServedGateway:
    """A gateway served in this process: its server and its per-process state."""

    server: RunningServer
    gateway: Gateway

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Callable[[], float] | None = None,
    **server_options: Any,
) -> AsyncIterator[ServedGateway]:
    """The gateway on a free port of 127.0.0.1 in this event loop until the block ends, served
    as `voicegw serve` serves it (`server_options` amend `SERVER_OPTIONS`). `store` and
    `clock` replace the ones built from settings (tests)."""
    app = create_app(settings, store=store, clock=clock or time.time)
    gateway: Gateway = app.state.gateway
    try:
        async with serve(app, **{**SERVER_OPTIONS, **server_options}) as server:
            yield ServedGateway(server, gateway)
    finally:
        await gateway.aclose()
