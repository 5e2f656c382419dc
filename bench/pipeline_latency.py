"""Voice-to-voice latency of the LiveKit pipeline, stage by stage, on 127.0.0.1.

Real Silero on espeak-ng speech, the real Deepgram/Groq/Chatterbox plugins, and simulators that
answer (a) at once ("zero") or (b) at the plan's published figures ("published": STT final
150 ms after speech ends, LLM TTFT 200 ms, TTS first byte 200 ms). Every figure is measured
from the truth of the audio: where each utterance really ends, and when the first audible
sample of the agent really plays.

Stages per turn (ms):
- vad_lag: Silero's end-of-speech event after the true end, beyond the configured min silence
- endpoint: VAD end of speech → the turn is committed (the endpointing wait)
- stt: true end of speech → last final transcript before the commit
- ttft / ttfb: the turn's first LLM time to first token / first TTS time to first byte
- commit_audio: turn committed → first agent audio (preemptive generation makes it small)
- v2v: true end of speech → first agent audio
- room_est: what the worker reports as voice-to-voice in a room (VAD's end of speech → agent
  speaking), minus the true v2v
One utterance in three has a 300 ms pause mid-sentence; a turn committed inside an utterance is a
premature cut-off (counted, and left out of the latency figures).

    .venv/bin/python -m bench.pipeline_latency            # every configuration, ~17 min
    .venv/bin/python -m bench.pipeline_latency --configs chosen --profiles zero --utterances 8
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from livekit.agents import AgentSession
from livekit.agents.voice.events import UserInputTranscribedEvent

from pipelines.contracts import load_settings
from pipelines.livekit.latency import estimated_voice_to_voice
from pipelines.livekit.pipeline import PipelineOptions, VadOptions, load_vad
from pipelines.livekit.state import RecordingPublisher
from simulators.chatterbox import ChatterboxSimulator
from simulators.deepgram import DeepgramSimulator
from voicegw.lab import audio
from voicegw.lab.talk_livekit import LiveKitRun, talk
from voicegw.simulate import simulated_stack

SENTENCES = [
    "What is on my calendar today",
    "Can you find the latest sales report",
    "Tell me about the travel policy",
    "Who owns the onboarding project",
    "What did we decide in the last meeting",
]
PAUSED = ("Please send an email to Bob", 0.3, "about the budget for next quarter")
PAUSED_TEXT = f"{PAUSED[0]}|{PAUSED[2]}."


# This benchmark's names for the simulators' latency profiles (simulators/profiles.py).
PROFILES = {"zero": "instant", "published": "published"}


def configs(base: PipelineOptions) -> dict[str, PipelineOptions]:
    return {
        "chosen": base,
        "livekit-default": dataclasses.replace(
            base,
            vad=VadOptions(min_speech_s=0.05, min_silence_s=0.55, deactivation_threshold=None),
            endpointing_min_delay_s=0.5,
            preemptive_tts=False,
        ),
        "no-preemption": dataclasses.replace(base, preemptive_generation=False),
        "llm-preemption-only": dataclasses.replace(base, preemptive_tts=False),
        "silence-0.2": dataclasses.replace(
            base, vad=dataclasses.replace(base.vad, min_silence_s=0.2)
        ),
        "speculative": dataclasses.replace(base, speculate_on_interims=True),
        "silero-deact": dataclasses.replace(
            base, vad=dataclasses.replace(base.vad, deactivation_threshold=None)
        ),
    }


@dataclass
class Row:
    config: str
    profile: str
    stages: dict[str, list[float]] = field(default_factory=dict)
    turns: int = 0
    paused: int = 0
    cut_offs: int = 0
    missing: int = 0
    llm_requests: int = 0
    tts_requests: int = 0

    def add(self, stage: str, value: float | None) -> None:
        if value is not None:
            self.stages.setdefault(stage, []).append(value)


STAGES = ("v2v", "vad_lag", "endpoint", "stt", "ttft", "ttfb", "commit_audio", "room_est")


def build_conversation(count: int) -> tuple[audio.Conversation, list[str]]:
    items: list[str | tuple[str, float, str]] = []
    transcripts: list[str] = []
    for index in range(count):
        if index % 3 == 2:
            items.append(PAUSED)
            transcripts.append(PAUSED_TEXT)
        else:
            sentence = SENTENCES[index % len(SENTENCES)]
            items.append(sentence)
            transcripts.append(f"{sentence}?")
    return audio.conversation(items, gap_s=2.2, tail_s=2.5), transcripts


async def run_once(
    name: str,
    profile_name: str,
    conversation: audio.Conversation,
    transcripts: list[str],
) -> Row:
    deepgram = DeepgramSimulator(transcripts=list(transcripts))
    chatterbox = ChatterboxSimulator(ms_per_char=12)
    finals: list[float] = []

    def observe(session: AgentSession[Any]) -> None:
        def on_transcript(ev: UserInputTranscribedEvent) -> None:
            if ev.is_final and ev.transcript.strip():
                finals.append(time.perf_counter())

        session.on("user_input_transcribed", on_transcript)

    async with (
        simulated_stack(
            load_settings({}),
            PROFILES[profile_name],
            speak_replies=False,
            deepgram=deepgram,
            chatterbox=chatterbox,
        ) as stack,
        aiohttp.ClientSession() as http,
    ):
        # The configuration under test, pointed at the simulated providers.
        options = configs(PipelineOptions.from_settings(stack.settings))[name]
        result = await talk(
            options,
            conversation.samples,
            conversation.sample_rate,
            vad=load_vad(options.vad),
            http_session=http,
            publisher=RecordingPublisher(),
            session_id=f"bench-{name}-{profile_name}",
            utterances=conversation.utterances,
            observe=observe,
        )
    groq = stack.providers.groq
    rejected = deepgram.rejected + groq.rejected + chatterbox.rejected
    if rejected:
        raise RuntimeError(f"a simulator rejected a request: {rejected[:3]}")
    row = measure(name, profile_name, options, result, finals)
    row.llm_requests, row.tts_requests = len(groq.received), len(chatterbox.received)
    return row


def measure(
    name: str, profile: str, options: PipelineOptions, result: LiveKitRun, finals: list[float]
) -> Row:
    row = Row(name, profile)
    origin = result.origin
    utterances = result.utterances
    for index, utterance in enumerate(utterances):
        start, end = origin + utterance.start_s, origin + utterance.end_s
        limit = origin + utterances[index + 1].start_s if index + 1 < len(utterances) else 1e18
        paused = "budget" in utterance.text
        row.paused += paused
        inside = [t for t in result.records if start < t.committed_at < end]
        if inside:
            row.cut_offs += 1
            continue
        turn = next((t for t in result.records if end <= t.committed_at < limit), None)
        if turn is None:
            row.missing += 1
            continue
        row.turns += 1
        heard = next((s for s in result.sounds if s >= end), None)
        row.add("v2v", turn.voice_to_voice_ms)
        estimate = estimated_voice_to_voice(turn)
        if estimate is not None and turn.voice_to_voice_ms is not None:
            row.add("room_est", estimate - turn.voice_to_voice_ms)
        if turn.vad_end_at is not None:
            row.add("vad_lag", (turn.vad_end_at - end - options.vad.min_silence_s) * 1000)
            row.add("endpoint", (turn.committed_at - turn.vad_end_at) * 1000)
        final = max((f for f in finals if end - 1.0 < f <= turn.committed_at), default=None)
        row.add("stt", None if final is None else (final - end) * 1000)
        row.add("ttft", turn.llm_ttft_ms)
        row.add("ttfb", turn.tts_ttfb_ms)
        if heard is not None and heard < limit:
            row.add("commit_audio", (heard - turn.committed_at) * 1000)
    return row


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def table(rows: list[Row]) -> str:
    head = (
        ["config", "profile", "turns"]
        + [f"{s} p50/p95" for s in STAGES]
        + ["cut-offs", "LLM/TTS req per utterance"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.config, row.profile, str(row.turns)]
        for stage in STAGES:
            values = row.stages.get(stage, [])
            p50, p95 = pct(values, 50), pct(values, 95)
            cells.append("-" if p50 is None or p95 is None else f"{p50:.0f} / {p95:.0f}")
        cells.append(f"{row.cut_offs}/{row.paused}")
        utterances = max(1, row.turns + row.cut_offs + row.missing)
        cells.append(f"{row.llm_requests / utterances:.1f} / {row.tts_requests / utterances:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    baseline = {r.profile: r for r in rows if r.config == "livekit-default"}
    ratios = []
    for row in rows:
        base = baseline.get(row.profile)
        if base is None or row is base:
            continue
        mine, theirs = pct(row.stages.get("v2v", []), 50), pct(base.stages.get("v2v", []), 50)
        if mine and theirs:
            ratios.append(
                f"{row.config}/{row.profile}: v2v p50 {mine / theirs:.2f}x livekit-default"
            )
    return "\n".join(lines + ([""] + ratios if ratios else []))


async def main_async(args: argparse.Namespace) -> list[Row]:
    conversation, transcripts = build_conversation(args.utterances)
    paused_only, paused_transcripts = (
        audio.conversation([PAUSED] * 8, gap_s=2.2, tail_s=2.5),
        [PAUSED_TEXT] * 8,
    )
    rows: list[Row] = []
    for name in args.configs:
        for profile in args.profiles:
            started = time.perf_counter()
            if name == "silence-0.2" or args.paused_only:  # cut-offs only
                row = await run_once(name, profile, paused_only, paused_transcripts)
            else:
                row = await run_once(name, profile, conversation, transcripts)
            rows.append(row)
            print(
                f"{name}/{profile}: {row.turns} turns, {row.cut_offs} cut-offs "
                f"({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["chosen", "livekit-default", "speculative", "no-preemption", "silence-0.2"],
        choices=sorted(configs(PipelineOptions())),
    )
    parser.add_argument(
        "--profiles", nargs="+", default=["zero", "published"], choices=sorted(PROFILES)
    )
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument(
        "--paused-only",
        action="store_true",
        help="8 utterances, each with a 300 ms pause (cut-off counting)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write raw figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    rows = asyncio.run(main_async(args))
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
