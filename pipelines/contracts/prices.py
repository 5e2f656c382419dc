"""What a minute of conversation costs: one price table, with where each price comes from.

The plan's own figures (PLAN.md, "Cost Analysis" and "Cost Comparison (per minute of voice)",
last updated January 2026) price Deepgram, Groq, Chatterbox, LiveKit and the OpenAI Realtime
mode. The plan names Cartesia and ElevenLabs as alternatives without prices; theirs are the
providers' published per-character rates as of June 2026 (source beside each). Chatterbox is
priced per minute of speech and billed here per character, at `SPEECH_CHARS_PER_MINUTE`.

The livekit mode is priced from what a session used (`Usage`), so speculation shows in it:
every LLM request counts its prompt and what it streamed, discarded or not, and every
character sent to a TTS counts, played or not. The openai mode is the plan's flat figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .settings import TtsProvider

PLAN = "PLAN.md cost tables (January 2026)"

# 150 words a minute at about 6 characters a word (spaces included).
SPEECH_CHARS_PER_MINUTE = 900


@dataclass(frozen=True)
class Price:
    usd: float
    per: Literal["audio minute", "token", "character", "conversation minute"]
    source: str


PRICES: dict[str, Price] = {
    "deepgram": Price(0.0035, "audio minute", PLAN),
    "groq": Price(0.05 / 1_000_000, "token", f"{PLAN}: $0.05 per 1M tokens, in or out"),
    "chatterbox": Price(
        0.004 / SPEECH_CHARS_PER_MINUTE,
        "character",
        f"{PLAN}: ~$0.004 per minute of speech, at {SPEECH_CHARS_PER_MINUTE} characters a minute",
    ),
    "cartesia": Price(
        50 / 1_000_000,
        "character",
        "docs.cartesia.ai/pricing (~1 credit per character) and cartesia.ai/pricing (Pro: $5 "
        "for 100,000 credits), June 2026; not in the plan",
    ),
    "elevenlabs": Price(
        0.05 / 1000,
        "character",
        "elevenlabs.io/pricing/api (Flash/Turbo: $0.05 per 1,000 characters), June 2026; not in "
        "the plan",
    ),
    "livekit": Price(0.003, "conversation minute", f"{PLAN}: transport"),
    # The OpenAI Realtime mode as the plan prices it: STT 0.006 + LLM 0.01 + TTS 0.015 +
    # transport 0.005 per minute of voice.
    "openai": Price(0.036, "conversation minute", PLAN),
}


@dataclass
class Usage:
    """What a livekit session used, speculation included."""

    audio_s: float = 0.0  # audio streamed to the STT (the conversation's length)
    llm_requests: int = 0
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    tts_requests: int = 0  # replies whose synthesis started (one may be several chunks)
    # characters sent to each TTS, spoken or thrown away
    tts_characters_by: dict[TtsProvider, int] = field(default_factory=dict)

    @property
    def tts_characters(self) -> int:
        return sum(self.tts_characters_by.values())

    def __add__(self, other: Usage) -> Usage:
        by = dict(self.tts_characters_by)
        for provider, count in other.tts_characters_by.items():
            by[provider] = by.get(provider, 0) + count
        return Usage(
            audio_s=self.audio_s + other.audio_s,
            llm_requests=self.llm_requests + other.llm_requests,
            llm_prompt_tokens=self.llm_prompt_tokens + other.llm_prompt_tokens,
            llm_completion_tokens=self.llm_completion_tokens + other.llm_completion_tokens,
            tts_requests=self.tts_requests + other.tts_requests,
            tts_characters_by=by,
        )

    def cost_usd(self) -> dict[str, float]:
        """Dollars per component and `total`."""
        minutes = self.audio_s / 60
        tokens = self.llm_prompt_tokens + self.llm_completion_tokens
        parts = {
            "stt": minutes * PRICES["deepgram"].usd,
            "llm": tokens * PRICES["groq"].usd,
            "tts": sum(n * PRICES[tts].usd for tts, n in self.tts_characters_by.items()),
            "transport": minutes * PRICES["livekit"].usd,
        }
        return parts | {"total": sum(parts.values())}

    def cost_per_minute(self) -> float | None:
        """Dollars per minute of conversation (None before any audio)."""
        if self.audio_s <= 0:
            return None
        return self.cost_usd()["total"] / (self.audio_s / 60)


def openai_cost_per_minute() -> float:
    return PRICES["openai"].usd
