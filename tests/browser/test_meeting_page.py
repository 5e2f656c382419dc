"""The meeting page in headless Chromium against the real gateway, relay and the OpenAI
Realtime simulator.

The page is opened the way Recall.ai opens it: at the URL `POST /v1/launch` returns, on a
production-configured gateway (so every session request must carry the launch token). Its
microphone is Chromium's fake capture device playing an espeak-ng utterance.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Request, Response, WebSocket

from simulators.openai_realtime import SAMPLE_RATE, Say

from .conftest import (
    FINAL_ASSISTANT,
    PageLog,
    SpokenInput,
    Stack,
    save_screenshot,
    speech_span_s,
    wait_for,
)

pytestmark = pytest.mark.browser

REPLY = "(simulated) The agenda has two items: the budget and the launch plan."
REPLY_MS = 1200


def body_data(page: Page) -> dict[str, str]:
    data: dict[str, str] = page.evaluate("({...document.body.dataset})")
    return data


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    remaining = iter(seen)
    return all(item in remaining for item in wanted)


@dataclass
class Traffic:
    """Everything the gateway sent the page: HTTP responses and relay frames."""

    responses: list[Response] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)

    def texts(self) -> Iterator[str]:
        yield from self.frames
        for response in self.responses:
            try:
                yield response.text()
            except Exception:  # a redirect or an aborted load has no body
                continue


@pytest.fixture
def traffic(page: Page) -> Traffic:
    recorded = Traffic()

    def on_websocket(socket: WebSocket) -> None:
        socket.on(
            "framereceived",
            lambda payload: recorded.frames.append(
                payload if isinstance(payload, str) else payload.decode("latin-1")
            ),
        )

    def on_response(response: Response) -> None:
        recorded.responses.append(response)

    page.on("response", on_response)
    page.on("websocket", on_websocket)
    return recorded


def wait_for_played_reply(page: Page, log: PageLog, *, timeout_s: float = 15) -> dict[str, Any]:
    """Wait until the page's player has played (nearly) all of the scripted reply."""
    expression = (
        "(() => { const s = window.voicePage.voice.stats();"
        f" return s.sampleRate && s.audibleSamples >= 0.9 * s.sampleRate * {REPLY_MS} / 1000"
        " && s; })()"
    )
    stats: dict[str, Any] = wait_for(page, expression, timeout_s=timeout_s, log=log)
    return stats


# -- openai mode ---------------------------------------------------------------------------


def test_openai_mode_holds_a_turn_through_the_relay(
    stack: Stack, page: Page, page_log: PageLog, traffic: Traffic, spoken_input: SpokenInput
) -> None:
    stack.simulator(lambda sim: sim.script(Say(text=REPLY, audio_ms=REPLY_MS, pace=True)))

    response = page.goto(stack.launch(mode="openai"))
    # Under its Content-Security-Policy (the page fixture fails on anything it refused).
    assert response is not None
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    wait_for(
        page,
        "document.body.dataset.state === 'speaking' &&"
        " parseFloat(document.getElementById('meter-output').style.width) > 0",
        timeout_s=30,
        log=page_log,
    )
    save_screenshot(page, "openai-mode-speaking")
    wait_for(page, FINAL_ASSISTANT, timeout_s=30, log=page_log)

    # The page went through a whole turn and shows it.
    history: list[str] = page.evaluate("window.voicePage.stateHistory")
    assert is_subsequence(["listening", "thinking", "speaking", "listening"], history), history
    data = body_data(page)
    assert (data["mode"], data["fallbackReason"], data["phase"]) == ("openai", "", "connected")
    lines: list[dict[str, Any]] = page.evaluate("window.voicePage.transcript")
    assert [(line["role"], line["text"]) for line in lines] == [
        ("user", stack.simulator(lambda sim: sim.user_transcript)),
        ("assistant", REPLY),
    ]
    shown = page.locator("#transcript").inner_text()
    assert REPLY in shown and "(simulated) user speech" in shown
    assert "mode openai · reason: url_flag" in page.locator("#status-line").inner_text()

    # The simulator heard the utterance as pcm16 at 24 kHz: its speech spans as many samples
    # as the WAV's speech lasts (a wrong rate would stretch or squeeze it).
    received = stack.received_audio()
    heard_s = speech_span_s(received, SAMPLE_RATE)
    assert heard_s == pytest.approx(spoken_input.speech_s, rel=0.10), (heard_s, spoken_input)
    assert stack.simulator(lambda sim: sim.violations) == []
    frame_sizes = {
        len(e["audio"]) * 3 // 4 // 2
        for e in stack.simulator(lambda sim: sim.of_type("input_audio_buffer.append"))
    }
    assert frame_sizes == {480}  # 20 ms at 24 kHz

    # The page played the reply: the player's count of audible samples and the analyser.
    stats = wait_for_played_reply(page, page_log)
    assert stats["peakOutput"] > 0.05
    assert stats["cleared"] == 0  # nobody barged in

    # Only short-lived credentials reached the page.
    for text in traffic.texts():
        for name, value in stack.secrets.items():
            assert value not in text, f"{name} reached the page"


def test_the_page_reconnects_with_a_fresh_session_when_the_relay_fails(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    # The first reply breaks off: the simulator hangs up, the relay sends a fatal voice.error
    # and closes 1011, and the page starts over with a new session from the gateway.
    stack.simulator(lambda sim: setattr(sim, "drop_after_audio_deltas", 3))
    session_requests: list[str] = []

    def on_request(request: Request) -> None:
        if urlsplit(request.url).path == "/v1/session":
            session_requests.append(request.url)

    page.on("request", on_request)

    page.goto(stack.launch(mode="openai"))
    error = wait_for(
        page,
        "(() => { const e = document.getElementById('error-line');"
        " return !e.hidden && e.textContent.includes('upstream_closed') && e.textContent; })()",
        timeout_s=30,
        log=page_log,
    )
    assert "OpenAI Realtime session ended" in error
    # The new connection may talk again; it speaks the whole reply this time.
    stack.simulator(lambda sim: setattr(sim, "drop_after_audio_deltas", None))
    stack.simulator(lambda sim: sim.script(Say(text=REPLY, audio_ms=REPLY_MS, pace=True)))

    wait_for(page, "document.body.dataset.phase === 'connected'", timeout_s=15, log=page_log)
    wait_for(page, FINAL_ASSISTANT, timeout_s=30, log=page_log)
    assert stack.simulator(lambda sim: sim.connections) == 2
    assert len(session_requests) == 2
    assert body_data(page)["mode"] == "openai"
    assert page.locator("#error-line").is_hidden()


# -- livekit mode, LiveKit unreachable -----------------------------------------------------


def test_livekit_unreachable_falls_back_to_openai_and_completes_a_turn(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    stack.simulator(lambda sim: sim.script(Say(text=REPLY, audio_ms=REPLY_MS, pace=True)))
    fallback_reports: list[dict[str, Any]] = []

    def on_request(request: Request) -> None:
        if urlsplit(request.url).path == "/v1/session/fallback":
            fallback_reports.append(
                {"body": json.loads(request.post_data or "{}"), "headers": request.headers}
            )

    page.on("request", on_request)

    url = stack.launch(mode="livekit")
    launch_token = parse_qs(urlsplit(url).query)["launch"][0]
    page.goto(url)
    # The page's agent timeout is 8 s; an unreachable server fails sooner than that.
    wait_for(
        page,
        "document.body.dataset.fallbackReason !== '' && document.body.dataset.mode === 'openai'",
        timeout_s=10,
        log=page_log,
    )
    data = body_data(page)
    assert (data["mode"], data["fallbackReason"]) == ("openai", "livekit_connect_failed")

    wait_for(page, FINAL_ASSISTANT, timeout_s=30, log=page_log)
    wait_for_played_reply(page, page_log)
    status = page.locator("#status-line").inner_text()
    assert "mode openai · reason: fallback · fell back from livekit: livekit_connect_failed" in (
        status
    )
    assert stack.fallbacks_reported == 1
    [report] = fallback_reports
    assert report["body"]["reason"].startswith("livekit_connect_failed: LiveKit did not connect")
    assert report["headers"]["authorization"] == f"Bearer {launch_token}"


# -- hygiene -------------------------------------------------------------------------------


def test_the_launch_token_leaves_the_visible_url(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    url = stack.launch(mode="openai", session_id="launch-hygiene")
    token = parse_qs(urlsplit(url).query)["launch"][0]
    requests: list[Request] = []

    def on_request(request: Request) -> None:
        requests.append(request)

    page.on("request", on_request)

    page.goto(url)
    # The gateway runs in production: a session (and so a mode) only comes with the token.
    wait_for(page, "document.body.dataset.phase === 'connected'", timeout_s=10, log=page_log)

    href: str = page.evaluate("location.href")
    assert token not in href
    assert "launch=" not in href
    assert parse_qs(urlsplit(href).query) == {"session": ["launch-hygiene"], "mode": ["openai"]}
    assert token not in page.content()
    # Only the page load and the session request carry it; no asset gets it as a Referer.
    carrying = {
        urlsplit(r.url).path
        for r in requests
        if token in r.url or token in r.all_headers().get("referer", "")
    }
    assert carrying == {"/", "/v1/session"}


def test_disconnect_closes_the_relay_and_the_audio(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    page.goto(stack.launch(mode="openai"))
    wait_for(page, "document.body.dataset.phase === 'connected'", timeout_s=10, log=page_log)
    wait_for(page, "window.voicePage.voice.stats().sentSamples > 0", timeout_s=10, log=page_log)

    page.evaluate("window.voicePage.voice.disconnect()")

    sim = stack.realtime
    stack.loop.run(sim.wait_for(lambda: sim.open_connections == 0, within=5))
    assert body_data(page)["phase"] == "disconnected"
    assert page.evaluate("window.voicePage.voice.stats().sampleRate") is None  # audio closed
    assert stack.simulator(lambda s: s.connections) == 1
