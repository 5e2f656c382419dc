"""Shared pieces for the TTS provider simulators driven by the real LiveKit plugins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from livekit.agents import APIConnectOptions, tts

NO_RETRY = APIConnectOptions(max_retry=0, retry_interval=0.1, timeout=2.0)
TEXT = "Hello there, this is a test."
SENTENCES = ["Hello there, how are you today? ", "I am fine, thank you for asking."]


@dataclass(frozen=True)
class Heard:
    """What a plugin stream produced: mono samples at `sample_rate`."""

    samples: npt.NDArray[np.int16]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def audible_s(self) -> float:
        loud = np.flatnonzero(np.abs(self.samples.astype(np.int32)) > 300)
        return 0.0 if len(loud) == 0 else (loud[-1] - loud[0] + 1) / self.sample_rate


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def collect(stream: tts.ChunkedStream | tts.SynthesizeStream) -> Heard:
    """Every frame the plugin emits, within a deadline."""
    frames: list[npt.NDArray[np.int16]] = []
    rate = 0
    async with stream:
        async with asyncio.timeout(10):
            async for event in stream:
                frames.append(np.frombuffer(bytes(event.frame.data), dtype=np.int16))
                rate = event.frame.sample_rate
    return Heard(np.concatenate(frames) if frames else np.zeros(0, np.int16), rate)


async def speak_streamed(stream: tts.SynthesizeStream, sentences: list[str]) -> Heard:
    """Push `sentences` word by word as an LLM would, flush, end input, and listen."""
    for sentence in sentences:
        for word in sentence.split(" "):
            stream.push_text(word + " ")
    stream.flush()
    stream.end_input()
    return await collect(stream)


def assert_key_absent(error: BaseException, key: str) -> None:
    """The key is nowhere in what the error says about itself or its body."""
    assert key not in str(error) and key not in repr(error)
    assert key not in str(getattr(error, "body", None))
