"""The gateway's calls to the LiveKit server API (Twirp, through livekit-api's LiveKitAPI).

Agent dispatch on re-join: LiveKit honours the dispatch embedded in a page token only when
that token creates the room. A page that joins a room that still exists (a reload, a second
page of the same session) finds no agent if the room's agent is gone (its worker died, its job
failed or was ended). So before handing out a livekit session the gateway asks LiveKit, in
order (`ensure_agent`):

1. Does the room exist? No: the token's own dispatch will bring the agent (`no_room`).
2. Is an agent of ours in it? A participant of kind AGENT whose `lk.agent_name` (set by the
   server in the agent's token) or `lk.agent.name` (set by livekit-agents) is our agent name
   (`agent_live`). The participant list is the truth on every LiveKit: the dispatch's job
   state is not, because the open-source server copies a job's state into its dispatch when it
   assigns the job and never updates it (livekit/agents#1472), while LiveKit Cloud does.
3. Is one on its way? A dispatch of ours created, or whose job started, less than
   `join_grace_s` ago, with no job yet or a job not ended as far as LiveKit says
   (`agent_pending`): a second dispatch now would put two agents in the room.
4. Otherwise it creates a dispatch carrying the same DispatchMetadata the token carries
   (`created`).

Active probe: listing rooms is the cheapest authenticated call; a failure counts against the
rollback breaker like a page's fallback report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal

import aiohttp
from livekit import api
from livekit.protocol.agent import JobStatus
from livekit.protocol.agent_dispatch import AgentDispatch
from livekit.protocol.models import ParticipantInfo

from pipelines.contracts import DispatchMetadata
from pipelines.contracts.metrics import AGENT_DISPATCHES, LIVEKIT_PROBES

from .tokens import room_name

log = logging.getLogger("voicegw.livekit")

DispatchOutcome = Literal["no_room", "agent_live", "agent_pending", "created", "error"]
_ENDED = frozenset({JobStatus.JS_SUCCESS, JobStatus.JS_FAILED, JobStatus.JS_CANCELLED})
# The server's attribute in the agent's token (`agent.AgentNameAttributeKey`), and the one
# livekit-agents adds itself.
AGENT_NAME_ATTRIBUTES = ("lk.agent_name", "lk.agent.name")
# From dispatch to the agent in the room: the worker's answer (LiveKit waits up to 10 s for
# it), the job process starting, the join. Seconds.
JOIN_GRACE_S = 10.0


def agent_in_room(participants: Iterable[ParticipantInfo], agent_name: str) -> bool:
    """Whether an agent participant named `agent_name` is in the room."""
    return any(
        p.kind == ParticipantInfo.Kind.AGENT
        and p.state != ParticipantInfo.State.DISCONNECTED
        and any(p.attributes.get(key) == agent_name for key in AGENT_NAME_ATTRIBUTES)
        for p in participants
    )


def dispatch_is_pending(
    dispatch: AgentDispatch, agent_name: str, *, now_s: float, grace_s: float
) -> bool:
    """A dispatch of `agent_name` whose agent may still be on its way into the room: not
    deleted, created (or its newest job started) less than `grace_s` before `now_s`, and that
    job, if it has one, not ended as far as the server says."""
    if dispatch.agent_name != agent_name or dispatch.state.deleted_at:
        return False
    jobs = dispatch.state.jobs
    started_ns = max([dispatch.state.created_at, *(job.state.started_at for job in jobs)])
    if now_s - started_ns / 1e9 >= grace_s:
        return False
    return not jobs or jobs[-1].state.status not in _ENDED


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
        join_grace_s: float = JOIN_GRACE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`url` is LIVEKIT_URL (ws/wss are mapped to http/https by livekit-api). `clock`
        (wall-clock seconds, compared with the server's timestamps) is injectable for tests."""
        self._url = url
        self._api_key = api_key
        self._api_secret = api_secret
        self._agent_name = agent_name
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._join_grace_s = join_grace_s
        self._clock = clock

    def _client(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(
            self._url, self._api_key, self._api_secret, timeout=self._timeout, failover=False
        )

    async def ensure_agent(self, *, session_id: str, user: str | None) -> DispatchOutcome:
        """Make sure an agent will be in the session's room (the module docstring says how).
        Never raises for LiveKit's failures: the page's token still carries its own dispatch,
        so a failed check only loses the re-join case, and the outcome says so."""
        room = room_name(session_id)
        fields = {"session_id": session_id, "room": room}
        try:
            async with self._client() as lk:
                outcome = await self._check(lk, room)
                if outcome == "created":
                    metadata = DispatchMetadata(session_id=session_id, mode="livekit", user=user)
                    created = await lk.agent_dispatch.create_dispatch(
                        api.CreateAgentDispatchRequest(
                            agent_name=self._agent_name,
                            room=room,
                            metadata=metadata.model_dump_json(),
                        )
                    )
                    fields["dispatch_id"] = created.id
        except (TimeoutError, api.TwirpError, aiohttp.ClientError) as exc:
            AGENT_DISPATCHES.labels(outcome="error").inc()
            log.warning("agent dispatch check failed", extra={**fields, "error": _describe(exc)})
            return "error"
        AGENT_DISPATCHES.labels(outcome=outcome).inc()
        if outcome == "created":
            log.info("agent dispatched into existing room", extra=fields)
        return outcome

    async def _check(self, lk: api.LiveKitAPI, room: str) -> DispatchOutcome:
        """What the room needs: `created` means a dispatch is wanted (not made yet)."""
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
        if not any(r.name == room for r in rooms.rooms):
            return "no_room"
        people = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        if agent_in_room(people.participants, self._agent_name):
            return "agent_live"
        dispatches = await lk.agent_dispatch.list_dispatch(room_name=room)
        now_s = self._clock()
        if any(
            dispatch_is_pending(d, self._agent_name, now_s=now_s, grace_s=self._join_grace_s)
            for d in dispatches
        ):
            return "agent_pending"
        return "created"

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
