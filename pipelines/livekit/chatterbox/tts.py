"""Chatterbox TTS: one HTTP request per sentence, audio pushed as it arrives."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from dataclasses import dataclass, replace

import aiohttp
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIStatusError,
    APITimeoutError,
    tts,
    utils,
)
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given

from .log import logger
from .models import TTSModels, TTSVoices

BASE_URL = "https://api.chatterboxtts.com/v1"
API_KEY_ENV = "CHATTERBOX_API_KEY"
SAMPLE_RATE = 24_000
NUM_CHANNELS = 1
_ERROR_BODY_CHARS = 200
_RIFF_HEADER = 12
_CHUNK_HEADER = 8


@dataclass
class _TTSOptions:
    model: TTSModels | str
    voice: TTSVoices | str
    base_url: str
    api_key: str


class TTS(tts.TTS[None]):
    def __init__(
        self,
        *,
        model: TTSModels | str = "turbo",
        voice: TTSVoices | str = "professional",
        api_key: str | None = None,
        base_url: str = BASE_URL,
        http_session: aiohttp.ClientSession | None = None,
    ) -> None:
        """Chatterbox TTS over HTTP streaming.

        Args:
            model: Chatterbox model name.
            voice: voice name (or cloned voice id) of the server.
            api_key: bearer key; defaults to the CHATTERBOX_API_KEY environment variable.
            base_url: API root including /v1; requests go to `{base_url}/audio/speech`.
            http_session: aiohttp session to use (the job's shared session by default).
        """
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=SAMPLE_RATE,
            num_channels=NUM_CHANNELS,
        )
        key = api_key or os.environ.get(API_KEY_ENV)
        if not key:
            raise ValueError(f"Chatterbox API key is required: set {API_KEY_ENV} or pass api_key")
        self._opts = _TTSOptions(
            model=model, voice=voice, base_url=base_url.rstrip("/"), api_key=key
        )
        self._session = http_session
        self._prewarm_task: asyncio.Task[None] | None = None

    @property
    def model(self) -> str:
        return self._opts.model

    @property
    def provider(self) -> str:
        return "Chatterbox"

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = utils.http_context.http_session()
        return self._session

    def update_options(
        self,
        *,
        model: NotGivenOr[TTSModels | str] = NOT_GIVEN,
        voice: NotGivenOr[TTSVoices | str] = NOT_GIVEN,
    ) -> None:
        """Change model or voice for the next request; running streams keep their copy."""
        if is_given(model):
            self._opts.model = model
        if is_given(voice):
            self._opts.voice = voice

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> ChunkedStream:
        return ChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def prewarm(self) -> None:
        """Open the HTTP connection (DNS, TCP, TLS) before the first sentence needs it."""
        if self._prewarm_task is None or self._prewarm_task.done():
            self._prewarm_task = asyncio.create_task(self._prewarm())

    async def _prewarm(self) -> None:
        try:
            async with self._ensure_session().get(
                self._opts.base_url, timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                await resp.read()  # any answer leaves a warm connection in the pool
        except (TimeoutError, aiohttp.ClientError, OSError):
            logger.debug("chatterbox prewarm failed", extra={"base_url": self._opts.base_url})

    async def aclose(self) -> None:
        if self._prewarm_task is not None:
            self._prewarm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prewarm_task


class ChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: TTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._tts: TTS = tts
        self._opts = replace(tts._opts)

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        opts = self._opts
        try:
            async with self._tts._ensure_session().post(
                f"{opts.base_url}/audio/speech",
                headers={"Authorization": f"Bearer {opts.api_key}"},
                json={
                    "input": self._input_text,
                    "model": opts.model,
                    "voice": opts.voice,
                    "response_format": "pcm",
                    "stream": True,
                },
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self._conn_options.timeout,
                    sock_read=self._conn_options.timeout,
                ),
            ) as resp:
                if resp.status >= 400:
                    detail = (await resp.text(errors="replace"))[:_ERROR_BODY_CHARS]
                    raise APIStatusError(
                        message=f"chatterbox answered HTTP {resp.status}",
                        status_code=resp.status,
                        request_id=resp.headers.get("x-request-id"),
                        body=detail,
                    )
                output_emitter.initialize(
                    request_id=resp.headers.get("x-request-id") or utils.shortuuid(),
                    sample_rate=SAMPLE_RATE,
                    num_channels=NUM_CHANNELS,
                    mime_type="audio/pcm",
                )
                strip = _WavHeaderStripper()
                carry = b""
                async for data in resp.content.iter_any():
                    pcm = carry + strip.feed(data)
                    # keep whole 16-bit samples; a chunk may end mid-sample
                    cut = len(pcm) - len(pcm) % 2
                    carry = pcm[cut:]
                    if cut:
                        output_emitter.push(pcm[:cut])
                output_emitter.flush()
        except APIStatusError:
            raise
        except TimeoutError:
            raise APITimeoutError("chatterbox did not answer in time") from None
        except aiohttp.ClientResponseError as e:
            raise APIStatusError(
                message=f"chatterbox answered HTTP {e.status}",
                status_code=e.status,
                request_id=None,
                body=None,
            ) from None
        except (aiohttp.ClientError, OSError) as e:
            # The exception's text can carry request details; name only its type.
            raise APIConnectionError(f"could not reach chatterbox ({type(e).__name__})") from None


class _WavHeaderStripper:
    """Passes raw PCM through; if the stream starts with a RIFF/WAVE header, drops the header
    up to the start of the `data` chunk. Servers stream WAV with unknown sizes, so the data
    chunk is taken to run to the end of the stream."""

    def __init__(self) -> None:
        self._buffer = b""
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self._done:
            return data
        self._buffer += data
        if len(self._buffer) < 4:
            return b""
        if self._buffer[:4] != b"RIFF":
            return self._release(0)
        position = _RIFF_HEADER
        while len(self._buffer) >= position + _CHUNK_HEADER:
            chunk_id = self._buffer[position : position + 4]
            (size,) = struct.unpack("<I", self._buffer[position + 4 : position + 8])
            if chunk_id == b"data":
                return self._release(position + _CHUNK_HEADER)
            position += _CHUNK_HEADER + size + (size % 2)
        return b""

    def _release(self, start: int) -> bytes:
        self._done = True
        data, self._buffer = self._buffer[start:], b""
        return data
