"""`voicegw talk` in both modes, offline: the gateway on simulated providers, the turns it
reports, and the keys it asks for when not simulating."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.contracts import load_settings
from simulators.profiles import (
    SimulatedProviders,
)
from voicegw.cli import main
from voicegw.lab import audio
from voicegw.lab.talk_openai import talk_openai
from voicegw.lab.turns import TalkRun
from voicegw.serve import running_gateway
from voicegw.simulate import simulated_stack

STAGES = ("eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms")


async def openai_turn(
    question: audio.Conversation, profile: str, *, speak_replies: bool = True
) -> tuple[TalkRun, SimulatedProviders]:
    """One openai-mode conversation through a gateway running on simulated providers."""
    async with simulated_stack(load_settings({}), profile, speak_replies=speak_replies) as stack:
        assert stack.settings.missing_for("openai") == []
        async with running_gateway(stack.settings) as gateway:
            result = await talk_openai(
                gateway.url,
                question.samples,
                question.sample_rate,
                utterances=question.utterances,
                settle_timeout_s=10,
            )
    return result, stack.providers


async def test_simulated_gateway_holds_an_openai_turn(question: audio.Conversation) -> None:
    result, sims = await openai_turn(question, "fast")
    [turn] = result.turns
    assert turn.user_text.startswith("(simulated)")
    assert turn.assistant_text.startswith("(simulated)")
    assert turn.voice_to_voice_ms is not None and turn.voice_to_voice_ms > 0
    assert audio.first_sound_s(result.output, 24_000) is not None  # the reply was spoken
    assert sims.realtime.violations == []
    # The microphone ran in 20 ms frames at least until the end of audio.
    appended = sims.realtime.of_type("input_audio_buffer.append")
    assert len(appended) >= question.utterances[0].end_s / 0.020


async def test_profile_latency_reaches_the_measurement(question: audio.Conversation) -> None:
    async def v2v(profile: str) -> float:
        result, _ = await openai_turn(question, profile, speak_replies=False)
        value = result.turns[0].voice_to_voice_ms
        assert value is not None
        return value

    fast, slow = await v2v("fast"), await v2v("slow")
    # The profiles differ by 780 ms of model time; jitter of the machine is far below that.
    assert slow - fast > 500


def test_talk_openai_mode_runs_offline(
    tmp_path: Path, question: audio.Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spoken, source, played = tmp_path / "spoken.wav", tmp_path / "in.wav", tmp_path / "out.wav"
    question.write_wav(spoken)
    # What a recorder writes, not what the lab uses: converted on the way in.
    float_stereo = ["-b", "32", "-e", "floating-point", "-c", "2", "-r", "44100"]
    subprocess.run(["sox", str(spoken), *float_stereo, str(source)], check=True, timeout=30)
    args = ["--log-level", "WARNING", "talk", "--mode", "openai", "--input", str(source)]
    result = CliRunner().invoke(
        main, [*args, "--output", str(played), "--json", "--simulate", "--profile", "fast"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout holds only the JSON
    assert report["mode"] == "openai"
    [turn] = report["turns"]
    assert set(turn) == {"user_text", "assistant_text", "tool_calls", *STAGES}
    assert turn["assistant_text"].startswith("(simulated)")
    samples, rate = audio.read_wav(played)
    heard = audio.first_sound_s(samples, rate)
    assert rate == 24_000 and heard is not None and heard > question.utterances[0].end_s


def test_talk_openai_without_a_key_names_it(
    tmp_path: Path, question: audio.Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    source = tmp_path / "in.wav"
    question.write_wav(source)
    result = CliRunner().invoke(main, ["talk", "--mode", "openai", "--input", str(source)])
    assert result.exit_code == 2
    assert "OPENAI_API_KEY" in result.stderr


def test_talk_json_runs_offline(
    tmp_path: Path, question: audio.Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DEEPGRAM_API_KEY", "GROQ_API_KEY", "CHATTERBOX_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    source, played = tmp_path / "in.wav", tmp_path / "out.wav"
    question.write_wav(source)
    result = CliRunner().invoke(
        main, ["talk", "--input", str(source), "--output", str(played), "--json", "--simulate"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout holds only the JSON
    # At INFO, stderr holds our own lines about the conversation, in JSON: no library chatter
    # (servers starting, handshakes, a 404 from /models, a deprecation), no DEV MODE warning.
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["msg"] for r in logged if r["logger"].startswith("voicegw")] == ["turn latency"]
    assert len(logged) <= 2, logged  # and livekit-agents' note that the WAV output cannot pause
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
    assert heard is not None and heard > question.utterances[0].end_s


def test_talk_without_keys_names_them(
    tmp_path: Path, question: audio.Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "set-but-secret-77")
    for name in ("DEEPGRAM_API_KEY", "CHATTERBOX_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    source = tmp_path / "in.wav"
    question.write_wav(source)
    result = CliRunner().invoke(main, ["talk", "--input", str(source)])
    assert result.exit_code == 2
    assert "DEEPGRAM_API_KEY, CHATTERBOX_API_KEY" in result.stderr
    assert "GROQ_API_KEY" not in result.stderr and "set-but-secret-77" not in result.output
