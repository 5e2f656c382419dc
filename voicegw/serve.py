"""How the gateway is served: by `voicegw serve`, the lab, the tests and the benchmarks alike.

uvicorn with the relay's direct WebSocket protocol (`SERVER_OPTIONS`), on uvloop as
`uvicorn.run` would (`run_server`). `serve_gateway` runs the process's server until it is told
to stop; `running_gateway` serves one on a free port of 127.0.0.1 inside the current event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Generator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from starlette.routing import BaseRoute

from gateway.app import Gateway, create_app
from gateway.store import Store
from history import History, HistoryConfig
from pipelines.contracts import Settings
from pipelines.contracts.settings import Process
from relay.client_leg import DirectWebSocketProtocol
from simulators.server import RunningServer, serve

from . import providers
from .http_limits import server_options
from .simulate import SimulatedLiveKit, simulated_livekit, simulated_stack

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
    in `simulated` (`voicegw.providers` names), or all of them. A simulated LiveKit is the
    stand-in in this process with one agent worker process on the providers' simulators."""
    servers: list[uvicorn.Server] = []
    room: SimulatedLiveKit | None = None
    with _stop_on_signals(servers) as signalled:
        async with contextlib.AsyncExitStack() as stack:
            running: frozenset[str] = frozenset()
            if profile is not None:
                simulation = await stack.enter_async_context(
                    simulated_stack(settings, profile, only=simulated)
                )
                settings, running = simulation.settings, simulation.simulated
                if simulated is None or "livekit" in simulated:
                    room = await stack.enter_async_context(
                        simulated_livekit(settings, worker_env=simulation.env, start_workers=False)
                    )
                    settings, running = room.settings, running | {"livekit"}
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
            # In dev the gateway is the whole system `make run` starts: say where each provider
            # is.
            uses: tuple[Process, ...] = (
                ("gateway", "agent") if settings.voicegw_env == "dev" else ("gateway",)
            )
            providers.report(settings, uses, running)
            providers.report_routing(settings)
            config = uvicorn.Config(
                create_app(settings, extra_routes=extra_routes, history=open_history(settings)),
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                **SERVER_OPTIONS,
                **server_options(settings),
            )
            server = _GatewayServer(config)
            server.should_exit = bool(signalled)  # told to stop while starting
            servers.append(server)
            serving = asyncio.create_task(server.serve())
            try:
                if room is not None and await _started(server, serving):
                    await room.start_workers()
                await serving
            finally:
                server.should_exit = True
                with contextlib.suppress(asyncio.CancelledError):
                    await serving


def open_history(settings: Settings, **options: Any) -> History | None:
    """The process's session history (HISTORY_ENABLED), where its settings say, logged by
    kind and place (never the URL: it may carry a password). Nothing connects yet: the
    database may be down at start-up, and recording starts when it is back."""
    if not settings.history_enabled:
        log.info("session history off", extra={"history": "off"})
        return None
    config = HistoryConfig.from_settings(settings)
    log.info(
        "session history",
        extra={
            "history": config.kind,
            "where": config.where,
            "transcripts": config.transcripts,
            "retention_days": config.retention_days,
        },
    )
    return History(config, **options)


async def _started(server: uvicorn.Server, serving: asyncio.Task[None]) -> bool:
    """Wait until `server` listens; False when it stopped first."""
    while not server.started:
        if serving.done():
            return False
        await asyncio.sleep(0.01)
    return True


class _GatewayServer(uvicorn.Server):
    """uvicorn with the process's signals left to `serve_gateway`: uvicorn re-raises a signal
    as soon as it has shut down, which would end the process before what `serve_gateway`
    started is stopped (the simulated LiveKit's agent worker is a child process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.contextmanager
def _stop_on_signals(servers: list[uvicorn.Server]) -> Generator[list[int], None, None]:
    """SIGINT and SIGTERM stop `servers` (as uvicorn's own handling would, including a second
    SIGINT forcing the exit) for the whole block, start-up and clean-up included; the block
    gets the signals caught so far. Once it is over they are raised again, so the process ends
    the way uvicorn ends it."""
    captured: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield captured
        return

    def handle(sig: int, frame: FrameType | None) -> None:
        captured.append(sig)
        for server in servers:
            server.handle_exit(sig, frame)

    original = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield captured
    finally:
        for handled, handler in original.items():
            signal.signal(handled, handler)
    for caught in reversed(captured):
        signal.raise_signal(caught)


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
    history: History | None = None,
    **overrides: Any,
) -> AsyncIterator[ServedGateway]:
    """The gateway on a free port of 127.0.0.1 in this event loop until the block ends, served
    as `voicegw serve` serves it (`overrides` amend its uvicorn options). `store` and `clock`
    replace the ones built from settings (tests); `history` records its sessions (none unless
    given: a test's history is its own database)."""
    app = create_app(settings, store=store, clock=clock or time.time, history=history)
    gateway: Gateway = app.state.gateway
    options = {**SERVER_OPTIONS, **server_options(settings), **overrides}
    try:
        async with serve(app, **options) as server:
            yield ServedGateway(server, gateway)
    finally:
        await gateway.aclose()
