"""The Chatterbox TTS plugin against the Chatterbox simulator over a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, APITimeoutError

from pipelines.livekit import chatterbox
from simulators.chatterbox import ChatterboxSimulator, tone
from simulators.server import RunningServer, serve

NO_RETRY = APIConnectOptions(max_retry=0, retry_interval=0.1, timeout=1.0)
TEXT = "Hello there, this is a test."


@pytest.fixture
def sim() -> ChatterboxSimulator:
    return ChatterboxSimulator()


@pytest.fixture
async def server(sim: ChatterboxSimulator) -> AsyncIterator[RunningServer]:
    async with serve(sim.app) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def make_tts(
    server: RunningServer, http: aiohttp.ClientSession, key: str = "sim-chatterbox-key"
) -> chatterbox.TTS:
    return chatterbox.TTS(api_key=key, base_url=f"{server.url}/v1", http_session=http)


async def collect(stream: chatterbox.ChunkedStream) -> bytes:
    audio = b""
    async with stream:
        async for event in stream:
            audio += bytes(event.frame.data)
    return audio


async def test_first_frame_arrives_before_the_server_finishes(
    sim: ChatterboxSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.hold_after_first_chunk = True
    tts = make_tts(server, http)
    stream = tts.synthesize(TEXT, conn_options=NO_RETRY)
    async with stream:
        first = await asyncio.wait_for(stream.__anext__(), 5)
        assert sim.finished == 0  # the server is still holding the rest of the reply
        assert np.any(np.frombuffer(bytes(first.frame.data), dtype=np.int16))
        sim.release.set()
        rest = [event async for event in stream]
    assert sim.finished == 1
    played = first.frame.samples_per_channel + sum(e.frame.samples_per_channel for e in rest)
    expected = len(tone(len(TEXT) * 0.055)) // 2
    assert expected <= played <= expected + chatterbox.tts.SAMPLE_RATE // 100  # + 10 ms tail
    assert sim.received == [
        {
            "input": TEXT,
            "model": "turbo",
            "voice": "professional",
            "response_format": "pcm",
            "stream": True,
        }
    ]
    await tts.aclose()


@pytest.mark.parametrize("wav_header", [False, True])
async def test_audio_is_the_servers_pcm_with_any_wav_header_removed(
    sim: ChatterboxSimulator, server: RunningServer, http: aiohttp.ClientSession, wav_header: bool
) -> None:
    sim.wav_header = wav_header
    sim.chunk_ms = 7  # odd-sized chunks split samples across reads
    tts = make_tts(server, http)
    audio = await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    expected = tone(len(TEXT) * 0.055)
    assert audio[: len(expected)] == expected
    assert not any(audio[len(expected) :])  # only the emitter's silent tail follows


async def test_server_error_becomes_status_error_without_the_key(
    sim: ChatterboxSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.fail_status = 503
    tts = make_tts(server, http)
    with pytest.raises(APIStatusError) as caught:
        await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    assert caught.value.status_code == 503
    assert_no_key(caught.value, sim.api_key)


async def test_wrong_key_is_a_401(
    sim: ChatterboxSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    tts = make_tts(server, http, key="not-the-key-1234")
    with pytest.raises(APIStatusError) as caught:
        await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    assert caught.value.status_code == 401
    assert_no_key(caught.value, "not-the-key-1234")


async def test_unreachable_server_is_a_connection_error(http: aiohttp.ClientSession) -> None:
    async with serve(ChatterboxSimulator().app) as gone:
        url = gone.url
    tts = chatterbox.TTS(api_key="secret-key-5678", base_url=f"{url}/v1", http_session=http)
    with pytest.raises(APIConnectionError) as caught:
        await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    assert not isinstance(caught.value, APITimeoutError)
    assert_no_key(caught.value, "secret-key-5678")


async def test_slow_first_byte_is_a_timeout(
    sim: ChatterboxSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.ttfb_s = 3.0
    tts = make_tts(server, http)
    fast = APIConnectOptions(max_retry=0, retry_interval=0.1, timeout=0.3)
    with pytest.raises(APITimeoutError) as caught:
        await collect(tts.synthesize(TEXT, conn_options=fast))
    assert_no_key(caught.value, sim.api_key)


async def test_options_are_copied_into_each_stream(
    sim: ChatterboxSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.hold_after_first_chunk = True
    tts = make_tts(server, http)
    stream = tts.synthesize(TEXT, conn_options=NO_RETRY)
    async with stream:
        await asyncio.wait_for(stream.__anext__(), 5)
        tts.update_options(voice="narrator")
        sim.release.set()
        _ = [event async for event in stream]
    sim.hold_after_first_chunk = False
    await collect(tts.synthesize("Second.", conn_options=NO_RETRY))
    assert [r["voice"] for r in sim.received] == ["professional", "narrator"]


def test_missing_key_fails_fast_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATTERBOX_API_KEY", raising=False)
    with pytest.raises(ValueError, match="CHATTERBOX_API_KEY"):
        chatterbox.TTS()


def assert_no_key(error: BaseException, key: str) -> None:
    assert key not in str(error) and key not in repr(error)
    # nothing chained that could carry the request (and its Authorization header)
    seen: BaseException | None = error
    while seen is not None:
        assert not isinstance(seen, aiohttp.ClientError) and key not in repr(seen)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    body = getattr(error, "body", None)
    assert body is None or key not in str(body)
