"""Speculation: start the answer before the final transcript, only when it is likely to stand.

LiveKit Agents 1.8.9 already owns the mechanics (agent_activity.py, audio_recognition.py): a
`PREFLIGHT_TRANSCRIPT` STT event starts a preemptive generation (LLM, and TTS with
`preemptive_tts`) that is never played before the turn is committed; an interim that is no
longer equivalent to it cancels it (`on_preflight_stale`); a final transcript that differs
from it starts a new one on the final words; and at the end of the turn a generation is only
played if its transcript is equivalent to the final one (words compared case- and
punctuation-blind), else it is cancelled and the reply is generated for the final transcript.
So a stale answer is never spoken; what we decide is *when* to hand it a preflight.

`SpeculationGate` decides that in the agent's `stt_node` (a public hook): it passes the STT's
events through and watches the audio going to the STT. Policies (`SPECULATION`):

- `pause`: the latest interim becomes a preflight when the user has been quiet for
  `pause_s` (60 ms by default: longer than most gaps inside words, which reach 50 ms in
  espeak-ng's speech, and far shorter than Silero's 300 ms end of speech or the STT's final
  at ~150 ms), or when Silero reports the end of speech before the STT's final has come.
  `bench/pipeline_latency.py` measured 50 / 60 / 70 ms at the published profile: 488 / 503 /
  540 ms v2v p50 for 2.5 / 1.8 / 1.8 LLM requests per utterance. Each interim is speculated
  on at most once, so a pause inside a sentence costs at most one attempt, and an attempt
  outlives pauses that add no words.
- `interims`: every interim becomes a preflight (the old `PREEMPTIVE_ON_INTERIMS`): fastest,
  and an LLM and TTS request per interim.
- `off`: only LiveKit's own preemption on the final transcript.

One more thing keeps a good guess alive: LiveKit restarts the generation when the final's text
is not *identical* to the preflight's, though it would then accept the old one as equivalent.
When the final's words equal the speculated interim's (case and punctuation aside), the final
is passed on with the interim's text, so the speculation is used instead of redone; the
conversation keeps the words the answer was generated from.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from livekit import rtc
from livekit.agents import stt, tokenize

Policy = Literal["off", "pause", "interims"]

_WINDOW_S = 0.01
_ABS_QUIET = 0.003  # RMS (full scale 1.0), about -50 dBFS: quiet whatever the noise floor
_BELOW_PEAK = 0.03  # -30 dB under the loudest window of the speech run is quiet too
_ABOVE_FLOOR = 2.0  # +6 dB over the noise floor is needed to count as loud
_FLOOR_WINDOWS = 300  # the noise floor is the quietest window of the last 3 s
_MIN_SPEECH_S = 0.2  # a pause only counts after this much speech


@dataclass(frozen=True)
class SpeculationOptions:
    policy: Policy = "pause"
    pause_s: float = 0.06


def words_of(text: str) -> list[str]:
    """The words LiveKit compares transcripts by: case-folded, punctuation dropped."""
    return [
        word.casefold()
        for word, _, _ in tokenize.basic.split_words(
            text, ignore_punctuation=True, split_character=True
        )
    ]


class PauseDetector:
    """Says when a speaker has been quiet for `pause_s` after at least `_MIN_SPEECH_S` of
    speech, from the audio level in 10 ms windows against the noise floor (the quietest window
    of the last 3 s: speech has quiet moments, so it never becomes the floor; a voice from the
    very first frame is only heard as one once it has paused). It only has to beat the STT's
    final transcript, not replace Silero: a wrong pause costs one speculative attempt, never a
    cut-off."""

    def __init__(self, pause_s: float) -> None:
        self._pause_s = pause_s
        self._recent: deque[float] = deque(maxlen=_FLOOR_WINDOWS)
        self._peak = 0.0
        self._speech_s = 0.0
        self._quiet_s = 0.0
        self._fired = False

    def feed(self, frame: rtc.AudioFrame) -> bool:
        """Take one frame; True when it completes a pause."""
        samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768
        step = max(1, round(frame.sample_rate * frame.num_channels * _WINDOW_S))
        paused = False
        for start in range(0, len(samples), step):
            window = samples[start : start + step]
            paused |= self._window(math.sqrt(float(np.mean(window * window))), len(window) / step)
        return paused

    def _window(self, rms: float, fraction: float) -> bool:
        self._recent.append(rms)
        floor = min(self._recent)
        loud = rms > max(_ABS_QUIET, floor * _ABOVE_FLOOR, self._peak * _BELOW_PEAK)
        seconds = _WINDOW_S * fraction
        if loud:
            self._peak = max(self._peak, rms)
            self._speech_s += seconds
            self._quiet_s = 0.0
            self._fired = False
            return False
        self._quiet_s += seconds
        if self._quiet_s >= 1.0:  # the next utterance starts from nothing
            self._speech_s, self._peak = 0.0, 0.0
        if self._fired or self._speech_s < _MIN_SPEECH_S or self._quiet_s < self._pause_s:
            return False
        self._fired = True
        return True

    def silence(self) -> None:
        """The speaker is done (Silero ended the speech): the next utterance starts afresh."""
        self._speech_s, self._peak = 0.0, 0.0


class SpeculationGate:
    """The STT events for one `stt_node` run, with preflights added by the policy."""

    def __init__(self, options: SpeculationOptions) -> None:
        self._options = options
        self._pauses = PauseDetector(options.pause_s)
        self._queue: asyncio.Queue[stt.SpeechEvent | str | None] = asyncio.Queue()
        self._interim: stt.SpeechEvent | None = None  # the latest, since the last final
        self._speculated: str | None = None  # the text of the last preflight
        self._live = False  # no interim since has changed its words
        self.preflights = 0

    async def listen(self, audio: AsyncIterable[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
        """`audio` on its way to the STT, watched for pauses."""
        async for frame in audio:
            if self._options.policy == "pause" and self._pauses.feed(frame):
                self._speculate()
            yield frame

    def speech_ended(self) -> None:
        """Silero reported the end of speech: if the STT's final is not here yet, the latest
        interim is the best guess there is."""
        self._pauses.silence()
        if self._options.policy == "pause":
            self._speculate()

    async def run(
        self, events: AsyncIterable[stt.SpeechEvent | str]
    ) -> AsyncIterator[stt.SpeechEvent | str]:
        """`events` passed through, with the policy's preflights among them."""
        task = asyncio.create_task(self._pump(events))
        try:
            while (event := await self._queue.get()) is not None:
                yield event
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if task.done() and not task.cancelled() and (error := task.exception()):
                raise error

    async def _pump(self, events: AsyncIterable[stt.SpeechEvent | str]) -> None:
        try:
            async for event in events:
                self._queue.put_nowait(self._on_event(event))
        finally:
            self._queue.put_nowait(None)

    def _on_event(self, event: stt.SpeechEvent | str) -> stt.SpeechEvent | str:
        if not isinstance(event, stt.SpeechEvent) or not event.alternatives:
            return event
        text = event.alternatives[0].text
        if event.type == stt.SpeechEventType.INTERIM_TRANSCRIPT and text.strip():
            self._interim = event
            if self._options.policy == "interims":
                self._preflight(text)
                return dataclasses.replace(event, type=stt.SpeechEventType.PREFLIGHT_TRANSCRIPT)
            if self._speculated is not None and words_of(text) != words_of(self._speculated):
                self._live = False  # LiveKit cancels the attempt (`on_preflight_stale`)
        elif event.type == stt.SpeechEventType.FINAL_TRANSCRIPT and text.strip():
            speculated, live = self._speculated, self._live
            self._interim, self._speculated, self._live = None, None, False
            if live and speculated is not None and words_of(text) == words_of(speculated):
                # the same words: keep the attempt LiveKit would otherwise redo
                spoken = dataclasses.replace(event.alternatives[0], text=speculated)
                return dataclasses.replace(event, alternatives=[spoken, *event.alternatives[1:]])
        return event

    def _speculate(self) -> None:
        interim = self._interim
        if interim is None:
            return
        text = interim.alternatives[0].text
        words = words_of(text)
        if not words or (self._speculated is not None and words == words_of(self._speculated)):
            return  # already speculated on these words (and still live, or cancelled for good)
        self._preflight(text)
        self._queue.put_nowait(
            dataclasses.replace(
                interim, type=stt.SpeechEventType.PREFLIGHT_TRANSCRIPT, created_at=time.time()
            )
        )

    def _preflight(self, text: str) -> None:
        self._speculated, self._live = text, True
        self.preflights += 1
