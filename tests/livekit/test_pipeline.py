"""The pipeline end to end: real Silero on espeak-ng speech, the real Deepgram, Groq and
Chatterbox clients, simulators on 127.0.0.1, the shared n8n executor."""

from __future__ import annotations

import aiohttp
from livekit.agents.vad import VAD

from pipelines.livekit.state import RecordingPublisher
from pipelines.livekit.talk import talk
from simulators import speech

from .conftest import PLAIN_TEXT, Providers


async def test_plain_turn(
    providers: Providers,
    one_plain: speech.Conversation,
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
    turn = result.turns[0].summary()
    assert turn["user_text"] == PLAIN_TEXT
    assert turn["assistant_text"] == f"(simulated) You said: {PLAIN_TEXT}"
    assert turn["tool_calls"] == []
    for stage in ("eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms"):
        assert turn[stage] is not None and turn[stage] >= 0, stage
    # the agent's audio was played after the user stopped, and it is in the rendered output
    assert result.sounds and result.sounds[0] > result.origin + one_plain.utterances[0].end_s
    assert speech.first_sound_s(result.output, result.output_rate) is not None

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
