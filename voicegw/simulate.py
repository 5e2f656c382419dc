"""Simulate wiring: every provider as a local simulator, and Settings pointed at them.

`voicegw serve --simulate`, `voicegw talk --simulate`, `voicegw compare --simulate`, the tests'
`stack` fixture and the benchmarks build the simulated stack here, so what they exercise is
one and the same thing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Unpack

from pydantic import SecretStr

from pipelines.contracts import Settings
from simulators.profiles import (
    GivenSimulators,
    LatencyProfile,
    SimulatedProviders,
    simulated_providers,
)

PROVIDER_KEYS = (
    "OPENAI_API_KEY",
    "DEEPGRAM_API_KEY",
    "GROQ_API_KEY",
    "CHATTERBOX_API_KEY",
    "CARTESIA_API_KEY",
    "ELEVENLABS_API_KEY",
)


def simulate_by_default(settings: Settings) -> bool:
    """In dev with no provider key at all, the gateway runs on its simulators."""
    return settings.voicegw_env == "dev" and all(
        settings.value_of(name) is None for name in PROVIDER_KEYS
    )


def with_overrides(settings: Settings, env: Mapping[str, str]) -> Settings:
    """`settings` pointed at other endpoints (the simulators' known-good URLs and keys)."""
    update: dict[str, Any] = {
        name.lower(): SecretStr(value) if name.endswith("_API_KEY") else value
        for name, value in env.items()
    }
    return settings.model_copy(update=update)


@dataclass(frozen=True)
class SimulatedStack:
    """The simulated providers, running, and `settings` pointed at them."""

    providers: SimulatedProviders
    settings: Settings


@contextlib.asynccontextmanager
async def simulated_stack(
    settings: Settings,
    profile: LatencyProfile | str = "published",
    *,
    speak_replies: bool = True,
    **given: Unpack[GivenSimulators],
) -> AsyncIterator[SimulatedStack]:
    """Start every provider simulator for `profile` until the block ends; `settings` come back
    pointed at them. A simulator given here is used (and served) instead of a default one."""
    async with simulated_providers(profile, speak_replies=speak_replies, **given) as providers:
        yield SimulatedStack(providers, with_overrides(settings, providers.env))
