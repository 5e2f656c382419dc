"""Cost per minute from what a session used, at the one price table's rates."""

from __future__ import annotations

import pytest

from pipelines.contracts.prices import PLAN, PRICES, Usage, openai_cost_per_minute


def test_a_session_is_priced_by_what_it_used() -> None:
    usage = Usage(
        audio_s=120.0,  # two minutes of conversation streamed to Deepgram
        llm_requests=6,
        llm_prompt_tokens=10_000,
        llm_completion_tokens=1_000,
        tts_requests=4,
        tts_characters_by={"chatterbox": 1_800},
    )
    cost = usage.cost_usd()
    assert cost["stt"] == pytest.approx(2 * 0.0035)
    assert cost["llm"] == pytest.approx(11_000 * 0.05 / 1_000_000)
    assert cost["tts"] == pytest.approx(1_800 / 900 * 0.004)  # two minutes of speech
    assert cost["transport"] == pytest.approx(2 * 0.003)
    assert cost["total"] == pytest.approx(0.00700 + 0.00055 + 0.00800 + 0.00600)
    assert usage.cost_per_minute() == pytest.approx(cost["total"] / 2)


def test_speculation_that_is_thrown_away_still_costs() -> None:
    answered = Usage(
        audio_s=60.0, llm_requests=1, llm_prompt_tokens=600, tts_characters_by={"cartesia": 90}
    )
    guessed = Usage(llm_requests=2, llm_prompt_tokens=1_200, tts_characters_by={"cartesia": 30})
    both = answered + guessed
    assert (both.llm_requests, both.llm_prompt_tokens, both.tts_characters) == (3, 1_800, 120)
    assert both.cost_usd()["tts"] == pytest.approx(120 * 50 / 1_000_000)
    assert both.cost_usd()["total"] > answered.cost_usd()["total"]


def test_every_voice_has_a_price_and_a_source() -> None:
    chars = {"chatterbox": 900, "cartesia": 900, "elevenlabs": 900}
    for voice, count in chars.items():
        usage = Usage(audio_s=60.0, tts_characters_by={voice: count})  # type: ignore[dict-item]
        assert usage.cost_usd()["tts"] > 0
    assert PRICES["chatterbox"].source.startswith(PLAN)
    assert "not in the plan" in PRICES["cartesia"].source
    assert "not in the plan" in PRICES["elevenlabs"].source
    assert Usage().cost_per_minute() is None  # nothing streamed, nothing to divide by
    assert openai_cost_per_minute() == 0.036  # the plan's OpenAI Realtime total
