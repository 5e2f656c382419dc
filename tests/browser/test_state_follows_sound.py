"""The state word follows what the room hears, not what the model generates (issue 14, item 1).

"speaking" means the page is playing the agent's audio: in openai mode while the playback
worklet renders queued audio, in livekit mode while the agent's track is audible. The page's
`data-state`, sampled every 10 ms, is held against the rendered output (openai) or the fake
agent track's own record of when it sounded (livekit).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, Route

from simulators.openai_realtime import SAMPLE_RATE, Say

from .conftest import FINAL_ASSISTANT, PageLog, SpokenInput, Stack, speech_span_s, wait_for
from .timeline import (
    Span,
    audible_spans,
    describe,
    disagreements,
    samples,
    start_sampler,
    state_spans,
    total_ms,
)

pytestmark = pytest.mark.browser

FAKE = Path(__file__).with_name("fake_livekit_client.mjs")
REPLY_MS = 2500
# Edges may differ by the analyser's window, a sampling period and the livekit release (250 ms).
TOLERANCE_MS = 350


def test_openai_speaking_lasts_exactly_as_long_as_the_reply_plays(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    # The whole reply arrives at once, as OpenAI sends it: the relay's own state says
    # "speaking" for as long as generating takes (milliseconds), the page plays 2.5 s.
    stack.simulator(lambda sim: sim.script(Say(text="(simulated) A reply.", audio_ms=REPLY_MS)))
    page.goto(stack.launch(mode="openai"))
    wait_for(page, "window.voicePage !== undefined", timeout_s=10, log=page_log)
    start_sampler(page)
    wait_for(
        page,
        "(() => { const s = window.voicePage.voice.stats();"
        f" return s.audibleSamples >= 0.9 * s.sampleRate * {REPLY_MS} / 1000 && !s.playing; }})()",
        timeout_s=40,
        log=page_log,
    )
    wait_for(page, "document.body.dataset.state === 'listening'", timeout_s=5, log=page_log)
    wait_for_samples_past_the_sound(page, page_log)

    taken = samples(page)
    audible = audible_spans(taken)
    timeline = describe(taken, audible, "speaking")
    assert total_ms(audible) >= 0.9 * REPLY_MS, timeline
    assert disagreements(taken, audible, state="speaking", tolerance_ms=TOLERANCE_MS) == [], (
        timeline
    )
    assert total_ms(state_spans(taken, "speaking")) == pytest.approx(
        total_ms(audible), abs=TOLERANCE_MS
    ), timeline
    print(timeline)  # the lead's note: `pytest -s` shows both timelines


def test_livekit_speaking_follows_the_agents_track_not_its_messages(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    page.route("**/static/vendor/livekit-client.esm.mjs", fulfil_with_fake)
    page.goto(stack.launch(mode="livekit"))
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=10, log=page_log)
    page.evaluate("fakeLiveKit.agentJoins('agent-AJ_test', { silent: true })")
    page.evaluate("fakeLiveKit.send({type: 'agent.state', state: 'listening'})")
    # The fake microphone's utterance is over before the agent speaks.
    wait_for(page, "document.body.dataset.state === 'listening'", timeout_s=15, log=page_log)
    start_sampler(page)

    # The agent says "speaking" 400 ms before its audio arrives, and "listening" 600 ms into
    # 1.5 s of audio: its messages follow its generation, the room hears the track.
    page.evaluate(
        """async () => {
          const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
          fakeLiveKit.send({ type: 'agent.state', state: 'speaking' });
          await pause(400);
          fakeLiveKit.play(1500);
          await pause(600);
          fakeLiveKit.send({ type: 'agent.state', state: 'listening' });
        }"""
    )
    wait_for(page, "fakeLiveKit.played.every((s) => s.end !== null)", timeout_s=5, log=page_log)
    wait_for(page, "document.body.dataset.state === 'listening'", timeout_s=5, log=page_log)
    wait_for_samples_past_the_sound(page, page_log)

    taken = samples(page)
    played = [Span(p["start"], p["end"]) for p in page.evaluate("fakeLiveKit.played")]
    timeline = describe(taken, played, "speaking")
    assert disagreements(taken, played, state="speaking", tolerance_ms=TOLERANCE_MS) == [], (
        timeline
    )
    # Before its audio arrived the agent was still producing its reply.
    before = [s.state for s in taken if s.t_ms < played[0].start_ms - 50]
    assert "thinking" in before and "speaking" not in before, timeline
    print(timeline)


def fulfil_with_fake(route: Route) -> None:
    route.fulfill(path=FAKE, content_type="text/javascript")


def wait_for_samples_past_the_sound(page: Page, log: PageLog, past_ms: int = 600) -> None:
    """The sampler ran on for `past_ms` after the last audible sample: a state that outlives
    the sound shows in the timeline."""
    wait_for(
        page,
        "(() => { const s = window.stateSamples;"
        " const loud = s.findLast((x) => x[2] > 0.01) ?? s.find((x) => x[1] === 'speaking');"
        f" return loud && s.at(-1)[0] - loud[0] > {past_ms}; }})()",
        timeout_s=10,
        log=log,
    )


def test_the_meeting_speaking_is_its_own_state(
    stack: Stack, page: Page, page_log: PageLog, spoken_input: SpokenInput
) -> None:
    stack.simulator(lambda sim: sim.script(Say(text="(simulated) A reply.", audio_ms=800)))
    page.goto(stack.launch(mode="openai"))
    wait_for(page, "window.voicePage !== undefined", timeout_s=10, log=page_log)
    start_sampler(page)
    wait_for(page, FINAL_ASSISTANT, timeout_s=30, log=page_log)

    taken = samples(page)
    hearing = state_spans(taken, "meeting-speaking")
    timeline = describe(taken, audible_spans(taken), "speaking") + "; hearing: " + ", ".join(
        str(span) for span in hearing
    )
    # What the page sent the relay: the utterance, as long as the fake microphone's speech.
    heard_s = speech_span_s(stack.received_audio(), SAMPLE_RATE)
    assert heard_s == pytest.approx(spoken_input.speech_s, rel=0.1)
    # Shown while the meeting spoke (the release bridges the pauses between words), and not
    # before the microphone opened nor after the utterance.
    assert len(hearing) <= 3, timeline
    shown_s = (hearing[-1].end_ms - hearing[0].start_ms) / 1000
    assert heard_s - 0.3 <= shown_s <= heard_s + 0.6, (shown_s, heard_s, timeline)
    # The reply's audio may still be playing when its final transcript arrives (the word
    # follows the sound: data-state, not the agent's own data-agent-state).
    wait_for(page, "document.body.dataset.state === 'listening'", timeout_s=15, log=page_log)
    assert page.locator("#agent-state").inner_text() == "Listening"
    # The meeting spoke, then the agent answered.
    order = [s.state for s in taken]
    assert order.index("meeting-speaking") < order.index("speaking"), timeline
    print(timeline)
