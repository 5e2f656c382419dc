"""The Deepgram simulator refuses what Deepgram refuses (a wrong key, before any stream), and
the real plugin (livekit-plugins-deepgram) sees the refusal without the key in it; scripted
interims can say other words than the final, as a recogniser that changes its mind."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError
from livekit.agents.stt import SpeechEventType
from livekit.plugins import deepgram

from simulators.deepgram import DeepgramSimulator
from simulators.server import serve

NO_RETRY = APIConnectOptions(max_retry=0, retry_interval=0.1, timeout=2.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_deepgram_refuses_a_wrong_key(http: aiohttp.ClientSession) -> None:
    sim = DeepgramSimulator()
    async with serve(sim.app) as server:
        stt = deepgram.STT(
            api_key="wrong-key-42", base_url=f"{server.url}/v1/listen", http_session=http
        )
        stream = stt.stream(conn_options=NO_RETRY)
        stream.push_frame(
            rtc.AudioFrame(
                data=b"\0\0" * 160, sample_rate=16000, num_channels=1, samples_per_channel=160
            )
        )
        with pytest.raises((APIStatusError, APIConnectionError)) as caught:
            async for _ in stream:
                pass
        await stream.aclose()
        await stt.aclose()
    assert "wrong-key-42" not in repr(caught.value)
    assert sim.rejected == ["Authorization must be 'Token <api key>'"]
    assert sim.connections == []


def _frames(seconds: float, *, loud: bool) -> list[rtc.AudioFrame]:
    rate, step = 16000, 160
    t = np.arange(round(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767 * loud).astype(np.int16)
    return [
        rtc.AudioFrame(
            data=pcm[i : i + step].tobytes(),
            sample_rate=rate,
            num_channels=1,
            samples_per_channel=step,
        )
        for i in range(0, len(pcm), step)
    ]


async def test_interims_can_say_other_words_than_the_final(http: aiohttp.ClientSession) -> None:
    sim = DeepgramSimulator(
        transcripts=["What can you do for you?"],
        interims=["what can you do for me"],
        interim_every_s=0.25,
    )
    async with serve(sim.app) as server:
        url = f"{server.url}/v1/listen"
        stt = deepgram.STT(api_key=sim.api_key, base_url=url, http_session=http)
        stream = stt.stream(conn_options=NO_RETRY)
        for frame in _frames(2.0, loud=True) + _frames(0.5, loud=False):
            stream.push_frame(frame)
        interims: list[str] = []
        finals: list[str] = []
        async with asyncio.timeout(10):
            async for event in stream:
                text = event.alternatives[0].text if event.alternatives else ""
                if event.type == SpeechEventType.INTERIM_TRANSCRIPT:
                    interims.append(text)
                elif event.type == SpeechEventType.FINAL_TRANSCRIPT:
                    finals.append(text)
                    break
        await stream.aclose()
        await stt.aclose()
    # an interim every 0.25 s of speech, each revealing more of the interim words
    assert len(interims) >= 6
    assert all("what can you do for me".startswith(text) for text in interims)
    assert interims[-1] == "what can you do for me"
    assert finals == ["What can you do for you?"]
    assert sim.finals == finals


@pytest.mark.parametrize("interims", [None, "please send an email to bob|about the budge"])
async def test_an_item_with_a_pause_gives_one_final_per_segment(
    http: aiohttp.ClientSession, interims: str | None
) -> None:
    sim = DeepgramSimulator(
        transcripts=["Please send an email to Bob|about the budget."], interims=[interims]
    )
    async with serve(sim.app) as server:
        url = f"{server.url}/v1/listen"
        stt = deepgram.STT(api_key=sim.api_key, base_url=url, http_session=http)
        stream = stt.stream(conn_options=NO_RETRY)
        heard: list[str] = []
        finals: list[str] = []
        async with asyncio.timeout(10):
            # audio comes in real time: the second half only once the first has its final
            for pause in (0.3, 0.5):
                for frame in _frames(1.0, loud=True) + _frames(pause, loud=False):
                    stream.push_frame(frame)
                async for event in stream:
                    text = event.alternatives[0].text if event.alternatives else ""
                    if event.type == SpeechEventType.INTERIM_TRANSCRIPT:
                        heard.append(text)
                    elif event.type == SpeechEventType.FINAL_TRANSCRIPT:
                        finals.append(text)
                        break
        await stream.aclose()
        await stt.aclose()
    assert finals == ["Please send an email to Bob", "about the budget."]
    revealed = (interims or "Please send an email to Bob|about the budget.").split("|")
    assert heard[0] and revealed[0].startswith(heard[0])
    assert heard[-1] and revealed[1].startswith(heard[-1])


@pytest.mark.parametrize("interim_results", [True, False])
async def test_interims_follow_the_audio_clock(
    http: aiohttp.ClientSession, interim_results: bool
) -> None:
    words = "one two three four five six seven eight"
    sim = DeepgramSimulator(
        transcripts=["One, two, three."],
        interims=[words],
        interim_every_s=0.5,
        seconds_per_word=0.4,
    )
    async with serve(sim.app) as server:
        url = f"{server.url}/v1/listen"
        stt = deepgram.STT(
            api_key=sim.api_key, base_url=url, http_session=http, interim_results=interim_results
        )
        stream = stt.stream(conn_options=NO_RETRY)
        for frame in _frames(2.2, loud=True) + _frames(0.5, loud=False):
            stream.push_frame(frame)
        interims: list[tuple[str, float, float]] = []
        finals: list[str] = []
        async with asyncio.timeout(10):
            async for event in stream:
                if event.type == SpeechEventType.INTERIM_TRANSCRIPT:
                    alt = event.alternatives[0]
                    interims.append((alt.text, alt.start_time, alt.end_time))
                elif event.type == SpeechEventType.FINAL_TRANSCRIPT:
                    finals.append(event.alternatives[0].text)
                    break
        await stream.aclose()
        await stt.aclose()
    assert finals == ["One, two, three."]
    if not interim_results:
        assert interims == []  # interim_results=false: Deepgram sends finals only
        return
    # one interim per 0.5 s of speech, however fast the audio was pushed: the audio is the clock
    assert len(interims) == 4
    ends = [end for _, _, end in interims]
    steps = [later - earlier for earlier, later in itertools.pairwise(ends)]
    assert steps == pytest.approx([0.5] * 3, abs=0.011)
    # each reveals one word per 0.4 s of its speech so far, never more than were said
    for text, start, end in interims:
        assert words.startswith(text)
        assert len(text.split()) == min(8, int((end - start) / 0.4 + 1e-6) + 1)
