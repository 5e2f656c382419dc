"""Official openai SDK clients through the relay to the simulator: whole turns."""

from __future__ import annotations

import base64
import json
from typing import Any

from simulators.n8n import N8nSimulator
from simulators.openai_realtime import CallTool, RealtimeSimulator, Say

from .conftest import Relay, collect_until, speak


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


def states(frames: list[dict[str, Any]]) -> list[str]:
    return [f["state"] for f in frames if f["type"] == "agent.state"]


async def test_full_turn_audio_in_audio_out(relay: Relay, realtime: RealtimeSimulator) -> None:
    realtime.script(Say("(simulated) Hi there, how can I help?", audio_ms=200))
    async with relay.connect("turn-1") as connection:
        await speak(connection)
        frames = await collect_until(connection, lambda f: f["type"] == "metrics.turn")
        frames += await collect_until(connection, lambda f: f.get("state") == "listening")

    # The session config went first, in GA shape, with our prompt and tools.
    first = realtime.received[0]
    assert first["type"] == "session.update"
    assert first["session"]["type"] == "realtime"
    assert first["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert first["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 200
    assert {t["name"] for t in first["session"]["tools"]} == {"send_email", "query_database"}
    assert realtime.models == ["gpt-realtime"]
    assert realtime.violations == []

    # Every upstream event was forwarded, state messages beside them.
    kinds = types(frames)
    for expected in (
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio.delta",
        "response.output_audio_transcript.done",
        "response.done",
    ):
        assert expected in kinds
    assert states(frames) == ["initializing", "listening", "thinking", "speaking", "listening"]
    audio = b"".join(
        base64.b64decode(f["delta"]) for f in frames if f["type"] == "response.output_audio.delta"
    )
    assert len(audio) == 200 * 48  # 200 ms of pcm16 at 24 kHz
    user = next(f for f in frames if f["type"] == "transcript.user")
    assert user == {"type": "transcript.user", "text": "(simulated) user speech", "final": True}
    assistant = next(f for f in frames if f["type"] == "transcript.assistant")
    assert assistant["text"] == "(simulated) Hi there, how can I help?"
    metrics = next(f for f in frames if f["type"] == "metrics.turn")
    assert metrics["voice_to_voice_ms"] is not None and metrics["voice_to_voice_ms"] >= 0
    assert metrics["eou_ms"] is not None and metrics["eou_ms"] >= 0
    assert metrics["tts_ttfb_ms"] is None


async def test_tool_call_turn_runs_n8n_and_answers(
    relay: Relay, realtime: RealtimeSimulator, n8n: N8nSimulator
) -> None:
    arguments = {"to": "ana@example.com", "subject": "Notes", "body": "(simulated) notes"}
    realtime.script(
        CallTool("send_email", arguments, call_id="call_abc"),
        Say("(simulated) I sent the email.", audio_ms=100),
    )
    async with relay.connect("tool-1") as connection:
        await speak(connection)
        frames = await collect_until(connection, lambda f: f["type"] == "metrics.turn")

    # n8n got the call with the session id and the model's own call id.
    assert len(n8n.received) == 1
    request = n8n.received[0]
    assert request.path == "execute-gmail"
    assert request.headers["idempotency-key"] == "tool-1:call_abc"
    assert request.body == {"session_id": "tool-1", "call_id": "call_abc", **arguments}
    # OpenAI got the output item, then the relay's own response.create.
    outputs = realtime.function_outputs()
    assert [o["call_id"] for o in outputs] == ["call_abc"]
    assert json.loads(outputs[0]["output"]) == {"status": "sent"} or outputs[0]["output"]
    assert len(realtime.of_type("response.create")) == 1
    assert realtime.violations == []

    started = next(f for f in frames if f["type"] == "tool.started")
    finished = next(f for f in frames if f["type"] == "tool.finished")
    assert started == {"type": "tool.started", "call_id": "call_abc", "name": "send_email"}
    assert finished["status"] == "ok" and finished["duration_ms"] >= 0
    assert types(frames).index("tool.finished") < types(frames).index("transcript.assistant")
    assert "thinking" in states(frames) and states(frames)[-1] in ("speaking", "listening")


async def test_failing_tool_is_spoken_about(
    relay: Relay, realtime: RealtimeSimulator, n8n: N8nSimulator
) -> None:
    n8n.script("query-database", "http_500")
    realtime.script(
        CallTool("query_database", {"query": "quarterly numbers"}, call_id="call_q"),
        Say("(simulated) The lookup failed.", audio_ms=60),
    )
    async with relay.connect("tool-2") as connection:
        await speak(connection)
        frames = await collect_until(connection, lambda f: f["type"] == "metrics.turn")

    finished = next(f for f in frames if f["type"] == "tool.finished")
    assert finished["status"] == "error"
    (output,) = realtime.function_outputs()
    assert output["call_id"] == "call_q"
    assert "did not work" in output["output"]
    assert len(realtime.of_type("response.create")) == 1  # the model speaks about it
    assert not any(f["type"] == "voice.error" for f in frames)


async def test_invalid_tool_arguments_never_reach_n8n(
    relay: Relay, realtime: RealtimeSimulator, n8n: N8nSimulator
) -> None:
    realtime.script(
        CallTool("send_email", {"to": "nobody"}, call_id="call_bad"),
        Say("(simulated) Who should I send it to?", audio_ms=60),
    )
    async with relay.connect("tool-3") as connection:
        await speak(connection)
        frames = await collect_until(connection, lambda f: f["type"] == "metrics.turn")

    assert n8n.received == []
    (output,) = realtime.function_outputs()
    assert output["call_id"] == "call_bad"
    assert "invalid" in output["output"] and "subject" in output["output"]
    finished = next(f for f in frames if f["type"] == "tool.finished")
    assert finished["status"] == "error"


async def test_interrupted_tool_call_still_gets_an_output(
    relay: Relay, realtime: RealtimeSimulator, n8n: N8nSimulator
) -> None:
    realtime.script(CallTool("query_database", {"query": "x"}, call_id="call_cut", pause_s=30))
    async with relay.connect("tool-4") as connection:
        await speak(connection)
        await collect_until(
            connection, lambda f: f["type"] == "response.function_call_arguments.delta"
        )
        await connection.response.cancel()
        frames = await collect_until(connection, lambda f: f["type"] == "response.done")
        await realtime.wait_for(lambda: len(realtime.function_outputs()) == 1)

    assert frames[-1]["response"]["status"] == "cancelled"
    (output,) = realtime.function_outputs()
    assert output["call_id"] == "call_cut"
    assert "interrupted" in output["output"]
    assert n8n.received == []
    assert realtime.of_type("response.create") == []  # the user has the floor
