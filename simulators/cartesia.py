"""Cartesia TTS simulator: the WebSocket `/tts/websocket` and the HTTP `POST /tts/bytes` of
api.cartesia.ai on 127.0.0.1, as livekit-plugins-cartesia 1.8.9 uses them.

The key is `X-API-Key` (or `Authorization: Bearer`, or `?api_key=` on the WebSocket), the
API version the `Cartesia-Version` header (on the WebSocket also `?cartesia_version=`): a bad
key fails the request or handshake with 401, a missing or unknown version with 400.

On the WebSocket, inputs with `continue: true` extend their `context_id` and one with
`continue: false` ends it (its `transcript` may be blank). A context is answered with base64
`chunk`s, `timestamps` (with `add_timestamps`), `flush_done` for a manual flush and `done`
once the last input's audio is out; `{"context_id", "cancel": true}` stops one. Inputs are
validated as documented (model, voice, output format, language, option ranges; inputs on one
context keep every field but `transcript`, `continue` and `duration`; no input after a
context ended) and a problem fails its context with an `error` message shaped for the API
version spoken (2026-03-01 on: structured fields; before: `"error": "Title: message"`). Text
is not buffered: `max_buffer_delay_ms` is validated, each input is spoken as it arrives.

Audio is a tone (~55 ms per character, as the Chatterbox simulator's) or, with `speak`,
espeak-ng speech, in the requested encoding and rate, in `chunk_ms` chunks: the first
`ttfb_s` after the request (or the context's first input), the rest paced by
`realtime_factor`. The knobs (`fail_next`, `drop_next`, ...) and records (`syntheses`,
`requests`, `characters`) are the ones every TTS simulator has (`simulators.tts_common`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from .tts_common import Generation, Samples, Timing, TtsKnobs, encode

MODELS = frozenset(
    "sonic sonic-2 sonic-2-2025-03-07 sonic-3 sonic-3.5 sonic-english sonic-latest sonic-lite "
    "sonic-multilingual sonic-preview sonic-turbo".split()
)
API_VERSIONS = frozenset({"2024-06-10", "2024-11-13", "2025-04-16", "2026-03-01"})
SAMPLE_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
CONTAINERS = frozenset({"raw", "wav", "mp3"})
ENCODINGS = frozenset({"pcm_s16le", "pcm_f32le", "pcm_mulaw", "pcm_alaw"})
LANGUAGES = frozenset(
    "en es fr de pt zh ja hi ko it nl pl ru sv tr tl bg ro ar cs el fi hr ms sk da ta uk hu no "
    "vi bn th he ka id te gu kn ml mr or pa ur".split()
)
_STRUCTURED_ERRORS_SINCE = "2026-03-01"
_SIMULATED_ENCODINGS = frozenset({"pcm_s16le", "pcm_f32le"})
_EMBEDDING_SIZE = 192
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# "Inputs on the same context must keep all fields except transcript, continue, and duration
# the same" (a manual flush is an input too).
_PER_INPUT_FIELDS = frozenset({"transcript", "continue", "duration", "flush", "context_id"})
_STREAM_FLAGS = ("continue", "flush", "add_timestamps", "add_phoneme_timestamps")


@dataclass(frozen=True)
class Problem:
    """Why a request or message was refused, in the provider's terms."""

    status: int
    title: str
    message: str
    code: str | None = None


def _invalid(message: str) -> Problem:
    return Problem(400, "Invalid request", message, "invalid_request")


@dataclass
class Synthesis(Generation):
    """One generation: a `/tts/bytes` request or a WebSocket context."""

    transport: Literal["bytes", "websocket"]
    context_id: str
    model: str
    voice: dict[str, Any]
    output_format: dict[str, Any]
    language: str | None
    timing: Timing
    text: str = ""  # every transcript received for it, concatenated verbatim


@dataclass
class CartesiaSimulator(TtsKnobs[Synthesis]):
    """The ASGI app is `self.app`; the plugin's `base_url` is the server's http:// origin.
    Knobs and records: `simulators.tts_common.TtsKnobs`."""

    api_key: str = "sim-cartesia-key"

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/tts/bytes", self._bytes, methods=["POST"]),
                WebSocketRoute("/tts/websocket", self._websocket),
            ]
        )

    def start(
        self, transport: Literal["bytes", "websocket"], context_id: str, body: Any
    ) -> Synthesis:
        synthesis = Synthesis(
            transport,
            context_id,
            body["model_id"],
            body["voice"],
            body["output_format"],
            body.get("language"),
            self.timing(),
        )
        self.syntheses.append(synthesis)
        return synthesis

    def failure(self) -> Problem:
        return Problem(self.fail_status, "Synthesis failed", "(simulated) synthesis failed")

    async def audio_chunks(
        self, synthesis: Synthesis, text: str, sample_rate: int
    ) -> AsyncIterator[Samples]:
        """`text` as audio in `chunk_ms` pieces, each released when its timing allows."""
        samples = await self.render(text, sample_rate)
        async for start, end in self.paced(synthesis.timing, samples, sample_rate):
            yield samples[start:end]

    def authorized(self, headers: Headers, query: QueryParams | None = None) -> bool:
        key = headers.get("x-api-key")
        bearer = headers.get("authorization", "")
        if key is None and bearer.startswith("Bearer "):
            key = bearer.removeprefix("Bearer ")
        if key is None and query is not None:
            key = query.get("api_key")
        return key == self.api_key

    def http_error(self, problem: Problem, version: str | None) -> Response:
        self.rejected.append(problem.message)
        if version is not None and version in API_VERSIONS and version >= _STRUCTURED_ERRORS_SINCE:
            return JSONResponse(_structured(problem), status_code=problem.status)
        return PlainTextResponse(f"{problem.title}: {problem.message}", status_code=problem.status)

    async def _bytes(self, request: Request) -> Response:
        version = request.headers.get("cartesia-version")
        if not self.authorized(request.headers):
            return self.http_error(_UNAUTHORIZED, version)
        problem = _version_problem(version)
        if problem:
            return self.http_error(problem, version)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self.http_error(_invalid("the body is not JSON"), version)
        problem = check_request(body, streaming=False)
        if problem:
            return self.http_error(problem, version)
        self.received.append(body)
        synthesis = self.start("bytes", str(uuid.uuid4()), body)
        synthesis.text = body["transcript"]
        if self.take("fail_next"):
            synthesis.end("failed")
            return self.http_error(self.failure(), version)
        stream = self._bytes_body(synthesis, drop=self.take("drop_next"))
        return StreamingResponse(stream, media_type="application/octet-stream")

    async def _bytes_body(self, synthesis: Synthesis, *, drop: bool) -> AsyncIterator[bytes]:
        fmt = synthesis.output_format
        async for chunk in self.audio_chunks(synthesis, synthesis.text, fmt["sample_rate"]):
            yield encode(chunk, fmt["encoding"])
            if drop:
                synthesis.end("dropped")
                # Raising mid-body makes the server abort the connection: the client sees a
                # response that never completes, as when a provider's connection breaks.
                raise ConnectionAbortedError("(simulated) connection dropped")
        synthesis.end("done")

    async def _websocket(self, websocket: WebSocket) -> None:
        query = websocket.query_params
        version = query.get("cartesia_version") or websocket.headers.get("cartesia-version")
        problem = (
            _UNAUTHORIZED
            if not self.authorized(websocket.headers, query)
            else _version_problem(version)
        )
        if problem:
            await websocket.send_denial_response(self.http_error(problem, version))
            return
        self.connections.append(
            {k: v for k, v in query.items() if k not in ("api_key", "access_token")}
        )
        await websocket.accept()
        socket = _Socket(self, websocket, version or "")
        try:
            await socket.run()
        finally:
            await socket.aclose()


_UNAUTHORIZED = Problem(401, "Unauthorized", "Invalid API key", "invalid_api_key")


def _version_problem(version: str | None) -> Problem | None:
    if not version:
        message = "send the Cartesia-Version header (or cartesia_version on a WebSocket)"
        return Problem(400, "Missing API version", message, "missing_api_version")
    if version not in API_VERSIONS:
        message = f"unknown API version {version[:20]!r}"
        return Problem(400, "Invalid API version", message, "invalid_version")
    return None


def _structured(problem: Problem) -> dict[str, Any]:
    return {
        "error_code": problem.code,
        "title": problem.title,
        "message": problem.message,
        "request_id": str(uuid.uuid4()),
    }


class _Context:
    """One WebSocket context: inputs queue up and one task turns them into audio in order."""

    END = object()
    FLUSH = object()

    def __init__(self, socket: _Socket, synthesis: Synthesis, request: dict[str, Any]) -> None:
        self.socket = socket
        self.synthesis = synthesis
        self.fixed = _fixed(request)
        self.timestamps = request.get("add_timestamps") is True
        self.drop = socket.sim.take("drop_next")
        self.flush_id = 1
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.task = asyncio.create_task(self.produce())

    @property
    def context_id(self) -> str:
        return self.synthesis.context_id

    def push(self, request: dict[str, Any]) -> None:
        self.synthesis.text += request["transcript"]
        if request["transcript"].strip():
            self.queue.put_nowait(request["transcript"])
        if request.get("flush") is True:
            self.queue.put_nowait(self.FLUSH)
        if request.get("continue") is not True:
            self.queue.put_nowait(self.END)

    async def cancel(self, outcome: Literal["cancelled", "failed"]) -> None:
        """Stop producing; safe to call at any time."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.synthesis.end(outcome)

    async def produce(self) -> None:
        fmt = self.synthesis.output_format
        rate, encoding = fmt["sample_rate"], fmt["encoding"]
        sim = self.socket.sim
        while (item := await self.queue.get()) is not self.END:
            if item is self.FLUSH:
                await self.send({"type": "flush_done", "done": False, "flush_done": True})
                self.flush_id += 1
                continue
            assert isinstance(item, str)
            start_s = self.synthesis.timing.audio_s
            async for chunk in sim.audio_chunks(self.synthesis, item, rate):
                data = base64.b64encode(encode(chunk, encoding)).decode()
                step_ms = round(len(chunk) / rate * 1000 * sim.realtime_factor)
                await self.send(
                    {"type": "chunk", "data": data, "done": False, "step_time": step_ms}
                )
                if self.drop:
                    self.synthesis.end("dropped")
                    await self.socket.drop()
                    return
            if self.timestamps:  # on the context's clock, which starts at its first audio
                spoken_s = self.synthesis.timing.audio_s - start_s
                await self.send(_word_timestamps(item, start_s, spoken_s))
        await self.send({"type": "done", "done": True})
        self.synthesis.end("done")
        self.socket.contexts.pop(self.context_id, None)

    async def send(self, message: dict[str, Any]) -> None:
        base = {"status_code": 206, "context_id": self.context_id, "flush_id": self.flush_id}
        await self.socket.send({**message, **base})


def _word_timestamps(text: str, offset_s: float, duration_s: float) -> dict[str, Any]:
    """Word times for `text` spoken evenly over `duration_s`, on the context's clock."""
    per_char = duration_s / max(1, len(text))
    words = list(re.finditer(r"\S+", text))
    stamps = {
        "words": [word.group() for word in words],
        "start": [round(offset_s + word.start() * per_char, 3) for word in words],
        "end": [round(offset_s + word.end() * per_char, 3) for word in words],
    }
    return {"type": "timestamps", "done": False, "word_timestamps": stamps}


class _Socket:
    def __init__(self, sim: CartesiaSimulator, websocket: WebSocket, version: str) -> None:
        self.sim = sim
        self.ws = websocket
        self.version = version
        self.contexts: dict[str, _Context] = {}
        self.no_more_input: set[str] = set()  # contexts that ended or failed
        self.send_lock = asyncio.Lock()

    async def run(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is None:
                await self.error(None, _invalid("send JSON text messages, not binary frames"))
                continue
            try:
                data = json.loads(message["text"])
            except json.JSONDecodeError:
                await self.error(None, _invalid("the message is not JSON"))
                continue
            if not isinstance(data, dict):
                await self.error(None, _invalid("the message must be a JSON object"))
                continue
            await self.handle(data)

    async def handle(self, data: dict[str, Any]) -> None:
        context_id = data.get("context_id")
        if context_id is not None and (not isinstance(context_id, str) or not context_id):
            await self.error(None, _invalid("context_id must be a non-empty string"))
            return
        if "cancel" in data:
            await self.cancel(context_id, data)
            return
        context_id = context_id or str(uuid.uuid4())  # no id: a one-off generation
        if context_id in self.no_more_input:
            closed = Problem(
                400,
                "Context closed",
                f"context {context_id[:64]!r} takes no more input; use a new context_id",
                "context_closed",
            )
            await self.error(context_id, closed)
            return
        context = self.contexts.get(context_id)
        problem = check_request(data, streaming=True)
        if problem is None and context is not None and _fixed(data) != context.fixed:
            problem = _invalid(
                "inputs on one context must keep every field except transcript, continue "
                "and duration"
            )
        if problem:
            await self.error(context_id, problem)
            return
        self.sim.received.append(data)
        if context is None:
            synthesis = self.sim.start("websocket", context_id, data)
            if self.sim.take("fail_next"):
                synthesis.end("failed")
                await self.error(context_id, self.sim.failure())
                return
            context = self.contexts[context_id] = _Context(self, synthesis, data)
        context.push(data)
        if data.get("continue") is not True:
            self.no_more_input.add(context_id)

    async def cancel(self, context_id: str | None, data: dict[str, Any]) -> None:
        if context_id is None or data["cancel"] is not True:
            await self.error(context_id, _invalid("cancel must be true and name a context_id"))
            return
        self.sim.received.append(data)
        self.no_more_input.add(context_id)
        context = self.contexts.pop(context_id, None)
        if context is not None:
            await context.cancel("cancelled")

    async def error(self, context_id: str | None, problem: Problem) -> None:
        """Fail one context (or, without an id, one message) the way this API version does."""
        self.sim.rejected.append(problem.message)
        if context_id is not None:
            self.no_more_input.add(context_id)
            context = self.contexts.pop(context_id, None)
            if context is not None:
                await context.cancel("failed")
        message: dict[str, Any] = {"type": "error", "done": True, "status_code": problem.status}
        if self.version >= _STRUCTURED_ERRORS_SINCE:
            message |= _structured(problem)
        else:
            message["error"] = f"{problem.title}: {problem.message}"
        if context_id is not None:
            message["context_id"] = context_id
        await self.send(message)

    async def send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            with contextlib.suppress(RuntimeError, OSError):  # the client is already gone
                await self.ws.send_text(json.dumps(message))

    async def drop(self) -> None:
        async with self.send_lock:
            with contextlib.suppress(RuntimeError, OSError):
                await self.ws.close(code=1011, reason="(simulated) connection dropped")

    async def aclose(self) -> None:
        for context in list(self.contexts.values()):
            await context.cancel("cancelled")
        self.contexts.clear()


def _fixed(request: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in request.items() if key not in _PER_INPUT_FIELDS}


def check_request(body: Any, *, streaming: bool) -> Problem | None:
    """What the API would refuse in a generation request (`streaming`: a WebSocket input)."""
    if not isinstance(body, dict):
        return _invalid("the request must be a JSON object")
    if body.get("model_id") not in MODELS:
        return Problem(
            400,
            "Invalid model",
            "The model is not valid, make sure it is a valid model ID.",
            "model_not_found",
        )
    transcript = body.get("transcript")
    if not isinstance(transcript, str):
        return _invalid("transcript must be a string")
    if not streaming and not transcript.strip():
        return _invalid("transcript must not be empty")
    language = body.get("language")
    if language is not None and language not in LANGUAGES:
        return _invalid(f"unsupported language {str(language)[:20]!r}")
    return (
        _check_voice(body.get("voice"))
        or _check_output_format(body.get("output_format"))
        or _check_options(body, streaming=streaming)
    )


def _check_voice(voice: Any) -> Problem | None:
    if not isinstance(voice, dict):
        return _invalid("voice is required: {'mode': 'id', 'id': <voice id>}")
    if voice.get("mode") == "id":
        if not isinstance(voice.get("id"), str) or not _UUID.match(voice["id"]):
            return _invalid("voice.id must be a voice UUID")
        return None
    if voice.get("mode") == "embedding":
        embedding = voice.get("embedding")
        if (
            not isinstance(embedding, list)
            or len(embedding) != _EMBEDDING_SIZE
            or not all(_is_number(x) for x in embedding)
        ):
            return _invalid(f"voice.embedding must be {_EMBEDDING_SIZE} numbers")
        return None
    return _invalid("voice.mode must be 'id' or 'embedding'")


def _check_output_format(fmt: Any) -> Problem | None:
    if not isinstance(fmt, dict):
        return _invalid("output_format is required")
    container, encoding, rate = fmt.get("container"), fmt.get("encoding"), fmt.get("sample_rate")
    if container not in CONTAINERS:
        return _invalid(f"output_format.container must be one of {', '.join(sorted(CONTAINERS))}")
    if container == "mp3":
        if not isinstance(fmt.get("bit_rate"), int):
            return _invalid("output_format.bit_rate is required for mp3")
    elif encoding not in ENCODINGS:
        return _invalid(f"output_format.encoding must be one of {', '.join(sorted(ENCODINGS))}")
    if isinstance(rate, bool) or rate not in SAMPLE_RATES:
        return _invalid(
            "output_format.sample_rate must be one of "
            + ", ".join(str(r) for r in sorted(SAMPLE_RATES))
        )
    if container != "raw" or encoding not in _SIMULATED_ENCODINGS:
        return Problem(
            400,
            "Not simulated",
            "(simulated) only raw pcm_s16le and pcm_f32le audio is simulated",
            "not_simulated",
        )
    return None


def _check_options(body: dict[str, Any], *, streaming: bool) -> Problem | None:
    for name in _STREAM_FLAGS if streaming else ():
        if name in body and not isinstance(body[name], bool):
            return _invalid(f"{name} must be a boolean")
    delay = body.get("max_buffer_delay_ms", 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= 5000:
        return _invalid("max_buffer_delay_ms must be an integer from 0 to 5000")
    duration = body.get("duration")
    if duration is not None and (not _is_number(duration) or duration <= 0):
        return _invalid("duration must be a positive number of seconds")
    config = body.get("generation_config", {})
    if not isinstance(config, dict):
        return _invalid("generation_config must be an object")
    for name, low, high in (("speed", 0.6, 2.0), ("volume", 0.5, 2.0)):
        value = config.get(name)
        if value is not None and (not _is_number(value) or not low <= value <= high):
            return _invalid(f"generation_config.{name} must be a number from {low} to {high}")
    if "emotion" in config and not isinstance(config["emotion"], str):
        return _invalid("generation_config.emotion must be a string")
    if "pronunciation_dict_id" in body and not isinstance(body["pronunciation_dict_id"], str):
        return _invalid("pronunciation_dict_id must be a string")
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
