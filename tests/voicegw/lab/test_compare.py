"""`voicegw compare`: both modes on the same utterance, measured the same way, and the summary."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from voicegw.lab import audio
from voicegw.lab.compare import Recording, render_table, run_compare, summarize
from voicegw.simulate import SimulatedStack

VOICEGW = [sys.executable, "-m", "voicegw"]
STAGES = ("eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms")


@pytest.fixture
def profile() -> str:
    return "fast"


async def test_compare_runs_both_modes_on_the_same_utterance(
    question: audio.Conversation, stack: SimulatedStack
) -> None:
    recording = Recording("q", question.samples, question.sample_rate, question.utterances)
    sims = stack.providers
    result = await run_compare(stack.settings, [recording], turns=1, sims=sims)
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
    summary = summarize(modes, {"livekit": 0.01234, "openai": 0.036})
    livekit = summary["livekit"]
    assert livekit["stages"]["voice_to_voice_ms"] == {"p50": 580.0, "p95": 900.0, "n": 5}
    verdicts = {c["criterion"]: c["pass"] for c in livekit["criteria"]}
    assert verdicts == {"total": True, "VAD": True, "STT": True, "LLM TTFT": True, "TTS": None}
    openai = {c["criterion"]: c["pass"] for c in summary["openai"]["criteria"]}
    assert openai["total"] is False and openai["STT"] is None
    assert livekit["cost_per_minute_usd"] == 0.0123
    assert summary["openai"]["cost_per_minute_usd"] == 0.036


async def test_compare_voices_one_livekit_lane_each_priced_by_use(
    question: audio.Conversation, stack: SimulatedStack
) -> None:
    recording = Recording("q", question.samples, question.sample_rate, question.utterances)
    sims = stack.providers
    result = await run_compare(
        stack.settings, [recording], turns=1, sims=sims, voices=["chatterbox", "cartesia"]
    )
    lanes = ["livekit/chatterbox", "livekit/cartesia", "openai"]
    assert list(result["summary"]) == lanes and list(result["modes"]) == lanes
    assert sims.chatterbox.received and sims.cartesia.syntheses  # each voice spoke its lane
    costs = {lane: result["summary"][lane]["cost_per_minute_usd"] for lane in lanes}
    assert costs["openai"] == 0.036
    # what each lane used, at each voice's rate: Cartesia's characters cost more
    assert 0 < costs["livekit/chatterbox"] < costs["livekit/cartesia"]
    table = render_table(result, profile="fast")
    assert all(lane in table for lane in lanes) and "cost $/min" in table


def test_compare_shows_progress_on_a_terminal_and_keeps_stdout_json(
    tmp_path: Path, question: audio.Conversation
) -> None:
    """stderr on a terminal (a pty), stdout a pipe: the progress line counts both modes'
    turns on the terminal while stdout holds the JSON alone (off a terminal nothing is drawn:
    test_progress.py)."""
    source = tmp_path / "question.wav"
    question.write_wav(source)
    command = [
        *VOICEGW,
        *("compare", "--simulate", "--profile", "instant", "--turns", "1", "--json"),
        *("--input", str(source)),
    ]
    main_fd, terminal_fd = os.openpty()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=terminal_fd) as process:
        os.close(terminal_fd)
        shown = _read_until_closed(main_fd)
        stdout = process.stdout.read() if process.stdout else b""
        assert process.wait(120) == 0, shown
    result = json.loads(stdout)
    assert {mode: len(result["modes"][mode]["turns"]) for mode in result["modes"]} == {
        "livekit": 1,
        "openai": 1,
    }
    assert "compare: 0/2 turns" in shown and "compare: 2/2 turns" in shown
    assert "last voice-to-voice" in shown


def _read_until_closed(fd: int) -> str:
    chunks = []
    with contextlib.suppress(OSError):  # EIO: the terminal's other end closed
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")
