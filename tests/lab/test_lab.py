"""The latency lab: simulator profiles, the simulated gateway, and `voicegw compare`."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gateway.app import create_app
from pipelines.contracts import load_settings
from simulators.profiles import (
    PROFILES,
    Delay,
    SimulatedProviders,
    profile_named,
    simulated_providers,
)
from simulators.server import serve
from simulators.speech import have_espeak
from voicegw.cli import main
from voicegw.lab import audio
from voicegw.lab.compare import Recording, run_compare, summarize
from voicegw.lab.talk_openai import talk_openai
from voicegw.lab.turns import TalkRun
from voicegw.serve import SERVER_OPTIONS
from voicegw.simulate import with_overrides

STAGES = ("eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms")


@pytest.fixture(scope="module")
def question() -> audio.Conversation:
    if not have_espeak():
        pytest.fail("espeak-ng and sox are required (make system-deps)")
    return audio.conversation(["What is on the agenda today"], gap_s=2.0, tail_s=2.0)


def test_profiles_by_name() -> None:
    assert {"published", "fast", "slow", "jittery"} <= set(PROFILES)
    published = profile_named("published")
    assert (
        published.stt_final.median_s,
        published.llm_ttft.median_s,
        published.tts_ttfb.median_s,
    ) == (0.150, 0.200, 0.200)
    with pytest.raises(ValueError, match="choose one of"):
        profile_named("warp")


def test_jitter_is_seeded_and_spread() -> None:
    delay = Delay(0.2, sigma=0.5)
    first = [delay.sample(random.Random(7)) for _ in range(3)]
    again = [delay.sample(random.Random(7)) for _ in range(3)]
    assert first == again
    draws = [delay.sample(rng) for rng in [random.Random(1)] for _ in range(2000)]
    assert 0.18 < sorted(draws)[1000] < 0.22  # the median stays the published figure
    assert max(draws) > 4 * min(draws)  # a real spread, not a constant
    assert Delay(0.2).sample(random.Random(3)) == 0.2


async def openai_turn(
    question: audio.Conversation, profile: str, *, speak_replies: bool = True
) -> tuple[TalkRun, SimulatedProviders]:
    """One openai-mode conversation through a gateway running on simulated providers."""
    async with simulated_providers(profile, speak_replies=speak_replies) as sims:
        settings = with_overrides(load_settings({}), sims.env)
        assert settings.missing_for("openai") == []
        async with serve(create_app(settings), **SERVER_OPTIONS) as gateway:
            result = await talk_openai(
                gateway.url,
                question.samples,
                question.sample_rate,
                utterances=question.utterances,
                settle_timeout_s=10,
            )
    return result, sims


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


async def test_compare_runs_both_modes_on_the_same_utterance(
    question: audio.Conversation,
) -> None:
    recording = Recording("q", question.samples, question.sample_rate, question.utterances)
    async with simulated_providers("fast", speak_replies=False) as sims:
        settings = with_overrides(load_settings({}), sims.env)
        result = await run_compare(settings, [recording], turns=1, sims=sims)
    for mode in ("livekit", "openai"):
        [turn] = result["modes"][mode]["turns"]
        assert set(STAGES) <= set(turn)
        assert {"user_text", "assistant_text", "tool_calls", "vad_lag_ms"} <= set(turn)
        assert turn["voice_to_voice_ms"] is not None
        assert result["summary"][mode]["stages"]["voice_to_voice_ms"]["n"] == 1
    assert result["modes"]["livekit"]["turns"][0]["tts_ttfb_ms"] is not None
    assert result["modes"]["openai"]["turns"][0]["tts_ttfb_ms"] is None  # one model speaks
    assert len(sims.deepgram.connections) >= 1 and sims.realtime.connections == 1


def test_summary_percentiles_costs_and_criteria() -> None:
    def turn(v2v: float, stt: float | None) -> dict[str, Any]:
        return {
            "voice_to_voice_ms": v2v,
            "stt_ms": stt,
            "vad_lag_ms": 10.0,
            "llm_ttft_ms": 100.0,
            "tts_ttfb_ms": None,
            "eou_ms": 300.0,
        }

    modes: Any = {
        "livekit": {"turns": [turn(v, 100.0) for v in (500, 550, 580, 590, 900)]},
        "openai": {"turns": [turn(v, None) for v in (700, 720, 800)]},
    }
    summary = summarize(modes)
    livekit = summary["livekit"]
    assert livekit["stages"]["voice_to_voice_ms"] == {"p50": 580.0, "p95": 900.0, "n": 5}
    verdicts = {c["criterion"]: c["pass"] for c in livekit["criteria"]}
    assert verdicts == {"total": True, "VAD": True, "STT": True, "LLM TTFT": True, "TTS": None}
    openai = {c["criterion"]: c["pass"] for c in summary["openai"]["criteria"]}
    assert openai["total"] is False and openai["STT"] is None
    assert livekit["cost_per_minute_usd"] == 0.0115
    assert summary["openai"]["cost_per_minute_usd"] == 0.036


def test_talk_openai_mode_runs_offline(
    tmp_path: Path, question: audio.Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    source, played = tmp_path / "in.wav", tmp_path / "out.wav"
    question.write_wav(source)
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
