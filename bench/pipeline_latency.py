"""Voice-to-voice latency of the LiveKit pipeline, stage by stage, and what it costs, on
127.0.0.1.

Real Silero on espeak-ng speech, the real Deepgram/Groq/TTS plugins, and simulators that
answer (a) at once ("zero") or (b) at the plan's published figures ("published": STT final
150 ms after speech ends with interims every 250 ms, LLM TTFT 200 ms then 500 tokens/s, TTS
first byte 200 ms, Cartesia 150, ElevenLabs 250). Every figure is measured from the truth of
the audio: where each utterance really ends, and when the first audible sample of the agent
really plays.

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

Cost, from the session's usage meter (pipelines/livekit/usage.py) and the price table
(pipelines/contracts/prices.py), speculation included: LLM and TTS requests per utterance
(a TTS request is a reply whose synthesis started, however many chunks it took), the
characters the TTS was sent over those spoken, and dollars per minute of conversation.

With `--repeat N` every configuration runs N times, interleaved, and the table shows the
median over the runs of each figure; the machine's load average is recorded beside each run.

    .venv/bin/python -m bench.pipeline_latency            # every configuration, ~17 min
    .venv/bin/python -m bench.pipeline_latency --configs chosen --profiles zero --utterances 8
    .venv/bin/python -m bench.pipeline_latency --configs guarded chosen livekit-default \
        --profiles published zero --repeat 3 --json runs.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import aiohttp
import numpy as np
from livekit.agents import AgentSession
from livekit.agents.voice.events import UserInputTranscribedEvent

from pipelines.contracts import load_settings
from pipelines.contracts.settings import TtsProvider
from pipelines.livekit.latency import estimated_voice_to_voice
from pipelines.livekit.pipeline import PipelineOptions, VadOptions, load_vad
from pipelines.livekit.speculation import SpeculationOptions, words_of
from pipelines.livekit.state import RecordingPublisher
from simulators.cartesia import CartesiaSimulator
from simulators.chatterbox import ChatterboxSimulator
from simulators.deepgram import DeepgramSimulator
from simulators.elevenlabs import ElevenLabsSimulator
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


OFF = SpeculationOptions(policy="off")


def configs(base: PipelineOptions) -> dict[str, PipelineOptions]:
    """`guarded` is today's default (speculation once the user pauses, speakable chunks);
    `chosen` the default before it (no speculation, a TTS request per sentence)."""
    chosen = dataclasses.replace(base, speculation=OFF, tts_chunks="sentences")
    return {
        "guarded": base,
        "guarded-sentences": dataclasses.replace(base, tts_chunks="sentences"),
        "chosen": chosen,
        "chosen-clauses": dataclasses.replace(chosen, tts_chunks="clauses"),
        "livekit-default": dataclasses.replace(
            chosen,
            vad=VadOptions(min_speech_s=0.05, min_silence_s=0.55, deactivation_threshold=None),
            endpointing_min_delay_s=0.5,
            preemptive_tts=False,
        ),
        "no-preemption": dataclasses.replace(chosen, preemptive_generation=False),
        "llm-preemption-only": dataclasses.replace(chosen, preemptive_tts=False),
        "silence-0.2": dataclasses.replace(
            chosen, vad=dataclasses.replace(base.vad, min_silence_s=0.2)
        ),
        "speculative": dataclasses.replace(
            chosen, speculation=SpeculationOptions(policy="interims")
        ),
        "silero-deact": dataclasses.replace(
            chosen, vad=dataclasses.replace(base.vad, deactivation_threshold=None)
        ),
    }


@dataclass
class Row:
    """One run of one configuration."""

    config: str
    profile: str
    voice: str = "chatterbox"
    stages: dict[str, list[float]] = field(default_factory=dict)
    turns: int = 0
    paused: int = 0
    cut_offs: int = 0
    missing: int = 0
    llm_requests: int = 0
    tts_requests: int = 0
    tts_chars: int = 0  # sent to the TTS
    spoken_chars: int = 0  # of the replies played
    cost_per_min: float | None = None
    stale: int = 0  # replies that do not answer their utterance's final transcript
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and end

    @property
    def utterances(self) -> int:
        return max(1, self.turns + self.cut_offs + self.missing)

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
    voice: TtsProvider = "chatterbox",
    pause_ms: int | None = None,
) -> Row:
    load_before = os.getloadavg()[0]
    deepgram = DeepgramSimulator(transcripts=list(transcripts))
    # short audio per character, so a reply has played out before the next utterance starts
    chatterbox = ChatterboxSimulator(ms_per_char=6)
    cartesia, elevenlabs = CartesiaSimulator(ms_per_char=6), ElevenLabsSimulator(ms_per_char=6)
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
            cartesia=cartesia,
            elevenlabs=elevenlabs,
        ) as stack,
        aiohttp.ClientSession() as http,
    ):
        # The configuration under test, pointed at the simulated providers.
        base = PipelineOptions.from_settings(stack.settings)
        options = dataclasses.replace(configs(base)[name], tts_provider=voice)
        if pause_ms is not None and options.speculation.policy == "pause":
            speculation = dataclasses.replace(options.speculation, pause_s=pause_ms / 1000)
            options = dataclasses.replace(options, speculation=speculation)
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
    rejected = (
        deepgram.rejected
        + groq.rejected
        + chatterbox.rejected
        + cartesia.rejected
        + elevenlabs.rejected
    )
    if rejected:
        raise RuntimeError(f"a simulator rejected a request: {rejected[:3]}")
    row = measure(name, profile_name, options, result, finals)
    row.stale = stale_replies(result, transcripts)
    row.voice = voice
    usage = result.usage
    if usage.llm_requests != len(groq.received):  # the meter must see what the provider saw
        raise RuntimeError(f"meter {usage.llm_requests} LLM requests, Groq {len(groq.received)}")
    row.llm_requests, row.tts_requests = usage.llm_requests, usage.tts_requests
    row.tts_chars = usage.tts_characters
    row.spoken_chars = sum(len(" ".join(t.assistant_text)) for t in result.records)
    row.cost_per_min = usage.cost_per_minute()
    row.load = (load_before, os.getloadavg()[0])
    return row


def stale_replies(result: LiveKitRun, transcripts: list[str]) -> int:
    """Turns whose reply echoes other words than a whole final transcript (the Groq simulator
    answers with the user's words, so a reply made from a guess that did not stand shows)."""
    scripted = [words_of(text.replace("|", " ")) for text in transcripts]
    stale = 0
    for turn in result.records:
        said = " ".join(turn.assistant_text)
        if "You said:" not in said:
            continue  # a tool turn, or a filler
        echoed = words_of(said.split("You said:", 1)[1])
        stale += not any(echoed[: len(words)] == words for words in scripted)
    return stale


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


SHOWN = ("v2v", "stt", "ttft", "ttfb", "commit_audio")


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def table(rows: list[Row]) -> str:
    """One line per configuration, profile and voice: the median over its runs of each
    figure (a stage's p50 and p95 are taken per run first)."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.config, row.profile, row.voice), []).append(row)
    head = (
        ["config", "profile", "runs x turns"]
        + [f"{s} p50/p95" for s in SHOWN]
        + ["cut-offs", "stale", "LLM/TTS req per utt.", "TTS chars sent/spoken", "$/min"]
        + ["v2v p50 per run"]
        + ["load"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (config, profile, voice), runs in groups.items():
        name = config if voice == "chatterbox" else f"{config} ({voice})"
        cells = [name, profile, f"{len(runs)} x {_median([float(r.turns) for r in runs]):.0f}"]
        for stage in SHOWN:
            p50 = _median([pct(r.stages.get(stage, []), 50) for r in runs])
            p95 = _median([pct(r.stages.get(stage, []), 95) for r in runs])
            cells.append("-" if p50 is None or p95 is None else f"{p50:.0f} / {p95:.0f}")
        cells.append(f"{sum(r.cut_offs for r in runs)}/{sum(r.paused for r in runs)}")
        cells.append(str(sum(r.stale for r in runs)))
        llm = _median([r.llm_requests / r.utterances for r in runs])
        tts = _median([r.tts_requests / r.utterances for r in runs])
        cells.append(f"{llm:.2f} / {tts:.2f}")
        ratio = _median([r.tts_chars / r.spoken_chars if r.spoken_chars else None for r in runs])
        sent = _median([float(r.tts_chars) for r in runs])
        cells.append("-" if ratio is None or sent is None else f"{sent:.0f} ({ratio:.2f}x)")
        cost = _median([r.cost_per_min for r in runs])
        cells.append("-" if cost is None else f"{cost:.4f}")
        per_run = [pct(r.stages.get("v2v", []), 50) for r in runs]
        cells.append(", ".join("-" if v is None else f"{v:.0f}" for v in per_run))
        cells.append(", ".join(f"{r.load[0]:.1f}" for r in runs))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Row]:
    conversation, transcripts = build_conversation(args.utterances)
    paused_only, paused_transcripts = (
        audio.conversation([PAUSED] * 8, gap_s=2.2, tail_s=2.5),
        [PAUSED_TEXT] * 8,
    )
    rows: list[Row] = []
    for repeat in range(args.repeat):
        for name in args.configs:
            for profile in args.profiles:
                for voice in args.voices:
                    started = time.perf_counter()
                    spoken = (
                        (paused_only, paused_transcripts)
                        if name == "silence-0.2" or args.paused_only  # cut-offs only
                        else (conversation, transcripts)
                    )
                    row = await run_once(name, profile, *spoken, voice, args.pause_ms)
                    rows.append(row)
                    v2v = pct(row.stages.get("v2v", []), 50)
                    print(
                        f"run {repeat + 1}: {name}/{profile}/{voice}: {row.turns} turns, "
                        f"{row.cut_offs} cut-offs, v2v p50 {v2v or 0:.0f} ms, load "
                        f"{row.load[0]:.2f} -> {row.load[1]:.2f} "
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
        default=["guarded", "chosen", "livekit-default", "speculative", "silence-0.2"],
        choices=sorted(configs(PipelineOptions())),
    )
    parser.add_argument(
        "--profiles", nargs="+", default=["zero", "published"], choices=sorted(PROFILES)
    )
    parser.add_argument(
        "--voices", nargs="+", default=["chatterbox"], choices=get_args(TtsProvider)
    )
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, interleaved")
    parser.add_argument(
        "--pause-ms", type=int, default=None, help="SPECULATION_PAUSE_MS for the pause policy"
    )
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
