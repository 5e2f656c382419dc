"""One construction path for the pipeline: options from Settings, then the AgentSession, then
the session wired to the contract (`wire`: state messages, turn records, the shared tools).

The worker, the tests, the benchmark and `voicegw talk` all build their session here, so what
is measured is what runs in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from livekit import rtc
from livekit.agents import (
    Agent,
    AgentSession,
    FlushSentinel,
    ModelSettings,
    TurnHandlingOptions,
    llm,
    stt,
    tts,
)
from livekit.agents.llm import Tool
from livekit.agents.types import NOT_GIVEN
from livekit.agents.vad import VAD
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.agents.voice.events import UserStateChangedEvent
from livekit.plugins import deepgram, groq, silero
from pydantic import ValidationError

from pipelines.contracts import (
    SYSTEM_PROMPT,
    DispatchMetadata,
    N8nExecutor,
    Settings,
    VoiceError,
)
from pipelines.contracts.history import NO_SESSION_HISTORY, SessionHistory
from pipelines.contracts.settings import TtsProvider

from . import chatterbox
from .latency import TurnRecord, TurnTracker, VoiceToVoice, estimated_voice_to_voice
from .recording import SessionRecording
from .speculation import SpeculationGate, SpeculationOptions
from .state import StateBridge, StatePublisher
from .tools import ToolListeners, build_tools
from .usage import UsageMeter
from .voices import Chunks, Voice, build_voices


@dataclass(frozen=True)
class VadOptions:
    """Silero VAD (the plan's values: min speech 0.1 s, min silence 0.3 s, threshold 0.5)."""

    min_speech_s: float = 0.1
    min_silence_s: float = 0.3
    activation_threshold: float = 0.5
    # Silero's own default is activation - 0.15; at 0.5 it reports the end of speech ~35 ms
    # sooner, with no more cut-offs at a 300 ms pause (bench/pipeline_latency.py)
    deactivation_threshold: float | None = 0.5


@dataclass(frozen=True)
class PipelineOptions:
    """Everything the pipeline needs, explicit; built from Settings at the edge."""

    deepgram_api_key: str | None = None
    deepgram_base_url: str = "https://api.deepgram.com/v1/listen"
    deepgram_model: str = "nova-3"
    deepgram_language: str = "en-US"
    deepgram_endpointing_ms: int = 25
    groq_api_key: str | None = None
    groq_base_url: str = "https://api.groq.com/openai/v1"
    groq_model: str = "llama-3.1-8b-instant"
    groq_temperature: float = 0.7
    groq_max_tokens: int = 256
    chatterbox_api_key: str | None = None
    chatterbox_base_url: str = chatterbox.tts.BASE_URL
    chatterbox_model: str = "turbo"
    chatterbox_voice: str = "professional"
    tts_provider: TtsProvider = "chatterbox"
    tts_fallback_provider: TtsProvider | None = None
    fallback_tts_base_url: str | None = None  # the fallback, when a second Chatterbox server
    fallback_tts_api_key: str | None = None
    cartesia_api_key: str | None = None
    cartesia_base_url: str = "https://api.cartesia.ai"
    cartesia_model: str = "sonic-3"
    cartesia_voice: str = "f786b574-daa5-4673-aa0c-cbe3e8534c02"
    elevenlabs_api_key: str | None = None
    elevenlabs_base_url: str = "https://api.elevenlabs.io/v1"
    elevenlabs_model: str = "eleven_flash_v2_5"
    elevenlabs_voice: str = "hpp4J3VqNfWAUOO0d1Us"
    tts_chunks: Chunks = "clauses"
    vad: VadOptions = field(default_factory=VadOptions)
    endpointing_min_delay_s: float = 0.2
    endpointing_max_delay_s: float = 3.0
    preemptive_generation: bool = True
    preemptive_tts: bool = True
    speculation: SpeculationOptions = field(default_factory=SpeculationOptions)
    n8n_webhook_base_url: str | None = None
    n8n_timeout_s: float | None = None
    tool_filler_s: float = 0.4
    tool_filler_text: str = "One moment."
    transcription_timeout_s: float = 2.0
    instructions: str = SYSTEM_PROMPT

    def missing_keys(self) -> list[str]:
        """Environment variables of the provider keys that are not set."""
        keys = {
            "DEEPGRAM_API_KEY": self.deepgram_api_key,
            "GROQ_API_KEY": self.groq_api_key,
        }
        for voice in self.voices():
            keys[f"{voice.provider.upper()}_API_KEY"] = voice.api_key
        return [name for name, value in keys.items() if not value]

    def voice(self, provider: TtsProvider) -> Voice:
        """The configured endpoint, model and voice of one TTS provider."""
        if provider == "cartesia":
            return Voice(
                provider,
                self.cartesia_api_key,
                self.cartesia_base_url,
                self.cartesia_model,
                self.cartesia_voice,
            )
        if provider == "elevenlabs":
            return Voice(
                provider,
                self.elevenlabs_api_key,
                self.elevenlabs_base_url,
                self.elevenlabs_model,
                self.elevenlabs_voice,
            )
        return Voice(
            provider,
            self.chatterbox_api_key,
            self.chatterbox_base_url,
            self.chatterbox_model,
            self.chatterbox_voice,
        )

    def voices(self) -> list[Voice]:
        """The voice that speaks, then the one that takes over when it fails (if any)."""
        voices = [self.voice(self.tts_provider)]
        fallback = self.tts_fallback_provider
        if fallback is None and self.fallback_tts_base_url is not None:
            fallback = "chatterbox"
        if fallback == "chatterbox" and self.fallback_tts_base_url is not None:
            # a second Chatterbox-compatible server
            voices.append(
                Voice(
                    "chatterbox",
                    self.fallback_tts_api_key or self.chatterbox_api_key,
                    self.fallback_tts_base_url,
                    self.chatterbox_model,
                    self.chatterbox_voice,
                )
            )
        elif fallback is not None:
            voices.append(self.voice(fallback))
        return voices

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineOptions:
        def secret(name: str) -> str | None:
            value = getattr(settings, name)
            return None if value is None else str(value.get_secret_value())

        return cls(
            deepgram_api_key=secret("deepgram_api_key"),
            deepgram_base_url=settings.deepgram_base_url,
            deepgram_model=settings.deepgram_model,
            deepgram_language=settings.deepgram_language,
            deepgram_endpointing_ms=settings.deepgram_endpointing_ms,
            groq_api_key=secret("groq_api_key"),
            groq_base_url=settings.groq_base_url,
            groq_model=settings.groq_model,
            groq_temperature=settings.groq_temperature,
            groq_max_tokens=settings.groq_max_tokens,
            chatterbox_api_key=secret("chatterbox_api_key"),
            chatterbox_base_url=settings.chatterbox_base_url,
            chatterbox_model=settings.chatterbox_model,
            chatterbox_voice=settings.chatterbox_voice,
            tts_provider=settings.tts_provider,
            tts_fallback_provider=settings.tts_fallback_provider,
            fallback_tts_base_url=settings.fallback_tts_base_url,
            fallback_tts_api_key=secret("fallback_tts_api_key"),
            cartesia_api_key=secret("cartesia_api_key"),
            cartesia_base_url=settings.cartesia_base_url,
            cartesia_model=settings.cartesia_model,
            cartesia_voice=settings.cartesia_voice,
            elevenlabs_api_key=secret("elevenlabs_api_key"),
            elevenlabs_base_url=settings.elevenlabs_base_url,
            elevenlabs_model=settings.elevenlabs_model,
            elevenlabs_voice=settings.elevenlabs_voice,
            tts_chunks=settings.tts_chunks,
            vad=VadOptions(
                min_speech_s=settings.vad_min_speech_seconds,
                min_silence_s=settings.vad_min_silence_seconds,
                activation_threshold=settings.vad_activation_threshold,
                deactivation_threshold=settings.vad_deactivation_threshold,
            ),
            endpointing_min_delay_s=settings.endpointing_min_delay,
            endpointing_max_delay_s=settings.endpointing_max_delay,
            preemptive_generation=settings.preemptive_generation,
            preemptive_tts=settings.preemptive_tts,
            speculation=SpeculationOptions(
                policy=settings.speculation, pause_s=settings.speculation_pause_ms / 1000
            ),
            n8n_webhook_base_url=settings.n8n_webhook_base_url,
            n8n_timeout_s=settings.n8n_timeout_seconds,
            tool_filler_s=settings.tool_filler_ms / 1000,
            tool_filler_text=settings.tool_filler_text,
            transcription_timeout_s=settings.stt_transcript_timeout_seconds,
        )


# Preemptive attempts per user turn (LiveKit's default is 3): each interim is one under
# `interims`, which would run out mid-sentence; `pause` needs a few (a pause mid-sentence, a
# final that differs, a second segment) and this caps what a turn can cost.
_ATTEMPTS = {"off": 3, "pause": 6, "interims": 50}


def load_vad(options: VadOptions) -> VAD:
    """Load Silero (the ONNX model is read from disk: do it once per process, in prewarm)."""
    if options.deactivation_threshold is None:
        return silero.VAD.load(
            min_speech_duration=options.min_speech_s,
            min_silence_duration=options.min_silence_s,
            activation_threshold=options.activation_threshold,
        )
    return silero.VAD.load(
        min_speech_duration=options.min_speech_s,
        min_silence_duration=options.min_silence_s,
        activation_threshold=options.activation_threshold,
        deactivation_threshold=options.deactivation_threshold,
    )


def turn_handling(options: PipelineOptions) -> TurnHandlingOptions:
    """VAD turn detection with short fixed endpointing and preemptive generation (see
    DESIGN.md "Turn taking in livekit mode" for the measurements behind the defaults)."""
    return {
        "turn_detection": "vad",
        "endpointing": {
            "mode": "fixed",
            "min_delay": options.endpointing_min_delay_s,
            "max_delay": options.endpointing_max_delay_s,
        },
        "preemptive_generation": {
            "enabled": options.preemptive_generation,
            "preemptive_tts": options.preemptive_generation and options.preemptive_tts,
            "max_retries": _ATTEMPTS[options.speculation.policy],
        },
    }


def build_stt(options: PipelineOptions, http_session: aiohttp.ClientSession | None) -> deepgram.STT:
    return deepgram.STT(
        model=options.deepgram_model,
        language=options.deepgram_language,
        interim_results=True,
        smart_format=True,
        punctuate=True,
        endpointing_ms=options.deepgram_endpointing_ms,
        api_key=options.deepgram_api_key or NOT_GIVEN,
        base_url=options.deepgram_base_url,
        http_session=http_session,
    )


def build_llm(options: PipelineOptions) -> groq.LLM:
    return groq.LLM(
        model=options.groq_model,
        api_key=options.groq_api_key or NOT_GIVEN,
        base_url=options.groq_base_url,
        temperature=options.groq_temperature,
        max_completion_tokens=options.groq_max_tokens,
    )


def build_tts(
    options: PipelineOptions,
    http_session: aiohttp.ClientSession | None,
    meter: UsageMeter | None = None,
) -> tts.TTS[Any]:
    """`TTS_PROVIDER`'s voice, behind it the fallback's (`voices.py`)."""
    return build_voices(
        options.voices(),
        http_session,
        chunks=options.tts_chunks,
        on_chunk=None if meter is None else meter.tts_chunk,
    )


def build_session(
    options: PipelineOptions,
    *,
    vad: VAD,
    http_session: aiohttp.ClientSession | None = None,
    conn_options: SessionConnectOptions | None = None,
    meter: UsageMeter | None = None,
) -> AgentSession[None]:
    """The AgentSession of the pipeline. `http_session` is required outside a LiveKit job
    (tests, `voicegw talk`); inside a job the plugins use the job's shared session. `meter`
    (given to `wire` too) counts what the session asks of its providers."""
    return AgentSession(
        vad=vad,
        stt=build_stt(options, http_session),
        llm=build_llm(options),
        tts=build_tts(options, http_session, meter),
        turn_handling=turn_handling(options),
        user_away_timeout=None,
        transcription_timeout=options.transcription_timeout_s,
        conn_options=conn_options if conn_options is not None else NOT_GIVEN,
    )


class PipelineAgent(Agent):
    """The agent: the system prompt and the tools; speculation before the final transcript
    (`speculation.py`) in its `stt_node`; and, when given a meter, what it asks of each
    provider counted where it asks it."""

    def __init__(
        self,
        *,
        instructions: str,
        tools: Sequence[Tool],
        speculation: SpeculationOptions,
        meter: UsageMeter | None = None,
    ) -> None:
        super().__init__(instructions=instructions, tools=list(tools))
        self._speculation = speculation
        self._meter = meter
        self._gate: SpeculationGate | None = None

    async def on_enter(self) -> None:
        self.session.on("user_state_changed", self._on_user_state)

    async def on_exit(self) -> None:
        self.session.off("user_state_changed", self._on_user_state)

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if ev.old_state == "speaking" and ev.new_state == "listening" and self._gate is not None:
            self._gate.speech_ended()

    async def stt_node(
        self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings
    ) -> AsyncIterator[stt.SpeechEvent | str]:
        if self._meter is not None:
            audio = _metered(audio, self._meter)
        if self._speculation.policy == "off":
            async for event in Agent.default.stt_node(self, audio, model_settings):
                yield event
            return
        gate = self._gate = SpeculationGate(self._speculation)
        try:
            events = Agent.default.stt_node(self, gate.listen(audio), model_settings)
            async for item in gate.run(events):
                yield item
        finally:
            if self._gate is gate:
                self._gate = None

    async def llm_node(
        self, chat_ctx: llm.ChatContext, tools: list[Tool], model_settings: ModelSettings
    ) -> AsyncIterator[llm.ChatChunk | str | FlushSentinel]:
        meter = self._meter
        if meter is not None:
            meter.llm_request(chat_ctx, tools)
        async for chunk in Agent.default.llm_node(self, chat_ctx, tools, model_settings):
            if meter is not None:
                meter.llm_chunk(chunk)
            yield chunk

    async def tts_node(
        self, text: AsyncIterable[str], model_settings: ModelSettings
    ) -> AsyncIterator[rtc.AudioFrame]:
        async for frame in Agent.default.tts_node(self, self._replies(text), model_settings):
            yield frame

    async def _replies(self, text: AsyncIterable[str]) -> AsyncIterator[str]:
        started = False
        async for piece in text:
            if not started and piece.strip() and self._meter is not None:
                started = True
                self._meter.tts_reply()
            yield piece


async def _metered(
    audio: AsyncIterable[rtc.AudioFrame], meter: UsageMeter
) -> AsyncIterator[rtc.AudioFrame]:
    async for frame in audio:
        meter.audio(frame)
        yield frame


def build_agent(
    options: PipelineOptions, tools: Sequence[Tool], meter: UsageMeter | None = None
) -> Agent:
    return PipelineAgent(
        instructions=options.instructions,
        tools=tools,
        speculation=options.speculation,
        meter=meter,
    )


@dataclass
class Wired:
    """A session wired to the contract, not started yet: start it with `agent`."""

    session: AgentSession[None]
    agent: Agent
    bridge: StateBridge
    tracker: TurnTracker
    executor: N8nExecutor
    recording: SessionRecording
    meter: UsageMeter | None = None

    async def aclose(self) -> None:
        """Close the session, then its helpers (the state messages queued go out first); the
        history hears how it ended last."""
        await close_session(self.session)
        await self.tracker.aclose()
        await self.bridge.aclose()
        await self.executor.aclose()
        self.recording.detach(self.session)
        self.recording.ended()


def wire(
    session: AgentSession[None],
    options: PipelineOptions,
    *,
    publisher: StatePublisher,
    session_id: str,
    on_turn: Callable[[TurnRecord], None] | None = None,
    voice_to_voice: VoiceToVoice = estimated_voice_to_voice,
    meter: UsageMeter | None = None,
    history: SessionHistory = NO_SESSION_HISTORY,
) -> Wired:
    """`session` (from `build_session`) wired for `session_id`: its state messages go to
    `publisher`, each complete turn goes out as `metrics.turn` and then to `on_turn`, the
    shared tools run through the n8n executor, and `history` records the turns, tool calls,
    errors and how the session closed. Call it once `publisher` can deliver and before
    `session.start()`, so the page sees `initializing`."""
    recording: SessionRecording | None = None

    def voice_error(error: VoiceError) -> None:
        if recording is not None:
            recording.error(error)

    bridge = StateBridge(publisher, session_id=session_id, on_error=voice_error)

    def turn_done(turn: TurnRecord) -> None:
        bridge.send(turn.metrics())
        if recording is not None:
            recording.turn(turn)
        if on_turn is not None:
            on_turn(turn)

    tracker = TurnTracker(session_id=session_id, on_turn=turn_done, voice_to_voice=voice_to_voice)
    recording = SessionRecording(history, tracker)
    executor = N8nExecutor(options.n8n_webhook_base_url, timeout_s=options.n8n_timeout_s)
    tools = build_tools(
        executor,
        session_id=session_id,
        listener=ToolListeners(bridge, tracker, recording),
        filler_s=options.tool_filler_s,
        filler_text=options.tool_filler_text,
    )
    bridge.attach(session)
    tracker.attach(session)
    recording.attach(session)
    agent = build_agent(options, tools, meter)
    return Wired(session, agent, bridge, tracker, executor, recording, meter)


async def close_session(session: AgentSession[Any]) -> None:
    """Close the session, then the providers it was built with (their HTTP clients and
    prewarm tasks belong to us, not to the session). Safe to call twice."""
    await session.aclose()
    for component in (session.stt, session.llm, session.tts):
        if component is not None and hasattr(component, "aclose"):
            await component.aclose()


def session_id_for(job_metadata: str | None, room_name: str) -> str:
    """The gateway's session id from the dispatch metadata; the room name only as a last
    resort (a dispatch made by hand, without our metadata)."""
    if job_metadata:
        try:
            return DispatchMetadata.model_validate_json(job_metadata).session_id
        except ValidationError:
            pass
    return room_name
