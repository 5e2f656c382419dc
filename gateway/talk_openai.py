"""One conversation from a recording in openai mode: what the page does, minus the browser.

It asks a running gateway for an openai session, connects to the relay with the official
openai SDK (the ticket as its API key), streams the recording as pcm16 24 kHz in 20 ms chunks
at real time, and plays the reply on the same virtual speaker as livekit mode
(`simulators.speech.Speaker`), so voice-to-voice is measured the same way in both: from the
true end of each utterance in the input to the first audible sample of the reply.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import openai

from simulators.speech import Samples, Speaker, Utterance, find_utterances

log = logging.getLogger("voicegw.talk")

RATE = 24_000
CHUNK_S = 0.020
_STAGES = ("eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms")


@dataclass
class Turn:
    """One user utterance and everything the agent did about it."""

    user_text: str = ""
    assistant_text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    stages: dict[str, float | None] = field(default_factory=dict)
    voice_to_voice_ms: float | None = None
    turn_end_at: float | None = None  # perf_counter() when the server VAD ended the turn

    def summary(self) -> dict[str, Any]:
        """The `voicegw talk --json` turn shape."""
        return {
            "user_text": self.user_text,
            "assistant_text": self.assistant_text,
            "tool_calls": self.tool_calls,
            **{stage: self.stages.get(stage) for stage in _STAGES},
            "voice_to_voice_ms": self.voice_to_voice_ms,
        }


@dataclass
class TalkResult:
    turns: list[Turn]
    utterances: tuple[Utterance, ...]
    output: Samples  # the reply audio on the input's timeline, 24 kHz
    session_id: str
    origin: float  # perf_counter() of input sample 0


def to_pcm24k(samples: Samples, sample_rate: int) -> Samples:
    if sample_rate == RATE:
        return samples
    count = round(len(samples) * RATE / sample_rate)
    positions = np.arange(count) * (sample_rate / RATE)
    resampled = np.interp(positions, np.arange(len(samples)), samples.astype(np.float64))
    out: Samples = np.round(resampled).astype(np.int16)
    return out


async def talk_openai(
    gateway_url: str,
    samples: Samples,
    sample_rate: int,
    *,
    session_id: str = "talk",
    model: str = "gpt-realtime",
    utterances: tuple[Utterance, ...] | None = None,
    settle_timeout_s: float = 20.0,
) -> TalkResult:
    """Stream `samples` through the gateway's relay in real time and return the turns.
    Cancelling it is safe: the connection is closed and its tasks are awaited."""
    if utterances is None:
        utterances = find_utterances(samples, sample_rate)
    pcm = to_pcm24k(samples, sample_rate)
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
    done = asyncio.Event()
    origin = time.perf_counter()
    try:
        async with client.realtime.connect(model=model) as connection:
            origin = time.perf_counter()
            sender = asyncio.create_task(_send(connection, pcm, origin, done))
            try:
                await asyncio.wait_for(
                    _receive(connection, speaker, turns, len(utterances), done),
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
        turn.voice_to_voice_ms = round((heard[0] - end) * 1000, 1) if heard else None
    duration = max(len(pcm) / RATE, time.perf_counter() - origin)
    return TalkResult(turns, utterances, speaker.render(origin, duration), session_id, origin)


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
    connection: Any, speaker: Speaker, turns: list[Turn], expected: int, done: asyncio.Event
) -> None:
    turn = Turn()
    arguments: dict[str, str] = {}
    while len(turns) < expected:
        message = json.loads(await connection.recv_bytes())
        now = time.perf_counter()
        kind = message.get("type")
        if kind == "response.output_audio.delta":
            speaker.play(np.frombuffer(base64.b64decode(message["delta"]), dtype=np.int16), now)
        elif kind == "response.done":
            speaker.end_segment()
        elif kind == "input_audio_buffer.speech_stopped" and turn.turn_end_at is None:
            turn.turn_end_at = now
        elif kind == "response.function_call_arguments.done":
            arguments[message["call_id"]] = message["arguments"]
        elif kind == "transcript.user" and message["final"]:
            turn.user_text = " ".join(filter(None, (turn.user_text, message["text"])))
        elif kind == "transcript.assistant" and message["final"]:
            turn.assistant_text = " ".join(filter(None, (turn.assistant_text, message["text"])))
        elif kind == "tool.finished":
            raw = arguments.get(message["call_id"], "{}")
            turn.tool_calls.append(
                {
                    "name": message["name"],
                    "arguments": _json_or_raw(raw),
                    "status": message["status"],
                }
            )
        elif kind == "metrics.turn":
            turn.stages = {stage: message.get(stage) for stage in _STAGES}
            turns.append(turn)
            turn = Turn()
        elif kind == "voice.error" and message.get("fatal"):
            raise RuntimeError(f"relay error {message['code']}: {message['message']}")
    done.set()


def _json_or_raw(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
