"""The Deepgram simulator refuses what Deepgram refuses (a wrong key, before any stream), and
the real plugin (livekit-plugins-deepgram) sees the refusal without the key in it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError
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
