"""What the streaming TTS simulators (Cartesia, ElevenLabs) share: their knobs and records,
the clock that paces a generation's audio, and the audio itself.

Knobs: `ttfb_s` (first chunk after the request, or after the first text to speak),
`chunk_ms`, `realtime_factor` (the chunks after the first at that many times real time; 0: as
fast as the socket takes them), `ms_per_char` (tone length), `speak` (espeak-ng speech instead
of a tone), `fail_next` (fail that many generations with `fail_status`), `drop_next` (drop the
connection after that many generations' first chunk). Records: `syntheses` (one per
generation), `received`, `rejected`, `connections`, and the counters `requests` and
`characters` that benchmarks price.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import av
import numpy as np
import numpy.typing as npt

from .speech import have_espeak, speak

MS_PER_CHAR = 55

Samples = npt.NDArray[np.float32]
Outcome = Literal["open", "done", "cancelled", "failed", "dropped"]


@dataclass
class Timing:
    """When one generation's chunks go out: the first `ttfb_s` after `started`, the rest at
    `realtime_factor` times real time. `first_audio_s` is what the simulator's clock saw."""

    ttfb_s: float
    realtime_factor: float
    started: float = field(default_factory=time.perf_counter)
    first_audio_s: float | None = None
    audio_s: float = 0.0

    async def before_chunk(self) -> None:
        now = time.perf_counter()
        if self.first_audio_s is None:
            if self.ttfb_s > now - self.started:
                await asyncio.sleep(self.ttfb_s - (now - self.started))
            self.first_audio_s = time.perf_counter() - self.started
            return
        due = self.started + self.first_audio_s + self.audio_s * self.realtime_factor
        if due > now:
            await asyncio.sleep(due - now)

    def sent(self, seconds: float) -> None:
        self.audio_s += seconds


@dataclass(kw_only=True)
class Generation:
    """How a generation went: `open` until it ends, when `ended` is set."""

    outcome: Outcome = "open"
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    def end(self, outcome: Outcome) -> None:
        """Record the ending (the first one counts) and wake whoever waits for it."""
        if self.outcome == "open":
            self.outcome = outcome
        self.ended.set()


SynthesisT = TypeVar("SynthesisT", bound=Generation)


@dataclass
class TtsKnobs(Generic[SynthesisT]):
    """The knobs and records every streaming TTS simulator has (see the module docstring)."""

    ttfb_s: float = 0.0
    chunk_ms: int = 40
    realtime_factor: float = 0.0
    ms_per_char: float = MS_PER_CHAR
    speak: bool = False
    fail_next: int = 0
    fail_status: int = 500
    drop_next: int = 0
    syntheses: list[SynthesisT] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    connections: list[dict[str, str]] = field(default_factory=list)
    characters: int = 0  # characters whose synthesis started (whitespace at the ends excluded)

    @property
    def requests(self) -> int:
        """Generations asked for (HTTP requests plus WebSocket contexts)."""
        return len(self.syntheses)

    def take(self, knob: Literal["fail_next", "drop_next"]) -> bool:
        """Whether this generation fails (or drops), counting the knob down."""
        if getattr(self, knob) <= 0:
            return False
        setattr(self, knob, getattr(self, knob) - 1)
        return True

    def timing(self) -> Timing:
        """The clock of a generation that starts now."""
        return Timing(self.ttfb_s, self.realtime_factor)

    async def paced(
        self, timing: Timing, samples: Samples, sample_rate: int
    ) -> AsyncIterator[tuple[int, int]]:
        """(start, end) of each `chunk_ms` piece of `samples`, when `timing` releases it."""
        step = max(1, sample_rate * self.chunk_ms // 1000)
        for start in range(0, len(samples), step):
            end = min(len(samples), start + step)
            await timing.before_chunk()
            yield start, end
            timing.sent((end - start) / sample_rate)

    def pieces(self, samples: Samples, sample_rate: int) -> int:
        """How many pieces `paced` cuts `samples` into."""
        return -(-len(samples) // max(1, sample_rate * self.chunk_ms // 1000))

    async def render(self, text: str, sample_rate: int) -> Samples:
        """`text` as audio, counted as synthesized characters."""
        self.characters += len(text.strip())
        return await render(text, sample_rate, ms_per_char=self.ms_per_char, spoken=self.speak)


async def render(text: str, sample_rate: int, *, ms_per_char: float, spoken: bool) -> Samples:
    """Audible mono audio in [-1, 1] for `text`: espeak-ng speech when `spoken` (and
    installed), else a tone of `ms_per_char` per character that is never silent."""
    if spoken and have_espeak():
        with contextlib.suppress(ValueError):  # nothing pronounceable: fall back to the tone
            pcm = await asyncio.to_thread(_spoken, text.strip(), sample_rate)
            return (pcm / 32768).astype(np.float32)
    t = np.arange(max(1, round(len(text) * ms_per_char / 1000 * sample_rate))) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.05).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _spoken(text: str, sample_rate: int) -> npt.NDArray[np.int16]:
    return speak(text, sample_rate=sample_rate)


def encode(samples: Samples, encoding: str) -> bytes:
    if encoding == "pcm_f32le":
        return samples.astype("<f4").tobytes()
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def mp3(samples: Samples, rate: int, kbps: int) -> bytes:
    """`samples` as one MP3 stream (PyAV's libmp3lame)."""
    encoder = av.CodecContext.create("libmp3lame", "w")
    assert isinstance(encoder, av.AudioCodecContext)
    encoder.sample_rate, encoder.layout, encoder.format = rate, "mono", "s16p"
    encoder.bit_rate = kbps * 1000
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16p", layout="mono")
    frame.sample_rate = rate
    return b"".join(bytes(packet) for packet in [*encoder.encode(frame), *encoder.encode(None)])


def split(data: bytes, count: int) -> Iterator[bytes]:
    """`data` in `count` nearly equal consecutive pieces."""
    for index in range(count):
        yield data[len(data) * index // count : len(data) * (index + 1) // count]
