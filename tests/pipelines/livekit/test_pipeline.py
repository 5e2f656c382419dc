"""The pipeline end to end: real Silero on espeak-ng speech, the real Deepgram, Groq and
Chatterbox clients, simulators on 127.0.0.1, the shared n8n executor."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp
import pytest
from livekit.agents.vad import VAD

from pipelines.contracts import (
    AgentState,
    DispatchMetadata,
    MetricsTurn,
    StateMessage,
    ToolFinished,
    ToolStarted,
    TranscriptAssistant,
    TranscriptUser,
    VoiceError,
    load_settings,
)
from pipelines.livekit.latency import estimated_voice_to_voice
from pipelines.livekit.pipeline import PipelineOptions, session_id_for, turn_handling
from pipelines.livekit.speculation import SpeculationOptions
from pipelines.livekit.state import RecordingPublisher
from simulators.chatterbox import ChatterboxSimulator
from simulators.server import serve
from voicegw.lab import audio
from voicegw.lab.talk_livekit import LiveKitRun, talk

from .conftest import FAST_FAIL, PLAIN_TEXT, TOOL_TEXT, Providers


async def test_plain_turn(
    providers: Providers,
    one_plain: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
) -> None:
    publisher = RecordingPublisher()
    result = await talk(
        providers.options,
        one_plain.samples,
        one_plain.sample_rate,
        vad=vad,
        http_session=http,
        publisher=publisher,
        session_id="sess-plain",
        utterances=one_plain.utterances,
    )

    assert len(result.turns) == 1
    turn = result.turns[0].model_dump()
    assert turn["user_text"] == PLAIN_TEXT
    assert turn["assistant_text"] == f"(simulated) You said: {PLAIN_TEXT}"
    assert turn["tool_calls"] == []
    for stage in ("eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms"):
        assert turn[stage] is not None and turn[stage] >= 0, stage
    # what the worker reports in a room, where the true end of speech is unknown: VAD's end
    # of speech (dated back by the min silence it waited) to the agent speaking
    (room,) = result.records
    assert room.speech_end_at is not None and room.vad_end_at is not None
    assert room.speech_end_at < room.vad_end_at <= room.committed_at
    estimate = estimated_voice_to_voice(room)
    assert estimate is not None and estimate > 0
    # the agent's audio was played after the user stopped, and it is in the rendered output
    assert result.sounds and result.sounds[0] > result.origin + one_plain.utterances[0].end_s
    assert audio.first_sound_s(result.output, result.output_rate) is not None

    # what the providers were asked
    (connection,) = providers.deepgram.connections
    assert connection.params["model"] == "nova-3"
    assert connection.params["interim_results"] == "true"
    assert connection.params["smart_format"] == "true"
    assert connection.params["endpointing"] == "25"
    request = providers.groq.received[0]
    assert request["model"] == "llama-3.1-8b-instant"
    assert request["temperature"] == 0.7
    assert request["max_completion_tokens"] == 256
    assert {t["function"]["name"] for t in request["tools"]} == {"send_email", "query_database"}
    assert providers.chatterbox.received[0]["response_format"] == "pcm"
    assert not (
        providers.deepgram.rejected or providers.groq.rejected or providers.chatterbox.rejected
    )


async def run(
    providers: Providers,
    conversation: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
    session_id: str,
    **kwargs: Any,
) -> tuple[LiveKitRun, RecordingPublisher]:
    publisher = RecordingPublisher()
    result = await talk(
        providers.options,
        conversation.samples,
        conversation.sample_rate,
        vad=vad,
        http_session=http,
        publisher=publisher,
        session_id=session_id,
        utterances=conversation.utterances,
        **kwargs,
    )
    return result, publisher


def last_user_text(request: dict[str, Any]) -> str:
    return str(next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user"))


def without_interims(messages: list[StateMessage]) -> list[StateMessage]:
    return [m for m in messages if not (isinstance(m, TranscriptUser) and not m.final)]


async def test_state_messages_of_a_plain_turn(
    providers: Providers,
    one_plain: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
) -> None:
    result, publisher = await run(providers, one_plain, vad, http, "sess-state")

    reply = f"(simulated) You said: {PLAIN_TEXT}"
    metrics = result.records[0].metrics()
    assert without_interims(publisher.messages) == [
        AgentState(state="initializing"),
        AgentState(state="listening"),
        TranscriptUser(text=PLAIN_TEXT, final=True),
        AgentState(state="thinking"),
        AgentState(state="speaking"),
        TranscriptAssistant(text=reply, final=True),
        AgentState(state="listening"),
        metrics,
    ]
    interims = [m for m in publisher.messages if isinstance(m, TranscriptUser) and not m.final]
    assert interims, "Deepgram's interim results reach the page"
    assert all(PLAIN_TEXT.startswith(m.text) for m in interims)
    first_interim = publisher.messages.index(interims[0])
    assert publisher.messages[first_interim - 1] == AgentState(state="listening")
    assert isinstance(metrics, MetricsTurn) and metrics.voice_to_voice_ms is not None


async def test_tool_call_turn(
    providers: Providers,
    one_tool: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
) -> None:
    providers.deepgram.transcripts[:] = [TOOL_TEXT]
    providers.n8n.script("query-database", "slow")  # 1 s: longer than the 400 ms filler wait
    result, publisher = await run(providers, one_tool, vad, http, "sess-tool")

    # n8n got the shared executor's payload, keyed by the gateway session and the model's call id
    (received,) = providers.n8n.received
    tool_request = providers.groq.received[-1]
    call_id = next(
        call["id"]
        for message in tool_request["messages"]
        for call in message.get("tool_calls") or []
    )
    assert received.path == "query-database"
    assert received.body == {
        "session_id": "sess-tool",
        "call_id": call_id,
        "query": "travel policy",
    }
    assert received.headers["idempotency-key"] == f"sess-tool:{call_id}"
    tool_message = next(m for m in tool_request["messages"] if m["role"] == "tool")
    assert tool_message["tool_call_id"] == call_id
    assert "(simulated) Top passage about travel policy" in tool_message["content"]

    (turn,) = [t.model_dump() for t in result.turns]
    assert turn["user_text"] == TOOL_TEXT
    assert turn["tool_calls"] == [
        {"name": "query_database", "arguments": {"query": "travel policy"}, "status": "ok"}
    ]
    assert turn["assistant_text"].startswith("One moment. (simulated) Done.")
    assert len(result.sounds) == 2  # the filler, then the answer

    started = [m for m in publisher.messages if isinstance(m, ToolStarted)]
    finished = [m for m in publisher.messages if isinstance(m, ToolFinished)]
    assert started == [ToolStarted(call_id=call_id, name="query_database")]
    assert [(m.call_id, m.status) for m in finished] == [(call_id, "ok")]
    assert finished[0].duration_ms >= 1000
    order = [m.type for m in without_interims(publisher.messages)]
    assert order.index("tool.started") < order.index("tool.finished")
    assert order.index("tool.finished") < order.index("metrics.turn")
    assert order.count("transcript.assistant") == 2 and order.count("metrics.turn") == 1


async def test_failing_n8n_becomes_a_spoken_tool_error(
    providers: Providers,
    one_tool: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
) -> None:
    providers.deepgram.transcripts[:] = [TOOL_TEXT]
    providers.n8n.script("query-database", "http_500")
    result, publisher = await run(providers, one_tool, vad, http, "sess-n8n-down")

    (turn,) = [t.model_dump() for t in result.turns]
    assert [c["status"] for c in turn["tool_calls"]] == ["error"]
    tool_message = next(m for m in providers.groq.received[-1]["messages"] if m["role"] == "tool")
    assert "did not work" in tool_message["content"]
    assert "(simulated) Done. The query_database tool did not work" in turn["assistant_text"]
    assert [m.status for m in publisher.messages if isinstance(m, ToolFinished)] == ["error"]
    assert result.sounds, "the agent still spoke"


async def test_a_tool_call_that_never_finishes_still_returns_a_result(
    providers: Providers,
    one_tool: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
) -> None:
    """Issue 17.5: n8n trickles its answer a byte at a time; the function tool returns at the
    call's deadline with an unknown outcome, and the agent speaks on."""
    providers.deepgram.transcripts[:] = [TOOL_TEXT]
    providers.n8n.script("query-database", "trickle")
    providers.options = dataclasses.replace(providers.options, n8n_timeout_s=1.0)
    running = asyncio.create_task(run(providers, one_tool, vad, http, "sess-trickle"))
    # Not asyncio.timeout: a turn stuck on its tool does not end when cancelled either.
    done, _ = await asyncio.wait([running], timeout=30)
    if not done:
        running.cancel()
        pytest.fail("the turn was still waiting for its tool after 30 s")
    result, publisher = running.result()

    (turn,) = [t.model_dump() for t in result.turns]
    assert [c["status"] for c in turn["tool_calls"]] == ["error"]
    tool_message = next(m for m in providers.groq.received[-1]["messages"] if m["role"] == "tool")
    assert "may or may not have been done" in tool_message["content"]
    assert [m.status for m in publisher.messages if isinstance(m, ToolFinished)] == ["error"]
    assert result.sounds, "the agent still spoke"


async def test_tts_server_error_is_reported_not_fatal_to_the_worker(
    providers: Providers,
    one_plain: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
) -> None:
    providers.chatterbox.fail_status = 503
    result, publisher = await run(
        providers, one_plain, vad, http, "sess-tts-down", conn_options=FAST_FAIL
    )

    errors = [m for m in publisher.messages if isinstance(m, VoiceError)]
    assert errors and errors[0].code == "tts_error"
    assert all(providers.chatterbox.api_key not in m.message for m in errors)
    assert TranscriptUser(text=PLAIN_TEXT, final=True) in publisher.messages
    assert result.sounds == []  # nothing audible was played
    assert providers.chatterbox.received  # the request was made and failed


async def test_deepgram_that_never_finalizes_commits_no_turn(
    providers: Providers,
    one_plain: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
) -> None:
    providers.deepgram.finalize = False
    result, publisher = await run(
        providers, one_plain, vad, http, "sess-no-final", settle_timeout_s=1.0
    )

    assert result.turns == []
    # the model may be asked on a guess (speculation on the latest interim), never answered
    assert all(PLAIN_TEXT.startswith(last_user_text(r)) for r in providers.groq.received)
    assert not [m for m in publisher.messages if isinstance(m, TranscriptAssistant)]
    assert providers.deepgram.finals == []
    assert result.sounds == []
    # the page hears about it while the session is live, after the interim transcripts
    errors = [m for m in publisher.messages if isinstance(m, VoiceError)]
    assert [(m.code, m.fatal) for m in errors] == [("stt_timeout", False)]
    before = publisher.messages[: publisher.messages.index(errors[0])]
    users = [m for m in before if isinstance(m, TranscriptUser)]
    assert users and not any(m.final for m in users)


async def test_speculation_on_interims_answers_the_final_words(
    providers: Providers,
    one_plain: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
) -> None:
    providers.options = dataclasses.replace(
        providers.options, speculation=SpeculationOptions(policy="interims")
    )
    result, publisher = await run(providers, one_plain, vad, http, "sess-speculate")

    (turn,) = [t.model_dump() for t in result.turns]
    assert turn["assistant_text"] == f"(simulated) You said: {PLAIN_TEXT}"
    asked = [last_user_text(r) for r in providers.groq.received]
    assert len(asked) > 1, "the model was asked before the final transcript"
    assert any(PLAIN_TEXT.startswith(text) and text != PLAIN_TEXT for text in asked)
    assert len(result.sounds) == 1  # cancelled attempts never reached the speaker
    replies = [m for m in publisher.messages if isinstance(m, TranscriptAssistant)]
    assert [m.text for m in replies] == [turn["assistant_text"]]


async def test_fallback_tts_speaks_when_chatterbox_fails(
    providers: Providers,
    one_plain: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
) -> None:
    providers.chatterbox.fail_status = 500
    second = ChatterboxSimulator(api_key="second-key")
    async with serve(second.app) as backup:
        providers.options = dataclasses.replace(
            providers.options,
            fallback_tts_base_url=f"{backup.url}/v1",
            fallback_tts_api_key=second.api_key,
        )
        result, _ = await run(
            providers, one_plain, vad, http, "sess-fallback", conn_options=FAST_FAIL
        )

    assert providers.chatterbox.received, "the primary was tried first"
    # the whole reply, in speakable chunks (the first ends at the clause)
    assert [r["input"] for r in second.received] == ["(simulated) You said:", PLAIN_TEXT]
    assert len(result.sounds) == 1
    (turn,) = [t.model_dump() for t in result.turns]
    assert turn["assistant_text"] == f"(simulated) You said: {PLAIN_TEXT}"


def test_options_come_from_settings() -> None:
    settings = load_settings(
        {
            "DEEPGRAM_API_KEY": "dg-key",
            "DEEPGRAM_BASE_URL": "ws://127.0.0.1:9/v1/listen",
            "GROQ_BASE_URL": "http://127.0.0.1:9/openai/v1",
            "VAD_MIN_SILENCE_SECONDS": "0.35",
            "ENDPOINTING_MIN_DELAY": "0.1",
            "PREEMPTIVE_TTS": "false",
            "SPECULATION": "interims",
            "TOOL_FILLER_MS": "600",
            "GATEWAY_SECRET": "x" * 32,
        }
    )
    options = PipelineOptions.from_settings(settings)
    assert options.deepgram_api_key == "dg-key"
    assert options.deepgram_base_url == "ws://127.0.0.1:9/v1/listen"
    assert options.groq_base_url == "http://127.0.0.1:9/openai/v1"
    assert options.groq_model == "llama-3.1-8b-instant"
    assert (options.groq_temperature, options.groq_max_tokens) == (0.7, 256)
    assert options.vad.min_silence_s == 0.35 and options.vad.min_speech_s == 0.1
    assert options.tool_filler_s == 0.6
    assert options.vad.deactivation_threshold == 0.5
    assert options.speculation == SpeculationOptions(policy="interims", pause_s=0.06)
    assert turn_handling(options) == {
        "turn_detection": "vad",
        "endpointing": {"mode": "fixed", "min_delay": 0.1, "max_delay": 3.0},
        "preemptive_generation": {"enabled": True, "preemptive_tts": False, "max_retries": 50},
    }


def test_session_id_is_the_gateways_then_the_room() -> None:
    metadata = DispatchMetadata(session_id="s-123", mode="livekit", user="ann").model_dump_json()
    assert session_id_for(metadata, "meeting_s-123") == "s-123"
    assert session_id_for("", "meeting_x") == "meeting_x"
    assert session_id_for("not json", "meeting_x") == "meeting_x"
    assert session_id_for('{"mode": "livekit"}', "meeting_x") == "meeting_x"
