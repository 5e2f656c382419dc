"""What the room costs here: voice-to-voice of the same utterances through `voicegw talk --mode
livekit` (the pipeline in-process, no room) and through the LiveKit stand-in with the meeting
page in Chromium and a real `voicegw agent dev` worker, on the same simulated providers, in the
same run, blocks of turns alternating between the two paths.

Both are measured the same way: from the true end of each utterance to the first audible sample
of the reply. talk: on the input file's timeline and the agent's output. Room: in the page, on
one audio clock, from the end of the speech the page captured from its (fake) microphone to
the first audible sample of the agent's track it received (`room_probe.js`), so the room path
adds the page's capture, Opus both ways, the stand-in's relay (aiortc's jitter buffer and
packetizing; it forwards Opus undecoded) and the page's jitter buffer. It is what a room costs
on this machine, not LiveKit Cloud's figure.

Runs in a network namespace of its own (root, iproute2): WebRTC ignores loopback.

    .venv/bin/python bench/livekit_room.py [--rounds 4] [--profile published]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from playwright.sync_api import Browser, sync_playwright  # noqa: E402

from pipelines.livekit.pipeline import PipelineOptions, load_vad  # noqa: E402
from pipelines.livekit.state import RecordingPublisher  # noqa: E402
from simulators.chatterbox import ChatterboxSimulator  # noqa: E402
from simulators.deepgram import DeepgramSimulator  # noqa: E402
from simulators.groq import GroqSimulator  # noqa: E402
from simulators.n8n import N8nSimulator  # noqa: E402
from simulators.openai_realtime import RealtimeSimulator  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402
from tests.e2e.room import RoomStack, room_stack, wait_for_registered  # noqa: E402
from tests.netns import NetNamespace  # noqa: E402
from voicegw.lab.audio import Conversation, conversation  # noqa: E402
from voicegw.lab.compare import SAMPLE_TEXTS  # noqa: E402
from voicegw.lab.talk_livekit import talk  # noqa: E402

PROBE = Path(__file__).with_name("room_probe.js")
GAP_S = 7.0  # room for each reply to end before the next utterance
MERGE_S = 0.8  # loud runs closer than this are one utterance (as the lab's find_utterances)


def utterance_ends(runs: list[list[float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] < MERGE_S:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def voice_to_voice(bench: dict[str, Any]) -> list[float]:
    """Per utterance the page captured: its end to the first audible sample of the agent's
    track that follows, before the next utterance starts (ms)."""
    spoken = utterance_ends(bench["input"])
    heard = [start for start, _ in bench["output"]]
    found = []
    for number, (_, end) in enumerate(spoken):
        until = spoken[number + 1][0] if number + 1 < len(spoken) else float("inf")
        replies = [t for t in heard if end < t < until]
        if replies:
            found.append((replies[0] - end) * 1000)
    return found


def page_session(stack: RoomStack, browser: Browser, spoken: Conversation, sid: str) -> list[float]:
    context = browser.new_context()
    context.add_init_script(path=str(PROBE))
    page = context.new_page()
    try:
        page.goto(f"{stack.url}/?session={sid}&mode=livekit")
        # Functions, not expressions: Playwright evals a bare expression, which the page's
        # Content-Security-Policy refuses.
        page.wait_for_function("() => document.body.dataset.phase === 'connected'", timeout=60_000)
        page.evaluate("window.__bench.openMic()")
        answered = (
            f"window.__bench.answers >= {len(spoken.utterances)}"
            " && document.body.dataset.state === 'listening'"
        )
        page.wait_for_function(f"() => ({answered})", timeout=(spoken.duration_s + 30) * 1000)
        time.sleep(0.5)  # the probe's last blocks (a measurement window, not a wait for state)
        bench: dict[str, Any] = page.evaluate("window.__bench")
        assert page.evaluate("document.body.dataset.mode") == "livekit", "the page fell back"
    finally:
        context.close()
        stack.close_room(sid)
    return voice_to_voice(bench)


async def talk_session(stack: RoomStack, spoken: Conversation) -> list[float]:
    options = PipelineOptions.from_settings(stack.simulated.settings)
    async with aiohttp.ClientSession() as http:
        run = await talk(
            options,
            spoken.samples,
            spoken.sample_rate,
            vad=load_vad(options.vad),
            http_session=http,
            publisher=RecordingPublisher(),
            utterances=spoken.utterances,
        )
    return [t.voice_to_voice_ms for t in run.result.turns if t.voice_to_voice_ms is not None]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(rounds: int, profile: str) -> None:
    spoken = conversation(
        list(SAMPLE_TEXTS), lead_s=1.5, gap_s=GAP_S, tail_s=GAP_S, sample_rate=48_000
    )
    providers = {
        "deepgram": DeepgramSimulator(),
        "groq": GroqSimulator(),
        "chatterbox": ChatterboxSimulator(),
        "realtime": RealtimeSimulator(),
        "n8n": N8nSimulator(),
    }
    namespace = NetNamespace().create()
    talked: list[float] = []
    roomed: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as directory, room_stack(
            namespace, profile=profile, providers=providers
        ) as stack:
            wav = Path(directory) / "utterances.wav"
            spoken.write_wav(wav)
            wrapper = namespace.wrapper_script(Path(directory), str(CHROMIUM))
            wait_for_registered(stack)
            flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}%noloop"]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(wrapper), args=flags)
                for number in range(rounds):
                    roomed += page_session(stack, browser, spoken, f"bench{number}")
                    talked += stack.run(talk_session(stack, spoken), timeout=spoken.duration_s + 60)
                    print(
                        f"round {number + 1}/{rounds}: talk {len(talked)} turns,"
                        f" room {len(roomed)} turns",
                        file=sys.stderr,
                    )
                browser.close()
    finally:
        namespace.delete()

    print(f"voice-to-voice, profile {profile}, {rounds} rounds of {len(SAMPLE_TEXTS)} utterances")
    print(f"{'path':<40} {'turns':>5} {'p50 ms':>8} {'p95 ms':>8}")
    rows = {
        "voicegw talk --mode livekit (no room)": talked,
        "room: stand-in + Chromium page": roomed,
    }
    for name, values in rows.items():
        p50, p95 = statistics.median(values), pct(values, 0.95)
        print(f"{name:<40} {len(values):>5} {p50:>8.0f} {p95:>8.0f}")
    print(
        f"{'difference (room - talk)':<40} {'':>5}"
        f" {statistics.median(roomed) - statistics.median(talked):>+8.0f}"
        f" {pct(roomed, 0.95) - pct(talked, 0.95):>+8.0f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--profile", default="published")
    arguments = parser.parse_args()
    main(arguments.rounds, arguments.profile)
