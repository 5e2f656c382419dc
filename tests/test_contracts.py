"""The shared contract: tool rendering per target, state messages, generated schemas."""

from __future__ import annotations

import pytest
from openai.types.chat import ChatCompletionToolParam
from openai.types.realtime import RealtimeFunctionTool
from pydantic import TypeAdapter, ValidationError

from pipelines.contracts import (
    CATALOGUE,
    TOOLS_BY_NAME,
    AgentState,
    MetricsTurn,
    ToolArgumentError,
    ToolFinished,
    VoiceError,
    chat_completions_tools,
    parse_state_message,
    realtime_tools,
)
from pipelines.contracts.schemas import SCHEMA_DIR, render_schemas


def test_catalogue_holds_the_seed_tools() -> None:
    assert [tool.name for tool in CATALOGUE] == ["send_email", "query_database"]
    assert TOOLS_BY_NAME["send_email"].webhook_path == "execute-gmail"
    assert TOOLS_BY_NAME["send_email"].parameters()["required"] == ["to", "subject", "body"]


def test_chat_completions_shape_validates_as_the_sdk_type() -> None:
    adapter = TypeAdapter(ChatCompletionToolParam)
    for rendered in chat_completions_tools():
        adapter.validate_python(rendered)
        assert rendered["function"]["parameters"]["additionalProperties"] is False
        assert "title" not in rendered["function"]["parameters"]


def test_realtime_shape_validates_as_the_ga_sdk_type() -> None:
    for rendered in realtime_tools():
        tool = RealtimeFunctionTool.model_validate(rendered)
        assert tool.type == "function"
        assert tool.name in TOOLS_BY_NAME


def test_both_targets_see_the_same_parameters() -> None:
    for chat, realtime in zip(chat_completions_tools(), realtime_tools(), strict=True):
        assert chat["function"]["parameters"] == realtime["parameters"]
        assert chat["function"]["description"] == realtime["description"]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("{", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"to": "a@b.c", "subject": "s"}', "body field required"),
        ('{"to": "a@b.c", "subject": "s", "body": "b", "cc": "x"}', "cc extra inputs"),
    ],
)
def test_argument_errors_are_speakable(raw: str, needle: str) -> None:
    with pytest.raises(ToolArgumentError) as caught:
        TOOLS_BY_NAME["send_email"].validate_arguments(raw)
    assert needle in str(caught.value)
    assert str(caught.value).startswith("the arguments for send_email")


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


def test_committed_schemas_match_the_models() -> None:
    rendered = render_schemas()
    for name, text in rendered.items():
        path = SCHEMA_DIR / name
        assert path.is_file(), f"{name} missing: run `make schemas`"
        assert path.read_text(encoding="utf-8") == text, f"{name} drifted: run `make schemas`"
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(rendered)
