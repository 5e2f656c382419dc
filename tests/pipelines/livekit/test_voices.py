"""The plan's voices: TTS_PROVIDER picks Chatterbox, Cartesia or ElevenLabs (through our plugin
and the maintained LiveKit plugins, talking to the simulators over their real protocols), a
second voice takes over within the turn when the first fails, and no key reaches a log."""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Iterator
from typing import Literal

import aiohttp
import pytest
from livekit.agents.vad import VAD

from pipelines.contracts import TranscriptAssistant, load_settings
from pipelines.contracts.settings import TtsProvider
from pipelines.livekit.pipeline import PipelineOptions
from pipelines.livekit.state import RecordingPublisher
from simulators.elevenlabs import ElevenLabsSimulator
from voicegw.lab import audio
from voicegw.lab.talk_livekit import LiveKitRun, talk
from voicegw.logs import JsonFormatter, cap_library_loggers

from .conftest import FAST_FAIL, PLAIN_TEXT, Providers

REPLY = f"(simulated) You said: {PLAIN_TEXT}"
ELEVENLABS_KEY = "xi-0123456789abcdef-never-log-me"


@pytest.fixture
def elevenlabs() -> ElevenLabsSimulator:
    return ElevenLabsSimulator(api_key=ELEVENLABS_KEY)


def spoken_by(providers: Providers, stack_voice: TtsProvider) -> list[str]:
    """The texts one voice's simulator was asked to speak, in order."""
    if stack_voice == "chatterbox":
        return [str(r["input"]) for r in providers.chatterbox.received]
    sim = providers.cartesia if stack_voice == "cartesia" else providers.elevenlabs
    return [s.text for s in sim.syntheses]


async def converse(
    providers: Providers,
    conversation: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
    **options: object,
) -> tuple[LiveKitRun, list[str]]:
    publisher = RecordingPublisher()
    result = await talk(
        dataclasses.replace(providers.options, **options),  # type: ignore[arg-type]
        conversation.samples,
        conversation.sample_rate,
        vad=vad,
        http_session=http,
        publisher=publisher,
        session_id="sess-voices",
        utterances=conversation.utterances,
        conn_options=FAST_FAIL,
    )
    replies = [m.text for m in publisher.messages if isinstance(m, TranscriptAssistant)]
    return result, replies


@pytest.mark.parametrize("voice", ["cartesia", "elevenlabs"])
async def test_tts_provider_picks_the_voice(
    providers: Providers,
    one_plain: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
    voice: TtsProvider,
) -> None:
    result, replies = await converse(providers, one_plain, vad, http, tts_provider=voice)

    assert replies == [REPLY] and len(result.sounds) == 1
    spoken = spoken_by(providers, voice)
    # the reply in speakable chunks, on one context (speculative ones may come before it)
    assert spoken[-1].split() == REPLY.split()
    assert providers.chatterbox.received == []
    sim = providers.cartesia if voice == "cartesia" else providers.elevenlabs
    assert sim.rejected == [] and all(s.outcome in ("done", "cancelled") for s in sim.syntheses)
    if voice == "cartesia":
        assert {s.model for s in providers.cartesia.syntheses} == {"sonic-3"}
    else:
        assert {s.model for s in providers.elevenlabs.syntheses} == {"eleven_flash_v2_5"}
        assert {s.output_format for s in providers.elevenlabs.syntheses} == {"pcm_24000"}
    assert result.usage.tts_characters_by.keys() == {voice}


Failure = Literal["fail", "drop"]


@pytest.mark.parametrize(
    ("primary", "failure", "fallback"),
    [
        ("cartesia", "fail", "elevenlabs"),
        ("elevenlabs", "drop", "chatterbox"),
        ("chatterbox", "fail", "cartesia"),
    ],
)
async def test_a_failing_voice_hands_the_turn_to_the_fallback(
    providers: Providers,
    one_plain: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
    primary: TtsProvider,
    failure: Failure,
    fallback: TtsProvider,
) -> None:
    # every synthesis of the primary fails, speculative ones included
    if primary == "chatterbox":
        providers.chatterbox.fail_status = 503
    else:
        sim = providers.cartesia if primary == "cartesia" else providers.elevenlabs
        if failure == "fail":
            sim.fail_next = 100
        else:
            sim.drop_next = 100
    result, replies = await converse(
        providers, one_plain, vad, http, tts_provider=primary, tts_fallback_provider=fallback
    )

    assert spoken_by(providers, primary), "the primary was tried first"
    # the fallback spoke the reply in the same turn, and it was heard once
    assert replies == [REPLY] and len(result.sounds) == 1 and len(result.turns) == 1
    assert " ".join(spoken_by(providers, fallback)).split()[-len(REPLY.split()) :] == (
        REPLY.split()
    )


class _Everything(logging.Handler):
    """Every record as our JSON lines and as a plain traceback, with each exception in a
    record's cause chain written out by `repr` (what a careless handler would print)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.text.append(JsonFormatter().format(record))
        self.text.append(logging.Formatter().format(record))
        self.text.append(repr(vars(record)))
        error = record.exc_info[1] if record.exc_info else None
        while error is not None:
            self.text.append(repr(error) + "".join(traceback.format_exception(error)))
            error = error.__cause__ or error.__context__


@pytest.fixture
def everything_logged() -> Iterator[_Everything]:
    """Every log line at DEBUG, with the libraries that print handshake headers at DEBUG (here,
    the simulator's own uvicorn) kept at INFO as `voicegw` runs them."""
    handler = _Everything()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    cap_library_loggers()
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("how", ["fail", "drop", "wrong key"])
async def test_a_failing_elevenlabs_leaves_no_key_in_the_logs(
    providers: Providers,
    one_plain: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
    everything_logged: _Everything,
    how: str,
) -> None:
    key = ELEVENLABS_KEY
    if how == "fail":
        providers.elevenlabs.fail_next = 100
    elif how == "drop":
        providers.elevenlabs.drop_next = 100
    else:
        providers.elevenlabs.api_key = "the-right-key-is-another"
    await converse(providers, one_plain, vad, http, tts_provider="elevenlabs")

    outcomes = {s.outcome for s in providers.elevenlabs.syntheses}
    expected = {"fail": "failed" in outcomes, "drop": "dropped" in outcomes}
    assert expected.get(how, "Invalid API key" in providers.elevenlabs.rejected)
    errors = [line for line in everything_logged.text if '"level": "error"' in line]
    assert errors, "the failure was logged"
    assert not [line for line in everything_logged.text if key in line]


def test_voice_settings_come_from_the_environment() -> None:
    settings = load_settings(
        {
            "TTS_PROVIDER": "elevenlabs",
            "TTS_FALLBACK_PROVIDER": "cartesia",
            "ELEVENLABS_API_KEY": "el-key",
            "ELEVENLABS_BASE_URL": "http://127.0.0.1:9/v1",
            "ELEVENLABS_VOICE": "abcdefghij0123456789",
            "CARTESIA_API_KEY": "ca-key",
            "CARTESIA_MODEL": "sonic-turbo",
            "TTS_CHUNKS": "sentences",
            "GATEWAY_SECRET": "x" * 32,
        }
    )
    options = PipelineOptions.from_settings(settings)
    first, second = options.voices()
    assert (first.provider, first.api_key, first.base_url, first.voice, first.model) == (
        "elevenlabs",
        "el-key",
        "http://127.0.0.1:9/v1",
        "abcdefghij0123456789",
        "eleven_flash_v2_5",
    )
    assert (second.provider, second.api_key, second.model) == ("cartesia", "ca-key", "sonic-turbo")
    assert options.tts_chunks == "sentences"
    assert options.missing_keys() == ["DEEPGRAM_API_KEY", "GROQ_API_KEY"]
    # a second Chatterbox server is still a fallback of its own
    env = {"FALLBACK_TTS_BASE_URL": "http://127.0.0.1:9/v1", "GATEWAY_SECRET": "x" * 32}
    legacy = PipelineOptions.from_settings(load_settings(env))
    assert [(v.provider, v.base_url) for v in legacy.voices()] == [
        ("chatterbox", "https://api.chatterboxtts.com/v1"),
        ("chatterbox", "http://127.0.0.1:9/v1"),
    ]


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"TTS_PROVIDER": "playht"}, "TTS_PROVIDER"),
        ({"TTS_FALLBACK_PROVIDER": "chatterbox"}, "TTS_FALLBACK_PROVIDER must differ"),
        ({"CARTESIA_VOICE": "katie"}, "CARTESIA_VOICE"),
        ({"ELEVENLABS_BASE_URL": "ftp://x"}, "ELEVENLABS_BASE_URL"),
        (
            {"FALLBACK_TTS_BASE_URL": "http://x", "TTS_FALLBACK_PROVIDER": "cartesia"},
            "FALLBACK_TTS_BASE_URL is a second Chatterbox",
        ),
        ({"SPECULATION": "always"}, "SPECULATION"),
        ({"SPECULATION_PAUSE_MS": "5"}, "SPECULATION_PAUSE_MS"),
    ],
)
def test_bad_voice_settings_are_refused_by_name(env: dict[str, str], problem: str) -> None:
    with pytest.raises(Exception, match=problem) as caught:
        load_settings({**env, "CARTESIA_API_KEY": "secret-value-7"})
    assert "secret-value-7" not in str(caught.value)
