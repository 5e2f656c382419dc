"""`voicegw compare`: the same utterances through both modes, measured the same way.

livekit runs in-process as `voicegw talk` does; openai goes through this gateway's own relay
(a gateway is started in-process) to OpenAI Realtime or its simulator, as the page would.
Turns alternate between the modes, so whatever else the machine is doing hits both alike.
Voice-to-voice is, in both, from the true end of speech in the input to the first audible
sample of the reply. `vad_lag_ms` adds what neither contract field shows: how long after the
configured silence the turn detector (Silero, or OpenAI's server VAD) reported the end.

With `voices`, livekit runs once per voice (`livekit/cartesia`, ...): one lane each beside
openai. The cost per minute of a livekit lane is what its sessions used (speculation
included) at the price table's rates (`pipelines/contracts/prices.py`); openai's is the
plan's flat figure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from pipelines.contracts import Mode, Settings
from pipelines.contracts.metrics import to_ms
from pipelines.contracts.prices import Usage, openai_cost_per_minute
from pipelines.contracts.settings import TtsProvider
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


@dataclass(frozen=True)
class Lane:
    """One column of the comparison: a mode, and for livekit the voice it speaks with."""

    mode: Mode
    voice: TtsProvider | None = None

    @property
    def name(self) -> str:
        return self.mode if self.voice is None else f"{self.mode}/{self.voice}"


def lanes_for(voices: list[TtsProvider] | None) -> list[Lane]:
    """livekit with its configured voice, or once per voice asked for; then openai."""
    livekit = [Lane("livekit", voice) for voice in voices] if voices else [Lane("livekit")]
    return [*livekit, Lane("openai")]


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
    voices: list[TtsProvider] | None = None,
    on_turn: Callable[[Turn, Mode], None] | None = None,
) -> dict[str, Any]:
    """Run `turns` turns per lane and return `{"modes": …, "summary": …}` keyed by lane;
    `on_turn` hears of each turn as it is measured."""
    options = PipelineOptions.from_settings(settings)
    vad = load_vad(options.vad)
    lanes = lanes_for(voices)
    results: dict[str, list[dict[str, Any]]] = {lane.name: [] for lane in lanes}
    usage: dict[str, Usage] = {lane.name: Usage() for lane in lanes if lane.mode == "livekit"}
    async with contextlib.AsyncExitStack() as stack:
        gateway = await stack.enter_async_context(running_gateway(settings))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        run = 0
        while min(len(r) for r in results.values()) < turns:
            recording = recordings[run % len(recordings)]
            run += 1
            for lane in lanes:
                if len(results[lane.name]) >= turns:
                    continue
                if sims is not None:
                    sims.next_turn()
                played: TalkRun
                if lane.mode == "livekit":
                    livekit = await talk(
                        _with_voice(options, lane.voice),
                        recording.samples,
                        recording.rate,
                        vad=vad,
                        http_session=http,
                        publisher=RecordingPublisher(),
                        session_id=f"compare-{lane.name}-{run}",
                        utterances=recording.utterances,
                    )
                    usage[lane.name] += livekit.usage
                    played, silence_s = livekit, options.vad.min_silence_s
                else:
                    played = await talk_openai(
                        gateway.url,
                        recording.samples,
                        recording.rate,
                        session_id=f"compare-openai-{run}",
                        model=settings.openai_realtime_model,
                        utterances=recording.utterances,
                    )
                    silence_s = settings.openai_vad_silence_ms / 1000
                for turn, end, utterance in zip(
                    played.turns, played.turn_ends, recording.utterances, strict=False
                ):
                    lag = _lag_ms(end, played.origin + utterance.end_s, silence_s)
                    row = CompareTurn(**turn.model_dump(), vad_lag_ms=lag)
                    results[lane.name].append(row.model_dump())
                    if on_turn is not None:
                        on_turn(row, lane.mode)
            if run > 3 * turns:  # turns that never came back: stop, report what we have
                log.warning("some turns produced no reply", extra={"runs": run})
                break
    modes = {name: {"turns": rows[:turns]} for name, rows in results.items()}
    costs: dict[str, float | None] = {
        lane.name: usage[lane.name].cost_per_minute()
        if lane.mode == "livekit"
        else openai_cost_per_minute()
        for lane in lanes
    }
    return {"modes": modes, "summary": summarize(modes, costs)}


def _with_voice(options: PipelineOptions, voice: TtsProvider | None) -> PipelineOptions:
    if voice is None or voice == options.tts_provider:
        return options
    fallback = None if options.tts_fallback_provider == voice else options.tts_fallback_provider
    return dataclasses.replace(options, tts_provider=voice, tts_fallback_provider=fallback)


async def compare(
    settings: Settings,
    recordings: list[Recording],
    *,
    turns: int,
    profile: str | None,
    voices: list[TtsProvider] | None = None,
    on_turn: Callable[[Turn, Mode], None] | None = None,
) -> dict[str, Any]:
    """`voicegw compare`: `run_compare`, on simulated providers when `profile` is given (each
    turn draws its latencies from it)."""
    if profile is None:
        return await run_compare(
            settings, recordings, turns=turns, voices=voices, on_turn=on_turn
        )
    async with simulated_stack(settings, profile, speak_replies=False) as stack:
        result = await run_compare(
            stack.settings,
            recordings,
            turns=turns,
            sims=stack.providers,
            voices=voices,
            on_turn=on_turn,
        )
    return {"profile": profile, **result}


def _lag_ms(detected_at: float | None, speech_end_at: float, silence_s: float) -> float | None:
    if detected_at is None:
        return None
    return to_ms(detected_at - speech_end_at - silence_s)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(
    lanes: dict[str, dict[str, list[dict[str, Any]]]], costs: dict[str, float | None]
) -> dict[str, Any]:
    """Per lane: each stage's p50/p95, the cost per minute and the plan's criteria."""
    summary: dict[str, Any] = {}
    for lane, data in lanes.items():
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
        cost = costs.get(lane)
        summary[lane] = {
            "turns": len(data["turns"]),
            "stages": stages,
            "cost_per_minute_usd": None if cost is None else round(cost, 4),
            "criteria": criteria,
        }
    return summary


def render_table(result: dict[str, Any], *, profile: str | None) -> str:
    summary = result["summary"]
    lanes = list(summary)
    source = f"simulated providers, profile {profile}" if profile else "configured providers"
    counts = ", ".join(f"{summary[lane]['turns']} {lane}" for lane in lanes)
    width = max(10, *(len(lane) + 4 for lane in lanes))
    lines = [
        f"voicegw compare: {source}; {counts} turns (ms; pass/fail on p50)",
        f"{'stage':<18} "
        + "  ".join(f"{lane + ' p50':>{width}} {'p95':>6}" for lane in lanes)
        + "  target",
    ]
    targets = {stage: (name, target) for name, stage, target in CRITERIA}
    for stage in COMPARED:
        cells = []
        for lane in lanes:
            values = summary[lane]["stages"][stage]
            cells.append(
                f"{format_ms(values['p50'], ''):>{width}} {format_ms(values['p95'], ''):>6}"
            )
        target = ""
        if stage in targets:
            name, limit = targets[stage]
            verdicts = ", ".join(
                f"{lane} {_verdict(summary[lane]['stages'][stage]['p50'], limit)}"
                for lane in lanes
            )
            target = f"< {limit:.0f} ({name}): {verdicts}"
        lines.append(f"{stage.removesuffix('_ms'):<18} " + "  ".join(cells) + f"  {target}")
    costs = [summary[lane]["cost_per_minute_usd"] for lane in lanes]
    lines.append(
        f"{'cost $/min':<18} "
        + "  ".join(f"{'n/a' if c is None else f'{c:.4f}':>{width}} {'':>6}" for c in costs)
    )
    for lane in lanes:
        judged = [c for c in summary[lane]["criteria"] if c["pass"] is not None]
        passed = sum(c["pass"] for c in judged)
        lines.append(f"{lane}: {passed}/{len(judged)} criteria met")
    return "\n".join(lines)


def _verdict(p50: float | None, limit: float) -> str:
    return "n/a" if p50 is None else ("pass" if p50 < limit else "FAIL")
