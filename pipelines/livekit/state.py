"""State messages of the shared contract, from the session's events to the page.

`StatePublisher` is the small interface the pipeline talks to: `DataChannelPublisher` sends on
the room's data channel (reliable, topic `voice.state`); `RecordingPublisher` keeps the
sequence in memory, for tests and `voicegw talk`. `StateBridge` translates session events into
messages and keeps their order: every message goes through one queue and one sender task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.llm import ChatMessage
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    UserInputTranscribedEvent,
    UserTranscriptionTimeoutEvent,
)

from pipelines.contracts import (
    STATE_TOPIC,
    AgentState,
    StateMessage,
    ToolFinished,
    ToolStarted,
    TranscriptAssistant,
    TranscriptUser,
    VoiceError,
)
from pipelines.contracts.executor import ToolResult

log = logging.getLogger("voicegw.livekit.state")

_AGENT_STATES = {"initializing", "listening", "thinking", "speaking", "idle"}


class StatePublisher(Protocol):
    async def publish(self, message: StateMessage) -> None:
        """Deliver one message. Cancelling it is safe (the message may be lost)."""


class RecordingPublisher:
    """Keeps every message, in order."""

    def __init__(self) -> None:
        self.messages: list[StateMessage] = []
        self._changed = asyncio.Event()

    async def publish(self, message: StateMessage) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, type_: str, count: int = 1, within_s: float = 10.0) -> None:
        """Wait until `count` messages of `type_` have arrived (TimeoutError otherwise)."""

        async def arrived() -> None:
            while sum(m.type == type_ for m in self.messages) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(arrived(), within_s)


class DataChannelPublisher:
    """Publishes on the room's data channel, reliable, topic `voice.state`."""

    def __init__(self, room: rtc.Room, *, session_id: str) -> None:
        self._room = room
        self._session_id = session_id

    async def publish(self, message: StateMessage) -> None:
        try:
            await self._room.local_participant.publish_data(
                message.to_json(), reliable=True, topic=STATE_TOPIC
            )
        except Exception:  # a page that left must not take the agent down
            log.warning(
                "state message not delivered",
                extra={"session_id": self._session_id, "type": message.type},
            )


class StateBridge:
    """Session events → state messages, sent in order by one task. Also the sink of the
    tools' started/finished events and of `metrics.turn`."""

    def __init__(
        self,
        publisher: StatePublisher,
        *,
        session_id: str,
        on_error: Callable[[VoiceError], None] | None = None,
    ) -> None:
        """`on_error` hears every `voice.error` as it is sent (the session history)."""
        self._publisher = publisher
        self._session_id = session_id
        self._on_voice_error = on_error
        self._queue: asyncio.Queue[StateMessage | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._session: AgentSession[Any] | None = None

    def attach(self, session: AgentSession[Any]) -> None:
        """Listen to `session` (call before `session.start()` to see `initializing`)."""
        self._session = session
        session.on("agent_state_changed", self._on_agent_state)
        session.on("user_input_transcribed", self._on_user_transcript)
        session.on("conversation_item_added", self._on_item)
        session.on("error", self._on_error)
        session.on("user_transcription_timeout", self._on_no_transcript)
        self._task = asyncio.create_task(self._send_loop(), name="state-bridge")
        self.send(AgentState(state="initializing"))

    def send(self, message: StateMessage) -> None:
        self._queue.put_nowait(message)
        if self._on_voice_error is not None and isinstance(message, VoiceError):
            self._on_voice_error(message)

    def tool_started(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        self.send(ToolStarted(call_id=call_id, name=name))

    def tool_finished(self, result: ToolResult) -> None:
        self.send(
            ToolFinished(
                call_id=result.call_id,
                name=result.name,
                status=result.status,
                duration_ms=result.duration_ms,
            )
        )

    async def aclose(self) -> None:
        """Detach, then send what is queued. Safe to cancel (the rest is dropped)."""
        if self._session is not None:
            self._session.off("agent_state_changed", self._on_agent_state)
            self._session.off("user_input_transcribed", self._on_user_transcript)
            self._session.off("conversation_item_added", self._on_item)
            self._session.off("error", self._on_error)
            self._session.off("user_transcription_timeout", self._on_no_transcript)
            self._session = None
        if self._task is None:
            return
        self._queue.put_nowait(None)
        try:
            await self._task
        finally:
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def _send_loop(self) -> None:
        while (message := await self._queue.get()) is not None:
            await self._publisher.publish(message)

    def _on_agent_state(self, ev: AgentStateChangedEvent) -> None:
        if ev.new_state in _AGENT_STATES:
            self.send(AgentState(state=ev.new_state))

    def _on_user_transcript(self, ev: UserInputTranscribedEvent) -> None:
        if ev.transcript.strip():
            self.send(TranscriptUser(text=ev.transcript, final=ev.is_final))

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if isinstance(item, ChatMessage) and item.role == "assistant" and item.text_content:
            self.send(TranscriptAssistant(text=item.text_content, final=True))

    def _on_no_transcript(self, ev: UserTranscriptionTimeoutEvent) -> None:
        log.warning(
            "no final transcript for user speech",
            extra={"session_id": self._session_id, "speech_s": round(ev.speech_duration, 2)},
        )
        self.send(
            VoiceError(
                code="stt_timeout",
                message="speech was heard but no transcript arrived",
                fatal=False,
            )
        )

    def _on_error(self, ev: ErrorEvent) -> None:
        error = ev.error
        kind = getattr(error, "type", "error")  # "tts_error", "stt_error", "llm_error"
        recoverable = bool(getattr(error, "recoverable", False))
        code = kind if isinstance(kind, str) else "error"
        log.warning(
            "pipeline error",
            extra={"session_id": self._session_id, "code": code, "recoverable": recoverable},
        )
        message = {
            "tts_error": "speech synthesis failed",
            "stt_error": "speech recognition failed",
            "llm_error": "the language model failed",
        }.get(code, "the voice pipeline failed")
        self.send(VoiceError(code=code, message=message, fatal=not recoverable))
