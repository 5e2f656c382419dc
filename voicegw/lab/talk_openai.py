"""openai mode of `voicegw talk`: what the page does, minus the browser.

It asks a running gateway for an openai session, connects to the relay with the official
openai SDK (the ticket as its API key), streams the recording as pcm16 24 kHz in 20 ms chunks
at real time, and plays the reply on the same virtual speaker as livekit mode
(`voicegw.lab.audio.Speaker`), so voice-to-voice is measured the same way in both: from the
true end of each utterance in the input to the first audible sample of the reply.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import openai

from pipelines.contracts.metrics import to_ms

from .audio import Samples, Speaker, Utterance, find_utterances, resample
from .turns import STAGES, TalkResult, TalkRun, ToolCall, Turn

log = logging.getLogger("voicegw.talk")

RATE = 24_000
CHUNK_S = 0.020


async def talk_openai(
    gateway_url: str,
    samples: Samples,
    sample_rate: int,
    *,
    session_id: str = "talk",
    model: str = "gpt-realtime",
    utterances: tuple[Utterance, ...] | None = None,
    settle_timeout_s: float = 20.0,
    on_turn: Callable[[Turn], None] | None = None,
) -> TalkRun:
    """Stream `samples` through the gateway's relay in real time and return the turns
    (`on_turn` hears of each as the relay reports it). Cancelling it is safe: the connection
    is closed and its tasks are awaited."""
    if utterances is None:
        utterances = find_utterances(samples, sample_rate)
    pcm = resample(samples, sample_rate, RATE)
    async with httpx.AsyncClient(base_url=gateway_url) as http:
        response = await http.get(
            "/v1/session", params={"mode": "openai", "session_id": session_id}
        )
        response.raise_for_status()
        config = response.json()
    if config["mode"] != "openai" or config["relay"] is None:
        raise RuntimeError(f"the gateway gave a {config['mode']} session ({config['reason']})")
    ws_url = gateway_url.replace("http://", "ws://").replace("https://", "wss://")
    client = openai.AsyncOpenAI(
        api_key=config["relay"]["ticket"],
        base_url=f"{gateway_url}/v1",
        websocket_base_url=f"{ws_url}/v1",
    )
    speaker = Speaker(RATE)
    turns: list[Turn] = []
    turn_ends: list[float | None] = []
    done = asyncio.Event()
    origin = time.perf_counter()
    try:
        async with client.realtime.connect(model=model) as connection:
            origin = time.perf_counter()
            sender = asyncio.create_task(_send(connection, pcm, origin, done))
            try:
                await asyncio.wait_for(
                    _receive(
                        connection, speaker, turns, turn_ends, len(utterances), done, on_turn
                    ),
                    len(pcm) / RATE + settle_timeout_s,
                )
            except TimeoutError:
                log.warning("conversation did not settle", extra={"session_id": session_id})
            finally:
                done.set()
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
    finally:
        await client.close()
    for number, turn in enumerate(turns[: len(utterances)]):
        end = origin + utterances[number].end_s
        heard = [s for s in speaker.sounds if s >= end]
        turn.voice_to_voice_ms = to_ms(heard[0] - end) if heard else None
    duration = max(len(pcm) / RATE, time.perf_counter() - origin)
    return TalkRun(
        result=TalkResult(mode="openai", turns=turns),
        turn_ends=turn_ends,
        utterances=utterances,
        output=speaker.render(origin, duration),
        output_rate=RATE,
        origin=origin,
        sounds=list(speaker.sounds),
    )


async def _send(connection: Any, pcm: Samples, origin: float, done: asyncio.Event) -> None:
    """The microphone: the recording in 20 ms chunks at real time, then silence."""
    step = round(RATE * CHUNK_S)
    silence = bytes(step * 2)
    index = 0
    while not done.is_set():
        chunk = pcm[index * step : (index + 1) * step].tobytes()
        chunk = chunk + silence[len(chunk) :]
        await connection.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}
        )
        index += 1
        # Real-time pacing against the clock, so a slow send does not drift the timeline.
        await asyncio.sleep(max(0.0, origin + index * CHUNK_S - time.perf_counter()))


async def _receive(
    connection: Any,
    speaker: Speaker,
    turns: list[Turn],
    turn_ends: list[float | None],
    expected: int,
    done: asyncio.Event,
    on_turn: Callable[[Turn], None] | None,
) -> None:
    turn, turn_end = Turn(), None
    arguments: dict[str, str] = {}
    while len(turns) < expected:
        message = json.loads(await connection.recv_bytes())
        now = time.perf_counter()
        kind = message.get("type")
        if kind == "response.output_audio.delta":
            speaker.play(np.frombuffer(base64.b64decode(message["delta"]), dtype=np.int16), now)
        elif kind == "response.done":
            speaker.end_segment()
        elif kind == "input_audio_buffer.speech_stopped" and turn_end is None:
            turn_end = now  # the server VAD ended the turn
        elif kind == "response.function_call_arguments.done":
            arguments[message["call_id"]] = message["arguments"]
        elif kind == "transcript.user" and message["final"]:
            turn.user_text = " ".join(filter(None, (turn.user_text, message["text"])))
        elif kind == "transcript.assistant" and message["final"]:
            turn.assistant_text = " ".join(filter(None, (turn.assistant_text, message["text"])))
        elif kind == "tool.finished":
            raw = arguments.get(message["call_id"], "{}")
            call = ToolCall(
                name=message["name"], arguments=_json_or_raw(raw), status=message["status"]
            )
            turn.tool_calls.append(call)
        elif kind == "metrics.turn":
            for stage in STAGES[:-1]:  # voice-to-voice is measured here, on the speaker
                setattr(turn, stage, message.get(stage))
            turns.append(turn)
            turn_ends.append(turn_end)
            if on_turn is not None:  # with the relay's own voice-to-voice until ours is in
                v2v = message.get("voice_to_voice_ms")
                on_turn(turn.model_copy(update={"voice_to_voice_ms": v2v}))
            turn, turn_end = Turn(), None
        elif kind == "voice.error" and message.get("fatal"):
            raise RuntimeError(f"relay error {message['code']}: {message['message']}")
    done.set()


def _json_or_raw(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
