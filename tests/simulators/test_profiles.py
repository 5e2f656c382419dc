"""Simulator latency profiles: selectable by name, and a jittery one that is seeded and spread."""

from __future__ import annotations

import random

import pytest

from simulators.profiles import (
    PROFILES,
    Delay,
    profile_named,
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
