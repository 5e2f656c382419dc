"""WAV-file audio I/O for an AgentSession without a room (`voicegw talk`, tests, benchmark).

`FileAudioInput` plays a recording into the session in real time (frames paced by the clock,
as a microphone would), then silence until closed. `FileAudioOutput` plays the agent's audio
out in simulated real time: it reports playback start and finish the way a room output does,
places every frame on the input's timeline, and remembers when each first non-silent sample
was played, which is what voice-to-voice latency is measured to.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

from .audio import Samples, Speaker

FRAME_MS = 20


class FileAudioInput(io.AudioInput):
    """Real-time frames of `samples`, then silence. `started_at` (time.perf_counter()) is
    when sample 0 was handed to the session: timeline offsets are relative to it."""

    def __init__(self, samples: Samples, sample_rate: int) -> None:
        super().__init__(label="wav-file")
        self._samples = samples
        self._rate = sample_rate
        self._step = sample_rate * FRAME_MS // 1000
        self._index = 0
        self.started_at: float | None = None
        self.finished = asyncio.Event()
        self._closed = False

    @property
    def position_s(self) -> float:
        return self._index * self._step / self._rate

    def close(self) -> None:
        self._closed = True

    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed:
            raise StopAsyncIteration
        if self.started_at is None:
            self.started_at = time.perf_counter()
        due = self.started_at + self._index * FRAME_MS / 1000
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        start = self._index * self._step
        chunk = self._samples[start : start + self._step]
        if len(chunk) < self._step:
            self.finished.set()
            chunk = np.concatenate([chunk, np.zeros(self._step - len(chunk), dtype=np.int16)])
        self._index += 1
        return rtc.AudioFrame(
            data=chunk.tobytes(),
            sample_rate=self._rate,
            num_channels=1,
            samples_per_channel=self._step,
        )


class FileAudioOutput(io.AudioOutput):
    """The virtual loudspeaker (`voicegw.lab.audio.Speaker`) with a room output's playback
    events."""

    def __init__(self, *, sample_rate: int = 24_000) -> None:
        super().__init__(
            label="wav-file",
            capabilities=io.AudioOutputCapabilities(pause=False),
            sample_rate=sample_rate,
        )
        self.origin: float | None = None
        self._speaker = Speaker(sample_rate)
        self._finish_task: asyncio.Task[None] | None = None
        self._interrupt = asyncio.Event()

    @property
    def sounds(self) -> list[float]:
        """perf_counter() of each segment's first audible sample."""
        return self._speaker.sounds

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        now = time.perf_counter()
        if self._finish_task is not None and not self._finish_task.done():
            await self._finish_task
        samples = np.frombuffer(bytes(frame.data), dtype=np.int16)
        if self._speaker.play(samples, now):
            self.on_playback_started(created_at=time.time())

    def flush(self) -> None:
        super().flush()
        segment = self._speaker.end_segment()
        if segment is None:
            return
        self._interrupt.clear()
        self._finish_task = asyncio.create_task(self._play_out(*segment))

    def clear_buffer(self) -> None:
        self._interrupt.set()

    async def _play_out(self, start: float, pushed: float) -> None:
        remaining = start + pushed - time.perf_counter()
        interrupted = False
        if remaining > 0:
            try:
                await asyncio.wait_for(self._interrupt.wait(), remaining)
                interrupted = True
            except TimeoutError:
                pass
        played = min(pushed, time.perf_counter() - start) if interrupted else pushed
        self.on_playback_finished(playback_position=played, interrupted=interrupted)

    async def aclose(self) -> None:
        if self._finish_task is not None and not self._finish_task.done():
            self._interrupt.set()
            await self._finish_task

    def render(self, origin: float, duration_s: float) -> Samples:
        """Everything played, placed on a timeline starting at `origin` (perf_counter)."""
        return self._speaker.render(origin, duration_s)
