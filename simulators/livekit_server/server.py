"""The stand-in assembled: one Starlette app (signal, agent workers, Twirp API) and the room
state behind it, served by uvicorn on the caller's event loop.

aiortc runs on that same loop: its peer connections are created by the signal handlers and live
as long as their participant, so the server must run on the loop that also runs the tests'
server-side code (or its own loop, in a thread or a process: `python -m
simulators.livekit_server`). Stopping the server closes every room (participants are told
`SERVER_SHUTDOWN`), cancels pending job assignments and the idle-room checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ..server import serve
from .agents import AgentDispatcher
from .auth import AuthError, KeyRing, bearer_token
from .rooms import RoomManager
from .signal import NO_PERMISSION, SignalService
from .twirp import TwirpService

log = logging.getLogger("livekit_server")

DEFAULT_KEYS = {"devkey": "secret"}


class LiveKitServer:
    """A LiveKit server stand-in. `app` is the ASGI app; `serve()` runs it.

    `track_job_status` (default True): ListDispatch shows each job's current state (LiveKit
    Cloud); False freezes it at assignment as the open-source server does. `auto_create`
    (default True): the first join creates a room. `single_pc=False` serves no `/rtc/v1`
    (clients fall back to `/rtc`, two peer connections). `rng` picks among workers by load.
    `idle_check_s`: how often empty rooms are checked for their timeouts.
    """

    def __init__(
        self,
        keys: Mapping[str, str] | KeyRing = DEFAULT_KEYS,
        *,
        track_job_status: bool = True,
        auto_create: bool = True,
        single_pc: bool = True,
        rng: random.Random | None = None,
        idle_check_s: float = 1.0,
        assign_timeout_s: float = 10.0,
    ) -> None:
        self.keys = keys if isinstance(keys, KeyRing) else KeyRing(keys)
        self.single_pc = single_pc
        self.agents = AgentDispatcher(
            self.keys,
            track_job_status=track_job_status,
            rng=rng,
            assign_timeout_s=assign_timeout_s,
        )
        self.rooms = RoomManager(agents=self.agents, idle_check_s=idle_check_s)
        self.signal = SignalService(
            self.keys, self.rooms, auto_create=auto_create, single_pc=single_pc
        )
        self.twirp = TwirpService(self.keys, self.rooms, auto_create=auto_create)
        self.app = Starlette(
            routes=[
                *self.signal.routes(),
                WebSocketRoute("/agent", self._agent),
                Route("/agent", _not_found),
                *self.twirp.routes(),
                Route("/", _root),
            ]
        )
        self.url = ""
        self.ws_url = ""

    async def _agent(self, websocket: WebSocket) -> None:
        try:
            token = bearer_token(websocket.headers, websocket.query_params)
            grants = self.keys.verify(token) if token else None
        except AuthError as exc:
            log.warning("worker refused", extra={"status": exc.status, "error": exc.message})
            await websocket.send_denial_response(PlainTextResponse(exc.message, exc.status))
            return
        if grants is None or not grants.has_video or not grants.video.agent:
            log.warning("worker refused", extra={"status": 401, "error": NO_PERMISSION})
            await websocket.send_denial_response(PlainTextResponse(NO_PERMISSION, 401))
            return
        await websocket.accept()
        await self.agents.serve(websocket, grants)

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[LiveKitServer]:
        """Serve on `host:port` (0: a free port) until the block ends; `url`/`ws_url` name
        it. Cancelling the block is safe."""
        logging.getLogger("uvicorn.error").addFilter(_REDACT)
        async with serve(self.app, host=host, port=port, timeout_graceful_shutdown=2) as running:
            self.url = running.url
            self.ws_url = running.ws_url
            log.info("livekit stand-in listening", extra={"url": self.ws_url})
            idle = asyncio.get_running_loop().create_task(self.rooms.run_idle_checks())
            try:
                yield self
            finally:
                # While the server still runs: participants hear why, workers lose their jobs.
                idle.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await idle
                await self.rooms.close_all()
                await self.agents.aclose()


class _RedactTokens(logging.Filter):
    """uvicorn logs each WebSocket's path with its query, where the JS client puts its
    `access_token`; the value never reaches a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, str) and "access_token=" in a for a in record.args
        ):
            record.args = tuple(
                _TOKEN.sub(r"\1<redacted>", a) if isinstance(a, str) else a for a in record.args
            )
        return True


_TOKEN = re.compile(r"(access_token=)[^&\s\"]*")
_REDACT = _RedactTokens()


async def _not_found(request: Request) -> Response:
    return Response(status_code=404)


async def _root(request: Request) -> Response:
    return PlainTextResponse("OK")
