"""The capture worklet in an OfflineAudioContext: whatever the context's sample rate, the
microphone leaves as pcm16 at 24 kHz in 20 ms frames, at the same pitch."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page

from .conftest import Stack

pytestmark = pytest.mark.browser

CAPTURE = """async (rate) => {
  const seconds = 1;
  const context = new OfflineAudioContext({ numberOfChannels: 1, length: rate * seconds,
                                            sampleRate: rate });
  await context.audioWorklet.addModule('/static/audio-worklets.js');
  const tone = new OscillatorNode(context, { frequency: 440 });
  const capture = new AudioWorkletNode(context, 'pcm-capture', {
    numberOfOutputs: 1, outputChannelCount: [1], processorOptions: { frameMs: 20 } });
  const frames = [];
  capture.port.onmessage = (event) => frames.push(event.data);
  tone.connect(capture).connect(context.destination);
  tone.start();
  await context.startRendering();
  // Frames travel from the audio thread by message: let them land (49 or 50 of them).
  for (let i = 0; i < 100 && frames.length < 49; i++) await new Promise((r) => setTimeout(r, 20));
  const samples = frames.flatMap((frame) => Array.from(frame));
  let crossings = 0;
  for (let i = 1; i < samples.length; i++) {
    if ((samples[i - 1] < 0) !== (samples[i] < 0)) crossings += 1;
  }
  return {
    frameSizes: [...new Set(frames.map((frame) => frame.length))],
    samples: samples.length,
    crossings,
    peak: Math.max(...samples.map(Math.abs)),
  };
}"""


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_capture_resamples_to_24_khz_in_20_ms_frames(stack: Stack, page: Page, rate: int) -> None:
    page.goto(f"{stack.gateway.url}/healthz")  # any page of the gateway's origin
    result: dict[str, Any] = page.evaluate(CAPTURE, rate)

    assert result["frameSizes"] == [480]
    # One second of audio is 24,000 samples: 50 frames, or 49 when the resampler's phase leaves
    # the last one a sample short.
    assert 24000 - 480 <= result["samples"] <= 24000
    # 440 Hz crosses zero 880 times a second: the pitch survives the resampling.
    assert result["crossings"] == pytest.approx(880 * result["samples"] / 24000, abs=4)
    assert result["peak"] > 0.9 * 32767  # full scale in, full scale out
