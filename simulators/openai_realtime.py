"""OpenAI Realtime (GA) simulator: the WebSocket API on 127.0.0.1, enough to hold a voice turn.

It validates every client event with the openai SDK's GA types (a beta event or shape is a
`violation`, and the client gets OpenAI's `error` event), runs a simple energy VAD on the
appended pcm16 audio, and answers with scripted replies: audio streamed as
`response.output_audio.delta` with its transcript, or a function call. Scripted text starts
with "(simulated)". A test scripts replies (`script()`), reads what arrived (`received`,
`violations`), and waits on conditions (`wait_for()`) instead of sleeping.

`speak=True` voices `Say` replies with espeak-ng (when installed; else the tone), and
`response_delay_s` holds each response back after `response.created`, as a model's time to
first audio would.

`echo=True` is the benchmark mode: every appended chunk comes straight back as an audio delta
whose `item_id` is the append's `event_id`, so a client can time each frame pair. Given a
`take_over` hook that hands it a connection's frames as they arrive (the benchmark plugs in
the relay's direct WebSocket protocol), an echo simulator echoes each append from the socket's
callback (still validated with the SDK types), so it costs a benchmark's shared cores little;
every other event goes through the same handlers as always.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from openai.types.realtime import InputAudioBufferAppendEvent
from pydantic import ValidationError
from pydantic_core import from_json
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .realtime_events import (
    CLIENT_EVENT_MODELS,
    SERVER_EVENT_MODELS,
    assistant_item,
    event,
    function_call_item,
    merge_session,
    new_id,
    response_object,
    session_object,
    user_audio_item,
)
from .speech import have_espeak, speak

SAMPLE_RATE = 24_000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
CHUNK_MS = 20
SPEECH_RMS = 0.02  # of full scale: above this a chunk counts as speech
DEFAULT_API_KEY = "sk-simulated-openai-key"
DEFAULT_USER_TRANSCRIPT = "(simulated) user speech"
_APPEND = '{"type":"input_audio_buffer.append"'


@dataclass(frozen=True)
class Say:
    """Speak `text` as `audio_ms` of tone; `pace` streams it at real time (else at once)."""

    text: str = "(simulated) Hello, this is the assistant."
    audio_ms: int = 400
    pace: bool = False


@dataclass(frozen=True)
class CallTool:
    """Call a function; `pause_s` waits between the argument deltas and `arguments.done`."""

    name: str
    arguments: dict[str, Any]
    call_id: str = field(default_factory=lambda: new_id("call"))
    pause_s: float = 0.0


Reply = Say | CallTool


class FrameSink(Protocol):
    """What a taken-over connection reports, frame by frame, from its socket's callbacks."""

    def on_client_text(self, text: str) -> None: ...

    def on_client_binary(self, size: int) -> None: ...

    def on_client_control(self) -> None: ...

    def on_client_too_large(self) -> None: ...

    def on_client_closed(self) -> None: ...

    def on_client_backpressure(self, paused: bool) -> None: ...


class FrameLeg(Protocol):
    """A taken-over connection: frames out are written to its transport at once."""

    async def accept(self, subprotocol: str | None) -> None: ...

    def send_text(self, payload: bytes) -> None: ...

    def resume_reading(self) -> None: ...


# Given a WebSocket that is not accepted yet and the sink its frames go to, a leg carrying
# them (or None: the server offers no such thing, and the ASGI interface serves the echo).
TakeOver = Callable[[WebSocket, FrameSink], FrameLeg | None]


@dataclass
class RealtimeSimulator:
    """The ASGI app is `self.app` (path `/v1/realtime`); serve it with `simulators.server`."""

    api_key: str = DEFAULT_API_KEY
    user_transcript: str = DEFAULT_USER_TRANSCRIPT
    echo: bool = False
    validate_outgoing: bool = True
    drop_after_audio_deltas: int | None = None
    default_reply: Reply = field(default_factory=Say)
    response_delay_s: float = 0.0  # model time: response.created → first output
    speak: bool = False  # say replies with espeak-ng (when installed) instead of a tone
    take_over: TakeOver | None = None  # echo mode: frames straight from the socket
    received: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    connections: int = 0
    open_connections: int = 0
    taken_over: int = 0  # connections whose frames `take_over` handed to the echo
    models: list[str] = field(default_factory=list)
    _script: list[Reply] = field(default_factory=list)
    _changed: asyncio.Event | None = None

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[WebSocketRoute("/v1/realtime", self._handle)])

    def script(self, *replies: Reply) -> None:
        """The next responses, in order; after them every response is `default_reply`."""
        self._script.extend(replies)

    def next_reply(self) -> Reply:
        return self._script.pop(0) if self._script else self.default_reply

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == type_]

    def function_outputs(self) -> list[dict[str, Any]]:
        return [
            e["item"]
            for e in self.of_type("conversation.item.create")
            if e["item"].get("type") == "function_call_output"
        ]

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Return once `predicate()` holds; it is re-checked whenever the simulator changes."""
        async with asyncio.timeout(within):
            while not predicate():
                await self._event().wait()
                self._event().clear()

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _touch(self) -> None:
        self._event().set()

    async def _handle(self, websocket: WebSocket) -> None:
        if websocket.headers.get("authorization") != f"Bearer {self.api_key}":
            self.violations.append("connected without the server's API key")
        if "openai-beta" in websocket.headers:
            self.violations.append("sent an OpenAI-Beta header (beta protocol)")
        model = websocket.query_params.get("model", "")
        self.models.append(model)
        connection = _Connection(self, websocket, model)
        if self.echo and self.take_over is not None:
            connection.leg = self.take_over(websocket, connection)
        if connection.leg is not None:
            self.taken_over += 1
            await connection.leg.accept(None)
            connection.leg.resume_reading()
        else:
            await websocket.accept()
        self.connections += 1
        self.open_connections += 1
        self._touch()
        try:
            await connection.run()
        finally:
            self.open_connections -= 1
            self._touch()


class _Dropped(Exception):
    """The simulator hangs up on purpose (drop_after_audio_deltas)."""


class _Connection:
    def __init__(self, sim: RealtimeSimulator, websocket: WebSocket, model: str) -> None:
        self.sim = sim
        self.ws = websocket
        self.model = model
        self.session: dict[str, Any] = {
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad"}}},
        }
        self.response: asyncio.Task[None] | None = None
        self.buffer_ms = 0.0
        self.speaking = False
        self.speech_start_ms = 0.0
        self.silence_ms = 0.0
        self.item_id = new_id("item")
        self.audio_deltas = 0
        self.echo_response: str | None = None
        self.closed = False
        self.leg: FrameLeg | None = None  # set when the frames were taken over (echo mode)
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._idle = False  # the handler loop waits on an empty inbox

    # -- the taken-over connection's sink (echo mode) -----------------------------------------

    def on_client_text(self, text: str) -> None:
        if self._idle and self.echo_response is not None and text.startswith(_APPEND):
            try:  # an echo append, answered from the socket's callback
                append = InputAudioBufferAppendEvent.model_validate_json(text)
            except ValidationError:
                pass  # the handler loop records it and answers with OpenAI's error
            else:
                assert self.leg is not None
                self.leg.send_text(self.echo_delta(append.audio, append.event_id).encode())
                return
        self._inbox.put_nowait(text)

    def on_client_binary(self, size: int) -> None:
        self._inbox.put_nowait("")  # not JSON: the loop answers OpenAI's error

    def on_client_control(self) -> None:
        pass

    def on_client_too_large(self) -> None:
        self._inbox.put_nowait(None)  # the frame is never read: treat it as gone

    def on_client_closed(self) -> None:
        self._inbox.put_nowait(None)

    def on_client_backpressure(self, paused: bool) -> None:
        pass

    async def send_text(self, text: str) -> None:
        if self.leg is None:
            await self.ws.send_text(text)
        else:  # taken over: everything goes out through the leg, and stops at a close
            self.leg.send_text(text.encode())

    async def receive_text(self) -> str:
        if self.leg is None:
            return await self.ws.receive_text()
        self._idle = self._inbox.empty()
        try:
            text = await self._inbox.get()
        finally:
            self._idle = False
        if text is None:
            raise WebSocketDisconnect(1000)
        return text

    async def run(self) -> None:
        handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "session.update": self.on_session_update,
            "input_audio_buffer.append": self.on_append,
            "input_audio_buffer.commit": self.on_commit,
            "input_audio_buffer.clear": self.on_clear,
            "conversation.item.create": self.on_item_create,
            "response.create": self.on_response_create,
            "response.cancel": self.on_response_cancel,
            "output_audio_buffer.clear": self.on_response_cancel,
        }
        try:
            await self.send(
                event("session.created", session=session_object(self.session, self.model))
            )
            while True:
                text = await self.receive_text()
                data = self.validate(text)
                if data is None:
                    await self.error("invalid_request_error", "client event")
                    continue
                handler = handlers.get(data["type"])
                if handler is not None:
                    await handler(data)
                self.sim._touch()
        except (WebSocketDisconnect, _Dropped):
            self.closed = True
        finally:
            self.closed = True
            if self.response is not None:
                self.response.cancel()
                with contextlib.suppress(asyncio.CancelledError, _Dropped, WebSocketDisconnect):
                    await self.response

    def validate(self, text: str) -> dict[str, Any] | None:
        data: Any = None
        try:
            data = from_json(text)
            kind = data.get("type") if isinstance(data, dict) else None
            model = CLIENT_EVENT_MODELS.get(kind) if isinstance(kind, str) else None
            if model is None:
                raise ValueError("unknown client event type")
            model.model_validate_json(text)  # from the JSON itself, as strictly as OpenAI
        except (ValueError, ValidationError) as exc:
            kind = data.get("type") if isinstance(data, dict) else None
            self.sim.violations.append(f"invalid client event {kind!r}: {str(exc)[:200]}")
            self.sim._touch()
            return None
        event_data: dict[str, Any] = data
        if not self.sim.echo or event_data["type"] != "input_audio_buffer.append":
            self.sim.received.append(event_data)
        return event_data

    async def error(self, code: str, kind: object) -> None:
        with contextlib.suppress(Exception):
            await self.send(
                event(
                    "error",
                    error={"type": code, "code": code, "message": f"Invalid event: {kind!r}"},
                )
            )

    async def send(self, data: dict[str, Any]) -> None:
        if self.sim.validate_outgoing:
            SERVER_EVENT_MODELS[data["type"]].model_validate(data)
        await self.send_text(json.dumps(data, separators=(",", ":")))

    # -- client events -----------------------------------------------------------------------

    async def on_session_update(self, data: dict[str, Any]) -> None:
        merge_session(self.session, data["session"])
        await self.send(event("session.updated", session=session_object(self.session, self.model)))

    def turn_detection(self) -> dict[str, Any] | None:
        audio = self.session.get("audio") or {}
        detection: dict[str, Any] | None = (audio.get("input") or {}).get("turn_detection")
        return detection

    async def on_append(self, data: dict[str, Any]) -> None:
        if self.sim.echo:
            await self.echo(data)
            return
        pcm = base64.b64decode(data["audio"])
        ms = len(pcm) / BYTES_PER_MS
        detection = self.turn_detection()
        if detection is not None:
            await self.vad(pcm, ms, detection)
        self.buffer_ms += ms

    async def vad(self, pcm: bytes, ms: float, detection: dict[str, Any]) -> None:
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
        rms = math.sqrt(float(np.mean(samples * samples))) / 32768 if samples.size else 0.0
        if rms >= SPEECH_RMS:
            self.silence_ms = 0.0
            if not self.speaking:
                self.speaking = True
                self.speech_start_ms = self.buffer_ms
                await self.send(
                    event(
                        "input_audio_buffer.speech_started",
                        audio_start_ms=int(self.buffer_ms),
                        item_id=self.item_id,
                    )
                )
                if detection.get("interrupt_response", True):
                    await self.cancel_response()
            return
        if not self.speaking:
            return
        self.silence_ms += ms
        if self.silence_ms >= detection.get("silence_duration_ms", 500):
            self.speaking = False
            end_ms = int(self.buffer_ms + ms - self.silence_ms)
            await self.send(
                event(
                    "input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=self.item_id
                )
            )
            await self.commit_turn()
            if detection.get("create_response", True):
                await self.start_response()

    async def commit_turn(self) -> None:
        item_id, self.item_id = self.item_id, new_id("item")
        await self.send(event("input_audio_buffer.committed", item_id=item_id))
        await self.send(event("conversation.item.added", item=user_audio_item(item_id, None)))
        transcript = self.sim.user_transcript
        await self.send(event("conversation.item.done", item=user_audio_item(item_id, transcript)))
        await self.send(
            event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=transcript,
                usage={"type": "duration", "seconds": round(self.buffer_ms / 1000, 3)},
            )
        )

    async def on_commit(self, data: dict[str, Any]) -> None:
        await self.commit_turn()

    async def on_clear(self, data: dict[str, Any]) -> None:
        self.speaking = False
        self.silence_ms = 0.0
        await self.send(event("input_audio_buffer.cleared"))

    async def on_item_create(self, data: dict[str, Any]) -> None:
        item = {"id": new_id("item"), "object": "realtime.item", **data["item"]}
        item.setdefault("status", "completed")
        await self.send(event("conversation.item.added", item=item))
        await self.send(event("conversation.item.done", item=item))

    async def on_response_create(self, data: dict[str, Any]) -> None:
        if self.response is not None and not self.response.done():
            await self.error("conversation_already_has_active_response", "response.create")
            return
        await self.start_response()

    async def on_response_cancel(self, data: dict[str, Any]) -> None:
        await self.cancel_response()

    # -- responses ---------------------------------------------------------------------------

    async def start_response(self) -> None:
        reply = self.sim.next_reply()
        self.response = asyncio.create_task(self.respond(reply))

    async def cancel_response(self) -> None:
        if self.response is not None and not self.response.done():
            self.response.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.response

    async def respond(self, reply: Reply) -> None:
        response_id = new_id("resp")
        output: list[dict[str, Any]] = []
        await self.send(
            event("response.created", response=response_object(response_id, "in_progress", []))
        )
        try:
            if self.sim.response_delay_s:
                await asyncio.sleep(self.sim.response_delay_s)
            if isinstance(reply, Say):
                await self.say(reply, response_id, output)
            else:
                await self.call_tool(reply, response_id, output)
        except asyncio.CancelledError:
            await self.response_done(response_id, "cancelled", output)
            raise
        except _Dropped:
            await self.ws.close(1011, "simulated upstream failure")
            raise
        await self.response_done(response_id, "completed", output)

    async def response_done(
        self, response_id: str, status: str, output: list[dict[str, Any]]
    ) -> None:
        if self.closed:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.send(
                event("response.done", response=response_object(response_id, status, output))
            )

    async def say(self, reply: Say, response_id: str, output: list[dict[str, Any]]) -> None:
        item_id = new_id("item")
        ids = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        item = assistant_item(item_id, "in_progress", "")
        output.append(item)
        await self.send(
            event(
                "response.output_item.added",
                response_id=response_id,
                output_index=0,
                item={**item, "content": []},
            )
        )
        part = {"type": "audio", "transcript": ""}
        await self.send(event("response.content_part.added", **ids, content_index=0, part=part))
        words = reply.text.split(" ")
        audio = await self.reply_audio(reply)
        chunks = len(audio)
        spoken: list[str] = []
        for index in range(chunks):
            delta = base64.b64encode(audio[index]).decode()
            await self.send(
                event("response.output_audio.delta", **ids, content_index=0, delta=delta)
            )
            self.audio_deltas += 1
            drop = self.sim.drop_after_audio_deltas
            if drop is not None and self.audio_deltas >= drop:
                raise _Dropped
            share = words[index * len(words) // chunks : (index + 1) * len(words) // chunks]
            if share:
                text = (" " if spoken else "") + " ".join(share)
                spoken.append(text)
                item["content"][0]["transcript"] = "".join(spoken)
                await self.send(
                    event(
                        "response.output_audio_transcript.delta", **ids, content_index=0, delta=text
                    )
                )
            if reply.pace:
                await asyncio.sleep(CHUNK_MS / 1000)
        item["status"] = "completed"
        await self.send(event("response.output_audio.done", **ids, content_index=0))
        await self.send(
            event(
                "response.output_audio_transcript.done",
                **ids,
                content_index=0,
                transcript=reply.text,
            )
        )
        part = {"type": "audio", "transcript": reply.text}
        await self.send(event("response.content_part.done", **ids, content_index=0, part=part))
        await self.send(
            event("response.output_item.done", response_id=response_id, output_index=0, item=item)
        )

    async def reply_audio(self, reply: Say) -> list[bytes]:
        """The reply as 20 ms pcm16 chunks: espeak-ng speech, or a tone of `audio_ms`."""
        if self.sim.speak and have_espeak():
            pcm = await asyncio.to_thread(_spoken, reply.text)
            step = BYTES_PER_MS * CHUNK_MS
            return [pcm[i : i + step] for i in range(0, len(pcm), step)]
        return [_tone(CHUNK_MS, index) for index in range(max(1, reply.audio_ms // CHUNK_MS))]

    async def call_tool(
        self, reply: CallTool, response_id: str, output: list[dict[str, Any]]
    ) -> None:
        item_id = new_id("item")
        arguments = json.dumps(reply.arguments)
        item = function_call_item(item_id, reply.call_id, reply.name, "", "in_progress")
        output.append(item)
        await self.send(
            event("response.output_item.added", response_id=response_id, output_index=0, item=item)
        )
        ids = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        await self.send(
            event(
                "response.function_call_arguments.delta",
                **ids,
                call_id=reply.call_id,
                delta=arguments,
            )
        )
        item["arguments"] = arguments
        if reply.pause_s:
            await asyncio.sleep(reply.pause_s)
        item["status"] = "completed"
        await self.send(
            event(
                "response.function_call_arguments.done",
                **ids,
                call_id=reply.call_id,
                name=reply.name,
                arguments=arguments,
            )
        )
        await self.send(
            event("response.output_item.done", response_id=response_id, output_index=0, item=item)
        )

    async def echo(self, data: dict[str, Any]) -> None:
        if self.echo_response is None:
            self.echo_response = new_id("resp")
            await self.send(
                event(
                    "response.created",
                    response=response_object(self.echo_response, "in_progress", []),
                )
            )
        await self.send_text(self.echo_delta(data["audio"], data.get("event_id")))

    def echo_delta(self, audio: str, event_id: str | None) -> str:
        """The delta answering an append. Hand-built with `type` first and no validation: this
        is the benchmark's hot path."""
        assert self.echo_response is not None
        return (
            '{"type":"response.output_audio.delta","event_id":"'
            + new_id("event")
            + '","response_id":"'
            + self.echo_response
            + '","item_id":"'
            + (event_id or "")
            + '","output_index":0,"content_index":0,"delta":"'
            + audio
            + '"}'
        )


def _tone(ms: int, index: int, hz: float = 220.0, amplitude: float = 0.2) -> bytes:
    """`ms` of a sine tone, continuing the phase of chunk `index`."""
    count = SAMPLE_RATE * ms // 1000
    t = (np.arange(count) + index * count) / SAMPLE_RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype("<i2").tobytes()


def tone(ms: int, amplitude: float = 0.3) -> bytes:
    """pcm16 24 kHz speech stand-in for tests: loud enough for the simulator's VAD."""
    return _tone(ms, 0, amplitude=amplitude)


@functools.lru_cache(maxsize=64)
def _spoken(text: str) -> bytes:
    return speak(text, sample_rate=SAMPLE_RATE).tobytes()


def silence(ms: int) -> bytes:
    return bytes(SAMPLE_RATE * ms // 1000 * 2)
