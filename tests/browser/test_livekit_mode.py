"""livekit mode of the meeting page, with the room driven from the test.

No LiveKit server runs on this machine, so these tests serve `fake_livekit_client.mjs` in
place of the vendored livekit-client (a Playwright route) and play the agent's part through it:
join, publish audio, send `voice.state` data messages, leave or drop. Everything else is real:
the gateway's livekit session (token, room, URL), the fallback report and the openai session
that follows it through the relay to the simulator. The first test holds the fake to the real
module's names and values.

LiveKit being unreachable for real (connect fails) is in test_meeting_page.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Request, Route

from simulators.openai_realtime import Say

from .conftest import FINAL_ASSISTANT, PageLog, Stack, save_screenshot, wait_for

pytestmark = pytest.mark.browser

FAKE = Path(__file__).with_name("fake_livekit_client.mjs")
REPLY = "(simulated) Here is the plan for the rest of the meeting."


def serve_fake_livekit(page: Page) -> None:
    def fulfil(route: Route) -> None:
        route.fulfill(path=FAKE, content_type="text/javascript")

    page.route("**/static/vendor/livekit-client.esm.mjs", fulfil)


def record_fallbacks(page: Page) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []

    def on_request(request: Request) -> None:
        if urlsplit(request.url).path == "/v1/session/fallback":
            reports.append(json.loads(request.post_data or "{}"))

    page.on("request", on_request)
    return reports


def body_data(page: Page) -> dict[str, str]:
    data: dict[str, str] = page.evaluate("({...document.body.dataset})")
    return data


def test_the_fake_uses_the_real_livekit_client_names(stack: Stack, page: Page) -> None:
    page.route(
        "**/fake-livekit-client.mjs",
        lambda route: route.fulfill(path=FAKE, content_type="text/javascript"),
    )
    page.goto(f"{stack.gateway.url}/healthz")
    mismatches: list[str] = page.evaluate(
        """async () => {
          const real = await import('/static/vendor/livekit-client.esm.mjs');
          const fake = await import('/fake-livekit-client.mjs');
          const wrong = [];
          for (const [name, value] of Object.entries(fake.RoomEvent)) {
            if (real.RoomEvent[name] !== value) wrong.push(`RoomEvent.${name}`);
          }
          if (real.Track.Kind.Audio !== fake.Track.Kind.Audio) wrong.push('Track.Kind.Audio');
          if (real.Track.Source.Microphone !== fake.Track.Source.Microphone) {
            wrong.push('Track.Source.Microphone');
          }
          for (const [number, name] of Object.entries(fake.DisconnectReason)) {
            if (real.DisconnectReason[number] !== name) wrong.push(`DisconnectReason.${name}`);
          }
          const room = new real.Room({});  // not connected: nothing leaves the page
          for (const method of ['connect', 'disconnect', 'on', 'removeAllListeners']) {
            if (typeof room[method] !== 'function') wrong.push(`Room.${method}`);
          }
          if (!(room.remoteParticipants instanceof Map)) wrong.push('Room.remoteParticipants');
          if (typeof room.canPlaybackAudio !== 'boolean') wrong.push('Room.canPlaybackAudio');
          for (const method of ['setMicrophoneEnabled', 'getTrackPublication']) {
            if (typeof room.localParticipant[method] !== 'function') {
              wrong.push(`LocalParticipant.${method}`);
            }
          }
          if (typeof room.localParticipant.isAgent !== 'boolean') wrong.push('Participant.isAgent');
          await room.disconnect();
          return wrong;
        }"""
    )
    assert mismatches == []


def test_livekit_mode_publishes_the_microphone_and_shows_the_agents_messages(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    serve_fake_livekit(page)
    page.goto(stack.launch(mode="livekit", session_id="lk-page"))
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=10, log=page_log)

    [call] = page.evaluate("fakeLiveKit.connectCalls")
    assert call["url"] == stack.settings.livekit_url
    assert call["token"].count(".") == 2  # the gateway's LiveKit JWT, as issued
    microphone = page.evaluate("fakeLiveKit.microphoneOptions")
    assert microphone["echoCancellation"] is True
    assert microphone["noiseSuppression"] is True
    assert microphone["autoGainControl"] is True
    assert "waiting for the agent" in page.locator("#status-line").inner_text()

    page.evaluate("fakeLiveKit.agentJoins()")
    wait_for(page, "document.body.dataset.phase === 'connected'", timeout_s=5, log=page_log)
    messages: list[dict[str, Any]] = [
        {"type": "agent.state", "state": "listening"},
        {"type": "transcript.user", "text": "what is next", "final": False},
        {"type": "transcript.user", "text": "What is next on the agenda?", "final": True},
        {"type": "agent.state", "state": "thinking"},
        {"type": "tool.started", "call_id": "call_1", "name": "query_database"},
        {"type": "tool.finished", "call_id": "call_1", "name": "query_database",
         "status": "ok", "duration_ms": 231.4},
        {"type": "agent.state", "state": "speaking"},
        {"type": "transcript.assistant", "text": REPLY, "final": True},
        {"type": "metrics.turn", "eou_ms": 300, "stt_ms": 120, "llm_ttft_ms": 180,
         "tts_ttfb_ms": 150, "voice_to_voice_ms": 612.4},
    ]
    for message in messages:
        page.evaluate("m => fakeLiveKit.send(m)", message)
    # Not state messages: another topic, and an unknown type on the right one.
    page.evaluate("fakeLiveKit.send({type: 'agent.state', state: 'idle'}, 'chat')")
    page.evaluate("fakeLiveKit.send({type: 'agent.mood', mood: 'happy'})")

    wait_for(page, "document.body.dataset.state === 'speaking'", timeout_s=5, log=page_log)
    # The agent's audio plays through its <audio> element and moves the meter.
    wait_for(
        page,
        "parseFloat(document.getElementById('meter-output').style.width) > 0",
        timeout_s=5,
        log=page_log,
    )
    lines = page.evaluate("window.voicePage.transcript")
    assert [(line["role"], line["text"], line["final"]) for line in lines] == [
        ("user", "What is next on the agenda?", True),
        ("assistant", REPLY, True),
    ]
    assert page.evaluate("window.voicePage.agentStates") == [
        "initializing", "listening", "thinking", "speaking",
    ]
    # The catalogue's phrase for the meeting; the raw name and timing in the small print.
    assert page.locator("#tool").inner_text() == "Lookup finished"
    assert page.locator("#agent-state").inner_text() == "Speaking"  # the tone is audible
    status = page.locator("#status-line").inner_text()
    assert (
        "mode livekit · reason: url_flag · connected · tool query_database ok (231 ms)"
        " · last turn 612 ms"
    ) in status
    data = body_data(page)
    assert (data["mode"], data["fallbackReason"]) == ("livekit", "")
    assert page.evaluate("document.querySelectorAll('audio').length") == 1
    save_screenshot(page, "livekit-mode-speaking")
    assert stack.fallbacks_reported == 0


def test_no_agent_within_the_timeout_falls_back_to_openai(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    stack.simulator(lambda sim: sim.script(Say(text=REPLY, audio_ms=800, pace=True)))
    serve_fake_livekit(page)
    reports = record_fallbacks(page)

    page.goto(stack.launch(mode="livekit"))
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=10, log=page_log)
    # The room is up but nobody comes: after the default 8 s the page moves on.
    wait_for(
        page,
        "document.body.dataset.fallbackReason === 'agent_timeout'"
        " && document.body.dataset.mode === 'openai'",
        timeout_s=12,
        log=page_log,
    )
    wait_for(page, FINAL_ASSISTANT, timeout_s=30, log=page_log)
    assert [r["reason"] for r in reports] == ["agent_timeout: no agent joined within 8 s"]
    assert stack.fallbacks_reported == 1
    assert page.evaluate("fakeLiveKit.disconnects") >= 1  # it left the empty room


def test_a_room_that_drops_for_good_falls_back_to_openai(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    stack.simulator(lambda sim: sim.script(Say(text=REPLY, audio_ms=800, pace=True)))
    serve_fake_livekit(page)
    reports = record_fallbacks(page)

    page.goto(stack.launch(mode="livekit"))
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=10, log=page_log)
    # Silent: an audible agent shows as speaking, whatever its messages say.
    page.evaluate("fakeLiveKit.agentJoins('agent-AJ_test', { silent: true })")
    page.evaluate("fakeLiveKit.send({type: 'agent.state', state: 'listening'})")
    wait_for(page, "document.body.dataset.agentState === 'listening'", timeout_s=5, log=page_log)

    page.evaluate("fakeLiveKit.drop()")
    wait_for(
        page,
        "document.body.dataset.fallbackReason === 'room_disconnected'"
        " && document.body.dataset.mode === 'openai'",
        timeout_s=10,
        log=page_log,
    )
    wait_for(page, FINAL_ASSISTANT, timeout_s=30, log=page_log)
    assert [r["reason"] for r in reports] == ["room_disconnected: the room dropped (SIGNAL_CLOSE)"]
    assert stack.fallbacks_reported == 1
    # The agent's <audio> element went with the room.
    assert page.evaluate("document.querySelectorAll('audio').length") == 0


def test_an_agent_that_leaves_and_does_not_return_falls_back_to_openai(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    serve_fake_livekit(page)
    reports = record_fallbacks(page)

    page.goto(stack.launch(mode="livekit"))
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=10, log=page_log)
    page.evaluate("fakeLiveKit.agentJoins()")
    wait_for(page, "document.body.dataset.phase === 'connected'", timeout_s=5, log=page_log)

    page.evaluate("fakeLiveKit.agentLeaves()")
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=5, log=page_log)
    assert "the agent left" in page.locator("#status-line").inner_text()
    wait_for(
        page,
        "document.body.dataset.fallbackReason === 'agent_left'"
        " && document.body.dataset.mode === 'openai'",
        timeout_s=12,
        log=page_log,
    )
    assert [r["reason"] for r in reports] == [
        "agent_left: the agent left and did not return within 8 s"
    ]
    assert stack.fallbacks_reported == 1
