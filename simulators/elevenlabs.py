"""ElevenLabs TTS simulator: the multi-context WebSocket
`/v1/text-to-speech/{voice_id}/multi-stream-input` and the HTTP
`POST /v1/text-to-speech/{voice_id}/stream` of api.elevenlabs.io on 127.0.0.1, as
livekit-plugins-elevenlabs 1.8.9 uses them.

Authentication is the `xi-api-key` header (on the WebSocket also `xi_api_key` in a context's
first message). Over HTTP a bad key is a 401 `{"detail": {"status": "invalid_api_key", ...}}`,
a malformed request a FastAPI-style 422, and what the API itself refuses (unknown model or
voice, too much text) a 400 with a `detail.status`. On the WebSocket, malformed query
parameters fail the handshake (403: a FastAPI app closing 1008 before accepting); the key,
model and voice are checked at the first message, answered `{"error", "message", "code":
1008, "contextId"}` and a 1008 close. The catalogue and the checks are in
`elevenlabs_checks.py`.

Contexts follow the AsyncAPI spec: the first message with `text` opens one (its
`voice_settings` may not change later: the socket closes 1008, as the service does); text
collects in its buffer and is synthesized on `flush`, at a sentence end with `auto_mode`, or
once the buffer reaches the `chunk_length_schedule`; `close_context` drops unflushed text,
lets queued audio finish and answers `isFinal`; `close_socket` closes them all. At most 5
may be open; flushing or closing an unknown context is an error for that context. Audio
messages carry `audio`, `alignment`, `normalizedAlignment` and `contextId`, character times
relative to the chunk (with `sync_alignment` each chunk carries its own characters, without
it a generation's first chunk carries them all).

Audio is the Cartesia simulator's tone or espeak-ng speech as PCM, or MP3 at the requested
rate and bit rate (PyAV); u-law, a-law and Opus are validated but answered as not simulated.
Knobs (`ttfb_s`, `chunk_ms`, `realtime_factor`, `ms_per_char`, `speak`, `fail_next` with
`fail_status`, `drop_next`) and records (`syntheses`, `requests`, `characters`) are every TTS
simulator's (`simulators.tts_common`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from .elevenlabs_checks import (
    DEFAULT_CHUNK_SCHEDULE,
    MAX_CONTEXTS,
    Refusal,
    body_problem,
    message_problem,
    query_problem,
    refusal_for,
    schedule_problem,
    settings_problem,
)
from .tts_common import Generation, Timing, TtsKnobs, encode, mp3, split

_SETTINGS_CHANGED = (
    "voice_settings field must be provided in the first message and then either be not "
    "provided or not change."
)
_SENTENCE_END = re.compile(r"[.!?]\s+$")


@dataclass(frozen=True)
class Span:
    """Where an audio chunk sits in its generation, in seconds."""

    start_s: float
    end_s: float
    total_s: float


@dataclass
class Synthesis(Generation):
    """One generation request: an HTTP `stream` request or a WebSocket context."""

    transport: Literal["stream", "multi-stream-input"]
    context_id: str
    voice_id: str
    model: str
    output_format: str
    language: str | None = None
    voice_settings: dict[str, Any] | None = None
    timing: Timing = field(default_factory=lambda: Timing(0.0, 0.0))  # set by `start`
    text: str = ""  # every text received for it, concatenated verbatim
    generations: list[str] = field(default_factory=list)  # what each synthesis pass spoke


@dataclass
class ElevenLabsSimulator(TtsKnobs[Synthesis]):
    """The ASGI app is `self.app`; the plugin's `base_url` is `<server origin>/v1`.
    Knobs and records: `simulators.tts_common.TtsKnobs`."""

    api_key: str = "sim-elevenlabs-key"

    def __post_init__(self) -> None:
        prefix = "/v1/text-to-speech/{voice_id}"
        self.app = Starlette(
            routes=[
                Route(f"{prefix}/stream", self._stream, methods=["POST"]),
                WebSocketRoute(f"{prefix}/multi-stream-input", self._websocket),
            ]
        )

    def start(
        self, synthesis: Synthesis, language: str | None, voice_settings: dict[str, Any] | None
    ) -> Synthesis:
        synthesis.language, synthesis.voice_settings = language, voice_settings
        synthesis.timing = self.timing()
        self.syntheses.append(synthesis)
        return synthesis

    async def audio(self, synthesis: Synthesis, text: str) -> AsyncIterator[tuple[bytes, Span]]:
        """`text` in the synthesis' format, chunk by chunk as its timing releases them, each
        with the span of the generation it covers."""
        synthesis.generations.append(text)
        codec, rate, kbps = _parse_format(synthesis.output_format)
        samples = await self.render(text, rate)
        mp3_pieces = split(mp3(samples, rate, kbps), self.pieces(samples, rate))
        async for start, end in self.paced(synthesis.timing, samples, rate):
            data = next(mp3_pieces) if codec == "mp3" else encode(samples[start:end], "pcm_s16le")
            yield data, Span(start / rate, end / rate, len(samples) / rate)

    def refuse(self, refusal: Refusal) -> Response:
        self.rejected.append(refusal.message)
        body = {"detail": {"status": refusal.name, "message": refusal.message}}
        return JSONResponse(body, status_code=refusal.status)

    def unprocessable(self, location: list[str], message: str) -> Response:
        self.rejected.append(message)
        detail = [{"type": "value_error", "loc": location, "msg": message}]
        return JSONResponse({"detail": detail}, status_code=422)

    async def _stream(self, request: Request) -> Response:
        voice_id = request.path_params["voice_id"]
        if request.headers.get("xi-api-key") != self.api_key:
            return self.refuse(_UNAUTHORIZED)
        query = request.query_params
        problem = query_problem(query, websocket=False)
        if problem:
            return self.unprocessable(["query", problem[0]], problem[1])
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self.unprocessable(["body"], "JSON decode error")
        problem = body_problem(body)
        if problem:
            return self.unprocessable(["body", problem[0]], problem[1])
        model = body.get("model_id", "eleven_multilingual_v2")
        normalization = body.get("apply_text_normalization", "auto")
        output_format = query.get("output_format", "mp3_44100_128")
        refusal = refusal_for(voice_id, model, normalization, output_format, text=body["text"])
        if refusal:
            return self.refuse(refusal)
        self.received.append(body)
        synthesis = self.start(
            Synthesis("stream", str(uuid.uuid4()), voice_id, model, output_format),
            body.get("language_code"),
            body.get("voice_settings"),
        )
        synthesis.text = body["text"]
        if self.take("fail_next"):
            synthesis.end("failed")
            return self.refuse(Refusal(self.fail_status, "internal_error", _FAILED))
        media = "audio/mpeg" if synthesis.output_format.startswith("mp3") else "audio/pcm"
        drop = self.take("drop_next")
        return StreamingResponse(self._stream_body(synthesis, drop=drop), media_type=media)

    async def _stream_body(self, synthesis: Synthesis, *, drop: bool) -> AsyncIterator[bytes]:
        async for data, _span in self.audio(synthesis, synthesis.text):
            yield data
            if drop:
                synthesis.end("dropped")
                # Raising mid-body makes the server abort the connection, as a broken one.
                raise ConnectionAbortedError("(simulated) connection dropped")
        synthesis.end("done")

    async def _websocket(self, websocket: WebSocket) -> None:
        query = websocket.query_params
        problem = query_problem(query, websocket=True)
        if problem:
            self.rejected.append(problem[1])
            await websocket.close(code=1008)  # before accept: the handshake fails (HTTP 403)
            return
        self.connections.append(
            {k: v for k, v in query.items() if k not in ("authorization", "single_use_token")}
        )
        await websocket.accept()
        socket = _Socket(self, websocket, websocket.path_params["voice_id"], query)
        try:
            await socket.run()
        finally:
            await socket.aclose()


_FAILED = "(simulated) synthesis failed"
_UNAUTHORIZED = Refusal(401, "invalid_api_key", "Invalid API key")


def _parse_format(name: str) -> tuple[str, int, int]:
    """(codec, sample rate, kbps) of an `output_format` such as `mp3_22050_32`."""
    codec, rate, *rest = name.split("_")
    return codec, int(rate), int(rest[0]) if rest else 128


def _alignment(text: str, span: Span, *, sync: bool) -> dict[str, Any] | None:
    """The characters a chunk carries, timed from its start: its own with `sync_alignment`,
    else all of the generation's on its first chunk."""
    if not sync and span.start_s:
        return None
    start_ms, end_ms = (span.start_s * 1000, span.end_s * 1000) if sync else (0, math.inf)
    per_char_ms = span.total_s * 1000 / len(text)
    chars, starts, durations = [], [], []
    for index, char in enumerate(text):
        if start_ms <= (at := index * per_char_ms) < end_ms:
            chars.append(char)
            starts.append(round(at - start_ms))
            durations.append(round(per_char_ms))
    return {"chars": chars, "charStartTimesMs": starts, "charDurationsMs": durations}


class _Context:
    """One context: text collects in a buffer; one task speaks each generation in order."""

    def __init__(self, socket: _Socket, synthesis: Synthesis, schedule: list[int]) -> None:
        self.socket = socket
        self.synthesis = synthesis
        self.schedule = schedule
        self.buffer = ""
        self.closing = False
        self.triggered = False
        self.drop = socket.sim.take("drop_next")
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.task = asyncio.create_task(self.produce())

    @property
    def context_id(self) -> str:
        return self.synthesis.context_id

    def add(self, text: str, *, flush: bool) -> None:
        self.synthesis.text += text
        self.buffer += text
        threshold = self.schedule[min(len(self.synthesis.generations), len(self.schedule) - 1)]
        if (
            flush
            or (self.socket.auto_mode and _SENTENCE_END.search(self.buffer))
            or (len(self.buffer) >= threshold and self.buffer[-1:].isspace())
        ):
            if self.buffer.strip():
                if not self.triggered:  # TTFB counts from the first text there is to speak
                    self.triggered, self.synthesis.timing.started = True, time.perf_counter()
                self.queue.put_nowait(self.buffer)
            self.buffer = ""

    def close(self) -> None:
        """`close_context`: text never flushed is dropped, queued generations still play."""
        self.closing, self.buffer = True, ""
        self.queue.put_nowait(None)

    async def cancel(self) -> None:
        """Stop producing; safe to call at any time."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.synthesis.end("cancelled")

    async def produce(self) -> None:
        sim, sync = self.socket.sim, self.socket.sync_alignment
        while (text := await self.queue.get()) is not None:
            async for data, span in sim.audio(self.synthesis, text):
                alignment = _alignment(text, span, sync=sync)
                await self.socket.send(
                    {
                        "audio": base64.b64encode(data).decode(),
                        "normalizedAlignment": alignment,
                        "alignment": alignment,
                        "contextId": self.context_id,
                    }
                )
                if self.drop:
                    self.synthesis.end("dropped")
                    await self.socket.drop()
                    return
        await self.socket.send({"isFinal": True, "contextId": self.context_id})
        self.synthesis.end("done")
        self.socket.contexts.pop(self.context_id, None)


class _Socket:
    def __init__(
        self, sim: ElevenLabsSimulator, websocket: WebSocket, voice_id: str, query: QueryParams
    ) -> None:
        self.sim = sim
        self.ws = websocket
        self.voice_id = voice_id
        self.query = query
        self.model = query["model_id"]
        self.auto_mode = query.get("auto_mode") == "true"
        self.sync_alignment = query.get("sync_alignment") == "true"
        self.contexts: dict[str, _Context] = {}
        self.default_context = str(uuid.uuid4())
        self.failed: set[str] = set()
        self.checked = False
        self.closed = False
        self.send_lock = asyncio.Lock()

    async def run(self) -> None:
        while not self.closed:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                data = json.loads(message.get("text") or "")
            except json.JSONDecodeError:
                await self.violation("Invalid message: expected a JSON text message")
                continue
            problem = message_problem(data)
            if problem:
                await self.violation(f"Invalid message: {problem}")
                continue
            await self.handle(data)

    async def handle(self, data: dict[str, Any]) -> None:
        context_id = data.get("context_id") or self.default_context
        if not self.checked and not await self.check_account(data, context_id):
            return
        if context_id in self.failed:
            return  # what the client had in flight for a failed context is dropped
        self.sim.received.append(
            {k: v for k, v in data.items() if k not in ("xi_api_key", "authorization")}
        )
        if data.get("close_socket") is True:
            for open_context in list(self.contexts.values()):
                open_context.close()
            await asyncio.gather(*(c.task for c in self.contexts.values()))
            await self.close(1000, "")
            return
        context = self.contexts.get(context_id)
        if context is None and ("text" not in data or data.get("close_context") is True):
            await self.error(context_id, "context_not_found", f"Context {context_id!r} not found")
            return
        if data.get("close_context") is True:
            assert context is not None
            context.close()
            return
        if context is None:
            context = await self.open(context_id, data)
            if context is None:
                return
        elif context.closing:
            await self.error(context_id, "context_closed", f"Context {context_id!r} is closing")
            return
        elif (
            "voice_settings" in data and data["voice_settings"] != context.synthesis.voice_settings
        ):
            await self.violation(_SETTINGS_CHANGED)
            return
        context.add(data.get("text", ""), flush=data.get("flush") is True)

    async def check_account(self, data: dict[str, Any], context_id: str) -> bool:
        """The first message: the key (header, or `xi_api_key` in the message), model, voice."""
        key = self.ws.headers.get("xi-api-key") or data.get("xi_api_key")
        normalization = self.query.get("apply_text_normalization", "auto")
        output_format = self.query.get("output_format", "mp3_44100_128")
        refusal = (
            _UNAUTHORIZED
            if key != self.sim.api_key
            else refusal_for(self.voice_id, self.model, normalization, output_format, text=None)
        )
        if refusal:
            await self.error(context_id, refusal.name, refusal.message)
            await self.close(1008, refusal.message)
            return False
        self.checked = True
        return True

    async def open(self, context_id: str, data: dict[str, Any]) -> _Context | None:
        open_contexts = [c for c in self.contexts.values() if not c.closing]
        if len(open_contexts) >= MAX_CONTEXTS:
            message = f"at most {MAX_CONTEXTS} contexts may be open on one connection"
            await self.error(context_id, "max_contexts_exceeded", message)
            return None
        config = data.get("generation_config", {})
        problem = settings_problem(data.get("voice_settings", {})) or schedule_problem(config)
        if problem:
            await self.violation(f"Invalid message: {problem}")
            return None
        output_format = self.query.get("output_format", "mp3_44100_128")
        synthesis = self.sim.start(
            Synthesis("multi-stream-input", context_id, self.voice_id, self.model, output_format),
            self.query.get("language_code"),
            data.get("voice_settings"),
        )
        if self.sim.take("fail_next"):
            synthesis.end("failed")
            self.failed.add(context_id)
            self.sim.rejected.append(_FAILED)
            failure = {"error": "internal_error", "message": _FAILED, "code": self.sim.fail_status}
            await self.send(failure | {"contextId": context_id})
            return None
        schedule = config.get("chunk_length_schedule", list(DEFAULT_CHUNK_SCHEDULE))
        context = self.contexts[context_id] = _Context(self, synthesis, schedule)
        return context

    async def error(self, context_id: str, name: str, message: str) -> None:
        self.sim.rejected.append(message)
        context = self.contexts.pop(context_id, None)
        if context is not None:
            await context.cancel()
        await self.send({"error": name, "message": message, "code": 1008, "contextId": context_id})

    async def send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            with contextlib.suppress(RuntimeError, OSError):  # the client is already gone
                await self.ws.send_text(json.dumps(message))

    async def violation(self, reason: str) -> None:
        self.sim.rejected.append(reason)
        await self.close(1008, reason)

    async def close(self, code: int, reason: str) -> None:
        self.closed = True
        async with self.send_lock:
            with contextlib.suppress(RuntimeError, OSError):
                await self.ws.close(code=code, reason=reason[:120])

    async def drop(self) -> None:
        await self.close(1011, "(simulated) connection dropped")

    async def aclose(self) -> None:
        for context in list(self.contexts.values()):
            await context.cancel()
        self.contexts.clear()
