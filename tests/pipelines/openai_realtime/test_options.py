"""The session configuration the relay imposes upstream (GA shape)."""

from __future__ import annotations

import json

from openai.types.realtime import SessionUpdateEvent

from pipelines.contracts import SYSTEM_PROMPT
from pipelines.openai_realtime import (
    RealtimeOptions,
    TurnDetection,
    session_update,
)


def test_session_update_is_ga_and_carries_prompt_tools_and_formats() -> None:
    options = RealtimeOptions(voice="cedar", turn_detection=TurnDetection(silence_duration_ms=350))
    event = json.loads(session_update(options))
    SessionUpdateEvent.model_validate(event)
    session = event["session"]
    assert session["type"] == "realtime" and session["instructions"] == SYSTEM_PROMPT
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "cedar",
    }
    assert session["audio"]["input"]["transcription"]["model"]
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 350
    assert [t["type"] for t in session["tools"]] == ["function", "function"]
    manual = json.loads(session_update(RealtimeOptions(turn_detection=TurnDetection("none"))))
    assert manual["session"]["audio"]["input"]["turn_detection"] is None
