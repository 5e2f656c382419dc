"""The real livekit-client (the vendored build the page uses) in Debian Chromium joins a room
on the stand-in, publishes its fake microphone and hears a Python rtc participant; the Python
participant hears the browser. All inside the test's network namespace: Chromium is launched
by Playwright from the test's thread, so it is born there."""

from __future__ import annotations

import contextlib
import math
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Page, async_playwright
from starlette.applications import Starlette
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Route

from simulators.livekit_server import LiveKitServer
from simulators.server import serve
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS

from .conftest import ROOT, RtcParticipant, token

pytestmark = [pytest.mark.netns, pytest.mark.browser]

VENDOR = ROOT / "client-config" / "vendor" / "livekit-client.esm.mjs"
LOUD = 0.02

PAGE = """<!doctype html><meta charset="utf-8"><title>stand-in check</title>
<script type="module">
import { Room, RoomEvent } from "/livekit-client.esm.mjs";
const params = new URLSearchParams(location.search);
const state = (window.state = { joined: false, published: false, peak: 0, from: "",
  errors: [], joinMs: 0, connectedMs: 0, data: [] });
const room = new Room();
room.on(RoomEvent.TrackSubscribed, (track, publication, participant) => {
  if (track.kind !== "audio") return;
  document.body.appendChild(track.attach());
  const context = new AudioContext();
  const source = context.createMediaStreamSource(new MediaStream([track.mediaStreamTrack]));
  const analyser = context.createAnalyser();
  source.connect(analyser);
  const buffer = new Float32Array(analyser.fftSize);
  setInterval(() => {
    analyser.getFloatTimeDomainData(buffer);
    for (const v of buffer) state.peak = Math.max(state.peak, Math.abs(v));
    state.from = participant.identity;
  }, 20);
});
room.on(RoomEvent.DataReceived, (payload, participant, kind, topic) => {
  state.data.push({ from: participant?.identity, topic, text: new TextDecoder().decode(payload) });
});
try {
  const started = performance.now();
  await room.connect(params.get("url"), params.get("token"));
  state.joinMs = performance.now() - started;
  state.joined = true;
  await room.localParticipant.setMicrophoneEnabled(true);
  state.published = true;
  await room.localParticipant.publishData(new TextEncoder().encode("hello from chromium"),
    { reliable: true, topic: "voice.state" });
} catch (err) {
  state.errors.push(String(err));
}
</script>"""


def tone_wav(path: Path, freq: float = 520.0, seconds: float = 4.0) -> Path:
    rate = 48000
    t = np.arange(int(rate * seconds)) / rate
    samples = (np.sin(2 * math.pi * freq * t) * 0.4 * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.tobytes())
    return path


@contextlib.asynccontextmanager
async def page_server() -> AsyncIterator[str]:
    async def index(request: Any) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def module(request: Any) -> FileResponse:
        return FileResponse(VENDOR, media_type="text/javascript")

    app = Starlette(routes=[Route("/", index), Route("/livekit-client.esm.mjs", module)])
    async with serve(app) as server:  # the namespace's own 127.0.0.1
        yield server.url


async def wait_page(page: Page, expression: str, within: float = 30.0) -> Any:
    try:
        handle = await page.wait_for_function(expression, timeout=within * 1000)
    except Exception as exc:
        state = await page.evaluate("JSON.stringify(window.state)")
        raise AssertionError(f"timed out waiting for {expression}: {state}") from exc
    return await handle.json_value()


async def test_livekit_client_in_chromium_joins_publishes_and_hears(
    ns_server: LiveKitServer, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"missing {CHROMIUM}: run `make system-deps` (make test does)")
    wav = tone_wav(tmp_path / "tone.wav")
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}"]
    async with (
        page_server() as origin,
        RtcParticipant.start(ns_server.ws_url, token("bot"), "bot") as bot,
        async_playwright() as playwright,
    ):
        await bot.wait_for("connected")
        await bot.command("publish_sine", freq=330, seconds=20)
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
        try:
            page = await browser.new_page()
            url = f"{origin}/?url={ns_server.ws_url}&token={token('browser')}"
            await page.goto(url)
            await wait_page(
                page, "window.state && (window.state.published || window.state.errors.length)"
            )
            state = await page.evaluate("window.state")
            assert state["errors"] == [] and state["joined"]
            room = ns_server.rooms.get("room-1")
            assert room.participants["browser"].single_pc  # livekit-client took /rtc/v1

            peak = await wait_page(page, f"window.state.peak > {LOUD} && window.state.peak")
            assert peak > LOUD and await page.evaluate("window.state.from") == "bot"

            heard = await bot.wait_for(
                "audio", lambda e: e["participant"] == "browser" and e["peak"] > LOUD * 32767
            )
            assert heard["frames"] > 0
            data = await bot.wait_for("data", lambda e: e["participant"] == "browser")
            assert (data["topic"], data["payload"]) == ("voice.state", "hello from chromium")
        finally:
            await browser.close()
