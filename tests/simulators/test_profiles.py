"""Simulator latency profiles: selectable by name, a jittery one that is seeded and spread, and
every provider's figures applied to the simulators the stack serves."""

from __future__ import annotations

import random

import pytest

from simulators.profiles import (
    PROFILES,
    REAL_LENGTH,
    Delay,
    profile_named,
    simulated_providers,
)


def test_profiles_by_name() -> None:
    assert {"published", "fast", "slow", "jittery"} <= set(PROFILES)
    published = profile_named("published")
    assert (
        published.stt_final.median_s,
        published.llm_ttft.median_s,
        published.tts_ttfb.median_s,
    ) == (0.150, 0.200, 0.200)
    with pytest.raises(ValueError, match="choose one of"):
        profile_named("warp")


def test_jitter_is_seeded_and_spread() -> None:
    delay = Delay(0.2, sigma=0.5)
    first = [delay.sample(random.Random(7)) for _ in range(3)]
    again = [delay.sample(random.Random(7)) for _ in range(3)]
    assert first == again
    draws = [delay.sample(rng) for rng in [random.Random(1)] for _ in range(2000)]
    assert 0.18 < sorted(draws)[1000] < 0.22  # the median stays the published figure
    assert max(draws) > 4 * min(draws)  # a real spread, not a constant
    assert Delay(0.2).sample(random.Random(3)) == 0.2


async def test_the_stack_serves_the_plans_voices_at_their_published_figures() -> None:
    async with simulated_providers("published", speak_replies=False) as sims:
        ttfb = (sims.chatterbox.ttfb_s, sims.cartesia.ttfb_s, sims.elevenlabs.ttfb_s)
        assert ttfb == (0.200, 0.150, 0.250)
        # as independent stand-ins stream them: interims every 250 ms, 500 tokens/s
        assert (sims.deepgram.interim_every_s, sims.groq.tokens_per_s) == (0.25, 500.0)
        assert sims.groq.reply_tail == REAL_LENGTH
        env = sims.env
        assert env["CARTESIA_API_KEY"] == sims.cartesia.api_key
        assert env["ELEVENLABS_API_KEY"] == sims.elevenlabs.api_key
        assert env["CARTESIA_BASE_URL"].startswith("http://127.0.0.1:")
        assert env["ELEVENLABS_BASE_URL"].endswith("/v1")
    async with simulated_providers("instant", speak_replies=False) as sims:
        assert (sims.cartesia.ttfb_s, sims.elevenlabs.ttfb_s, sims.groq.reply_tail) == (0, 0, "")
