"""Per-turn records and latency from the session's events.

A turn is one user utterance and everything the agent did about it (tool calls, filler,
answer). It opens when the user's turn is committed (`EOUMetrics`, which names the reply's
speech) and closes when that speech has played out, tools included. Then it is logged as one
structured line and published as `metrics.turn`.

- eou_ms: LiveKit's end-of-utterance delay (VAD end of speech → turn committed)
- stt_ms: LiveKit's transcription delay (VAD end of speech → final transcript)
- llm_ttft_ms: time to first token of the turn's first LLM call
- tts_ttfb_ms: time to first byte of the turn's first synthesis
- voice_to_voice_ms: end of the user's speech → first agent audio, from a `VoiceToVoice`
  source: in a room, the session's own estimate of the end of speech and the agent's start of
  speaking; for a WAV file, the true end of speech in the audio and the first audible sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from livekit.agents import AgentSession
from livekit.agents.llm import ChatMessage
from livekit.agents.metrics import EOUMetrics, LLMMetrics, TTSMetrics
from livekit.agents.voice import SpeechHandle
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    MetricsCollectedEvent,
    SpeechCreatedEvent,
    UserStateChangedEvent,
)

from pipelines.contracts import MetricsTurn, ToolResult
from pipelines.contracts.messages import ToolStatus
from pipelines.contracts.metrics import to_ms

log = logging.getLogger("voicegw.livekit.latency")


@dataclass
class ToolCallRecord:
    call_id: str
    name: str
    arguments: dict[str, Any]
    status: ToolStatus | None = None


@dataclass
class TurnRecord:
    """One turn as the tracker saw it. Times ending in `_at` are time.perf_counter() values."""

    index: int
    speech_id: str
    user_text: str = ""
    assistant_text: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    eou_ms: float | None = None
    stt_ms: float | None = None
    llm_ttft_ms: float | None = None
    tts_ttfb_ms: float | None = None
    voice_to_voice_ms: float | None = None
    vad_end_at: float | None = None  # when VAD reported the end of speech
    speech_end_at: float | None = None  # where VAD places the end of speech (min silence earlier)
    committed_at: float = 0.0  # when the user's turn was committed
    speaking_at: float | None = None  # when the agent state first became "speaking"

    def metrics(self) -> MetricsTurn:
        return MetricsTurn(
            eou_ms=self.eou_ms,
            stt_ms=self.stt_ms,
            llm_ttft_ms=self.llm_ttft_ms,
            tts_ttfb_ms=self.tts_ttfb_ms,
            voice_to_voice_ms=self.voice_to_voice_ms,
        )


class VoiceToVoice(Protocol):
    def __call__(self, turn: TurnRecord) -> float | None:
        """Milliseconds from the end of the user's speech to the agent's first audio."""


def estimated_voice_to_voice(turn: TurnRecord) -> float | None:
    """In a room: where VAD places the end of speech (late by Silero's detection lag, so
    this under-reports by tens of ms) to the agent starting to speak."""
    if turn.speech_end_at is None or turn.speaking_at is None:
        return None
    return to_ms(turn.speaking_at - turn.speech_end_at)


class TurnTracker:
    """Builds `TurnRecord`s from a session's events; calls `on_turn` when each one is complete."""

    def __init__(
        self,
        *,
        session_id: str,
        on_turn: Callable[[TurnRecord], None],
        voice_to_voice: VoiceToVoice = estimated_voice_to_voice,
    ) -> None:
        self._session_id = session_id
        self._on_turn = on_turn
        self._voice_to_voice = voice_to_voice
        self.turns: list[TurnRecord] = []
        self._current: TurnRecord | None = None
        self._handles: dict[str, SpeechHandle] = {}
        self._llm: dict[str, LLMMetrics] = {}
        self._tts: dict[str, TTSMetrics] = {}
        self._vad_end_at: float | None = None
        self._speech_end_at: float | None = None
        self._pending_user_text = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: AgentSession[Any] | None = None

    @property
    def open_turn(self) -> TurnRecord | None:
        return self._current

    def attach(self, session: AgentSession[Any]) -> None:
        self._session = session
        session.on("metrics_collected", self._on_metrics)
        session.on("speech_created", self._on_speech)
        session.on("user_state_changed", self._on_user_state)
        session.on("agent_state_changed", self._on_agent_state)
        session.on("conversation_item_added", self._on_item)

    async def aclose(self) -> None:
        """Finish the open turn and stop listening. Safe to cancel."""
        if self._session is not None:
            self._session.off("metrics_collected", self._on_metrics)
            self._session.off("speech_created", self._on_speech)
            self._session.off("user_state_changed", self._on_user_state)
            self._session.off("agent_state_changed", self._on_agent_state)
            self._session.off("conversation_item_added", self._on_item)
            self._session = None
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._current is not None:
            self._finish(self._current)

    # tool listener
    def tool_started(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        if self._current is not None:
            self._current.tool_calls.append(ToolCallRecord(call_id, name, dict(arguments)))

    def tool_finished(self, result: ToolResult) -> None:
        if self._current is None:
            return
        for call in self._current.tool_calls:
            if call.call_id == result.call_id:
                call.status = result.status

    # session events
    def _on_speech(self, ev: SpeechCreatedEvent) -> None:
        self._handles[ev.speech_handle.id] = ev.speech_handle

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if ev.new_state == "listening" and ev.old_state == "speaking":
            self._vad_end_at = time.perf_counter()
            # the event is dated back to VAD's end of speech (wall clock): move it onto ours
            self._speech_end_at = self._vad_end_at - max(0.0, time.time() - ev.created_at)

    def _on_agent_state(self, ev: AgentStateChangedEvent) -> None:
        turn = self._current
        if ev.new_state == "speaking" and turn is not None and turn.speaking_at is None:
            turn.speaking_at = time.perf_counter()

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if not isinstance(item, ChatMessage) or not item.text_content:
            return
        if item.role == "user":
            if self._current is not None and not self._current.user_text:
                self._current.user_text = item.text_content
            else:
                self._pending_user_text = item.text_content
        elif item.role == "assistant" and self._current is not None:
            self._current.assistant_text.append(item.text_content)

    def _on_metrics(self, ev: MetricsCollectedEvent) -> None:
        m = ev.metrics
        if isinstance(m, LLMMetrics) and m.speech_id and not m.cancelled:
            self._llm.setdefault(m.speech_id, m)
            self._fill(self._current)
        elif isinstance(m, TTSMetrics) and m.speech_id and not m.cancelled:
            self._tts.setdefault(m.speech_id, m)
            if self._current is not None and self._current.tts_ttfb_ms is None:
                self._current.tts_ttfb_ms = to_ms(m.ttfb)  # a filler's synthesis counts
        elif isinstance(m, EOUMetrics) and m.speech_id:
            self._open(m)

    def _open(self, m: EOUMetrics) -> None:
        if self._current is not None:
            self._finish(self._current)
        turn = TurnRecord(
            index=len(self.turns),
            speech_id=m.speech_id or "",
            user_text=self._pending_user_text,
            eou_ms=to_ms(m.end_of_utterance_delay),
            stt_ms=to_ms(m.transcription_delay),
            vad_end_at=self._vad_end_at,
            speech_end_at=self._speech_end_at,
            committed_at=time.perf_counter(),
        )
        self._pending_user_text = ""
        self._vad_end_at = None
        self._speech_end_at = None
        self._current = turn
        self.turns.append(turn)
        self._fill(turn)
        handle = self._handles.get(turn.speech_id)
        if handle is not None:
            task = asyncio.create_task(self._close_after(turn, handle))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _fill(self, turn: TurnRecord | None) -> None:
        if turn is None:
            return
        if turn.llm_ttft_ms is None and (llm := self._llm.get(turn.speech_id)) is not None:
            turn.llm_ttft_ms = to_ms(llm.ttft) if llm.ttft >= 0 else None
        if (tts := self._tts.get(turn.speech_id)) is not None and turn.tts_ttfb_ms is None:
            turn.tts_ttfb_ms = to_ms(tts.ttfb)

    async def _close_after(self, turn: TurnRecord, handle: SpeechHandle) -> None:
        await handle.wait_for_playout()
        if self._current is turn:
            self._finish(turn)

    def _finish(self, turn: TurnRecord) -> None:
        if self._current is turn:
            self._current = None
        self._fill(turn)
        turn.voice_to_voice_ms = self._voice_to_voice(turn)
        log.info(
            "turn latency",
            extra={
                "session_id": self._session_id,
                "turn": turn.index,
                "speech_id": turn.speech_id,
                "tool_calls": len(turn.tool_calls),
                **turn.metrics().model_dump(exclude={"type"}),
            },
        )
        self._on_turn(turn)
