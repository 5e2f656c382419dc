"""The gateway's calls to the LiveKit server API (Twirp, through livekit-api's LiveKitAPI).

Agent dispatch on re-join: LiveKit honours the dispatch embedded in a page token only when
that token creates the room. A page that reloads into a room that still exists (its empty
timeout has not passed) would find no agent, because the first agent's job ended when the page
left. So before handing out a livekit session the gateway asks whether the room exists; if it
does and no dispatch of our agent is live in it, it creates one carrying the same
DispatchMetadata the token carries.

Active probe: listing rooms is the cheapest authenticated call; a failure counts against the
rollback breaker like a page's fallback report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

import aiohttp
from livekit import api
from livekit.protocol.agent import JobStatus
from livekit.protocol.agent_dispatch import AgentDispatch

from pipelines.contracts import DispatchMetadata
from pipelines.contracts.metrics import AGENT_DISPATCHES, LIVEKIT_PROBES

from .tokens import room_name

log = logging.getLogger("voicegw.livekit")

DispatchOutcome = Literal["no_room", "agent_live", "created", "error"]
_ENDED = frozenset({JobStatus.JS_SUCCESS, JobStatus.JS_FAILED, JobStatus.JS_CANCELLED})


def dispatch_is_live(dispatch: AgentDispatch, agent_name: str) -> bool:
    """A dispatch of `agent_name` that is not deleted and has a job pending or running (or no
    job yet: LiveKit is still assigning one)."""
    if dispatch.agent_name != agent_name or dispatch.state.deleted_at:
        return False
    jobs = dispatch.state.jobs
    return not jobs or any(job.state.status not in _ENDED for job in jobs)


class LiveKitServerApi:
    """Short-lived LiveKitAPI clients (one aiohttp session per call), so nothing outlives a
    request and nothing needs an application shutdown hook."""

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        api_secret: str,
        agent_name: str,
        timeout_s: float = 3.0,
    ) -> None:
        """`url` is LIVEKIT_URL (ws/wss are mapped to http/https by livekit-api)."""
        self._url = url
        self._api_key = api_key
        self._api_secret = api_secret
        self._agent_name = agent_name
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def _client(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(
            self._url, self._api_key, self._api_secret, timeout=self._timeout, failover=False
        )

    async def ensure_agent(self, *, session_id: str, user: str | None) -> DispatchOutcome:
        """Make sure an agent will be in the session's room. Never raises for LiveKit's
        failures: the page's token still carries its own dispatch, so a failed check only
        loses the re-join case, and the outcome says so."""
        room = room_name(session_id)
        fields = {"session_id": session_id, "room": room}
        try:
            async with self._client() as lk:
                rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
                if not any(r.name == room for r in rooms.rooms):
                    outcome: DispatchOutcome = "no_room"
                else:
                    dispatches = await lk.agent_dispatch.list_dispatch(room_name=room)
                    if any(dispatch_is_live(d, self._agent_name) for d in dispatches):
                        outcome = "agent_live"
                    else:
                        metadata = DispatchMetadata(
                            session_id=session_id, mode="livekit", user=user
                        )
                        created = await lk.agent_dispatch.create_dispatch(
                            api.CreateAgentDispatchRequest(
                                agent_name=self._agent_name,
                                room=room,
                                metadata=metadata.model_dump_json(),
                            )
                        )
                        outcome = "created"
                        fields["dispatch_id"] = created.id
        except (TimeoutError, api.TwirpError, aiohttp.ClientError) as exc:
            AGENT_DISPATCHES.labels(outcome="error").inc()
            log.warning("agent dispatch check failed", extra={**fields, "error": _describe(exc)})
            return "error"
        AGENT_DISPATCHES.labels(outcome=outcome).inc()
        if outcome == "created":
            log.info("agent dispatched into existing room", extra=fields)
        return outcome

    async def probe(self) -> bool:
        """One authenticated ListRooms call; True when LiveKit answered."""
        try:
            async with self._client() as lk:
                await lk.room.list_rooms(api.ListRoomsRequest())
        except (TimeoutError, api.TwirpError, aiohttp.ClientError) as exc:
            LIVEKIT_PROBES.labels(outcome="error").inc()
            log.warning("livekit probe failed", extra={"error": _describe(exc)})
            return False
        LIVEKIT_PROBES.labels(outcome="ok").inc()
        return True


class LiveKitProber:
    """Probes the LiveKit server API every `interval_s` and reports failures to the breaker
    (`on_failure`: the router's `probe_failed`)."""

    def __init__(
        self,
        server_api: LiveKitServerApi,
        on_failure: Callable[[], Awaitable[None]],
        *,
        interval_s: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`sleep` is injectable so a test drives the loop without waiting."""
        self._api = server_api
        self._on_failure = on_failure
        self._interval_s = interval_s
        self._sleep = sleep
        self.probes = 0
        self.failures = 0
        self.last_ok: bool | None = None

    async def probe_once(self) -> bool:
        ok = await self._api.probe()
        self.probes += 1
        self.last_ok = ok
        if not ok:
            self.failures += 1
            await self._on_failure()
        return ok

    async def run(self) -> None:
        """Probe forever; cancelling it is safe (it stops between or during probes)."""
        while True:
            await self.probe_once()
            await self._sleep(self._interval_s)


def _describe(exc: BaseException) -> str:
    """A failure named without its request (no URL with credentials, no headers)."""
    if isinstance(exc, api.TwirpError):
        return f"LiveKit answered HTTP {exc.status} ({exc.code})"
    if isinstance(exc, asyncio.TimeoutError):
        return "LiveKit did not answer in time"
    return f"LiveKit could not be reached ({type(exc).__name__})"
