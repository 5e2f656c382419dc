"""The `voicegw talk --json` model: its JSON Schema is DESIGN.md's contract for it."""

from __future__ import annotations

from voicegw.lab.turns import TalkResult, format_ms


def test_the_talk_json_schema_is_the_contract() -> None:
    schema = TalkResult.model_json_schema()
    assert set(schema["properties"]) == {"mode", "turns"}
    assert schema["properties"]["mode"]["enum"] == ["livekit", "openai"]
    turn = schema["$defs"]["Turn"]["properties"]
    assert set(turn) == {
        "user_text",
        "assistant_text",
        "tool_calls",
        "eou_ms",
        "stt_ms",
        "llm_ttft_ms",
        "tts_ttfb_ms",
        "voice_to_voice_ms",
    }
    assert set(schema["$defs"]["ToolCall"]["properties"]) == {"name", "arguments", "status"}


def test_latencies_read_in_whole_milliseconds_or_n_a() -> None:
    assert (format_ms(412.6), format_ms(None), format_ms(7.2, "")) == ("413 ms", "n/a", "7")
