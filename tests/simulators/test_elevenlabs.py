"""The ElevenLabs simulator, spoken to by livekit-plugins-elevenlabs over its real protocols, and
by a raw WebSocket client sending what the plugin never would."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from livekit.agents import APIConnectionError, APIError, APIStatusError
from livekit.plugins import elevenlabs

from simulators.elevenlabs import ElevenLabsSimulator
from simulators.server import RunningServer, serve

from .conftest import (
    NO_RETRY,
    SENTENCES,
    TEXT,
    assert_key_absent,
    collect,
    speak_streamed,
)

VOICE = "hpp4J3VqNfWAUOO0d1Us"  # the plugin's default voice
QUERY = "model_id=eleven_flash_v2_5&output_format=pcm_16000&sync_alignment=true"


@pytest.fixture
def sim() -> ElevenLabsSimulator:
    return ElevenLabsSimulator()


@pytest.fixture
async def server(sim: ElevenLabsSimulator) -> AsyncIterator[RunningServer]:
    async with serve(sim.app) as running:
        yield running


def make_tts(
    server: RunningServer,
    http: aiohttp.ClientSession,
    key: str = "sim-elevenlabs-key",
    **kw: Any,
) -> elevenlabs.TTS:
    options: dict[str, Any] = {"encoding": "pcm_24000"} | kw
    return elevenlabs.TTS(api_key=key, base_url=f"{server.url}/v1", http_session=http, **options)


def expected_s(text: str) -> float:
    return len(text) * 0.055


@pytest.mark.parametrize(
    ("encoding", "rate", "slack_s"), [("pcm_24000", 24000, 0.005), ("mp3_22050_32", 22050, 0.06)]
)
async def test_synthesize_streams_over_http_in_the_asked_format(
    sim: ElevenLabsSimulator,
    server: RunningServer,
    http: aiohttp.ClientSession,
    encoding: str,
    rate: int,
    slack_s: float,
) -> None:
    tts = make_tts(server, http, encoding=encoding)
    heard = await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    assert heard.sample_rate == rate
    # MP3 at 32 kbps blurs the edges the loudness threshold finds
    assert heard.audible_s == pytest.approx(expected_s(TEXT), abs=slack_s)
    [synthesis] = sim.syntheses
    assert (synthesis.transport, synthesis.text, synthesis.outcome) == ("stream", TEXT, "done")
    assert (synthesis.voice_id, synthesis.model, synthesis.output_format) == (
        VOICE,
        "eleven_turbo_v2_5",
        encoding,
    )
    assert sim.received == [
        {
            "text": TEXT,
            "model_id": "eleven_turbo_v2_5",
            "voice_settings": None,
            "apply_text_normalization": "auto",
        }
    ]
    assert (sim.requests, sim.characters, sim.rejected) == (1, len(TEXT), [])
    await tts.aclose()


async def test_stream_speaks_each_flushed_sentence_in_one_context(
    sim: ElevenLabsSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    tts = make_tts(server, http, language="en")
    first = await speak_streamed(tts.stream(conn_options=NO_RETRY), SENTENCES)
    second = await speak_streamed(tts.stream(conn_options=NO_RETRY), ["One more."])
    [connection] = sim.connections  # both contexts share the plugin's socket
    assert connection["model_id"] == "eleven_turbo_v2_5"
    assert connection["output_format"] == "pcm_24000" and connection["language_code"] == "en"
    assert connection["auto_mode"] == "true" and connection["sync_alignment"] == "true"
    one, two = sim.syntheses
    assert (one.transport, one.voice_id, one.language) == ("multi-stream-input", VOICE, "en")
    assert (one.outcome, two.outcome) == ("done", "done") and one.context_id != two.context_id
    # auto_mode: the plugin flushes every sentence and each becomes one generation
    assert [g.strip() for g in one.generations] == [s.strip() for s in SENTENCES]
    for synthesis, heard in ((one, first), (two, second)):
        spoken = "".join(synthesis.generations)
        assert synthesis.timing.audio_s == pytest.approx(expected_s(spoken))
        assert heard.audible_s == pytest.approx(synthesis.timing.audio_s, abs=0.005)
    assert sim.characters == sum(len(s.strip()) for s in [*SENTENCES, "One more."])
    await tts.aclose()


async def test_without_auto_mode_the_chunk_schedule_decides_when_to_speak(
    sim: ElevenLabsSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    tts = make_tts(server, http, chunk_length_schedule=[50, 60, 70, 80])
    await speak_streamed(tts.stream(conn_options=NO_RETRY), SENTENCES * 2)
    [synthesis] = sim.syntheses
    assert sim.connections[0]["auto_mode"] == "false"
    *full, last = synthesis.generations
    assert len(full) >= 2 and all(len(g) >= 50 for g in full)
    assert "".join(synthesis.generations).split() == " ".join(SENTENCES * 2).split()
    await tts.aclose()


async def test_the_configured_first_byte_delay_is_applied(
    sim: ElevenLabsSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.ttfb_s, sim.realtime_factor = 0.25, 0.2
    tts = make_tts(server, http)
    started = time.perf_counter()
    await speak_streamed(tts.stream(conn_options=NO_RETRY), [TEXT])
    elapsed = time.perf_counter() - started
    timing = sim.syntheses[0].timing
    assert timing.ttfb_s == 0.25
    assert timing.first_audio_s is not None and timing.first_audio_s >= 0.25 - 0.001
    assert elapsed >= 0.25 + (timing.audio_s - 0.04) * 0.2  # sleeps never end early
    await tts.aclose()


async def test_an_interrupted_stream_closes_its_context_on_the_shared_socket(
    sim: ElevenLabsSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.realtime_factor = 1.0  # the reply is still playing when the user barges in
    tts = make_tts(server, http)
    stream = tts.stream(conn_options=NO_RETRY)
    stream.push_text(TEXT * 6)
    stream.flush()
    async with stream:
        await anext(stream)
    heard = await speak_streamed(tts.stream(conn_options=NO_RETRY), ["Next."])
    assert heard.audible_s > 0.2
    first, second = sim.syntheses
    assert {"context_id": first.context_id, "close_context": True} in sim.received
    assert len(sim.connections) == 1 and second.outcome == "done"
    # close_context lets flushed text play out (the plugin drops it); closing the socket ends it
    assert not first.ended.is_set()
    await tts.aclose()
    async with asyncio.timeout(5):
        await first.ended.wait()
    assert first.outcome == "cancelled"


async def test_a_wrong_key_fails_both_paths_without_carrying_the_key(
    sim: ElevenLabsSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    key = "not-the-key-1234"
    tts = make_tts(server, http, key=key)
    with pytest.raises(APIStatusError) as over_http:
        await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    assert over_http.value.status_code == 401
    assert_key_absent(over_http.value, key)
    # the socket refuses the key at the first message, naming the context; the plugin
    # wraps the error it reads there
    with pytest.raises(APIStatusError) as over_socket:
        await speak_streamed(tts.stream(conn_options=NO_RETRY), [TEXT])
    assert isinstance(over_socket.value.__cause__, APIError)
    assert over_socket.value.__cause__.message == "invalid_api_key"
    assert_key_absent(over_socket.value, key)
    assert sim.rejected.count("Invalid API key") >= 2 and sim.requests == 0
    await tts.aclose()


async def test_injected_failures_reach_the_plugin_as_errors_then_it_recovers(
    sim: ElevenLabsSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.fail_next, sim.fail_status = 2, 503
    tts = make_tts(server, http)
    with pytest.raises(APIStatusError) as over_http:
        await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    assert over_http.value.status_code == 503
    with pytest.raises(APIStatusError) as over_socket:
        await speak_streamed(tts.stream(conn_options=NO_RETRY), [TEXT])
    assert isinstance(over_socket.value.__cause__, APIError)
    assert over_socket.value.__cause__.message == "internal_error"
    heard = await speak_streamed(tts.stream(conn_options=NO_RETRY), [TEXT])
    assert heard.audible_s > 1.0
    assert [s.outcome for s in sim.syntheses] == ["failed", "failed", "done"]
    await tts.aclose()


async def test_a_dropped_connection_is_an_error_for_the_plugin(
    sim: ElevenLabsSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.drop_next = 2
    tts = make_tts(server, http)
    with pytest.raises(APIConnectionError):
        await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    with pytest.raises(APIStatusError) as caught:
        await speak_streamed(tts.stream(conn_options=NO_RETRY), [TEXT])
    assert caught.value.status_code == 1011
    assert [s.outcome for s in sim.syntheses] == ["dropped", "dropped"]
    await tts.aclose()


async def open_socket(
    http: aiohttp.ClientSession, server: RunningServer, query: str = QUERY, voice: str = VOICE
) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(
        f"{server.ws_url}/v1/text-to-speech/{voice}/multi-stream-input?{query}",
        headers={"xi-api-key": "sim-elevenlabs-key"},
    )


async def next_message(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    data: dict[str, Any] = json.loads(message.data)
    return data


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    while (message := await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
        pass
    assert message.type == aiohttp.WSMsgType.CLOSE, message
    return ws.close_code, str(message.extra)


async def test_audio_alignment_and_final_follow_the_spec(
    sim: ElevenLabsSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with await open_socket(http, server) as ws:
        await ws.send_json({"text": " ", "context_id": "a", "voice_settings": {"speed": 1.1}})
        await ws.send_json({"text": "Hi there. ", "context_id": "a", "flush": True})
        await ws.send_json({"context_id": "a", "close_context": True})
        messages = [await next_message(ws)]
        while not messages[-1].get("isFinal"):
            messages.append(await next_message(ws))
    *audio, final = messages
    assert final == {"isFinal": True, "contextId": "a"}
    assert all(m["contextId"] == "a" and m["audio"] for m in audio)
    chars = [c for m in audio for c in m["alignment"]["chars"]]
    assert "".join(chars) == " Hi there. "  # the context's opening space is spoken text too
    assert all(m["alignment"] == m["normalizedAlignment"] for m in audio)
    first_ms = audio[0]["alignment"]["charStartTimesMs"]
    assert first_ms[0] == 0 and first_ms == sorted(first_ms)
    assert sim.syntheses[0].voice_settings == {"speed": 1.1}


SOCKET_CLOSERS: list[tuple[str, list[Any], str]] = [
    ("not json", ["hello"], "Invalid message"),
    ("text type", [{"text": 5, "context_id": "a"}], "text must be a str"),
    ("empty message", [{"context_id": "a"}], "needs text, flush"),
    (
        "voice settings change",
        [
            {"text": " ", "context_id": "a", "voice_settings": {"stability": 0.5}},
            {"text": "Hi. ", "context_id": "a", "voice_settings": {"stability": 0.9}},
        ],
        "voice_settings field must be provided in the first message",
    ),
    (
        "voice settings range",
        [{"text": " ", "context_id": "a", "voice_settings": {"speed": 3}}],
        "voice_settings.speed",
    ),
    (
        "chunk schedule",
        [{"text": " ", "context_id": "a", "generation_config": {"chunk_length_schedule": [5]}}],
        "chunk_length_schedule",
    ),
]


@pytest.mark.parametrize(
    ("messages", "reason"),
    [(m, r) for _, m, r in SOCKET_CLOSERS],
    ids=[i for i, _, _ in SOCKET_CLOSERS],
)
async def test_a_malformed_message_closes_the_socket_1008(
    sim: ElevenLabsSimulator,
    server: RunningServer,
    http: aiohttp.ClientSession,
    messages: list[Any],
    reason: str,
) -> None:
    async with await open_socket(http, server) as ws:
        for message in messages:
            await (ws.send_str(message) if isinstance(message, str) else ws.send_json(message))
        code, extra = await closed_with(ws)
    assert code == 1008 and reason in extra
    assert any(reason in r for r in sim.rejected)


async def test_context_errors_name_the_context_and_keep_the_socket(
    sim: ElevenLabsSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with await open_socket(http, server) as ws:
        await ws.send_json({"context_id": "ghost", "flush": True})
        unknown = await next_message(ws)
        for index in range(6):
            await ws.send_json({"text": " ", "context_id": f"c{index}"})
        too_many = await next_message(ws)
        await ws.send_json({"close_socket": True})
        code, _ = await closed_with(ws)
    assert (unknown["error"], unknown["contextId"]) == ("context_not_found", "ghost")
    assert (too_many["error"], too_many["contextId"]) == ("max_contexts_exceeded", "c5")
    assert code == 1000
    assert [s.outcome for s in sim.syntheses] == ["done"] * 5  # close_socket closes the rest


@pytest.mark.parametrize(
    ("query", "voice", "error"),
    [
        (QUERY.replace("eleven_flash_v2_5", "eleven_v9"), VOICE, "model_not_found"),
        (QUERY.replace("eleven_flash_v2_5", "eleven_v3"), VOICE, "unsupported_model"),
        (QUERY + "&apply_text_normalization=on", VOICE, "unsupported_model"),
        (QUERY, "no-such-voice", "voice_not_found"),
        (QUERY.replace("pcm_16000", "ulaw_8000"), VOICE, "not_simulated"),
    ],
)
async def test_what_the_account_refuses_is_answered_at_the_first_message(
    sim: ElevenLabsSimulator,
    server: RunningServer,
    http: aiohttp.ClientSession,
    query: str,
    voice: str,
    error: str,
) -> None:
    async with await open_socket(http, server, query=query, voice=voice) as ws:
        await ws.send_json({"text": " ", "context_id": "a"})
        refusal = await next_message(ws)
        code, _ = await closed_with(ws)
    assert (refusal["error"], refusal["code"], refusal["contextId"], code) == (
        error,
        1008,
        "a",
        1008,
    )
    assert sim.requests == 0


@pytest.mark.parametrize(
    "query",
    [
        QUERY.replace("pcm_16000", "wav_16000"),
        QUERY + "&inactivity_timeout=900",
        QUERY + "&auto_mode=maybe",
        "output_format=pcm_16000",  # no model
    ],
)
async def test_malformed_query_parameters_fail_the_handshake(
    sim: ElevenLabsSimulator, server: RunningServer, http: aiohttp.ClientSession, query: str
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await open_socket(http, server, query=query)
    assert caught.value.status == 403
    assert sim.connections == [] and len(sim.rejected) == 1


async def test_http_validation_answers_like_the_api(
    sim: ElevenLabsSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    url = f"{server.url}/v1/text-to-speech/{VOICE}/stream"
    headers = {"xi-api-key": "sim-elevenlabs-key"}
    cases: list[tuple[str, dict[str, Any] | None, int, str]] = [
        ("output_format=mp3_1_2", {"text": "Hi"}, 422, "output_format"),
        ("", {"model_id": "eleven_turbo_v2"}, 422, "text"),
        ("", {"text": "Hi", "voice_settings": {"stability": 2}}, 422, "voice_settings"),
        ("", {"text": "Hi", "model_id": "eleven_v9"}, 400, "model_not_found"),
        ("", {"text": "x" * 10_001}, 400, "max_character_limit_exceeded"),
        ("", None, 422, "JSON decode error"),
    ]
    for query, body, status, says in cases:
        data = b"{" if body is None else json.dumps(body).encode()
        async with http.post(f"{url}?{query}", data=data, headers=headers) as response:
            assert response.status == status, (query, body)
            assert says in await response.text()
    assert sim.requests == 0 and len(sim.rejected) == len(cases)
