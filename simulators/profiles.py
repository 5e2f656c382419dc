"""Latency profiles for the simulators, selectable by name, and one way to start them all.

A profile says how long each simulated provider takes: Deepgram's final transcript after the
audio turns silent (and how often it sends interims), Groq's time to first token and token
rate, each voice's time to first byte (Chatterbox, Cartesia, ElevenLabs), and OpenAI
Realtime's time from the end of the user's turn to the first audio delta.
`jittery` draws each of them per turn from a seeded log-normal spread around the published
figures, so a comparison shows how each mode degrades and still repeats exactly.

`simulated_providers()` starts every simulator on 127.0.0.1 and yields the environment that
points Settings at them (`voicegw.simulate` builds the simulated stack on it).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict, Unpack

if TYPE_CHECKING:  # imported when they start: naming a profile loads no simulator
    from .cartesia import CartesiaSimulator
    from .chatterbox import ChatterboxSimulator
    from .deepgram import DeepgramSimulator
    from .elevenlabs import ElevenLabsSimulator
    from .groq import GroqSimulator
    from .n8n import N8nSimulator
    from .openai_realtime import RealtimeSimulator


@dataclass(frozen=True)
class Delay:
    """A latency in seconds around `median_s`; `sigma` > 0 spreads it log-normally."""

    median_s: float
    sigma: float = 0.0

    def sample(self, rng: random.Random) -> float:
        if self.sigma == 0 or self.median_s == 0:
            return self.median_s
        return rng.lognormvariate(math.log(self.median_s), self.sigma)


@dataclass(frozen=True)
class LatencyProfile:
    name: str
    description: str
    stt_final: Delay  # Deepgram: final transcript after the audio turns silent
    llm_ttft: Delay  # Groq: time to first token
    llm_tokens_per_s: float  # Groq: stream rate after the first token (0: all at once)
    tts_ttfb: Delay  # Chatterbox: time to first audio byte
    realtime_response: Delay  # OpenAI Realtime: end of the user's turn → first audio delta
    cartesia_ttfb: Delay = Delay(0.0)  # Cartesia: time to first audio byte
    elevenlabs_ttfb: Delay = Delay(0.0)  # ElevenLabs: time to first audio byte
    stt_interim_every_s: float = 0.25  # Deepgram: an interim result per this much speech
    llm_reply_tail: str = ""  # Groq: more of a plain answer, after what the user said
    seed: int = 7


# A real answer runs longer than the simulator's echo of the question: the plan's prompt asks
# for one or two sentences. What the TTS waits for before it starts depends on it.
REAL_LENGTH = "That is what I heard, and a real answer would run about this long."


PROFILES: dict[str, LatencyProfile] = {
    profile.name: profile
    for profile in (
        LatencyProfile(
            "published",
            "the plan's figures: STT final +150 ms (interims every 250 ms), LLM TTFT 200 ms "
            "then 500 tokens/s, TTS TTFB 200 ms (Cartesia 150, ElevenLabs 250); OpenAI "
            "Realtime first audio 300 ms after its VAD ends the turn",
            stt_final=Delay(0.150),
            llm_ttft=Delay(0.200),
            llm_tokens_per_s=500.0,
            tts_ttfb=Delay(0.200),
            realtime_response=Delay(0.300),
            cartesia_ttfb=Delay(0.150),
            elevenlabs_ttfb=Delay(0.250),
            llm_reply_tail=REAL_LENGTH,
        ),
        LatencyProfile(
            "fast",
            "providers at their best: 20 ms STT, 60 ms TTFT, 50 ms TTFB, realtime 120 ms",
            stt_final=Delay(0.020),
            llm_ttft=Delay(0.060),
            llm_tokens_per_s=1500.0,
            tts_ttfb=Delay(0.050),
            realtime_response=Delay(0.120),
            cartesia_ttfb=Delay(0.040),
            elevenlabs_ttfb=Delay(0.075),
            llm_reply_tail=REAL_LENGTH,
        ),
        LatencyProfile(
            "slow",
            "a bad day: 400 ms STT, 700 ms TTFT, 500 ms TTFB, realtime 900 ms",
            stt_final=Delay(0.400),
            llm_ttft=Delay(0.700),
            llm_tokens_per_s=150.0,
            tts_ttfb=Delay(0.500),
            realtime_response=Delay(0.900),
            cartesia_ttfb=Delay(0.400),
            elevenlabs_ttfb=Delay(0.600),
            llm_reply_tail=REAL_LENGTH,
        ),
        LatencyProfile(
            "jittery",
            "the published medians with a seeded log-normal spread (sigma 0.5) per turn",
            stt_final=Delay(0.150, 0.5),
            llm_ttft=Delay(0.200, 0.5),
            llm_tokens_per_s=500.0,
            tts_ttfb=Delay(0.200, 0.5),
            realtime_response=Delay(0.300, 0.5),
            cartesia_ttfb=Delay(0.150, 0.5),
            elevenlabs_ttfb=Delay(0.250, 0.5),
            llm_reply_tail=REAL_LENGTH,
        ),
        LatencyProfile(
            "instant",
            "no provider time at all: what is left is turn detection and our own code",
            stt_final=Delay(0.0),
            llm_ttft=Delay(0.0),
            llm_tokens_per_s=0.0,
            tts_ttfb=Delay(0.0),
            realtime_response=Delay(0.0),
        ),
    )
}


def profile_named(name: str) -> LatencyProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown latency profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None


@dataclass
class SimulatedProviders:
    """Every simulator, running; `env` points Settings at them."""

    profile: LatencyProfile
    deepgram: DeepgramSimulator
    groq: GroqSimulator
    chatterbox: ChatterboxSimulator
    realtime: RealtimeSimulator
    n8n: N8nSimulator
    cartesia: CartesiaSimulator
    elevenlabs: ElevenLabsSimulator
    env: dict[str, str] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def next_turn(self) -> None:
        """Draw this turn's latencies (a fixed profile draws the same values every time)."""
        p, rng = self.profile, self.rng
        self.deepgram.final_delay_s = p.stt_final.sample(rng)
        self.deepgram.interim_every_s = p.stt_interim_every_s
        self.groq.ttft_s = p.llm_ttft.sample(rng)
        self.groq.tokens_per_s = p.llm_tokens_per_s
        self.groq.reply_tail = p.llm_reply_tail
        self.chatterbox.ttfb_s = p.tts_ttfb.sample(rng)
        self.realtime.response_delay_s = p.realtime_response.sample(rng)
        self.cartesia.ttfb_s = p.cartesia_ttfb.sample(rng)
        self.elevenlabs.ttfb_s = p.elevenlabs_ttfb.sample(rng)


class GivenSimulators(TypedDict, total=False):
    """Simulators made (and scripted) by the caller, served instead of default ones."""

    realtime: RealtimeSimulator
    deepgram: DeepgramSimulator
    groq: GroqSimulator
    chatterbox: ChatterboxSimulator
    n8n: N8nSimulator
    cartesia: CartesiaSimulator
    elevenlabs: ElevenLabsSimulator


@contextlib.asynccontextmanager
async def simulated_providers(
    profile: LatencyProfile | str = "published",
    *,
    speak_replies: bool = True,
    **given: Unpack[GivenSimulators],
) -> AsyncIterator[SimulatedProviders]:
    """Start every provider simulator on a free port of 127.0.0.1 until the block ends.
    `speak_replies` has the OpenAI Realtime simulator speak its replies with espeak-ng
    (when installed) instead of a tone. A simulator given here (scripted by a test, say) is
    served instead of a default one; the profile still sets its latencies."""
    from .cartesia import CartesiaSimulator
    from .chatterbox import ChatterboxSimulator
    from .deepgram import DeepgramSimulator
    from .elevenlabs import ElevenLabsSimulator
    from .groq import GroqSimulator
    from .n8n import N8nSimulator
    from .openai_realtime import RealtimeSimulator
    from .server import serve

    if isinstance(profile, str):
        profile = profile_named(profile)
    sims = SimulatedProviders(
        profile=profile,
        deepgram=given.get("deepgram") or DeepgramSimulator(),
        groq=given.get("groq") or GroqSimulator(),
        chatterbox=given.get("chatterbox") or ChatterboxSimulator(),
        realtime=given.get("realtime") or RealtimeSimulator(speak=speak_replies),
        n8n=given.get("n8n") or N8nSimulator(),
        cartesia=given.get("cartesia") or CartesiaSimulator(),
        elevenlabs=given.get("elevenlabs") or ElevenLabsSimulator(),
        rng=random.Random(profile.seed),
    )
    sims.next_turn()
    async with (
        serve(sims.deepgram.app) as deepgram_server,
        serve(sims.groq.app) as groq_server,
        serve(sims.chatterbox.app) as chatterbox_server,
        serve(sims.realtime.app) as realtime_server,
        serve(sims.n8n.app) as n8n_server,
        serve(sims.cartesia.app) as cartesia_server,
        serve(sims.elevenlabs.app) as elevenlabs_server,
    ):
        sims.env = {
            "DEEPGRAM_API_KEY": sims.deepgram.api_key,
            "DEEPGRAM_BASE_URL": f"{deepgram_server.ws_url}/v1/listen",
            "GROQ_API_KEY": sims.groq.api_key,
            "GROQ_BASE_URL": f"{groq_server.url}/openai/v1",
            "CHATTERBOX_API_KEY": sims.chatterbox.api_key,
            "CHATTERBOX_BASE_URL": f"{chatterbox_server.url}/v1",
            "OPENAI_API_KEY": sims.realtime.api_key,
            "OPENAI_REALTIME_URL": f"{realtime_server.ws_url}/v1/realtime",
            "N8N_WEBHOOK_BASE_URL": n8n_server.url,
            "CARTESIA_API_KEY": sims.cartesia.api_key,
            "CARTESIA_BASE_URL": cartesia_server.url,
            "ELEVENLABS_API_KEY": sims.elevenlabs.api_key,
            "ELEVENLABS_BASE_URL": f"{elevenlabs_server.url}/v1",
        }
        servers = (
            deepgram_server,
            groq_server,
            chatterbox_server,
            realtime_server,
            n8n_server,
            cartesia_server,
            elevenlabs_server,
        )
        try:
            yield sims
        finally:
            # All wind down at once; each block below then only waits for its own.
            for running in servers:
                running.server.should_exit = True
