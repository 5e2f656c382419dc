"""The pipeline's edges: settings → options, dispatch metadata → session id, the data-channel
publisher, and `voicegw talk --json` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipelines.contracts import STATE_TOPIC, AgentState, DispatchMetadata, load_settings
from pipelines.livekit.pipeline import PipelineOptions, session_id_for, turn_handling
from pipelines.livekit.state import DataChannelPublisher
from voicegw.cli import main
from voicegw.lab import audio


def test_options_come_from_settings() -> None:
    settings = load_settings(
        {
            "DEEPGRAM_API_KEY": "dg-key",
            "DEEPGRAM_BASE_URL": "ws://127.0.0.1:9/v1/listen",
            "GROQ_BASE_URL": "http://127.0.0.1:9/openai/v1",
            "VAD_MIN_SILENCE_SECONDS": "0.35",
            "ENDPOINTING_MIN_DELAY": "0.1",
            "PREEMPTIVE_TTS": "false",
            "PREEMPTIVE_ON_INTERIMS": "true",
            "TOOL_FILLER_MS": "600",
            "GATEWAY_SECRET": "x" * 32,
        }
    )
    options = PipelineOptions.from_settings(settings)
    assert options.deepgram_api_key == "dg-key"
    assert options.deepgram_base_url == "ws://127.0.0.1:9/v1/listen"
    assert options.groq_base_url == "http://127.0.0.1:9/openai/v1"
    assert options.groq_model == "llama-3.1-8b-instant"
    assert (options.groq_temperature, options.groq_max_tokens) == (0.7, 256)
    assert options.vad.min_silence_s == 0.35 and options.vad.min_speech_s == 0.1
    assert options.tool_filler_s == 0.6
    assert options.vad.deactivation_threshold == 0.5 and options.speculate_on_interims
    assert turn_handling(options) == {
        "turn_detection": "vad",
        "endpointing": {"mode": "fixed", "min_delay": 0.1, "max_delay": 3.0},
        "preemptive_generation": {"enabled": True, "preemptive_tts": False, "max_retries": 50},
    }


def test_session_id_is_the_gateways_then_the_room() -> None:
    metadata = DispatchMetadata(session_id="s-123", mode="livekit", user="ann").model_dump_json()
    assert session_id_for(metadata, "meeting_s-123") == "s-123"
    assert session_id_for("", "meeting_x") == "meeting_x"
    assert session_id_for("not json", "meeting_x") == "meeting_x"
    assert session_id_for('{"mode": "livekit"}', "meeting_x") == "meeting_x"


class _Participant:
    def __init__(self, fail: bool) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []
        self.fail = fail

    async def publish_data(self, payload: Any, **kwargs: Any) -> None:
        if self.fail:
            raise ConnectionError("room closed")
        self.sent.append((payload, kwargs))


class _Room:
    def __init__(self, fail: bool = False) -> None:
        self.local_participant = _Participant(fail)


async def test_data_channel_publisher_sends_reliable_json_on_the_state_topic() -> None:
    room = _Room()
    publisher = DataChannelPublisher(room, session_id="s-1")  # type: ignore[arg-type]
    await publisher.publish(AgentState(state="thinking"))
    assert room.local_participant.sent == [
        ('{"type":"agent.state","state":"thinking"}', {"reliable": True, "topic": STATE_TOPIC})
    ]


async def test_data_channel_publisher_survives_a_closed_room() -> None:
    room = _Room(fail=True)
    publisher = DataChannelPublisher(room, session_id="s-1")  # type: ignore[arg-type]
    await publisher.publish(AgentState(state="idle"))  # logged, not raised


def test_talk_json_runs_offline(
    tmp_path: Path, one_plain: audio.Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DEEPGRAM_API_KEY", "GROQ_API_KEY", "CHATTERBOX_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    source, played = tmp_path / "in.wav", tmp_path / "out.wav"
    one_plain.write_wav(source)
    result = CliRunner().invoke(
        main,
        [
            "--log-level",
            "WARNING",
            "talk",
            "--input",
            str(source),
            "--output",
            str(played),
            "--json",
            "--simulate",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout holds only the JSON
    assert report["mode"] == "livekit"
    (turn,) = report["turns"]
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
    assert turn["user_text"].startswith("(simulated)")
    assert turn["assistant_text"].startswith("(simulated) You said:")
    assert turn["voice_to_voice_ms"] > 0
    samples, rate = audio.read_wav(played)
    heard = audio.first_sound_s(samples, rate)
    assert heard is not None and heard > one_plain.utterances[0].end_s


def test_talk_without_keys_names_them(
    tmp_path: Path, one_plain: audio.Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "set-but-secret-77")
    for name in ("DEEPGRAM_API_KEY", "CHATTERBOX_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    source = tmp_path / "in.wav"
    one_plain.write_wav(source)
    result = CliRunner().invoke(main, ["talk", "--input", str(source)])
    assert result.exit_code == 2
    assert "DEEPGRAM_API_KEY, CHATTERBOX_API_KEY" in result.stderr
    assert "GROQ_API_KEY" not in result.stderr and "set-but-secret-77" not in result.output
