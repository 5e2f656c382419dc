"""livekit mode of `voicegw talk`: one conversation from a recording, with no LiveKit server.

The configured pipeline (the same factory as the worker) runs between a `FileAudioInput` and a
`FileAudioOutput`. Used by `voicegw talk`, `voicegw compare`, the tests and the benchmark.
Voice-to-voice is measured from the true end of each utterance in the input audio to the first
audible sample the agent played.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from livekit.agents import AgentSession
from livekit.agents.vad import VAD
from livekit.agents.voice.agent_session import SessionConnectOptions

from pipelines.contracts import Settings
from pipelines.contracts.history import NO_SESSION_HISTORY, SessionHistory
from pipelines.contracts.metrics import to_ms
from pipelines.contracts.prices import Usage
from pipelines.livekit.latency import TurnRecord
from pipelines.livekit.pipeline import PipelineOptions, build_session, load_vad, wire
from pipelines.livekit.state import RecordingPublisher, StatePublisher
from pipelines.livekit.usage import UsageMeter

from .audio import Samples, Utterance, find_utterances
from .audio_io import FileAudioInput, FileAudioOutput
from .turns import TalkResult, TalkRun, ToolCall, Turn

log = logging.getLogger("voicegw.livekit.talk")

_POLL_S = 0.05


@dataclass
class LiveKitRun(TalkRun):
    """A livekit conversation, with the turn tracker's own records (timestamps included) and
    what it used of each provider (speculation included)."""

    records: list[TurnRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


def turn_of(record: TurnRecord) -> Turn:
    """The `voicegw talk --json` turn of a tracker record."""
    return Turn(
        user_text=record.user_text,
        assistant_text=" ".join(record.assistant_text),
        tool_calls=[
            ToolCall(name=c.name, arguments=c.arguments, status=c.status)
            for c in record.tool_calls
        ],
        **record.metrics().model_dump(exclude={"type"}),
    )


async def talk(
    options: PipelineOptions,
    samples: Samples,
    sample_rate: int,
    *,
    vad: VAD,
    http_session: aiohttp.ClientSession,
    publisher: StatePublisher,
    session_id: str = "talk",
    utterances: tuple[Utterance, ...] | None = None,
    conn_options: SessionConnectOptions | None = None,
    settle_timeout_s: float = 30.0,
    observe: Callable[[AgentSession[Any]], None] | None = None,
    on_turn: Callable[[Turn], None] | None = None,
    history: SessionHistory = NO_SESSION_HISTORY,
) -> LiveKitRun:
    """Play `samples` to the pipeline in real time and return what happened, turn by turn
    (`on_turn` hears of each as it ends; `history` records the session as a worker's job
    does). Cancelling it is safe: the session and its helpers are closed."""
    if utterances is None:
        utterances = find_utterances(samples, sample_rate)
    source = FileAudioInput(samples, sample_rate)
    sink = FileAudioOutput()

    def voice_to_voice(turn: TurnRecord) -> float | None:
        if source.started_at is None:
            return None
        ends = [source.started_at + u.end_s for u in utterances]
        spoken = [end for end in ends if end <= turn.committed_at]
        if not spoken:
            return None
        heard = [s for s in sink.sounds if s >= spoken[-1]]
        return to_ms(heard[0] - spoken[-1]) if heard else None

    meter = UsageMeter()
    session = build_session(
        options, vad=vad, http_session=http_session, conn_options=conn_options, meter=meter
    )
    session.input.audio = source
    session.output.audio = sink
    wired = wire(
        session,
        options,
        publisher=publisher,
        session_id=session_id,
        voice_to_voice=voice_to_voice,
        meter=meter,
        on_turn=None if on_turn is None else lambda record: on_turn(turn_of(record)),
        history=history,
    )
    if observe is not None:
        observe(session)  # benchmarks add their own listeners
    tracker = wired.tracker
    try:
        await session.start(wired.agent)
        await asyncio.wait_for(source.finished.wait(), len(samples) / sample_rate + 10)
        deadline = time.perf_counter() + settle_timeout_s
        while time.perf_counter() < deadline:
            settled = (
                len(tracker.turns) >= len(utterances)
                and tracker.open_turn is None
                and session.agent_state in ("listening", "idle")
                and session.user_state != "speaking"
            )
            if settled:
                break
            await asyncio.sleep(_POLL_S)
        else:
            log.warning("conversation did not settle", extra={"session_id": session_id})
    finally:
        source.close()
        await wired.aclose()
        await sink.aclose()
    origin = source.started_at or time.perf_counter()
    duration = max(len(samples) / sample_rate, time.perf_counter() - origin)
    return LiveKitRun(
        result=TalkResult(mode="livekit", turns=[turn_of(r) for r in tracker.turns]),
        turn_ends=[r.vad_end_at for r in tracker.turns],
        utterances=utterances,
        output=sink.render(origin, duration),
        output_rate=sink.sample_rate or 24_000,
        origin=origin,
        sounds=list(sink.sounds),
        records=tracker.turns,
        usage=meter.usage,
    )


async def talk_livekit(
    settings: Settings,
    samples: Samples,
    sample_rate: int,
    *,
    on_turn: Callable[[Turn], None] | None = None,
) -> LiveKitRun:
    """One conversation through the configured pipeline (`voicegw talk --mode livekit`)."""
    options = PipelineOptions.from_settings(settings)
    async with aiohttp.ClientSession() as http:
        return await talk(
            options,
            samples,
            sample_rate,
            vad=load_vad(options.vad),
            http_session=http,
            publisher=RecordingPublisher(),
            session_id="talk",
            on_turn=on_turn,
        )
