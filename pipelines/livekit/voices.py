"""The pipeline's voices: Chatterbox (the plan's), Cartesia and ElevenLabs (its named
alternatives), through our Chatterbox plugin and the maintained LiveKit plugins, each fed
speakable chunks (`chunking.py`), and optionally a second one behind LiveKit's
`FallbackAdapter` that takes over within the turn when the first fails.

A failing voice is reported by LiveKit as an `APIError`; the ElevenLabs plugin chains the
aiohttp error whose `repr` holds the request's `xi-api-key` header, so nothing here logs an
error's cause chain, and the state messages name only the kind of error (`state.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from livekit.agents import tts
from livekit.agents.types import NOT_GIVEN
from livekit.plugins import cartesia, elevenlabs

from pipelines.contracts.settings import TtsProvider

from . import chatterbox
from .chunking import SpeakableChunker

SAMPLE_RATE = 24_000
Chunks = Literal["clauses", "sentences"]


@dataclass(frozen=True)
class Voice:
    """One TTS provider's endpoint and choice of model and voice."""

    provider: TtsProvider
    api_key: str | None
    base_url: str
    model: str
    voice: str


def build_voice(
    voice: Voice,
    http_session: aiohttp.ClientSession | None,
    *,
    chunks: Chunks = "clauses",
    on_chunk: Callable[[TtsProvider, str], None] | None = None,
) -> tts.TTS[Any]:
    """One voice, streaming: what it is given comes in speakable chunks."""

    def counted(chunk: str) -> None:
        if on_chunk is not None:
            on_chunk(voice.provider, chunk)

    chunker = SpeakableChunker(clauses=chunks == "clauses", on_chunk=counted)
    if voice.provider == "cartesia":
        return cartesia.TTS(
            api_key=voice.api_key,
            base_url=voice.base_url,
            http_session=http_session,
            model=voice.model,
            voice=voice.voice,
            sample_rate=SAMPLE_RATE,
            tokenizer=chunker,
        )
    if voice.provider == "elevenlabs":
        return elevenlabs.TTS(
            api_key=voice.api_key or NOT_GIVEN,
            base_url=voice.base_url,
            http_session=http_session,
            encoding="pcm_24000",
            voice_id=voice.voice,
            model=voice.model,
            word_tokenizer=chunker,
            auto_mode=True,  # each chunk is synthesized as it arrives, not on a schedule
        )
    # Chatterbox takes one request per text: LiveKit's StreamAdapter makes one per chunk.
    plain = chatterbox.TTS(
        model=voice.model,
        voice=voice.voice,
        api_key=voice.api_key,
        base_url=voice.base_url,
        http_session=http_session,
    )
    return _Chunked(tts=plain, sentence_tokenizer=chunker)


def build_voices(
    voices: list[Voice],
    http_session: aiohttp.ClientSession | None,
    *,
    chunks: Chunks = "clauses",
    on_chunk: Callable[[TtsProvider, str], None] | None = None,
) -> tts.TTS[Any]:
    """The first voice, with the others behind it in a `FallbackAdapter`: a failure moves the
    turn to the next voice (one retry each, so a dead voice costs a turn little time)."""
    built = [build_voice(v, http_session, chunks=chunks, on_chunk=on_chunk) for v in voices]
    if len(built) == 1:
        return built[0]
    return _Fallback(built, max_retry_per_tts=1)


# LiveKit's adapters leave the TTS they wrap open (whoever made it may share it); these ones
# own theirs, so closing the session's TTS closes the voices' connections too.


class _Chunked(tts.StreamAdapter):
    def __init__(self, *, tts: tts.TTS[Any], sentence_tokenizer: SpeakableChunker) -> None:
        super().__init__(tts=tts, sentence_tokenizer=sentence_tokenizer)
        self._owned = tts

    async def aclose(self) -> None:
        await super().aclose()
        await self._owned.aclose()


class _Fallback(tts.FallbackAdapter):
    def __init__(self, voices: list[tts.TTS[Any]], *, max_retry_per_tts: int) -> None:
        super().__init__(voices, max_retry_per_tts=max_retry_per_tts)
        self._owned = voices

    async def aclose(self) -> None:
        await super().aclose()
        for voice in self._owned:
            await voice.aclose()
