"""State messages: what both modes tell the page about the conversation (contract version 1).

Sent as JSON on the LiveKit data channel (reliable, topic `voice.state`) in livekit mode, and
as WebSocket text frames beside the forwarded OpenAI events in openai mode.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

STATE_TOPIC = "voice.state"

AgentStateName = Literal["initializing", "listening", "thinking", "speaking", "idle"]
ToolStatus = Literal["ok", "error"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> str:
        return self.model_dump_json()


class AgentState(_Message):
    type: Literal["agent.state"] = "agent.state"
    state: AgentStateName


class TranscriptUser(_Message):
    type: Literal["transcript.user"] = "transcript.user"
    text: str
    final: bool


class TranscriptAssistant(_Message):
    type: Literal["transcript.assistant"] = "transcript.assistant"
    text: str
    final: bool


class ToolStarted(_Message):
    type: Literal["tool.started"] = "tool.started"
    call_id: str
    name: str


class ToolFinished(_Message):
    type: Literal["tool.finished"] = "tool.finished"
    call_id: str
    name: str
    status: ToolStatus
    duration_ms: float = Field(ge=0)


class MetricsTurn(_Message):
    """Per-turn latency in milliseconds; a stage a mode cannot observe is null."""

    type: Literal["metrics.turn"] = "metrics.turn"
    eou_ms: float | None = None
    stt_ms: float | None = None
    llm_ttft_ms: float | None = None
    tts_ttfb_ms: float | None = None
    voice_to_voice_ms: float | None = None


class VoiceError(_Message):
    type: Literal["voice.error"] = "voice.error"
    code: str
    message: str
    fatal: bool


def fatal_error(code: str, message: str) -> VoiceError:
    """A `voice.error` after which the session ends."""
    return VoiceError(code=code, message=message, fatal=True)


StateMessage = Annotated[
    AgentState
    | TranscriptUser
    | TranscriptAssistant
    | ToolStarted
    | ToolFinished
    | MetricsTurn
    | VoiceError,
    Field(discriminator="type"),
]

STATE_MESSAGE_TYPES: frozenset[str] = frozenset(
    {
        "agent.state",
        "transcript.user",
        "transcript.assistant",
        "tool.started",
        "tool.finished",
        "metrics.turn",
        "voice.error",
    }
)

state_message_adapter: TypeAdapter[StateMessage] = TypeAdapter(StateMessage)


def parse_state_message(data: str | bytes) -> StateMessage:
    """Parse one state message; raises pydantic.ValidationError naming the problem."""
    return state_message_adapter.validate_json(data)
