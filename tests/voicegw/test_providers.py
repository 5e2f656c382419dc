"""What `voicegw serve` simulates: in dev exactly the providers without a key (one key never
turns the others off), everything with --simulate, nothing in production; and every variable
a simulator sets belongs to a provider the start-up lines name."""

from __future__ import annotations

import logging

import pytest

from pipelines.contracts import load_settings
from simulators.profiles import simulated_providers
from voicegw.providers import (
    PROVIDER_SIMULATORS,
    PROVIDERS,
    SIMULATED_IN_DEV,
    report,
    simulated_variables,
    to_simulate,
)
from voicegw.simulate import simulated_stack

PROD = {
    "VOICEGW_ENV": "production",
    "GATEWAY_SECRET": "p" * 40,
    "GATEWAY_API_KEY": "providers-test-api-key",
    "GATEWAY_PUBLIC_URL": "https://gw.example.com",
    "VOICE_FORCE_MODE": "openai",
    "OPENAI_API_KEY": "sk-providers-test",
}


def test_dev_simulates_exactly_the_providers_without_a_key() -> None:
    assert to_simulate(load_settings({}), None) == SIMULATED_IN_DEV
    one_key = load_settings({"GROQ_API_KEY": "gsk-test"})
    assert to_simulate(one_key, None) == SIMULATED_IN_DEV - {"groq"}
    n8n = load_settings({"N8N_WEBHOOK_BASE_URL": "https://n8n.example.com/webhook"})
    assert "n8n" not in to_simulate(n8n, None)
    assert to_simulate(one_key, True) == SIMULATED_IN_DEV
    assert to_simulate(one_key, False) == frozenset()
    assert to_simulate(load_settings(PROD), None) == frozenset()
    # LiveKit has livekit-server --dev's values in dev: left at those, it is the stand-in's.
    assert "livekit" in to_simulate(one_key, None)
    own = load_settings({"LIVEKIT_URL": "ws://127.0.0.1:7880"})
    assert "livekit" in to_simulate(own, None)  # the same as the default: still the stand-in
    cloud = load_settings(
        {
            "LIVEKIT_URL": "wss://example.livekit.cloud",
            "LIVEKIT_API_KEY": "APIkey",
            "LIVEKIT_API_SECRET": "s" * 32,
        }
    )
    assert "livekit" not in to_simulate(cloud, None)


@pytest.mark.parametrize("name", sorted(SIMULATED_IN_DEV))
def test_each_provider_alone_is_simulated_or_real(name: str) -> None:
    assert {p.name for p in PROVIDERS} >= SIMULATED_IN_DEV
    assert simulated_variables({name}) == {
        v for p in PROVIDERS if p.name == name for v in p.variables
    }


async def test_every_simulator_variable_belongs_to_a_provider() -> None:
    async with simulated_providers("instant") as sims:
        assert set(sims.env) == simulated_variables(PROVIDER_SIMULATORS)


async def test_a_partly_simulated_stack_keeps_the_real_providers() -> None:
    settings = load_settings({"DEEPGRAM_API_KEY": "dg-real", "GROQ_API_KEY": "gsk-real"})
    only = to_simulate(settings, None)
    async with simulated_stack(settings, "instant", only=only) as stack:
        assert stack.simulated == {
            "openai_realtime",
            "chatterbox",
            "cartesia",
            "elevenlabs",
            "n8n",
        }
        ours = stack.settings
        assert ours.deepgram_base_url == "https://api.deepgram.com/v1/listen"
        assert ours.deepgram_api_key is not None
        assert ours.deepgram_api_key.get_secret_value() == "dg-real"
        assert ours.groq_base_url == "https://api.groq.com/openai/v1"
        assert ours.chatterbox_base_url.startswith("http://127.0.0.1:")
        assert ours.openai_realtime_url.startswith("ws://127.0.0.1:")
        assert set(stack.env) == simulated_variables(only - {"livekit"})


def test_a_voice_is_reported_only_when_chosen(caplog: pytest.LogCaptureFixture) -> None:
    """Production agent with TTS_PROVIDER=cartesia and no Cartesia key: Cartesia is missing
    (said once, naming the key, not its value); Chatterbox and ElevenLabs are nobody's voice,
    so neither is named."""
    env = {
        **PROD,
        "TTS_PROVIDER": "cartesia",
        "TTS_FALLBACK_PROVIDER": "elevenlabs",
        "ELEVENLABS_API_KEY": "el-secret-value",
    }
    caplog.set_level(logging.INFO, logger="voicegw.providers")
    report(load_settings(env, process="agent"), ["agent"])
    said = {r.__dict__["provider"]: r for r in caplog.records if hasattr(r, "provider")}
    assert said["cartesia"].getMessage() == "provider missing"
    assert said["cartesia"].__dict__["missing"] == ["CARTESIA_API_KEY"]
    assert said["elevenlabs"].getMessage() == "provider real"
    assert "chatterbox" not in said
    assert "el-secret-value" not in caplog.text
