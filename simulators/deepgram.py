"""Deepgram live transcription simulator: `wss://api.deepgram.com/v1/listen` on 127.0.0.1.

It speaks the documented streaming protocol to the real client (livekit-plugins-deepgram):
query parameters configure the stream, `Authorization: Token <key>` authenticates it, binary
frames carry linear16 audio, text frames carry `KeepAlive`/`Finalize`/`CloseStream`. It answers
with `SpeechStarted`, interim and final `Results` (`is_final`, `speech_final`), `UtteranceEnd`
when `utterance_end_ms` is set, and `Metadata` on close.

The transcript is scripted, not recognised: each utterance takes the next scripted item (and
its interims reveal, word by word as the speech goes on, that item's entry in `interims` when
there is one: a recogniser that changes its mind before the final). The
simulator listens to the audio level the way Deepgram's endpointing does: speech starts when the
audio turns loud; once it has been silent for `hangover_s` the current segment ends, and its
final (`is_final` + `speech_final`) is sent `final_delay_s` after speech ended (the wall time
of the first silent sample, known because audio arrives in real time; never before
`hangover_s` of silence has arrived). An item may hold segments split by "|" (a sentence
with a pause in the middle); each final sends the next one. Speech after `utterance_gap_s` of
silence starts the next item.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

MODELS = frozenset({"nova-3", "nova-3-general", "nova-2", "nova-2-general"})
_BOOL = ("true", "false")
_WINDOW_MS = 10
_SECONDS_PER_WORD = 0.3


@dataclass(frozen=True)
class Connection:
    """What a client asked for: the query parameters of one accepted stream, and the linear16
    audio it sent when the simulator records it (`record_audio`)."""

    params: dict[str, str]
    audio: bytearray = field(default_factory=bytearray)


@dataclass
class DeepgramSimulator:
    """The ASGI app is `self.app`; the client's `base_url` is `<ws_url>/v1/listen`."""

    transcripts: list[str] = field(default_factory=list)
    interims: list[str | None] = field(default_factory=list)  # per item, when not the final
    api_key: str = "sim-deepgram-key"
    final_delay_s: float = 0.0
    hangover_s: float = 0.1
    utterance_gap_s: float = 1.0
    interim_every_s: float = 0.3
    seconds_per_word: float = _SECONDS_PER_WORD  # how fast interims reveal their words
    finalize: bool = True
    speech_level: float = 0.02
    record_audio: bool = False  # keep each stream's audio on its Connection (tests)
    connections: list[Connection] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    finals: list[str] = field(default_factory=list)
    final_sent: asyncio.Event = field(default_factory=asyncio.Event)
    _items: int = 0

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[WebSocketRoute("/v1/listen", self._handle)])

    def _next_item(self) -> tuple[list[str], list[str]]:
        """The next item's final segments, and what its interims reveal."""
        index = self._items
        self._items += 1
        text = (
            self.transcripts[index]
            if index < len(self.transcripts)
            else f"(simulated) utterance {index + 1}"
        )
        finals = _segments(text)
        interim = self.interims[index] if index < len(self.interims) else None
        return finals, list(finals) if interim is None else _segments(interim)

    async def _handle(self, websocket: WebSocket) -> None:
        problem = self._check(websocket)
        if problem:
            self.rejected.append(problem)
            await websocket.close(code=1008)  # before accept: the handshake fails (HTTP 403)
            return
        connection = Connection(dict(websocket.query_params))
        self.connections.append(connection)
        await websocket.accept()
        stream = _Stream(self, websocket, connection)
        try:
            await stream.run()
        finally:
            await stream.aclose()

    def _check(self, websocket: WebSocket) -> str | None:
        if websocket.headers.get("authorization") != f"Token {self.api_key}":
            return "Authorization must be 'Token <api key>'"
        q = websocket.query_params
        if q.get("model") not in MODELS:
            return f"unsupported model {q.get('model')!r}"
        if q.get("encoding") != "linear16":
            return "encoding must be linear16"
        if not q.get("sample_rate", "").isdigit() or int(q["sample_rate"]) < 8000:
            return "sample_rate must be an integer >= 8000"
        if q.get("channels", "1") != "1":
            return "only mono audio is simulated"
        if not q.get("language"):
            return "language is required for streaming"
        for name in ("interim_results", "smart_format", "punctuate", "vad_events"):
            if q.get(name, "false") not in _BOOL:
                return f"{name} must be true or false"
        endpointing = q.get("endpointing", "10")
        if endpointing != "false" and not endpointing.isdigit():
            return "endpointing must be an integer number of milliseconds or false"
        return None


def _segments(text: str) -> list[str]:
    return [segment.strip() for segment in text.split("|") if segment.strip()]


class _Stream:
    def __init__(self, sim: DeepgramSimulator, websocket: WebSocket, connection: Connection):
        params = connection.params
        self.sim = sim
        self.ws = websocket
        self.connection = connection
        self.rate = int(params["sample_rate"])
        self.interim = params.get("interim_results") == "true"
        self.vad_events = params.get("vad_events") == "true"
        utterance_end = params.get("utterance_end_ms")
        self.utterance_end_s = int(utterance_end) / 1000 if utterance_end else None
        self.request_id = str(uuid.uuid4())
        self.window = self.rate * _WINDOW_MS // 1000
        self.pending = b""
        self.audio_s = 0.0
        self.received_at = 0.0
        self.received_s = 0.0
        self.speaking = False
        self.segment_start_s = 0.0
        self.silent_since_s: float | None = None
        self.silence_wall: float | None = None
        self.last_interim_s = 0.0
        self.segments: list[str] = []
        self.interim_segments: list[str] = []
        self.utterance_open = False
        self.utterance_end_sent = True
        self.final_task: asyncio.Task[None] | None = None
        self.send_lock = asyncio.Lock()

    async def run(self) -> None:
        while True:
            try:
                message = await self.ws.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await self._audio(message["bytes"])
                continue
            try:
                control = json.loads(message.get("text") or "")
                kind = control["type"]
            except (json.JSONDecodeError, KeyError, TypeError):
                self.sim.rejected.append("a text frame that is not a control message")
                await self.ws.close(code=1008)
                return
            if kind == "KeepAlive":
                continue
            if kind == "Finalize":
                if self.sim.finalize and (self.speaking or self.final_task is not None):
                    await self._send_final(from_finalize=True)
                continue
            if kind == "CloseStream":
                await self._send(
                    {
                        "type": "Metadata",
                        "request_id": self.request_id,
                        "duration": self.audio_s,
                        "channels": 1,
                    }
                )
                # The client may hang up right after CloseStream, before our close goes out.
                with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                    await self.ws.close()
                return
            self.sim.rejected.append(f"unknown control message {kind!r}")
            await self.ws.close(code=1008)
            return

    async def aclose(self) -> None:
        if self.final_task is not None:
            self.final_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.final_task

    async def _audio(self, data: bytes) -> None:
        if len(data) % 2:
            self.sim.rejected.append("linear16 audio must have an even number of bytes")
        if self.sim.record_audio:
            self.connection.audio.extend(data)
        self.pending += data
        # Audio arrives in real time, so the newest sample is "now": a window's own wall time
        # is now minus the audio that follows it. `final_delay_s` counts from that.
        self.received_at = time.perf_counter()
        self.received_s = self.audio_s + len(self.pending) / 2 / self.rate
        step = self.window * 2
        while len(self.pending) >= step:
            chunk = np.frombuffer(self.pending[:step], dtype=np.int16)
            self.pending = self.pending[step:]
            self.audio_s += _WINDOW_MS / 1000
            loud = bool(np.abs(chunk.astype(np.int32)).max() > self.sim.speech_level * 32767)
            await self._window(loud)

    async def _window(self, loud: bool) -> None:
        if loud:
            if not self.speaking:
                await self._speech_started()
            self.silent_since_s = None
            self.silence_wall = None
            if self.interim and self.audio_s - self.last_interim_s >= self.sim.interim_every_s:
                self.last_interim_s = self.audio_s
                await self._send(self._results(self._partial(), is_final=False, speech_final=False))
            return
        if not self.speaking:
            await self._maybe_utterance_end()
            return
        if self.silent_since_s is None:
            self.silent_since_s = self.audio_s - _WINDOW_MS / 1000
            self.silence_wall = self.received_at - (self.received_s - self.silent_since_s)
        if (
            self.final_task is None
            and self.audio_s - self.silent_since_s >= self.sim.hangover_s
            and self.sim.finalize
        ):
            assert self.silence_wall is not None
            delay = self.sim.final_delay_s - (time.perf_counter() - self.silence_wall)
            self.final_task = asyncio.create_task(self._final_after(max(0.0, delay)))

    async def _speech_started(self) -> None:
        resumed = self.final_task is not None and not self.final_task.done()
        if resumed:
            assert self.final_task is not None
            self.final_task.cancel()  # the pause was not the end: keep the segment open
            with contextlib.suppress(asyncio.CancelledError):
                await self.final_task
            self.final_task = None
            return
        new_utterance = not self.utterance_open or (
            self.silent_since_s is not None
            and self.audio_s - self.silent_since_s >= self.sim.utterance_gap_s
        )
        if new_utterance or not self.segments:
            if new_utterance:
                self.segments, self.interim_segments = self.sim._next_item()
                self.utterance_open = True
        self.speaking = True
        self.utterance_end_sent = False
        self.segment_start_s = self.audio_s - _WINDOW_MS / 1000
        self.last_interim_s = self.audio_s
        if self.vad_events:
            await self._send(
                {
                    "type": "SpeechStarted",
                    "channel": [0],
                    "timestamp": round(self.segment_start_s, 3),
                }
            )

    async def _final_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._send_final(from_finalize=False)

    async def _send_final(self, *, from_finalize: bool) -> None:
        text = self.segments.pop(0) if self.segments else ""
        if self.interim_segments:
            self.interim_segments.pop(0)
        self.speaking = False
        self.final_task = None
        self.sim.finals.append(text)
        await self._send(
            self._results(
                text, is_final=True, speech_final=not from_finalize, from_finalize=from_finalize
            )
        )
        self.sim.final_sent.set()

    async def _maybe_utterance_end(self) -> None:
        if (
            self.utterance_end_s is None
            or self.utterance_end_sent
            or self.silent_since_s is None
            or self.audio_s - self.silent_since_s < self.utterance_end_s
        ):
            return
        self.utterance_end_sent = True
        await self._send(
            {
                "type": "UtteranceEnd",
                "channel": [0, 1],
                "last_word_end": round(self.silent_since_s, 3),
            }
        )

    def _partial(self) -> str:
        if not self.interim_segments:
            return ""
        words = self.interim_segments[0].split()
        spoken = int((self.audio_s - self.segment_start_s) / self.sim.seconds_per_word) + 1
        return " ".join(words[: min(len(words), spoken)])

    def _results(
        self, text: str, *, is_final: bool, speech_final: bool, from_finalize: bool = False
    ) -> dict[str, Any]:
        end = self.silent_since_s if self.silent_since_s is not None else self.audio_s
        words = text.split()
        step = (end - self.segment_start_s) / max(1, len(words))
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end - self.segment_start_s, 3),
            "start": round(self.segment_start_s, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": text,
                        "confidence": 0.99,
                        "words": [
                            {
                                "word": word.strip(".,?!").lower(),
                                "punctuated_word": word,
                                "start": round(self.segment_start_s + i * step, 3),
                                "end": round(self.segment_start_s + (i + 1) * step, 3),
                                "confidence": 0.99,
                            }
                            for i, word in enumerate(words)
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": "general-nova-3", "version": "sim", "arch": "nova-3"},
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
        }

    async def _send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.ws.send_text(json.dumps(message))
