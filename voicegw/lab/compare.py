"""`voicegw compare`: the same utterances through both modes, measured the same way.

livekit runs in-process as `voicegw talk` does; openai goes through this gateway's own relay
(a gateway is started in-process) to OpenAI Realtime or its simulator, as the page would.
Turns alternate between the modes, so whatever else the machine is doing hits both alike.
Voice-to-voice is, in both, from the true end of speech in the input to the first audible
sample of the reply. `vad_lag_ms` adds what neither contract field shows: how long after the
configured silence the turn detector (Silero, or OpenAI's server VAD) reported the end.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from pipelines.contracts import MODES, Mode, Settings
from pipelines.contracts.metrics import to_ms
from pipelines.livekit.pipeline import PipelineOptions, load_vad
from pipelines.livekit.state import RecordingPublisher
from simulators.profiles import SimulatedProviders

from ..serve import running_gateway
from ..simulate import simulated_stack
from .audio import AudioFileError, Samples, Utterance, conversation, read_speech
from .talk_livekit import talk
from .talk_openai import talk_openai
from .turns import STAGES, TalkRun, Turn, format_ms

log = logging.getLogger("voicegw.compare")

SAMPLE_TEXTS = (
    "What is on the agenda for today's meeting?",
    "Can you look up our travel policy for trips abroad?",
    "Who is presenting the quarterly numbers?",
    "Please remind everyone to send their slides by Friday.",
    "Thanks, that is all for now.",
)

COMPARED = ("vad_lag_ms", *STAGES)

# The plan's success criteria, judged on the median (p95 is shown beside it).
CRITERIA: tuple[tuple[str, str, float], ...] = (
    ("total", "voice_to_voice_ms", 600.0),
    ("VAD", "vad_lag_ms", 30.0),
    ("STT", "stt_ms", 150.0),
    ("LLM TTFT", "llm_ttft_ms", 200.0),
    ("TTS", "tts_ttfb_ms", 200.0),
)

# The plan's price table, dollars per minute of conversation.
COST_PER_MINUTE: dict[Mode, dict[str, float]] = {
    "openai": {"stt": 0.006, "llm": 0.010, "tts": 0.015, "transport": 0.005},
    "livekit": {"stt": 0.0035, "llm": 0.001, "tts": 0.004, "transport": 0.003},
}


class CompareTurn(Turn):
    """A `voicegw talk --json` turn, and how long after the configured silence the mode's turn
    detector reported the end of speech."""

    vad_lag_ms: float | None = None


@dataclass(frozen=True)
class Recording:
    name: str
    samples: Samples
    rate: int
    utterances: tuple[Utterance, ...]


def sample_recordings() -> list[Recording]:
    """The shipped sample utterances, spoken by espeak-ng, one per recording."""
    recordings = []
    for number, text in enumerate(SAMPLE_TEXTS, 1):
        spoken = conversation([text], lead_s=0.5, gap_s=2.5, tail_s=2.5)
        recordings.append(
            Recording(f"sample-{number}", spoken.samples, spoken.sample_rate, spoken.utterances)
        )
    return recordings


def load_recordings(paths: list[Path]) -> list[Recording]:
    """WAV files, or every *.wav in a directory, in name order, all read before any turn runs:
    the first bad one is an AudioFileError naming it."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".wav")
            if not found:
                raise AudioFileError(path, "no .wav files in this folder")
            files += found
        else:
            files.append(path)
    recordings = []
    for file in files:
        samples, rate, utterances = read_speech(file)
        recordings.append(Recording(file.name, samples, rate, utterances))
    return recordings


async def run_compare(
    settings: Settings,
    recordings: list[Recording],
    *,
    turns: int,
    sims: SimulatedProviders | None = None,
    on_turn: Callable[[Turn, Mode], None] | None = None,
) -> dict[str, Any]:
    """Run `turns` turns per mode and return `{"modes": …, "summary": …}`; `on_turn` hears of
    each turn as it is measured."""
    options = PipelineOptions.from_settings(settings)
    vad = load_vad(options.vad)
    silence_s: dict[Mode, float] = {
        "livekit": options.vad.min_silence_s,
        "openai": settings.openai_vad_silence_ms / 1000,
    }
    results: dict[Mode, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    async with contextlib.AsyncExitStack() as stack:
        gateway = await stack.enter_async_context(running_gateway(settings))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        run = 0
        while min(len(r) for r in results.values()) < turns:
            recording = recordings[run % len(recordings)]
            run += 1
            for mode in MODES:
                if len(results[mode]) >= turns:
                    continue
                if sims is not None:
                    sims.next_turn()
                played: TalkRun
                if mode == "livekit":
                    played = await talk(
                        options,
                        recording.samples,
                        recording.rate,
                        vad=vad,
                        http_session=http,
                        publisher=RecordingPublisher(),
                        session_id=f"compare-livekit-{run}",
                        utterances=recording.utterances,
                    )
                else:
                    played = await talk_openai(
                        gateway.url,
                        recording.samples,
                        recording.rate,
                        session_id=f"compare-openai-{run}",
                        model=settings.openai_realtime_model,
                        utterances=recording.utterances,
                    )
                for turn, end, utterance in zip(
                    played.turns, played.turn_ends, recording.utterances, strict=False
                ):
                    lag = _lag_ms(end, played.origin + utterance.end_s, silence_s[mode])
                    row = CompareTurn(**turn.model_dump(), vad_lag_ms=lag)
                    results[mode].append(row.model_dump())
                    if on_turn is not None:
                        on_turn(row, mode)
            if run > 3 * turns:  # turns that never came back: stop, report what we have
                log.warning("some turns produced no reply", extra={"runs": run})
                break
    modes = {mode: {"turns": rows[:turns]} for mode, rows in results.items()}
    return {"modes": modes, "summary": summarize(modes)}


async def compare(
    settings: Settings,
    recordings: list[Recording],
    *,
    turns: int,
    profile: str | None,
    on_turn: Callable[[Turn, Mode], None] | None = None,
) -> dict[str, Any]:
    """`voicegw compare`: `run_compare`, on simulated providers when `profile` is given (each
    turn draws its latencies from it)."""
    if profile is None:
        return await run_compare(settings, recordings, turns=turns, on_turn=on_turn)
    async with simulated_stack(settings, profile, speak_replies=False) as stack:
        result = await run_compare(
            stack.settings, recordings, turns=turns, sims=stack.providers, on_turn=on_turn
        )
    return {"profile": profile, **result}


def _lag_ms(detected_at: float | None, speech_end_at: float, silence_s: float) -> float | None:
    if detected_at is None:
        return None
    return to_ms(detected_at - speech_end_at - silence_s)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(modes: dict[Mode, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for mode, data in modes.items():
        stages: dict[str, dict[str, float | int | None]] = {}
        for stage in COMPARED:
            values = [t[stage] for t in data["turns"] if t.get(stage) is not None]
            stages[stage] = {
                "p50": round(statistics.median(values), 1) if values else None,
                "p95": round(percentile(values, 0.95), 1) if values else None,
                "n": len(values),
            }
        criteria = []
        for name, stage, target in CRITERIA:
            p50 = stages[stage]["p50"]
            criteria.append(
                {
                    "criterion": name,
                    "stage": stage,
                    "target_ms": target,
                    "p50": p50,
                    "pass": None if p50 is None else p50 < target,
                }
            )
        summary[mode] = {
            "turns": len(data["turns"]),
            "stages": stages,
            "cost_per_minute_usd": round(sum(COST_PER_MINUTE[mode].values()), 4),
            "criteria": criteria,
        }
    return summary


def render_table(result: dict[str, Any], *, profile: str | None) -> str:
    summary = result["summary"]
    source = f"simulated providers, profile {profile}" if profile else "configured providers"
    lines = [
        f"voicegw compare: {source}; {summary['livekit']['turns']} livekit and "
        f"{summary['openai']['turns']} openai turns (ms; pass/fail on p50)",
        f"{'stage':<18} {'livekit p50':>11} {'p95':>6}  {'openai p50':>10} {'p95':>6}  target",
    ]
    targets = {stage: (name, target) for name, stage, target in CRITERIA}
    for stage in COMPARED:
        cells = []
        for mode in MODES:
            values = summary[mode]["stages"][stage]
            cells += [format_ms(values["p50"], ""), format_ms(values["p95"], "")]
        target = ""
        if stage in targets:
            name, limit = targets[stage]
            verdicts = [
                _verdict(summary[m]["stages"][stage]["p50"], limit) for m in MODES
            ]
            target = f"< {limit:.0f} ({name}): livekit {verdicts[0]}, openai {verdicts[1]}"
        lines.append(
            f"{stage.removesuffix('_ms'):<18} {cells[0]:>11} {cells[1]:>6}  "
            f"{cells[2]:>10} {cells[3]:>6}  {target}"
        )
    costs = [summary[m]["cost_per_minute_usd"] for m in MODES]
    lines.append(f"{'cost $/min':<18} {costs[0]:>11.4f} {'':>6}  {costs[1]:>10.4f}")
    for mode in MODES:
        judged = [c for c in summary[mode]["criteria"] if c["pass"] is not None]
        passed = sum(c["pass"] for c in judged)
        lines.append(f"{mode}: {passed}/{len(judged)} criteria met")
    return "\n".join(lines)


def _verdict(p50: float | None, limit: float) -> str:
    return "n/a" if p50 is None else ("pass" if p50 < limit else "FAIL")
