"""The session configuration the relay imposes on every upstream session (GA shape)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from openai.types.realtime import SessionUpdateEvent

from pipelines.contracts import CATALOGUE, SYSTEM_PROMPT, ToolSpec, realtime_tools

SAMPLE_RATE = 24_000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000  # pcm16 mono

TurnDetectionKind = Literal["server_vad", "semantic_vad", "none"]


@dataclass(frozen=True)
class TurnDetection:
    """How OpenAI decides a user turn ended. `none` leaves it to the client (commit +
    response.create)."""

    kind: TurnDetectionKind = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def to_realtime(self) -> dict[str, Any] | None:
        if self.kind == "none":
            return None
        if self.kind == "semantic_vad":
            return {"type": "semantic_vad", "create_response": True, "interrupt_response": True}
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": True,
            "interrupt_response": True,
        }


@dataclass(frozen=True)
class RealtimeOptions:
    """Everything about the upstream session that the server, not the client, decides."""

    model: str = "gpt-realtime"
    voice: str = "marin"
    instructions: str = SYSTEM_PROMPT
    transcription_model: str = "gpt-4o-mini-transcribe"
    turn_detection: TurnDetection = field(default_factory=TurnDetection)
    tools: tuple[ToolSpec, ...] = CATALOGUE


@functools.cache  # one text per configuration: building the tools' JSON Schemas takes ~1 ms
def session_update(options: RealtimeOptions) -> str:
    """The relay's first upstream message, validated against the SDK's GA type."""
    pcm = {"type": "audio/pcm", "rate": SAMPLE_RATE}
    event = {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": options.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": pcm,
                    "transcription": {"model": options.transcription_model},
                    "turn_detection": options.turn_detection.to_realtime(),
                },
                "output": {"format": pcm, "voice": options.voice},
            },
            "tools": realtime_tools(options.tools),
            "tool_choice": "auto",
        },
    }
    SessionUpdateEvent.model_validate(event)
    return json.dumps(event, separators=(",", ":"))
