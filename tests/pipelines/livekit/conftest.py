"""Fixtures for the LiveKit pipeline: espeak-ng speech made once per test session, Silero
loaded once, and the simulated stack's providers (scripted here) driven by the real plugins."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from livekit.agents import APIConnectOptions
from livekit.agents.vad import VAD
from livekit.agents.voice.agent_session import SessionConnectOptions

from pipelines.livekit.pipeline import PipelineOptions, VadOptions, load_vad
from simulators.cartesia import CartesiaSimulator
from simulators.chatterbox import ChatterboxSimulator
from simulators.deepgram import DeepgramSimulator
from simulators.elevenlabs import ElevenLabsSimulator
from simulators.groq import GroqSimulator, ToolRule
from simulators.n8n import N8nSimulator
from simulators.speech import have_espeak
from voicegw.lab import audio
from voicegw.simulate import SimulatedStack

PLAIN = "What can you do for me"
TOOL = "Please search the knowledge base for the travel policy"
PLAIN_TEXT = "What can you do for me?"
TOOL_TEXT = "Please search the knowledge base for the travel policy."
TOOL_RULE = ToolRule("knowledge base", "query_database", {"query": "travel policy"})

# One retry at most, quickly: a failing provider should fail a test in well under a second.
FAST_FAIL = SessionConnectOptions(
    stt_conn_options=APIConnectOptions(max_retry=0, retry_interval=0.1, timeout=2),
    llm_conn_options=APIConnectOptions(max_retry=0, retry_interval=0.1, timeout=2),
    tts_conn_options=APIConnectOptions(max_retry=0, retry_interval=0.1, timeout=2),
)


@pytest.fixture(scope="session")
def one_plain() -> audio.Conversation:
    if not have_espeak():
        pytest.fail("espeak-ng and sox are required (make system-deps)")
    return audio.conversation([PLAIN], gap_s=2.5, tail_s=2.5)


@pytest.fixture(scope="session")
def one_tool() -> audio.Conversation:
    if not have_espeak():
        pytest.fail("espeak-ng and sox are required (make system-deps)")
    return audio.conversation([TOOL], gap_s=3.0, tail_s=3.0)


@pytest.fixture(scope="session")
def vad() -> VAD:
    return load_vad(VadOptions())


@dataclass
class Providers:
    deepgram: DeepgramSimulator
    groq: GroqSimulator
    chatterbox: ChatterboxSimulator
    n8n: N8nSimulator
    options: PipelineOptions
    cartesia: CartesiaSimulator
    elevenlabs: ElevenLabsSimulator


@pytest.fixture
def deepgram() -> DeepgramSimulator:
    return DeepgramSimulator(transcripts=[PLAIN_TEXT])


@pytest.fixture
def groq() -> GroqSimulator:
    return GroqSimulator(rules=[TOOL_RULE])


@pytest.fixture
def n8n() -> Iterator[N8nSimulator]:
    yield N8nSimulator(slow_seconds=1.0)


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"N8N_TIMEOUT_SECONDS": "3"}


@pytest.fixture
def providers(stack: SimulatedStack) -> Providers:
    """The simulated stack's providers, and the pipeline's options pointed at them."""
    sims = stack.providers
    options = PipelineOptions.from_settings(stack.settings)
    return Providers(
        sims.deepgram, sims.groq, sims.chatterbox, sims.n8n, options, sims.cartesia, sims.elevenlabs
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
