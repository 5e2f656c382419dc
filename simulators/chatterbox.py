"""Chatterbox TTS simulator: the OpenAI-compatible `POST /v1/audio/speech` of the Chatterbox
TTS API, streaming PCM16 mono at 24 kHz on 127.0.0.1.

It validates the bearer key and the body (`input`, `model`, `voice`, `response_format: "pcm"`,
`stream: true`), waits `ttfb_s`, then streams audible audio (a tone, ~55 ms per character) in
`chunk_ms` chunks, optionally behind a streaming WAV header. Tests can fail requests with an
HTTP status, or hold the stream after its first chunk until `release` is set, to prove a client
plays audio before the server has finished.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SAMPLE_RATE = 24_000
VOICES = frozenset({"professional", "default", "narrator"})
MODELS = frozenset({"turbo", "chatterbox", "chatterbox-turbo"})
_MS_PER_CHAR = 55


@dataclass
class ChatterboxSimulator:
    """The ASGI app is `self.app`; the client's base URL is `<url>/v1`."""

    api_key: str = "sim-chatterbox-key"
    ttfb_s: float = 0.0
    chunk_ms: int = 40
    chunk_pause_s: float = 0.0
    wav_header: bool = False
    ms_per_char: float = _MS_PER_CHAR
    fail_status: int | None = None
    hold_after_first_chunk: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    finished: int = 0

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/v1/audio/speech", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "invalid or missing API key")
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(400, "body is not JSON")
        problem = _check(body)
        if problem:
            return self._error(422, problem)
        self.received.append(body)
        if self.fail_status is not None:
            return self._error(self.fail_status, "synthesis failed (simulated)")
        media = "audio/wav" if self.wav_header else "audio/pcm"
        return StreamingResponse(self._stream(body["input"]), media_type=media)

    def _error(self, status: int, message: str) -> Response:
        self.rejected.append(message)
        return JSONResponse({"detail": message}, status_code=status)

    async def _stream(self, text: str) -> AsyncIterator[bytes]:
        if self.ttfb_s:
            await asyncio.sleep(self.ttfb_s)
        audio = tone(len(text) * self.ms_per_char / 1000)
        if self.wav_header:
            yield wav_header(SAMPLE_RATE)
        step = SAMPLE_RATE * self.chunk_ms // 1000 * 2
        for offset in range(0, len(audio), step):
            yield audio[offset : offset + step]
            if offset == 0 and self.hold_after_first_chunk:
                await self.release.wait()
            elif self.chunk_pause_s:
                await asyncio.sleep(self.chunk_pause_s)
        self.finished += 1


def _check(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("input"), str) or not body["input"].strip():
        return "input must be a non-empty string"
    if len(body["input"]) > 4096:
        return "input is longer than 4096 characters"
    if body.get("model") not in MODELS:
        return f"unknown model {body.get('model')!r}"
    if body.get("voice") not in VOICES:
        return f"unknown voice {body.get('voice')!r}"
    if body.get("response_format") != "pcm":
        return "response_format must be pcm"
    if body.get("stream") is not True:
        return "stream must be true"
    return None


def tone(seconds: float, frequency: float = 220.0) -> bytes:
    """Audible PCM16 mono at 24 kHz (never silent, so a first sample is easy to find)."""
    t = np.arange(max(1, round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * frequency * t) + 0.05
    return (wave * 32767).astype(np.int16).tobytes()


def wav_header(sample_rate: int) -> bytes:
    """A streaming WAV header: sizes unknown (0xFFFFFFFF), as streaming servers send it."""
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )
