"""The Cartesia simulator, spoken to by livekit-plugins-cartesia over its real protocols, and by
a raw WebSocket client sending what the plugin never would."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from livekit.agents import APIConnectionError, APIError, APIStatusError
from livekit.plugins import cartesia

from simulators import speech
from simulators.cartesia import CartesiaSimulator
from simulators.server import RunningServer, serve

from .conftest import (
    NO_RETRY,
    SENTENCES,
    TEXT,
    assert_key_absent,
    collect,
    speak_streamed,
)

VOICE = "f786b574-daa5-4673-aa0c-cbe3e8534c02"
REQUEST = {
    "model_id": "sonic-3",
    "voice": {"mode": "id", "id": VOICE},
    "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
    "language": "en",
}


@pytest.fixture
def sim() -> CartesiaSimulator:
    return CartesiaSimulator()


@pytest.fixture
async def server(sim: CartesiaSimulator) -> AsyncIterator[RunningServer]:
    async with serve(sim.app) as running:
        yield running


def make_tts(
    server: RunningServer, http: aiohttp.ClientSession, key: str = "sim-cartesia-key", **kw: Any
) -> cartesia.TTS:
    return cartesia.TTS(api_key=key, base_url=server.url, http_session=http, **kw)


def expected_s(text: str) -> float:
    return len(text) * 0.055


async def test_synthesize_posts_to_bytes_and_plays_the_audio(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    tts = make_tts(server, http)
    heard = await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    assert heard.sample_rate == 24000
    assert heard.audible_s == pytest.approx(expected_s(TEXT), abs=0.005)
    [synthesis] = sim.syntheses
    assert (synthesis.transport, synthesis.text, synthesis.outcome) == ("bytes", TEXT, "done")
    assert (synthesis.model, synthesis.language) == ("sonic-3", "en")
    assert synthesis.voice == {"mode": "id", "id": VOICE}
    assert synthesis.output_format == REQUEST["output_format"]
    assert (sim.requests, sim.characters, sim.rejected) == (1, len(TEXT), [])
    await tts.aclose()


async def test_sample_rate_and_encoding_follow_what_the_plugin_asks(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    tts = make_tts(server, http, sample_rate=16000, model="sonic-turbo")
    heard = await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    assert heard.sample_rate == 16000
    assert heard.audible_s == pytest.approx(expected_s(TEXT), abs=0.005)
    assert sim.syntheses[0].output_format["sample_rate"] == 16000
    assert sim.syntheses[0].model == "sonic-turbo"
    await tts.aclose()


async def test_stream_speaks_pushed_text_as_one_context_on_a_pooled_socket(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    tts = make_tts(server, http)
    first = await speak_streamed(tts.stream(conn_options=NO_RETRY), SENTENCES)
    second = await speak_streamed(tts.stream(conn_options=NO_RETRY), ["One more."])
    assert len(sim.connections) == 1  # the plugin's pool reuses the socket
    assert sim.connections[0]["cartesia_version"] == "2025-04-16"
    one, two = sim.syntheses
    assert (one.transport, one.outcome, two.outcome) == ("websocket", "done", "done")
    assert one.context_id != two.context_id
    assert one.text.split() == "".join(SENTENCES).split()
    for synthesis, heard in ((one, first), (two, second)):
        # every input is spoken but the blank one that ends the context
        assert synthesis.text.endswith(" ")
        assert synthesis.timing.audio_s == pytest.approx(expected_s(synthesis.text[:-1]))
        assert heard.audible_s == pytest.approx(synthesis.timing.audio_s, abs=0.005)
    # every input of a context is continued, the last one ends it
    inputs = [m for m in sim.received if m["context_id"] == one.context_id]
    assert [m["continue"] for m in inputs] == [True] * (len(inputs) - 1) + [False]
    assert all(m["add_timestamps"] is True and m["max_buffer_delay_ms"] == 0 for m in inputs)
    # each input counts without the whitespace around it
    assert sim.characters == sum(len(s.strip()) for s in [*SENTENCES, "One more."])
    await tts.aclose()


async def test_the_configured_first_byte_delay_is_applied(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.ttfb_s, sim.realtime_factor = 0.15, 0.2
    tts = make_tts(server, http)
    started = time.perf_counter()
    heard = await speak_streamed(tts.stream(conn_options=NO_RETRY), [TEXT])
    elapsed = time.perf_counter() - started
    timing = sim.syntheses[0].timing
    assert timing.ttfb_s == 0.15
    assert timing.first_audio_s is not None and timing.first_audio_s >= 0.15 - 0.001
    # sleeps never end early, so pacing gives a lower bound on the whole reply
    assert elapsed >= 0.15 + (timing.audio_s - 0.04) * 0.2
    assert heard.audible_s == pytest.approx(timing.audio_s, abs=0.005)
    await tts.aclose()


async def test_speak_answers_with_espeak_speech_at_the_asked_rate(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    if not speech.have_espeak():
        pytest.fail("espeak-ng and sox are required (make system-deps)")
    sim.speak = True
    tts = make_tts(server, http, sample_rate=16000)
    heard = await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    spoken = speech.speak(TEXT, sample_rate=16000)
    assert heard.sample_rate == 16000
    assert len(spoken) <= len(heard.samples) <= len(spoken) + 160  # + the 10 ms silent tail
    assert heard.audible_s == pytest.approx(len(spoken) / 16000, abs=0.01)
    await tts.aclose()


async def test_an_interrupted_stream_costs_the_plugin_its_pooled_socket(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.realtime_factor = 1.0  # the reply is still playing when the user barges in
    tts = make_tts(server, http)
    stream = tts.stream(conn_options=NO_RETRY)
    stream.push_text(TEXT * 3)
    stream.flush()
    async with stream:
        await anext(stream)
    heard = await speak_streamed(tts.stream(conn_options=NO_RETRY), ["Next."])
    assert heard.audible_s > 0.2
    # the plugin sends no cancel: it drops the socket and opens another for the next reply
    assert not any("cancel" in message for message in sim.received)
    assert len(sim.connections) == 2
    async with asyncio.timeout(5):  # its socket went away
        await sim.syntheses[0].ended.wait()
    assert sim.syntheses[0].outcome == "cancelled"
    assert sim.syntheses[1].outcome == "done"
    await tts.aclose()


@pytest.mark.parametrize("path", ["bytes", "websocket"])
async def test_a_wrong_key_is_a_401_that_does_not_carry_the_key(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession, path: str
) -> None:
    key = "not-the-key-1234"
    tts = make_tts(server, http, key=key)
    stream = (
        tts.synthesize(TEXT, conn_options=NO_RETRY)
        if path == "bytes"
        else tts.stream(conn_options=NO_RETRY)
    )
    with pytest.raises(APIStatusError) as caught:
        if path == "bytes":
            await collect(stream)
        else:
            await speak_streamed(stream, [TEXT])  # type: ignore[arg-type]
    assert caught.value.status_code == 401
    assert_key_absent(caught.value, key)
    assert sim.rejected == ["Invalid API key"] and sim.requests == 0
    await tts.aclose()


async def test_injected_failures_reach_the_plugin_as_errors_then_it_recovers(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.fail_next, sim.fail_status = 2, 503
    tts = make_tts(server, http)
    with pytest.raises(APIStatusError) as over_http:
        await collect(tts.synthesize(TEXT, conn_options=NO_RETRY))
    assert over_http.value.status_code == 503
    # The error message says done: true, which the plugin reads before its type, so the
    # stream fails as one that produced no audio: still an APIError a fallback acts on.
    with pytest.raises(APIError):
        await speak_streamed(tts.stream(conn_options=NO_RETRY), [TEXT])
    assert sim.rejected[:2] == ["(simulated) synthesis failed"] * 2
    heard = await speak_streamed(tts.stream(conn_options=NO_RETRY), [TEXT])
    assert heard.audible_s > 1.0
    assert [s.outcome for s in sim.syntheses] == ["failed", "failed", "done"]
    await tts.aclose()


async def test_a_dropped_connection_is_an_error_for_the_plugin(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession
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
    http: aiohttp.ClientSession, server: RunningServer, version: str = "2025-04-16"
) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(
        f"{server.ws_url}/tts/websocket?cartesia_version={version}",
        headers={"X-API-Key": "sim-cartesia-key"},
    )


async def next_message(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    data: dict[str, Any] = json.loads(message.data)
    return data


async def until_done(ws: aiohttp.ClientWebSocketResponse, context_id: str) -> list[dict[str, Any]]:
    messages = []
    while True:
        messages.append(await next_message(ws))
        if messages[-1].get("context_id") == context_id and messages[-1]["done"]:
            return messages


BAD_INPUTS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown model", {"model_id": "sonic-9"}, "Invalid model"),
    ("voice id", {"voice": {"mode": "id", "id": "katie"}}, "voice.id must be a voice UUID"),
    (
        "sample rate",
        {"output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 12345}},
        "sample_rate must be one of",
    ),
    ("encoding", {"output_format": {"container": "raw", "sample_rate": 24000}}, "encoding must"),
    ("language", {"language": "xx"}, "unsupported language"),
    ("continue type", {"continue": "yes"}, "continue must be a boolean"),
    ("buffer delay", {"max_buffer_delay_ms": 9000}, "max_buffer_delay_ms"),
    ("transcript", {"transcript": 42}, "transcript must be a string"),
]


@pytest.mark.parametrize(
    ("change", "expected"), [(c, e) for _, c, e in BAD_INPUTS], ids=[i for i, _, _ in BAD_INPUTS]
)
async def test_a_malformed_input_fails_its_context_with_an_error_message(
    sim: CartesiaSimulator,
    server: RunningServer,
    http: aiohttp.ClientSession,
    change: dict[str, Any],
    expected: str,
) -> None:
    async with await open_socket(http, server) as ws:
        await ws.send_json({**REQUEST, "transcript": "Hi. ", "context_id": "c1"} | change)
        error = await next_message(ws)
    assert error["type"] == "error" and error["done"] is True
    assert (error["status_code"], error["context_id"]) == (400, "c1")
    assert expected in error["error"]
    assert sim.requests == 0 and len(sim.rejected) == 1


async def test_context_sequencing_is_enforced(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with await open_socket(http, server) as ws:
        await ws.send_json({**REQUEST, "transcript": "Hi. ", "context_id": "a", "continue": True})
        # a later input may not change the voice
        other_voice = {"mode": "id", "id": "00000000-0000-0000-0000-000000000000"}
        await ws.send_json({**REQUEST, "voice": other_voice, "transcript": "x", "context_id": "a"})
        messages = await until_done(ws, "a")
        assert "keep every field" in messages[-1]["error"]
        # nor may anything follow an input with continue: false
        await ws.send_json({**REQUEST, "transcript": "Bye. ", "context_id": "b"})
        assert (await until_done(ws, "b"))[-1]["type"] == "done"
        await ws.send_json({**REQUEST, "transcript": "More. ", "context_id": "b"})
        late = await next_message(ws)
    assert late["type"] == "error" and "takes no more input" in late["error"]
    assert [s.outcome for s in sim.syntheses] == ["failed", "done"]


async def test_flush_and_cancel(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    sim.realtime_factor = 1.0  # slow enough that a cancel lands mid-context
    async with await open_socket(http, server) as ws:
        first = {**REQUEST, "context_id": "f", "continue": True}
        await ws.send_json(first | {"transcript": "One. "})
        await ws.send_json(first | {"transcript": "", "flush": True})
        await ws.send_json(first | {"transcript": "Two. ", "continue": False})
        messages = await until_done(ws, "f")
        kinds = [m["type"] for m in messages]
        assert kinds.index("flush_done") < len(kinds) - 1
        assert {m["flush_id"] for m in messages if m["type"] == "chunk"} == {1, 2}
        await ws.send_json({**REQUEST, "context_id": "c", "transcript": TEXT * 4})
        assert (await next_message(ws))["type"] == "chunk"
        await ws.send_json({"context_id": "c", "cancel": True})
        await ws.send_json({**REQUEST, "context_id": "after", "transcript": "Hi."})
        tail = await until_done(ws, "after")
    assert not any(m.get("context_id") == "c" and m["done"] for m in tail)
    assert [s.outcome for s in sim.syntheses] == ["done", "cancelled", "done"]


async def test_structured_errors_for_newer_api_versions(
    sim: CartesiaSimulator, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with await open_socket(http, server, version="2026-03-01") as ws:
        await ws.send_str("not json")
        error = await next_message(ws)
    assert error["type"] == "error" and "context_id" not in error
    assert (error["status_code"], error["title"]) == (400, "Invalid request")
    assert error["message"] == "the message is not JSON" and error["request_id"]


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({"X-API-Key": "sim-cartesia-key"}, "", 400),  # no version
        ({"X-API-Key": "sim-cartesia-key"}, "?cartesia_version=1999-01-01", 400),
        ({}, "?cartesia_version=2025-04-16", 401),
        ({}, "?cartesia_version=2025-04-16&api_key=sim-cartesia-key", 101),
        ({"Authorization": "Bearer sim-cartesia-key"}, "?cartesia_version=2025-04-16", 101),
    ],
)
async def test_the_handshake_checks_key_and_version(
    sim: CartesiaSimulator,
    server: RunningServer,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    query: str,
    status: int,
) -> None:
    url = f"{server.ws_url}/tts/websocket{query}"
    if status == 101:
        async with http.ws_connect(url, headers=headers):
            pass
        assert sim.connections == [{"cartesia_version": "2025-04-16"}]  # api_key not recorded
        return
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(url, headers=headers)
    assert caught.value.status == status
    assert sim.connections == []
