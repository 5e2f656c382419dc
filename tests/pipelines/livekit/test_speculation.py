"""Speculation before the final transcript: when the gate hands LiveKit a preflight (a pause
after speech, Silero's end of speech before the final, or every interim), that a guess whose
words stand is used rather than redone, and that a final that differs is what gets answered.

The first tests drive the gate alone with synthetic events and audio; the last ones run the
whole pipeline (real Silero on espeak-ng speech, the real plugins, the simulators) with a
Deepgram simulator whose final differs from its interims.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt
from livekit.agents.language import LanguageCode
from livekit.agents.vad import VAD

from pipelines.contracts import TranscriptAssistant, TranscriptUser
from pipelines.livekit.speculation import PauseDetector, SpeculationGate, SpeculationOptions
from pipelines.livekit.state import RecordingPublisher
from voicegw.lab import audio
from voicegw.lab.talk_livekit import talk

from .conftest import PLAIN_TEXT, Providers

INTERIM, FINAL, PREFLIGHT = (
    stt.SpeechEventType.INTERIM_TRANSCRIPT,
    stt.SpeechEventType.FINAL_TRANSCRIPT,
    stt.SpeechEventType.PREFLIGHT_TRANSCRIPT,
)
RATE = 16000


def event(kind: stt.SpeechEventType, text: str) -> stt.SpeechEvent:
    return stt.SpeechEvent(type=kind, alternatives=[stt.SpeechData(LanguageCode("en"), text)])


def frames(seconds: float, level: float) -> list[rtc.AudioFrame]:
    """10 ms frames of a 220 Hz tone at `level` (RMS, full scale 1), or silence at 0."""
    t = np.arange(round(seconds * RATE)) / RATE
    pcm = (np.sqrt(2) * level * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    step = RATE // 100
    return [
        rtc.AudioFrame(pcm[i : i + step].tobytes(), RATE, 1, step) for i in range(0, len(pcm), step)
    ]


SPEECH, QUIET = 0.1, 0.0


class Driver:
    """Feeds a gate STT events and audio, and reads what it passes on."""

    def __init__(self, options: SpeculationOptions) -> None:
        self.gate = SpeculationGate(options)
        self._events: asyncio.Queue[stt.SpeechEvent | None] = asyncio.Queue()
        self.out = self.gate.run(self._source())
        self._lead = frames(0.2, QUIET)  # a microphone is quiet before anyone speaks

    async def _source(self) -> AsyncIterator[stt.SpeechEvent]:
        while (item := await self._events.get()) is not None:
            yield item

    async def send(self, kind: stt.SpeechEventType, text: str) -> stt.SpeechEvent:
        """Send one STT event and return what comes out for it."""
        self._events.put_nowait(event(kind, text))
        return await self.next()

    async def hear(self, *parts: list[rtc.AudioFrame]) -> None:
        lead, self._lead = self._lead, []

        async def audio_in() -> AsyncIterator[rtc.AudioFrame]:
            for part in (lead, *parts):
                for frame in part:
                    yield frame

        async for _ in self.gate.listen(audio_in()):
            pass

    async def next(self) -> stt.SpeechEvent:
        async with asyncio.timeout(2):
            item = await anext(self.out)
        assert isinstance(item, stt.SpeechEvent)
        return item

    async def close(self) -> list[stt.SpeechEvent | str]:
        """End the STT stream; whatever was still to come."""
        self._events.put_nowait(None)
        return [item async for item in self.out]


def text_of(item: stt.SpeechEvent) -> str:
    return item.alternatives[0].text


async def test_a_pause_after_speech_speculates_on_the_latest_interim_once() -> None:
    driver = Driver(SpeculationOptions("pause", pause_s=0.05))
    assert (await driver.send(INTERIM, "what can you")).type == INTERIM
    await driver.hear(frames(0.4, SPEECH), frames(0.03, QUIET))  # a gap inside a word
    assert (await driver.send(INTERIM, "what can you do")).type == INTERIM
    await driver.hear(frames(0.3, SPEECH), frames(0.06, QUIET))
    preflight = await driver.next()
    assert (preflight.type, text_of(preflight)) == (PREFLIGHT, "what can you do")
    # the same words again after another pause: nothing new to speculate on
    await driver.hear(frames(0.3, SPEECH), frames(0.1, QUIET))
    final = await driver.send(FINAL, "What can you do?")
    # the same words as the guess: LiveKit is given the guess's text, so it keeps the guess
    assert (final.type, text_of(final)) == (FINAL, "what can you do")
    assert await driver.close() == []
    assert driver.gate.preflights == 1


async def test_a_final_with_other_words_is_passed_on_as_it_is() -> None:
    driver = Driver(SpeculationOptions("pause", pause_s=0.05))
    await driver.send(INTERIM, "what can you do for me")
    await driver.hear(frames(0.5, SPEECH), frames(0.08, QUIET))
    assert text_of(await driver.next()) == "what can you do for me"
    for final in ("What can you do for you?", "What can you do for me not?"):
        assert text_of(await driver.send(FINAL, final)) == final
        await driver.send(INTERIM, "what can you do for me")
        await driver.hear(frames(0.5, SPEECH), frames(0.08, QUIET))
        assert text_of(await driver.next()) == "what can you do for me"
    await driver.close()


async def test_an_interim_that_moved_on_ends_the_guess() -> None:
    driver = Driver(SpeculationOptions("pause", pause_s=0.05))
    await driver.send(INTERIM, "send the report")
    await driver.hear(frames(0.5, SPEECH), frames(0.08, QUIET))
    assert (await driver.next()).type == PREFLIGHT
    # the user went on: LiveKit cancels the guess, so a final with the guessed words must not
    # pretend it is still there (LiveKit then answers the final itself)
    await driver.send(INTERIM, "send the report to Bob")
    assert text_of(await driver.send(FINAL, "Send the report.")) == "Send the report."
    await driver.close()


async def test_no_pause_before_enough_speech_and_none_without_an_interim() -> None:
    driver = Driver(SpeculationOptions("pause", pause_s=0.05))
    await driver.hear(frames(0.5, SPEECH), frames(0.2, QUIET))  # no interim yet: nothing
    await driver.send(INTERIM, "hi")
    await driver.hear(frames(1.2, QUIET), frames(0.1, SPEECH), frames(0.2, QUIET))  # too short
    assert await driver.close() == []
    assert driver.gate.preflights == 0


async def test_silero_ending_the_speech_before_the_final_speculates() -> None:
    driver = Driver(SpeculationOptions("pause", pause_s=0.05))
    await driver.send(INTERIM, "who owns the project")
    driver.gate.speech_ended()  # e.g. too much noise for the pause detector
    assert (await driver.next()).type == PREFLIGHT
    await driver.send(FINAL, "Who owns the project?")
    driver.gate.speech_ended()  # the final is in: nothing left to guess
    assert await driver.close() == []


async def test_every_interim_policy_and_off() -> None:
    driver = Driver(SpeculationOptions("interims"))
    first = await driver.send(INTERIM, "what is")
    second = await driver.send(INTERIM, "what is on my calendar")
    assert [(e.type, text_of(e)) for e in (first, second)] == [
        (PREFLIGHT, "what is"),
        (PREFLIGHT, "what is on my calendar"),
    ]
    assert text_of(await driver.send(FINAL, "What is on my calendar?")) == "what is on my calendar"
    await driver.close()
    # `pause` never turns an interim itself into a preflight
    driver = Driver(SpeculationOptions("pause"))
    assert (await driver.send(INTERIM, "what is")).type == INTERIM
    await driver.close()


def test_pause_detector_follows_the_noise_floor() -> None:
    detector = PauseDetector(pause_s=0.05)
    noise, speech = 0.02, 0.2  # -34 dBFS of room noise under -14 dBFS of speech

    def fed(part: list[rtc.AudioFrame]) -> int:
        return sum(detector.feed(frame) for frame in part)

    assert fed(frames(4.0, noise)) == 0  # noise alone is never speech
    assert fed(frames(0.5, speech)) == 0
    assert fed(frames(0.04, noise)) == 0  # shorter than the pause
    assert fed(frames(0.2, speech)) == 0
    assert fed(frames(0.3, noise)) == 1  # one pause, however long
    assert fed(frames(0.05, speech) + frames(0.1, noise)) == 1  # a new pause after more speech


# -- the whole pipeline ---------------------------------------------------------------------


def asked(providers: Providers) -> list[str]:
    """The last user message of every request the model got."""
    return [
        str(next(m["content"] for m in reversed(r["messages"]) if m["role"] == "user"))
        for r in providers.groq.received
    ]


async def run_turn(
    providers: Providers, one_plain: audio.Conversation, vad: VAD, http: aiohttp.ClientSession
) -> tuple[list[str], list[str], int]:
    """One turn with the default speculation and a final well after the speech ends; the
    replies the page was told of, the user's final transcripts, and the sounds played."""
    providers.deepgram.final_delay_s = 0.4  # the guess starts well before the final
    providers.deepgram.seconds_per_word = 0.15  # every interim word is out before speech ends
    publisher = RecordingPublisher()
    result = await talk(
        providers.options,
        one_plain.samples,
        one_plain.sample_rate,
        vad=vad,
        http_session=http,
        publisher=publisher,
        session_id="sess-speculation",
        utterances=one_plain.utterances,
    )
    # what the meter counted is what the providers were asked
    assert result.usage.llm_requests == len(providers.groq.received)
    sent = sum(len(r["input"].strip()) for r in providers.chatterbox.received)
    assert result.usage.tts_characters == sent
    replies = [m.text for m in publisher.messages if isinstance(m, TranscriptAssistant)]
    users = [m.text for m in publisher.messages if isinstance(m, TranscriptUser) and m.final]
    return replies, users, len(result.sounds)


@pytest.mark.parametrize(
    "final",
    ["What can you do for you?", "What can you do for me? Not."],
    ids=["a-word-changes", "a-negation-is-added"],
)
async def test_never_a_stale_answer(
    providers: Providers,
    one_plain: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
    final: str,
) -> None:
    interim = "what can you do for me"
    providers.deepgram.transcripts[:] = [final]
    providers.deepgram.interims[:] = [interim]
    replies, users, sounds = await run_turn(providers, one_plain, vad, http)

    assert interim in asked(providers), "the model was asked on the interim before the final"
    assert asked(providers)[-1] == final
    assert users == [final]
    assert replies == [f"(simulated) You said: {final}"]  # the final's answer, and only it
    assert sounds == 1


async def test_a_guess_whose_words_stand_is_used_not_redone(
    providers: Providers, one_plain: audio.Conversation, vad: VAD, http: aiohttp.ClientSession
) -> None:
    interim = "what can you do for me"
    assert PLAIN_TEXT == "What can you do for me?"  # the same words, capitalised and punctuated
    providers.deepgram.interims[:] = [interim]
    replies, users, sounds = await run_turn(providers, one_plain, vad, http)

    assert asked(providers).count(interim) == 1  # asked once, on the guess, and never again
    assert PLAIN_TEXT not in asked(providers)
    assert users == [interim]  # the words the answer was made from
    assert replies == [f"(simulated) You said: {interim}"]
    assert sounds == 1


async def test_without_speculation_the_model_waits_for_the_final(
    providers: Providers, one_plain: audio.Conversation, vad: VAD, http: aiohttp.ClientSession
) -> None:
    providers.options = dataclasses.replace(
        providers.options, speculation=SpeculationOptions("off")
    )
    providers.deepgram.interims[:] = ["what can you do for me"]
    replies, users, _ = await run_turn(providers, one_plain, vad, http)
    assert asked(providers) == [PLAIN_TEXT]
    assert replies == [f"(simulated) You said: {PLAIN_TEXT}"] and users == [PLAIN_TEXT]
