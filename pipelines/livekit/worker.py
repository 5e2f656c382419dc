"""The LiveKit worker: registered under LIVEKIT_AGENT_NAME for explicit dispatch.

Settings are read here, at the edge: once per process in `prewarm` (which also loads Silero,
once per process), and turned into explicit `PipelineOptions` for the session factory.

The session history is the composition root's to give: a setup function of its own (run in
each job process, after `prewarm`) may put a `HistoryRecorder` in the process's userdata under
`HISTORY`; each job then records into it as one half of its session, and flushes it when the
job ends. Without one, nothing is recorded.

Load: the worker tells LiveKit the share of its capacity it holds (`SessionLoad`: active
sessions / AGENT_MAX_SESSIONS) and is full at 1, so LiveKit stops sending it work exactly when
it holds that many sessions. livekit-agents' default load is the host's CPU over a moving
average, which says nothing about this process: on a shared machine another process's CPU made
a `start` worker decline every job.

A session outlives its page leaving: a page that reloads rejoins the room and finds the same
agent (with the conversation so far), whether or not its browser managed to say goodbye. The
job ends when the room does (LiveKit closes a room the departure timeout after its last
non-agent participant left) or when LiveKit terminates it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit.agents import AgentServer, JobContext, JobProcess, llm, room_io, stt, tts

from pipelines.contracts import DispatchMetadata, Settings, load_settings
from pipelines.contracts.history import NO_HISTORY, HistoryRecorder
from pipelines.contracts.metrics import observe_turn

from .latency import TurnRecord
from .pipeline import PipelineOptions, build_session, load_vad, session_id_for, wire
from .state import DataChannelPublisher
from .usage import UsageMeter

log = logging.getLogger("voicegw.livekit.worker")

HISTORY = "history"  # the job process's HistoryRecorder in JobProcess.userdata, if any


def prewarm(proc: JobProcess) -> None:
    """Once per worker process: settings, options and the Silero model."""
    options = PipelineOptions.from_settings(load_settings(process="agent"))
    proc.userdata["options"] = options
    proc.userdata["vad"] = load_vad(options.vad)


async def entrypoint(ctx: JobContext) -> None:
    """One dispatched job: the agent in the room of one gateway session."""
    options: PipelineOptions = ctx.proc.userdata["options"]
    session_id = session_id_for(ctx.job.metadata, ctx.job.room.name)
    log.info("job started", extra={"session_id": session_id, "room": ctx.job.room.name})

    meter = UsageMeter()
    session = build_session(options, vad=ctx.proc.userdata["vad"], meter=meter)
    # Open the provider connections while we join the room, not when the user first speaks.
    for component in (session.stt, session.llm, session.tts):
        if isinstance(component, stt.STT | llm.LLM | tts.TTS):
            component.prewarm()
    await ctx.connect()

    def on_turn(turn: TurnRecord) -> None:
        observe_turn("livekit", turn.metrics().model_dump(exclude={"type"}))

    recorder: HistoryRecorder = ctx.proc.userdata.get(HISTORY, NO_HISTORY)
    wired = wire(
        session,
        options,
        publisher=DataChannelPublisher(ctx.room, session_id=session_id),
        session_id=session_id,
        on_turn=on_turn,
        meter=meter,
        history=recorder.open(
            session_id=session_id, mode="livekit", user=_user_of(ctx.job.metadata)
        ),
    )

    async def cleanup(*_: Any) -> None:
        await wired.aclose()
        await recorder.flush()  # the job process may end with the job
        usage = meter.usage
        log.info(
            "job finished",
            extra={
                "session_id": session_id,
                "minutes": round(usage.audio_s / 60, 2),
                "llm_requests": usage.llm_requests,
                "tts_requests": usage.tts_requests,
                "tts_characters": usage.tts_characters,
                "cost_usd": round(usage.cost_usd()["total"], 5),
            },
        )

    ctx.add_shutdown_callback(cleanup)
    await session.start(
        wired.agent, room=ctx.room, room_options=room_io.RoomOptions(close_on_disconnect=False)
    )


def _user_of(job_metadata: str | None) -> str | None:
    try:
        return DispatchMetadata.model_validate_json(job_metadata or "").user
    except ValueError:
        return None


@dataclass(frozen=True)
class SessionLoad:
    """The worker's load for LiveKit: the sessions it runs over `capacity`, at most 1. A
    class, not a closure: livekit-agents may pickle the worker's options."""

    capacity: int

    def __call__(self, server: AgentServer) -> float:
        return min(1.0, len(server.active_jobs) / self.capacity)


def create_server(
    settings: Settings,
    *,
    devmode: bool = False,
    setup: Callable[[JobProcess], None] = prewarm,
) -> AgentServer:
    """The worker, registered for explicit dispatch under LIVEKIT_AGENT_NAME, full at
    AGENT_MAX_SESSIONS sessions. Its health endpoint is on AGENT_HEALTH_PORT in `start`, on a
    free port in `dev` (as livekit-agents does). `setup` runs in each job process (a
    module-level function: job processes import it); the default is `prewarm`."""

    def secret(value: Any) -> str | None:
        return None if value is None else str(value.get_secret_value())

    server = AgentServer(
        setup_fnc=setup,
        ws_url=settings.livekit_url,
        api_key=secret(settings.livekit_api_key),
        api_secret=secret(settings.livekit_api_secret),
        # The worker's own /metrics (turn latency, tool calls). Jobs run in child processes,
        # so their samples go through prometheus-client's multiprocess directory.
        prometheus_port=settings.metrics_port,
        prometheus_multiproc_dir=str(Path(tempfile.gettempdir()) / "voicegw-agent-metrics"),
        load_fnc=SessionLoad(settings.agent_max_sessions),
        load_threshold=1.0,
        port=0 if devmode else settings.agent_health_port,
    )
    server.rtc_session(entrypoint, agent_name=settings.livekit_agent_name)
    return server
