"""State messages: they round-trip by type, and a bad one gets one precise error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.contracts import (
    AgentState,
    MetricsTurn,
    ToolFinished,
    VoiceError,
    parse_state_message,
)


def test_state_messages_round_trip_by_type() -> None:
    messages = [
        AgentState(state="thinking"),
        ToolFinished(call_id="c1", name="send_email", status="error", duration_ms=12.5),
        MetricsTurn(eou_ms=300.0, voice_to_voice_ms=590.0),
        VoiceError(code="upstream_closed", message="The voice service disconnected.", fatal=True),
    ]
    for message in messages:
        assert parse_state_message(message.to_json()) == message


def test_a_bad_state_message_gets_one_precise_error() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_state_message('{"type": "agent.state", "state": "dancing"}')
    assert caught.value.error_count() == 1
    with pytest.raises(ValidationError) as unknown:
        parse_state_message('{"type": "response.audio.delta"}')
    assert "union_tag_invalid" in str(unknown.value.errors()[0]["type"])
