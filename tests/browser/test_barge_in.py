"""Barge-in in openai mode: the meeting speaks while the page is still playing a reply.

This module's fake microphone plays two utterances with a pause between them. The simulator
sends the whole first reply at once (as OpenAI does, faster than real time), so when the second
utterance starts the page still holds seconds of unplayed audio: on
`input_audio_buffer.speech_started` it must drop it, not finish the sentence.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import Page

from simulators.openai_realtime import Say

from .conftest import PageLog, SpokenInput, Stack, require_tools, spoken_input_from, wait_for
from .timeline import audible_spans, describe, disagreements, samples, start_sampler

pytestmark = pytest.mark.browser

LONG_REPLY_MS = 6000


@pytest.fixture(scope="module")
def spoken_input(tmp_path_factory: pytest.TempPathFactory) -> SpokenInput:
    """Two utterances 2.5 s apart (overrides the module-wide single utterance)."""
    require_tools()
    directory: Path = tmp_path_factory.mktemp("barge-in")
    parts = []
    for index, text in enumerate(["What is on the agenda today?", "Wait, stop, one question."]):
        part = directory / f"part{index}.wav"
        subprocess.run(["espeak-ng", "-s", "160", "-w", str(part), text], check=True)
        parts.append(str(part))
    first = directory / "first.wav"
    path = directory / "two-utterances.wav"
    subprocess.run(["sox", parts[0], str(first), "pad", "0.5", "2.5"], check=True)
    subprocess.run(
        ["sox", str(first), parts[1], "-b", "16", "-c", "1", str(path), "pad", "0", "2.5"],
        check=True,
    )
    return spoken_input_from(path)


def test_speech_during_playback_stops_the_reply(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    stack.simulator(
        lambda sim: sim.script(
            Say(text="(simulated) A long answer the meeting interrupts.", audio_ms=LONG_REPLY_MS),
            Say(text="(simulated) Sure, go ahead.", audio_ms=600),
        )
    )
    page.goto(stack.launch(mode="openai"))

    # The first reply arrives whole and starts playing.
    wait_for(
        page,
        "window.voicePage.voice.stats().audibleSamples > 0",
        timeout_s=30,
        log=page_log,
    )
    # The second utterance interrupts it: the queued audio is dropped.
    stats = wait_for(
        page,
        "(() => { const s = window.voicePage.voice.stats(); return s.cleared >= 1 && s; })()",
        timeout_s=15,
        log=page_log,
    )
    played_ms = stats["audibleSamples"] / stats["sampleRate"] * 1000
    assert played_ms < LONG_REPLY_MS / 2, stats

    # The conversation goes on: the interruption is answered.
    wait_for(
        page,
        "window.voicePage.transcript.filter(l => l.role === 'assistant').length === 2"
        " && document.body.dataset.state === 'listening'",
        timeout_s=30,
        log=page_log,
    )
    final = page.evaluate("window.voicePage.voice.stats()")
    # Nothing of the interrupted reply played after the barge-in; the short answer did.
    assert final["audibleSamples"] / final["sampleRate"] * 1000 < played_ms + 600 * 1.1
    assert final["cleared"] == 1
    assert stack.simulator(lambda sim: len(sim.of_type("input_audio_buffer.append"))) > 0


def test_the_state_stops_saying_speaking_when_the_meeting_barges_in(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    stack.simulator(
        lambda sim: sim.script(
            Say(text="(simulated) A long answer the meeting interrupts.", audio_ms=LONG_REPLY_MS),
            Say(text="(simulated) Sure, go ahead.", audio_ms=600),
        )
    )
    page.goto(stack.launch(mode="openai"))
    wait_for(page, "window.voicePage !== undefined", timeout_s=10, log=page_log)
    start_sampler(page)
    wait_for(page, "window.voicePage.voice.stats().cleared >= 1", timeout_s=40, log=page_log)
    wait_for(
        page,
        "window.voicePage.transcript.filter(l => l.role === 'assistant').length === 2"
        " && document.body.dataset.state === 'listening'",
        timeout_s=30,
        log=page_log,
    )

    taken = samples(page)
    audible = audible_spans(taken)
    timeline = describe(taken, audible, "speaking")
    # Two replies played: the interrupted one (cut short) and the answer.
    assert len(audible) == 2 and audible[0].ms < LONG_REPLY_MS / 2, timeline
    assert disagreements(taken, audible, state="speaking", tolerance_ms=150) == [], timeline
    # The moment the reply was cut, the page showed the meeting speaking.
    after_cut = [s.state for s in taken if s.t_ms > audible[0].end_ms + 150][:5]
    assert set(after_cut) == {"meeting-speaking"}, timeline
